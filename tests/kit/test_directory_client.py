"""The kit's directory client against the real directory: patients asked on behalf of a caller (hidden and
missing alike are None; their data never cached, a caller's own yes kept for that caller only), reference
data cached for a while (misses never), delegation honoured only from a component certificate, and the
token-binding rule."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.options.v1 import options_pb2
from parcours.type.v1 import practice_pb2

from services.kit.auth import ACTING_ESTABLISHMENT_HEADER, Principal
from services.kit.directory import DirectoryClient, practice_place
from services.kit.errors import NotFound, PermissionDenied
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.directory.builders import Metadata, ipp, register
from tests.support import DAUPHINE, LOIRE, bearer, component_channel, establishment_channel, request_id
from tests.support.calls import call, details

GP_LOIRE = "10000000101"
GP_DAUPHINE = "10000000501"


def _practitioner_at(finess: str, rpps: str) -> Principal:
    return Principal(
        establishment=f"establishments/{finess}",
        component="",
        practitioner=f"practitioners/{rpps}",
        subject=f"8{rpps}",
        profession="PROFESSION_PHYSICIAN",
        specialty="SPECIALTY_GENERAL_MEDICINE",
        roles=frozenset({options_pb2.ROLE_PRACTITIONER}),
    )


HUB = Principal(
    establishment="",
    component="workflows",
    practitioner="",
    subject="",
    profession=None,
    specialty=None,
    roles=frozenset({options_pb2.ROLE_HUB_SERVICE}),
)


@pytest.fixture
async def client(pki: DevPki, directory_address: str) -> DirectoryClient:
    return DirectoryClient(component_channel(pki, directory_address, "billing"), cache_seconds=60)


@pytest.fixture
async def directory(pki: DevPki, directory_address: str) -> directory_pb2_grpc.DirectoryServiceStub:
    return directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))


@pytest.fixture
def operator(mint: Minter) -> Metadata:
    return bearer(mint(staff="ops-kit-client", roles=["hub_operator"]))


async def test_a_patient_is_asked_for_the_caller_and_hidden_is_missing(
    client: DirectoryClient, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    patient = await register(directory, operator, LOIRE)
    loire, dauphine = _practitioner_at(LOIRE, GP_LOIRE), _practitioner_at(DAUPHINE, GP_DAUPHINE)
    seen = await client.patient(patient.name, loire)
    assert seen is not None and seen.name == patient.name
    missing = "patients/00000000-0000-4000-8000-000000000000"
    assert await client.patient(patient.name, dauphine) is None
    assert await client.patient(missing, dauphine) is None
    assert (await client.patient(patient.name, HUB)) is not None
    for name in (patient.name, missing):
        with pytest.raises(PermissionDenied) as refused:
            await client.require_patient(name, dauphine)
        assert (refused.value.reason, refused.value.message) == (
            "PATIENT_NOT_VISIBLE",
            "the patient is not known in the caller's GHT (or does not exist)",
        )
    with pytest.raises(NotFound):
        await client.require_patient(missing, HUB)
    # Never cached: the moment Dauphiné knows the patient, Dauphiné's callers see them.
    await _link_at_dauphine(directory, operator, patient.name)
    found = await client.patient(patient.name, dauphine)
    assert found is not None
    assert [li.establishment for li in found.local_identifiers] == [f"establishments/{DAUPHINE}"]


async def _link_at_dauphine(
    directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, patient: str
) -> None:
    await directory.LinkLocalIdentifier(
        directory_pb2.LinkLocalIdentifierRequest(
            request_id=request_id(), name=patient, establishment=f"establishments/{DAUPHINE}", ipp=ipp()
        ),
        metadata=operator,
    )


async def _reads_recorded(pool: asyncpg.Pool, patient: str) -> list[tuple[str, str, str]]:
    """The directory's audit of GetPatient for `patient`: (establishment, practitioner, outcome), in order."""
    rows = await pool.fetch(
        "SELECT establishment, practitioner, outcome FROM audit.events "
        "WHERE chain = 'directory' AND patient = $1 AND method LIKE '%/GetPatient' ORDER BY seq",
        patient,
    )
    return [(r["establishment"], r["practitioner"], r["outcome"]) for r in rows]


async def test_a_callers_visibility_is_kept_for_that_caller_only(
    pki: DevPki,
    directory_address: str,
    client: DirectoryClient,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    pool: asyncpg.Pool,
) -> None:
    patient = await register(directory, operator, LOIRE)
    loire = _practitioner_at(LOIRE, GP_LOIRE)
    colleague = _practitioner_at(LOIRE, "10000000201")
    dauphine = _practitioner_at(DAUPHINE, GP_DAUPHINE)
    loire_at = (f"establishments/{LOIRE}", loire.practitioner, "OK")

    await client.require_visible(patient.name, loire)
    await client.require_visible(patient.name, loire)
    # The second yes came from this caller's own first one: the directory recorded one read.
    assert await _reads_recorded(pool, patient.name) == [loire_at]

    # Nobody else is answered from it: a colleague at the same establishment is asked for (and recorded)...
    await client.require_visible(patient.name, colleague)
    assert (await _reads_recorded(pool, patient.name))[1:] == [
        (f"establishments/{LOIRE}", colleague.practitioner, "OK")
    ]
    # ...and another GHT's caller gets the one refusal, a hidden patient exactly like a missing one, every
    # time (a no is never kept).
    missing = "patients/00000000-0000-4000-8000-000000000000"
    for name in (patient.name, missing, patient.name):
        with pytest.raises(PermissionDenied) as refused:
            await client.require_visible(name, dauphine)
        assert (refused.value.reason, refused.value.message) == (
            "PATIENT_NOT_VISIBLE",
            "the patient is not known in the caller's GHT (or does not exist)",
        )
    refusals = [r for r in await _reads_recorded(pool, patient.name) if r[0] == f"establishments/{DAUPHINE}"]
    assert [r[2] for r in refusals] == ["PERMISSION_DENIED", "PERMISSION_DENIED"]
    with pytest.raises(NotFound):
        await client.require_visible(missing, HUB)

    # The moment Dauphiné knows the patient, Dauphiné's callers may act on them.
    await _link_at_dauphine(directory, operator, patient.name)
    await client.require_visible(patient.name, dauphine)

    # Without a cache, every call asks the directory.
    fresh = DirectoryClient(component_channel(pki, directory_address, "billing"), cache_seconds=0)
    before = len(await _reads_recorded(pool, patient.name))
    await fresh.require_visible(patient.name, loire)
    await fresh.require_visible(patient.name, loire)
    assert (await _reads_recorded(pool, patient.name))[before:] == [loire_at, loire_at]


async def test_a_delegated_read_is_audited_as_the_caller_it_was_made_for(
    client: DirectoryClient,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    pool: asyncpg.Pool,
) -> None:
    patient = await register(directory, operator, LOIRE)
    assert await client.patient(patient.name, _practitioner_at(DAUPHINE, GP_DAUPHINE)) is None
    row = await pool.fetchrow(
        "SELECT practitioner, establishment, roles, outcome, outcome_reason FROM audit.events "
        "WHERE chain = 'directory' AND patient = $1 AND method LIKE '%/GetPatient' ORDER BY seq DESC LIMIT 1",
        patient.name,
    )
    assert row is not None
    assert (row["practitioner"], row["establishment"]) == (
        f"practitioners/{GP_DAUPHINE}",
        f"establishments/{DAUPHINE}",
    )
    assert "ROLE_HUB_SERVICE" in list(row["roles"])
    assert (row["outcome"], row["outcome_reason"]) == ("PERMISSION_DENIED", "PATIENT_NOT_VISIBLE")


async def test_acting_metadata_is_honoured_only_from_a_component_certificate(
    pki: DevPki,
    directory_address: str,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
) -> None:
    patient = await register(directory, operator, LOIRE)
    request = directory_pb2.GetPatientRequest(name=patient.name)
    # A Dauphiné system claiming to act for Loire is still Dauphiné.
    dauphine = directory_pb2_grpc.DirectoryServiceStub(
        establishment_channel(pki, directory_address, DAUPHINE)
    )
    claimed = (*bearer(mint(rpps=GP_DAUPHINE)), (ACTING_ESTABLISHMENT_HEADER, f"establishments/{LOIRE}"))
    error = await call(dauphine.GetPatient(request, metadata=claimed))
    assert details(error)[0].reason == "PATIENT_NOT_VISIBLE"  # type: ignore[union-attr]
    # A component naming a caller is scoped like that caller; naming none, it is the hub.
    component = directory_pb2_grpc.DirectoryServiceStub(component_channel(pki, directory_address, "billing"))
    acting = ((ACTING_ESTABLISHMENT_HEADER, f"establishments/{DAUPHINE}"),)
    error = await call(component.GetPatient(request, metadata=acting))
    assert details(error)[0].reason == "PATIENT_NOT_VISIBLE"  # type: ignore[union-attr]
    assert (await component.GetPatient(request)).patient.name == patient.name
    malformed = ((ACTING_ESTABLISHMENT_HEADER, "LOIRE"),)
    error = await call(component.GetPatient(request, metadata=malformed))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(error)[0].reason == "DELEGATION_MALFORMED"  # type: ignore[union-attr]


async def test_reference_data_is_cached_and_misses_are_not(
    pki: DevPki,
    directory_address: str,
    client: DirectoryClient,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
) -> None:
    rpps = "39" + str(uuid.uuid4().int)[:9]
    name = f"practitioners/{rpps}"
    assert await client.practitioner(name) is None
    await directory.CreatePractitioner(
        directory_pb2.CreatePractitionerRequest(
            request_id=request_id(),
            practitioner=directory_pb2.PractitionerInput(
                rpps=rpps,
                family_name="Essai",
                given_name="Cache",
                profession=practice_pb2.PROFESSION_PHYSICIAN,
                specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE,
                sector=practice_pb2.CONVENTION_SECTOR_1,
                practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{LOIRE}")],
                active=True,
            ),
        ),
        metadata=operator,
    )
    # Not cached as missing: usable at once.
    found = await client.practitioner(name)
    assert found is not None
    acting = _practitioner_at(LOIRE, rpps)
    assert (await client.require_practice_place(acting)).name == f"establishments/{LOIRE}"
    assert await client.practice_place(_practitioner_at(DAUPHINE, rpps)) is None
    await directory.UpdatePractitioner(
        directory_pb2.UpdatePractitionerRequest(
            request_id=request_id(),
            name=name,
            practitioner=directory_pb2.PractitionerPatch(
                practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{DAUPHINE}")]
            ),
            update_mask={"paths": ["practice_places"]},
        ),
        metadata=operator,
    )
    # Found answers are kept for the cache's delay (the staleness the module documents)...
    assert await client.practice_place(acting) is not None
    # ...and a client without a cache sees the change at once.
    fresh = DirectoryClient(component_channel(pki, directory_address, "billing"), cache_seconds=0)
    assert await fresh.practice_place(acting) is None
    with pytest.raises(PermissionDenied) as refused:
        await fresh.require_practice_place(acting)
    assert refused.value.reason == "PRACTITIONER_NOT_AT_ESTABLISHMENT"


# --- the token-binding rule ---------------------------------------------------------------------------------


def _establishment(finess: str, ght: str = "") -> directory_pb2.Establishment:
    return directory_pb2.Establishment(name=f"establishments/{finess}", ght=f"ghts/{ght}" if ght else "")


def _practitioner(*places: str, active: bool = True) -> directory_pb2.Practitioner:
    return directory_pb2.Practitioner(
        name="practitioners/10000000101",
        active=active,
        practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{f}") for f in places],
    )


def test_a_practitioner_acts_through_their_practice_places_and_their_ghts() -> None:
    furane, forez = _establishment("420000025", "ght-loire"), _establishment("420000017", "ght-loire")
    belledonne, reunion = _establishment("380000024", "ght-alpes"), _establishment("974000013")
    gp = _practitioner("420000025")
    assert practice_place(gp, furane, [furane]) == furane
    # Through another establishment of the same GHT: they act from their practice place there.
    assert practice_place(gp, forez, [furane]) == furane
    assert practice_place(gp, belledonne, [furane]) is None
    # Outside any GHT, only the practice place itself.
    assert practice_place(_practitioner("974000013"), reunion, [reunion]) == reunion
    assert practice_place(_practitioner("420000025"), reunion, [furane]) is None
    assert practice_place(_practitioner("420000025", active=False), furane, [furane]) is None
