"""Loads the demo region (services.directory.demo) into the directory, exactly once.

Everything is written in one transaction that first claims the seed's marker row: a second run, or one
racing with the first, finds the marker and writes nothing, and a crash mid-way leaves neither marker nor half
a region. The rows go through DirectoryStore, so the demo data meets the checks that API data meets.

    PARCOURS_DATABASE_URL=postgresql://... python -m services.directory.seed
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from parcours.directory.v1 import directory_pb2
from parcours.type.v1 import practice_pb2

from services.directory import demo
from services.directory.store import DirectoryStore

# Marker row of the demo data set; bump the suffix when the demo data changes shape incompatibly.
DEMO_SEED = "demo-region-84/v1"


async def seed_demo(pool: asyncpg.Pool) -> bool:
    """Inserts the demo GHTs, establishments, practitioners, offers and patients; False if already seeded."""
    store = DirectoryStore(pool)
    async with store.transaction() as tx:
        if not await store.claim_seed(DEMO_SEED, tx=tx):
            return False
        # GHTs name their support establishment, which names its GHT: check the support at commit.
        await store.defer_ght_support_check(tx)
        for ght in demo.DEMO_GHTS:
            await store.create_ght(
                ght.ght_id,
                display_name=ght.display_name,
                region=ght.region_code,
                support_finess=ght.support_finess,
                tx=tx,
            )
        for establishment in demo.DEMO_ESTABLISHMENTS:
            await store.create_establishment(
                establishment.finess,
                display_name=establishment.display_name,
                kind=directory_pb2.Establishment.Kind.Value(establishment.kind),
                ght=establishment.ght_id,
                region=establishment.region_code,
                time_zone=establishment.time_zone,
                tx=tx,
            )
        for practitioner in demo.DEMO_PRACTITIONERS:
            await store.create_practitioner(
                practitioner.rpps,
                family_name=practitioner.family_name,
                given_name=practitioner.given_name,
                profession=practice_pb2.Profession.Value(practitioner.profession),
                specialty=practice_pb2.Specialty.Value(practitioner.specialty),
                sector=practice_pb2.ConventionSector.Value(practitioner.sector),
                practice_places=practitioner.practice_places,
                tx=tx,
            )
        for offer in demo.DEMO_EXPERTISE_OFFERS:
            await store.create_expertise_offer(
                offer.offer_id,
                display_name=offer.display_name,
                specialty=practice_pb2.Specialty.Value(offer.specialty),
                ght=offer.ght_id,
                region=offer.region_code,
                members=offer.members,
                backup_rpps=offer.backup_rpps,
                tx=tx,
            )
        for patient in demo.DEMO_PATIENTS:
            await store.create_patient(
                matricule=patient.matricule,
                oid=patient.oid,
                birth_family_name=patient.birth_family_name,
                birth_given_names=patient.birth_given_names,
                birth_date=patient.birth_date,
                sex=directory_pb2.Sex.Value(patient.sex),
                birth_place_code=patient.birth_place_code,
                identity_status=directory_pb2.IdentityStatus.Value(patient.identity_status),
                patient_id=patient.patient_id,
                tx=tx,
            )
            for local in patient.local_identifiers:
                await store.link_local_identifier(patient.patient_id, local.finess, local.ipp, tx=tx)
    return True


def summary(seeded: bool) -> str:
    """The one line the command prints."""
    if not seeded:
        return f"directory demo data already seeded ({DEMO_SEED}); nothing written"
    return (
        f"directory demo data seeded ({DEMO_SEED}): {len(demo.DEMO_GHTS)} GHTs, "
        f"{len(demo.DEMO_ESTABLISHMENTS)} establishments, {len(demo.DEMO_PRACTITIONERS)} practitioners, "
        f"{len(demo.DEMO_EXPERTISE_OFFERS)} expertise offers, {len(demo.DEMO_PATIENTS)} patients"
    )


async def _main(database_url: str) -> str:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        return summary(await seed_demo(pool))
    finally:
        await pool.close()


def main() -> None:
    database_url = os.environ.get("PARCOURS_DATABASE_URL")
    if not database_url:
        sys.stderr.write("parcours: PARCOURS_DATABASE_URL is required\n")
        raise SystemExit(2)
    print(asyncio.run(_main(database_url)))


if __name__ == "__main__":
    main()
