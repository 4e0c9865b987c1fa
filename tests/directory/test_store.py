"""DirectoryStore and the demo seed against the suite's PostgreSQL server (tests/conftest.py `postgres`)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import date

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from parcours.directory.v1 import directory_pb2
from parcours.type.v1 import practice_pb2

from services.devstack.postgres import PostgresHandle
from services.directory import demo
from services.directory.identifiers import nir_key
from services.directory.seed import seed_demo
from services.directory.store import LEDGER, DirectoryStore
from services.kit.errors import AlreadyExists, DomainError, FailedPrecondition, InvalidArgument
from services.kit.idempotency import Call
from services.kit.migrate import apply_all

Kind = directory_pb2.Establishment.Kind
Profession = practice_pb2.Profession
Specialty = practice_pb2.Specialty
Sector = practice_pb2.ConventionSector
Sex = directory_pb2.Sex
Status = directory_pb2.IdentityStatus
TEST_NIR_OID = "1.2.250.1.213.1.4.10"


async def create_migrated_database(postgres: PostgresHandle) -> str:
    """A new database of the suite's server with the directory's migrations, applied by the kit's runner."""
    name = f"directory_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = postgres.url_for(name)
    await asyncio.to_thread(apply_all, url, ["directory"])
    return url


# A database of this module's own rather than the session's `database_url`: the seed test needs a directory
# nobody else writes to, and the directory's schema needs no other migration set.
@pytest.fixture(scope="module")
async def pool(postgres: PostgresHandle) -> AsyncIterator[asyncpg.Pool]:
    url = await create_migrated_database(postgres)
    created = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> DirectoryStore:
    return DirectoryStore(pool)


# Tests share the database: every test makes its own ids, outside the demo data's ranges.


def new_finess(departement: str = "42") -> str:
    return departement + "5" + f"{secrets.randbelow(10**6):06d}"


def new_rpps() -> str:
    return "2" + f"{secrets.randbelow(10**10):010d}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_nir(sex: str = "2", departement_commune: str = "42218") -> str:
    first13 = sex + "8503" + departement_commune + f"{secrets.randbelow(1000):03d}"
    return first13 + nir_key(first13)


async def make_ght(store: DirectoryStore, region: str = "84") -> str:
    ght_id = new_id("ght-test")
    await store.create_ght(ght_id, display_name="GHT d'essai", region=region)
    return ght_id


async def make_establishment(store: DirectoryStore, ght: str | None, region: str = "84") -> str:
    finess = new_finess()
    await store.create_establishment(
        finess,
        display_name="Hôpital d'essai",
        kind=Kind.KIND_SITE,
        ght=ght,
        region=region,
        time_zone="Europe/Paris",
    )
    return finess


async def make_practitioner(
    store: DirectoryStore,
    places: list[str],
    profession: practice_pb2.Profession.ValueType = Profession.PROFESSION_PHYSICIAN,
    specialty: practice_pb2.Specialty.ValueType = Specialty.SPECIALTY_DERMATOLOGY,
) -> str:
    rpps = new_rpps()
    await store.create_practitioner(
        rpps,
        family_name="Essai",
        given_name="Camille",
        profession=profession,
        specialty=specialty,
        sector=Sector.CONVENTION_SECTOR_SALARIED,
        practice_places=places,
    )
    return rpps


async def make_patient(
    store: DirectoryStore,
    status: directory_pb2.IdentityStatus.ValueType = Status.IDENTITY_STATUS_QUALIFIED,
    matricule: str | None = None,
    local_identifier: tuple[str, str] | None = None,
    birth_place_code: str = "42218",
) -> directory_pb2.Patient:
    creation = await store.create_patient(
        matricule=matricule or new_nir(),
        oid=TEST_NIR_OID,
        birth_family_name="ESSAI",
        birth_given_names="MARIE LOUISE",
        birth_date=date(1985, 3, 2),
        sex=Sex.SEX_FEMALE,
        birth_place_code=birth_place_code,
        identity_status=status,
        local_identifier=local_identifier,
    )
    return creation.patient


def reason(excinfo: pytest.ExceptionInfo[DomainError]) -> str:
    return excinfo.value.reason


# --- Regions -----------------------------------------------------------------------------------------------


async def test_regions_are_the_reference_regions_page_by_page(store: DirectoryStore) -> None:
    seen: list[directory_pb2.Region] = []
    after: str | None = None
    pages = 0
    while True:
        page, after = await store.list_regions(5, after)
        seen.extend(page)
        pages += 1
        if after is None:
            break
    assert pages == 4
    assert [(r.code, r.display_name, r.time_zone, r.overseas) for r in seen] == [
        (r.code, r.display_name, r.time_zone, r.overseas) for r in demo.REGIONS
    ]
    region = await store.get_region("84")
    assert region is not None
    assert region.name == "regions/84"
    assert region.display_name == "Auvergne-Rhône-Alpes"
    assert await store.get_region("99") is None


# --- GHTs and establishments -------------------------------------------------------------------------------


async def test_create_get_and_list_ghts_and_establishments(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    created = [await make_establishment(store, ght_id) for _ in range(3)]
    supported = await store.create_ght(
        new_id("ght-test"), display_name="GHT avec support", region="84", support_finess=created[0]
    )
    assert supported.support_establishment == f"establishments/{created[0]}"

    ght = await store.get_ght(ght_id)
    assert ght is not None
    assert (ght.name, ght.region, ght.support_establishment) == (f"ghts/{ght_id}", "regions/84", "")
    assert ght.create_time.seconds > 0
    ghts_84, _ = await store.list_ghts(500, region="84")
    assert {ght_id, supported.ght_id} <= {g.ght_id for g in ghts_84}
    assert await store.list_ghts(500, region="04") == ([], None)

    first, after = await store.list_establishments(2, ght=ght_id)
    assert after == first[-1].finess
    second, last = await store.list_establishments(2, after, ght=ght_id)
    assert last is None
    assert [e.finess for e in first + second] == sorted(created)

    establishment = await store.get_establishment(created[0])
    assert establishment is not None
    assert establishment.name == f"establishments/{created[0]}"
    assert (establishment.ght, establishment.region, establishment.overseas) == (
        f"ghts/{ght_id}",
        "regions/84",
        False,
    )
    assert establishment.kind == Kind.KIND_SITE
    assert establishment.create_time == establishment.update_time
    assert await store.get_establishment(new_finess()) is None
    in_region, _ = await store.list_establishments(500, region="84")
    assert set(created) <= {e.finess for e in in_region}


async def test_overseas_flag_comes_from_the_region(store: DirectoryStore) -> None:
    finess = new_finess("97")
    establishment = await store.create_establishment(
        finess,
        display_name="CH d'essai",
        kind=Kind.KIND_LEGAL_ENTITY,
        ght=None,
        region="04",
        time_zone="Indian/Reunion",
    )
    assert (establishment.overseas, establishment.ght, establishment.time_zone) == (
        True,
        "",
        "Indian/Reunion",
    )


async def test_establishment_refusals(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    finess = await make_establishment(store, ght_id)
    cases: list[tuple[dict[str, str | None], type[DomainError], str]] = [
        ({"finess": finess}, AlreadyExists, "ESTABLISHMENT_EXISTS"),
        ({"ght": "ght-nowhere"}, FailedPrecondition, "UNKNOWN_GHT"),
        ({"ght": ght_id, "region": "04"}, FailedPrecondition, "GHT_IN_OTHER_REGION"),
        ({"region": "99"}, FailedPrecondition, "UNKNOWN_REGION"),
        ({"time_zone": "Europe/London"}, InvalidArgument, "INVALID_ARGUMENT"),
        ({"finess": "2C1234567"}, InvalidArgument, "INVALID_ARGUMENT"),
    ]
    for overrides, error, expected in cases:
        values: dict[str, str | None] = {
            "finess": new_finess(),
            "ght": None,
            "region": "84",
            "time_zone": "Europe/Paris",
            **overrides,
        }
        with pytest.raises(error) as excinfo:
            await store.create_establishment(
                str(values["finess"]),
                display_name="Refusé",
                kind=Kind.KIND_SITE,
                ght=values["ght"],
                region=str(values["region"]),
                time_zone=str(values["time_zone"]),
            )
        assert excinfo.value.reason == expected, overrides


async def test_ght_refusals(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    with pytest.raises(AlreadyExists) as exists:
        await store.create_ght(ght_id, display_name="Doublon", region="84")
    assert exists.value.reason == "GHT_EXISTS"
    with pytest.raises(FailedPrecondition) as region:
        await store.create_ght(new_id("ght-test"), display_name="Nulle part", region="99")
    assert region.value.reason == "UNKNOWN_REGION"
    with pytest.raises(FailedPrecondition) as support:
        await store.create_ght(
            new_id("ght-test"), display_name="Sans support", region="84", support_finess="429999999"
        )
    assert support.value.reason == "UNKNOWN_ESTABLISHMENT"


async def test_update_establishment_masked_fields(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    finess = await make_establishment(store, ght_id)
    renamed = await store.update_establishment(finess, {"display_name": "Hôpital renommé"})
    assert renamed is not None
    assert (renamed.display_name, renamed.ght) == ("Hôpital renommé", f"ghts/{ght_id}")
    assert renamed.update_time.ToDatetime() > renamed.create_time.ToDatetime()
    detached = await store.update_establishment(finess, {"ght": None, "time_zone": "Europe/Paris"})
    assert detached is not None
    assert detached.ght == ""
    assert detached.display_name == "Hôpital renommé"
    with pytest.raises(FailedPrecondition) as unknown:
        await store.update_establishment(finess, {"ght": "ght-nowhere"})
    assert unknown.value.reason == "UNKNOWN_GHT"
    assert await store.update_establishment(new_finess(), {"display_name": "x"}) is None


# --- Practitioners -----------------------------------------------------------------------------------------


async def test_practitioners_filters_and_pagination(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    here, there = await make_establishment(store, ght_id), await make_establishment(store, None)
    derm = sorted([await make_practitioner(store, [here]) for _ in range(3)])
    nurse = await make_practitioner(
        store, [here, there], Profession.PROFESSION_NURSE, Specialty.SPECIALTY_NONE
    )

    page, after = await store.list_practitioners(2, establishment=here)
    rest, last = await store.list_practitioners(2, after, establishment=here)
    assert last is None
    assert [p.rpps for p in page + rest] == sorted([*derm, nurse])

    by_ght, _ = await store.list_practitioners(500, ght=ght_id)
    assert {p.rpps for p in by_ght} == {*derm, nurse}
    nurses_here, _ = await store.list_practitioners(
        500, profession=Profession.PROFESSION_NURSE, establishment=here
    )
    assert [p.rpps for p in nurses_here] == [nurse]
    derm_here, _ = await store.list_practitioners(500, specialty=Specialty.SPECIALTY_DERMATOLOGY, ght=ght_id)
    assert [p.rpps for p in derm_here] == derm
    only_there, _ = await store.list_practitioners(500, establishment=there)
    assert [p.rpps for p in only_there] == [nurse]
    in_region, _ = await store.list_practitioners(500, region="84", establishment=there)
    assert [p.rpps for p in in_region] == [nurse]

    practitioner = await store.get_practitioner(nurse)
    assert practitioner is not None
    assert (practitioner.name, practitioner.national_id) == (f"practitioners/{nurse}", "8" + nurse)
    assert [(p.establishment, p.time_zone) for p in practitioner.practice_places] == [
        (f"establishments/{f}", "Europe/Paris") for f in sorted([here, there])
    ]
    assert practitioner.active
    assert practitioner.sector == Sector.CONVENTION_SECTOR_SALARIED
    assert await store.get_practitioner(new_rpps()) is None


async def test_practitioner_refusals_leave_nothing_behind(store: DirectoryStore) -> None:
    place = await make_establishment(store, None)
    rpps = new_rpps()
    with pytest.raises(FailedPrecondition) as unknown_place:
        await store.create_practitioner(
            rpps,
            family_name="Essai",
            given_name="Léo",
            profession=Profession.PROFESSION_PHYSICIAN,
            specialty=Specialty.SPECIALTY_CARDIOLOGY,
            sector=Sector.CONVENTION_SECTOR_1,
            practice_places=[place, "429999999"],
        )
    assert unknown_place.value.reason == "UNKNOWN_ESTABLISHMENT"
    assert await store.get_practitioner(rpps) is None

    with pytest.raises(InvalidArgument) as nurse_specialty:
        await make_practitioner(store, [place], Profession.PROFESSION_NURSE, Specialty.SPECIALTY_CARDIOLOGY)
    assert nurse_specialty.value.violations[0].field == "practitioner.specialty"
    with pytest.raises(InvalidArgument):
        await make_practitioner(store, [place], Profession.PROFESSION_PHYSICIAN, Specialty.SPECIALTY_NONE)

    existing = await make_practitioner(store, [place])
    with pytest.raises(AlreadyExists) as duplicate:
        await store.create_practitioner(
            existing,
            family_name="Autre",
            given_name="Personne",
            profession=Profession.PROFESSION_PHYSICIAN,
            specialty=Specialty.SPECIALTY_CARDIOLOGY,
            sector=Sector.CONVENTION_SECTOR_1,
            practice_places=[place],
        )
    assert duplicate.value.reason == "PRACTITIONER_EXISTS"


async def test_update_practitioner_replaces_practice_places(store: DirectoryStore) -> None:
    first, second = await make_establishment(store, None), await make_establishment(store, None)
    rpps = await make_practitioner(store, [first])
    updated = await store.update_practitioner(
        rpps, {"practice_places": [second], "active": False, "sector": Sector.CONVENTION_SECTOR_2_OPTAM}
    )
    assert updated is not None
    assert [p.establishment for p in updated.practice_places] == [f"establishments/{second}"]
    assert (updated.active, updated.sector, updated.family_name) == (
        False,
        Sector.CONVENTION_SECTOR_2_OPTAM,
        "Essai",
    )
    at_first, _ = await store.list_practitioners(500, establishment=first)
    assert rpps not in {p.rpps for p in at_first}
    with pytest.raises(InvalidArgument):
        await store.update_practitioner(rpps, {"practice_places": []})
    assert await store.update_practitioner(new_rpps(), {"active": True}) is None


# --- Expertise offers --------------------------------------------------------------------------------------


async def test_expertise_offers(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    place = await make_establishment(store, ght_id)
    members = sorted([await make_practitioner(store, [place]) for _ in range(2)])
    backup = await make_practitioner(store, [place])
    offer_id = new_id("derm-test")
    offer = await store.create_expertise_offer(
        offer_id,
        display_name="Dermatologie d'essai",
        specialty=Specialty.SPECIALTY_DERMATOLOGY,
        ght=ght_id,
        members=members,
        backup_rpps=backup,
    )
    assert offer.name == f"expertiseOffers/{offer_id}"
    assert offer.WhichOneof("scope") == "ght"
    assert offer.ght == f"ghts/{ght_id}"
    assert list(offer.members) == [f"practitioners/{r}" for r in members]
    assert offer.backup_expert == f"practitioners/{backup}"
    assert offer.accepting
    assert await store.get_expertise_offer(offer_id) == offer

    regional = await store.create_expertise_offer(
        new_id("derm-region"),
        display_name="Dermatologie régionale",
        specialty=Specialty.SPECIALTY_DERMATOLOGY,
        region="84",
        members=[backup],
    )
    assert regional.WhichOneof("scope") == "region"
    assert regional.backup_expert == ""

    by_member, _ = await store.list_expertise_offers(500, member=backup)
    assert [o.offer_id for o in by_member] == sorted([regional.offer_id])
    by_ght, _ = await store.list_expertise_offers(500, ght=ght_id)
    assert [o.offer_id for o in by_ght] == [offer_id]
    by_region, _ = await store.list_expertise_offers(
        500, region="84", specialty=Specialty.SPECIALTY_DERMATOLOGY
    )
    assert regional.offer_id in {o.offer_id for o in by_region}
    assert offer_id not in {o.offer_id for o in by_region}
    cardio, _ = await store.list_expertise_offers(500, specialty=Specialty.SPECIALTY_CARDIOLOGY, ght=ght_id)
    assert cardio == []
    assert await store.get_expertise_offer("no-such-offer") is None


async def test_expertise_offer_refusals(store: DirectoryStore) -> None:
    place = await make_establishment(store, None)
    expert = await make_practitioner(store, [place])
    nurse = await make_practitioner(store, [place], Profession.PROFESSION_NURSE, Specialty.SPECIALTY_NONE)
    existing = await store.create_expertise_offer(
        new_id("offer"),
        display_name="Existante",
        specialty=Specialty.SPECIALTY_DERMATOLOGY,
        region="84",
        members=[expert],
    )
    cases: list[tuple[dict[str, object], type[DomainError], str]] = [
        ({"members": [expert, new_rpps()]}, FailedPrecondition, "UNKNOWN_PRACTITIONER"),
        ({"backup_rpps": new_rpps()}, FailedPrecondition, "UNKNOWN_PRACTITIONER"),
        ({"members": [nurse]}, FailedPrecondition, "EXPERT_NOT_MEDICAL"),
        ({"backup_rpps": nurse}, FailedPrecondition, "EXPERT_NOT_MEDICAL"),
        ({"region": None, "ght": "ght-nowhere"}, FailedPrecondition, "UNKNOWN_GHT"),
        ({"region": "99"}, FailedPrecondition, "UNKNOWN_REGION"),
        ({"ght": "ght-nowhere"}, InvalidArgument, "INVALID_ARGUMENT"),
        ({"offer_id": existing.offer_id}, AlreadyExists, "EXPERTISE_OFFER_EXISTS"),
    ]
    for overrides, error, expected in cases:
        values: dict[str, object] = {
            "offer_id": new_id("offer"),
            "region": "84",
            "ght": None,
            "members": [expert],
            "backup_rpps": None,
            **overrides,
        }
        with pytest.raises(error) as excinfo:
            await store.create_expertise_offer(
                str(values["offer_id"]),
                display_name="Refusée",
                specialty=Specialty.SPECIALTY_DERMATOLOGY,
                ght=values["ght"],  # type: ignore[arg-type]
                region=values["region"],  # type: ignore[arg-type]
                members=values["members"],  # type: ignore[arg-type]
                backup_rpps=values["backup_rpps"],  # type: ignore[arg-type]
            )
        assert excinfo.value.reason == expected, overrides
        if expected != "EXPERTISE_OFFER_EXISTS":
            assert await store.get_expertise_offer(str(values["offer_id"])) is None


# --- Patients ----------------------------------------------------------------------------------------------


async def test_create_patient_is_idempotent_on_the_ins(store: DirectoryStore) -> None:
    matricule = new_nir()
    first = await store.create_patient(
        matricule=matricule,
        oid=TEST_NIR_OID,
        birth_family_name="ESSAI",
        birth_given_names="MARIE LOUISE",
        birth_date=date(1985, 3, 2),
        sex=Sex.SEX_FEMALE,
        birth_place_code="42218",
        identity_status=Status.IDENTITY_STATUS_QUALIFIED,
    )
    assert first.created
    assert first.traits_match
    assert first.patient.name.startswith("patients/")
    assert matricule not in first.patient.name
    again = await store.create_patient(
        matricule=matricule,
        oid=TEST_NIR_OID,
        birth_family_name="ESSAI",
        birth_given_names="MARIE LOUISE",
        birth_date=date(1985, 3, 2),
        sex=Sex.SEX_FEMALE,
        birth_place_code="42218",
        identity_status=Status.IDENTITY_STATUS_PROVISIONAL,
    )
    assert (again.created, again.traits_match) == (False, True)
    assert again.patient == first.patient
    other_traits = await store.create_patient(
        matricule=matricule,
        oid=TEST_NIR_OID,
        birth_family_name="AUTRE",
        birth_given_names="MARIE LOUISE",
        birth_date=date(1985, 3, 2),
        sex=Sex.SEX_FEMALE,
        birth_place_code="42218",
        identity_status=Status.IDENTITY_STATUS_QUALIFIED,
    )
    assert (other_traits.created, other_traits.traits_match) == (False, False)
    assert other_traits.patient.ins.birth_family_name == "ESSAI"
    # Same matricule in another INS domain (NIR vs test NIR) is another identity.
    other_domain = await store.create_patient(
        matricule=matricule,
        oid="1.2.250.1.213.1.4.8",
        birth_family_name="ESSAI",
        birth_given_names="MARIE LOUISE",
        birth_date=date(1985, 3, 2),
        sex=Sex.SEX_FEMALE,
        birth_place_code="42218",
        identity_status=Status.IDENTITY_STATUS_QUALIFIED,
    )
    assert other_domain.created
    assert other_domain.patient.name != first.patient.name
    with pytest.raises(FailedPrecondition) as ambiguous:
        await store.resolve_by_matricule(matricule)
    assert ambiguous.value.reason == "AMBIGUOUS_MATRICULE"
    resolved = await store.resolve_by_matricule(matricule, TEST_NIR_OID)
    assert resolved is not None
    assert resolved.name == first.patient.name


async def test_matricule_is_shared_only_for_a_qualified_identity(store: DirectoryStore) -> None:
    matricule = new_nir()
    patient = await make_patient(store, Status.IDENTITY_STATUS_VALIDATED, matricule)
    assert patient.ins.matricule == ""
    assert (patient.ins.oid, patient.ins.birth_family_name, patient.ins.birth_place_code) == (
        TEST_NIR_OID,
        "ESSAI",
        "42218",
    )
    assert (patient.ins.birth_date.year, patient.ins.birth_date.month, patient.ins.birth_date.day) == (
        1985,
        3,
        2,
    )
    assert patient.ins.sex == Sex.SEX_FEMALE
    patient_id = uuid.UUID(patient.name.removeprefix("patients/"))
    qualified = await store.update_patient_status(patient_id, Status.IDENTITY_STATUS_QUALIFIED)
    assert qualified is not None
    assert (qualified.ins.matricule, qualified.identity_status) == (
        matricule,
        Status.IDENTITY_STATUS_QUALIFIED,
    )
    fetched = await store.get_patient(patient_id)
    assert fetched is not None
    assert fetched.ins.matricule == matricule
    assert await store.update_patient_status(uuid.uuid4(), Status.IDENTITY_STATUS_QUALIFIED) is None
    assert await store.get_patient(uuid.uuid4()) is None


async def test_a_matricule_with_a_wrong_key_is_refused_by_the_database(store: DirectoryStore) -> None:
    good = new_nir()
    bad = good[:13] + f"{(int(good[13:]) % 97) + 1:02d}"
    # Born in Ajaccio: the key counts 2A as 19; one computed as if 2A were 20 is refused.
    corsica_first13 = "28503" + "2A004" + f"{secrets.randbelow(1000):03d}"
    unsubstituted = corsica_first13 + f"{97 - int(corsica_first13.replace('2A', '20')) % 97:02d}"
    for matricule in (bad, unsubstituted):
        with pytest.raises(InvalidArgument) as excinfo:
            await make_patient(store, matricule=matricule)
        assert excinfo.value.violations[0].field == "ins.matricule"
    corsican = await make_patient(
        store, matricule=corsica_first13 + nir_key(corsica_first13), birth_place_code="2A004"
    )
    assert corsican.ins.matricule[5:7] == "2A"


async def test_local_identifiers_link_resolve_and_conflict(store: DirectoryStore) -> None:
    finess = await make_establishment(store, None)
    other_finess = await make_establishment(store, None)
    patient = await make_patient(store, local_identifier=(finess, "IPP-1"))
    patient_id = uuid.UUID(patient.name.removeprefix("patients/"))
    assert [(li.establishment, li.ipp) for li in patient.local_identifiers] == [
        (f"establishments/{finess}", "IPP-1")
    ]

    linked = await store.link_local_identifier(patient_id, other_finess, "X-77")
    assert linked is not None
    assert len(linked.local_identifiers) == 2
    assert linked.update_time.ToDatetime() > linked.create_time.ToDatetime()
    again = await store.link_local_identifier(patient_id, other_finess, "X-77")
    assert again is not None
    assert again.local_identifiers == linked.local_identifiers

    resolved = await store.resolve_by_local_identifier(other_finess, "X-77")
    assert resolved is not None
    assert resolved.name == patient.name
    assert await store.resolve_by_local_identifier(other_finess, "IPP-1") is None

    someone_else = await make_patient(store)
    someone_else_id = uuid.UUID(someone_else.name.removeprefix("patients/"))
    with pytest.raises(AlreadyExists) as in_use:
        await store.link_local_identifier(someone_else_id, finess, "IPP-1")
    assert in_use.value.reason == "LOCAL_IDENTIFIER_IN_USE"
    with pytest.raises(AlreadyExists) as second_ipp:
        await store.link_local_identifier(patient_id, finess, "IPP-2")
    assert second_ipp.value.reason == "PATIENT_HAS_LOCAL_IDENTIFIER"
    with pytest.raises(FailedPrecondition) as unknown_place:
        await store.link_local_identifier(patient_id, new_finess(), "IPP-3")
    assert unknown_place.value.reason == "UNKNOWN_ESTABLISHMENT"
    assert await store.link_local_identifier(uuid.uuid4(), finess, "IPP-4") is None

    # Creating a patient whose IPP is taken creates nothing.
    matricule = new_nir()
    with pytest.raises(AlreadyExists):
        await make_patient(store, matricule=matricule, local_identifier=(finess, "IPP-1"))
    assert await store.resolve_by_matricule(matricule) is None


async def test_list_patients_of_an_establishment(store: DirectoryStore) -> None:
    finess = await make_establishment(store, None)
    names = sorted(
        [(await make_patient(store, local_identifier=(finess, f"P-{i}"))).name for i in range(3)],
        key=lambda name: uuid.UUID(name.removeprefix("patients/")),
    )
    await make_patient(store)  # known elsewhere only
    page, after = await store.list_patients(2, finess=finess)
    rest, last = await store.list_patients(2, after, finess=finess)
    assert last is None
    assert [p.name for p in page + rest] == names


# --- Idempotency -------------------------------------------------------------------------------------------


async def test_a_rolled_back_write_records_no_response(store: DirectoryStore) -> None:
    call = Call(request_id=str(uuid.uuid4()), method="CreateGht", actor="tests", digest="d")
    ght_id = new_id("ght-test")

    async def fail_before_commit() -> None:
        async with store.transaction() as tx:
            await store.create_ght(ght_id, display_name="Annulé", region="84", tx=tx)
            await LEDGER.record(tx, call, response=b"never")
            raise RuntimeError("the servicer failed before commit")

    with pytest.raises(RuntimeError, match="before commit"):
        await fail_before_commit()
    async with store.transaction() as tx:
        assert await LEDGER.find(tx, call) is None
    assert await store.get_ght(ght_id) is None


async def test_a_refusal_in_a_transaction_keeps_it_usable(store: DirectoryStore) -> None:
    ght_id = await make_ght(store)
    call = Call(request_id=str(uuid.uuid4()), method="CreateGht", actor="tests", digest="d")
    async with store.transaction() as tx:
        with pytest.raises(AlreadyExists):
            await store.create_ght(ght_id, display_name="Doublon", region="84", tx=tx)
        other = await store.create_ght(new_id("ght-test"), display_name="Autre", region="84", tx=tx)
        await LEDGER.record(tx, call, response=other)
    async with store.transaction() as tx:
        cached = await LEDGER.find(tx, call)
    assert cached is not None and cached.response is not None
    assert directory_pb2.Ght.FromString(cached.response) == other


# --- Demo seed ---------------------------------------------------------------------------------------------

COUNTS = """
SELECT (SELECT count(*) FROM directory.ghts) AS ghts,
       (SELECT count(*) FROM directory.establishments) AS establishments,
       (SELECT count(*) FROM directory.practitioners) AS practitioners,
       (SELECT count(*) FROM directory.practice_places) AS practice_places,
       (SELECT count(*) FROM directory.expertise_offers) AS offers,
       (SELECT count(*) FROM directory.expertise_offer_members) AS members,
       (SELECT count(*) FROM directory.patients) AS patients,
       (SELECT count(*) FROM directory.patient_local_ids) AS local_ids
"""


@pytest.fixture
async def fresh_pool(postgres: PostgresHandle) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new, migrated database: the seed test must start from an empty directory."""
    created = await asyncpg.create_pool(await create_migrated_database(postgres), min_size=1, max_size=2)
    try:
        yield created
    finally:
        await created.close()


async def test_seed_runs_once(fresh_pool: asyncpg.Pool) -> None:
    assert await seed_demo(fresh_pool) is True
    counts = dict(await fresh_pool.fetchrow(COUNTS))
    assert counts == {
        "ghts": len(demo.DEMO_GHTS),
        "establishments": len(demo.DEMO_ESTABLISHMENTS),
        "practitioners": len(demo.DEMO_PRACTITIONERS),
        "practice_places": sum(len(p.practice_places) for p in demo.DEMO_PRACTITIONERS),
        "offers": len(demo.DEMO_EXPERTISE_OFFERS),
        "members": sum(len(o.members) for o in demo.DEMO_EXPERTISE_OFFERS),
        "patients": len(demo.DEMO_PATIENTS),
        "local_ids": sum(len(p.local_identifiers) for p in demo.DEMO_PATIENTS),
    }
    assert await seed_demo(fresh_pool) is False
    assert dict(await fresh_pool.fetchrow(COUNTS)) == counts

    store = DirectoryStore(fresh_pool)
    ght = await store.get_ght("ght-loire")
    assert ght is not None
    assert ght.support_establishment == f"establishments/{demo.CH_FOREZ}"
    reunion = await store.get_establishment(demo.CH_SUD_SAUVAGE)
    assert reunion is not None
    assert (reunion.overseas, reunion.time_zone, reunion.ght) == (
        True,
        "Indian/Reunion",
        "",
    )
    gp = await store.get_practitioner("10000000101")
    assert gp is not None
    assert gp.specialty == Specialty.SPECIALTY_GENERAL_MEDICINE
    loire, _ = await store.list_practitioners(500, ght="ght-loire")
    assert "10000000101" in {p.rpps for p in loire}
    for patient in demo.DEMO_PATIENTS:
        stored = await store.get_patient(patient.patient_id)
        assert stored is not None
        qualified = patient.identity_status == "IDENTITY_STATUS_QUALIFIED"
        assert stored.ins.matricule == (patient.matricule if qualified else "")
        assert len(stored.local_identifiers) == len(patient.local_identifiers)
