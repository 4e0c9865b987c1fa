"""The directory service over real gRPC with mTLS: reference data, pagination and filters, idempotent
writes, patients visible by GHT, INS rules."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import date_pb2
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.type.v1 import practice_pb2

from services.directory.demo import DEMO_PATIENTS, DEMO_PRACTITIONERS
from services.directory.identifiers import nir_key
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import DAUPHINE, LOIRE, REUNION, bearer, establishment_channel, request_id
from tests.support.calls import call, details

GP_LOIRE = "10000000101"
QUALIFIED_LOIRE = DEMO_PATIENTS[0]  # qualified, known at 420000017 and 420000033 (GHT Loire)
VALIDATED_DAUPHINE = DEMO_PATIENTS[2]  # validated (not qualified), born in Corse-du-Sud, known at 380000024


@pytest.fixture
async def loire(pki: DevPki, directory_address: str) -> directory_pb2_grpc.DirectoryServiceStub:
    return directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))


@pytest.fixture
async def dauphine(pki: DevPki, directory_address: str) -> directory_pb2_grpc.DirectoryServiceStub:
    return directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, DAUPHINE))


@pytest.fixture
def gp(mint: Minter) -> tuple[tuple[str, str], ...]:
    return bearer(mint(rpps=GP_LOIRE))


@pytest.fixture
def operator(mint: Minter) -> tuple[tuple[str, str], ...]:
    return bearer(mint(staff="ops-1", roles=["hub_operator"]))


# --- reference data ------------------------------------------------------------------------------------


async def test_the_eighteen_regions_with_their_time_zones(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    reply = await loire.ListRegions(directory_pb2.ListRegionsRequest(), metadata=gp)
    assert len(reply.regions) == 18 and not reply.next_page_token
    by_code = {r.code: r for r in reply.regions}
    assert by_code["84"].time_zone == "Europe/Paris" and not by_code["84"].overseas
    assert by_code["04"].time_zone == "Indian/Reunion" and by_code["04"].overseas
    assert by_code["03"].time_zone == "America/Cayenne"
    assert (
        await loire.GetRegion(directory_pb2.GetRegionRequest(name="regions/06"), metadata=gp)
    ).region.time_zone == "Indian/Mayotte"


async def test_paging_through_practitioners_returns_each_once(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await loire.ListPractitioners(
            directory_pb2.ListPractitionersRequest(page_size=10, page_token=token), metadata=gp
        )
        assert len(reply.practitioners) <= 10
        seen += [p.rpps for p in reply.practitioners]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= len(DEMO_PRACTITIONERS)
    assert pages >= 6
    practitioner = (
        await loire.GetPractitioner(
            directory_pb2.GetPractitionerRequest(name=f"practitioners/{GP_LOIRE}"), metadata=gp
        )
    ).practitioner
    assert practitioner.national_id == f"8{GP_LOIRE}"
    assert practitioner.practice_places[0].time_zone == "Europe/Paris"


async def test_filters_by_specialty_ght_region_and_establishment(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    derm = await loire.ListPractitioners(
        directory_pb2.ListPractitionersRequest(specialty=practice_pb2.SPECIALTY_DERMATOLOGY), metadata=gp
    )
    assert derm.practitioners and all(
        p.specialty == practice_pb2.SPECIALTY_DERMATOLOGY for p in derm.practitioners
    )
    nurses_in_reunion = await loire.ListPractitioners(
        directory_pb2.ListPractitionersRequest(profession=practice_pb2.PROFESSION_NURSE, region="regions/04"),
        metadata=gp,
    )
    assert [p.practice_places[0].establishment for p in nurses_in_reunion.practitioners] == [
        f"establishments/{REUNION}"
    ]
    loire_sites = await loire.ListEstablishments(
        directory_pb2.ListEstablishmentsRequest(ght="ghts/ght-loire"), metadata=gp
    )
    assert {e.ght for e in loire_sites.establishments} == {"ghts/ght-loire"} and len(
        loire_sites.establishments
    ) == 4
    overseas = await loire.ListEstablishments(
        directory_pb2.ListEstablishmentsRequest(region="regions/04"), metadata=gp
    )
    assert [(e.finess, e.time_zone, e.overseas) for e in overseas.establishments] == [
        (REUNION, "Indian/Reunion", True)
    ]
    pools = await loire.ListExpertiseOffers(
        directory_pb2.ListExpertiseOffersRequest(specialty=practice_pb2.SPECIALTY_DERMATOLOGY), metadata=gp
    )
    scopes = {o.WhichOneof("scope") for o in pools.expertise_offers}
    assert scopes == {"ght", "region"}


async def test_a_page_token_replayed_with_other_filters_is_refused(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    first = await loire.ListPractitioners(directory_pb2.ListPractitionersRequest(page_size=5), metadata=gp)
    error = await call(
        loire.ListPractitioners(
            directory_pb2.ListPractitionersRequest(
                page_size=5, page_token=first.next_page_token, region="regions/84"
            ),
            metadata=gp,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["page_token"]


async def test_creating_an_establishment_is_idempotent_on_request_id(
    loire: directory_pb2_grpc.DirectoryServiceStub, operator: tuple[tuple[str, str], ...]
) -> None:
    rid = request_id()
    request = directory_pb2.CreateEstablishmentRequest(
        request_id=rid,
        establishment=directory_pb2.EstablishmentInput(
            finess="420007777",
            display_name="Centre de santé du Pilat",
            kind=2,
            ght="ghts/ght-loire",
            region="regions/84",
            time_zone="Europe/Paris",
        ),
    )
    first = await loire.CreateEstablishment(request, metadata=operator)
    again = await loire.CreateEstablishment(request, metadata=operator)
    assert again == first and first.establishment.name == "establishments/420007777"
    request.request_id = request_id()
    error = await call(loire.CreateEstablishment(request, metadata=operator))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)[0].reason == "ESTABLISHMENT_EXISTS"  # type: ignore[union-attr]
    renamed = await loire.UpdateEstablishment(
        directory_pb2.UpdateEstablishmentRequest(
            request_id=request_id(),
            name="establishments/420007777",
            establishment=directory_pb2.EstablishmentPatch(display_name="Maison de santé du Pilat"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=operator,
    )
    assert renamed.establishment.display_name == "Maison de santé du Pilat"
    assert renamed.establishment.ght == "ghts/ght-loire"


async def test_a_practitioner_is_created_and_updated_by_a_hub_operator(
    loire: directory_pb2_grpc.DirectoryServiceStub, operator: tuple[tuple[str, str], ...]
) -> None:
    created = await loire.CreatePractitioner(
        directory_pb2.CreatePractitionerRequest(
            request_id=request_id(),
            practitioner=directory_pb2.PractitionerInput(
                rpps="19999999901",
                family_name="Essai",
                given_name="Paule",
                profession=practice_pb2.PROFESSION_PHYSICIAN,
                specialty=practice_pb2.SPECIALTY_RHEUMATOLOGY,
                sector=practice_pb2.CONVENTION_SECTOR_1,
                active=True,
                practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{LOIRE}")],
            ),
        ),
        metadata=operator,
    )
    assert created.practitioner.name == "practitioners/19999999901"
    moved = await loire.UpdatePractitioner(
        directory_pb2.UpdatePractitionerRequest(
            request_id=request_id(),
            name="practitioners/19999999901",
            practitioner=directory_pb2.PractitionerPatch(
                practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{REUNION}")]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["practice_places"]),
        ),
        metadata=operator,
    )
    assert [(p.establishment, p.time_zone) for p in moved.practitioner.practice_places] == [
        (f"establishments/{REUNION}", "Indian/Reunion")
    ]


# --- patients ------------------------------------------------------------------------------------------


async def test_a_patient_is_visible_in_its_ght_with_the_matricule_only_when_qualified(
    loire: directory_pb2_grpc.DirectoryServiceStub,
    dauphine: directory_pb2_grpc.DirectoryServiceStub,
    mint: Minter,
) -> None:
    name = f"patients/{QUALIFIED_LOIRE.patient_id}"
    patient = (
        await loire.GetPatient(
            directory_pb2.GetPatientRequest(name=name), metadata=bearer(mint(rpps=GP_LOIRE))
        )
    ).patient
    assert patient.ins.matricule == QUALIFIED_LOIRE.matricule
    assert patient.identity_status == directory_pb2.IDENTITY_STATUS_QUALIFIED
    validated = (
        await dauphine.GetPatient(
            directory_pb2.GetPatientRequest(name=f"patients/{VALIDATED_DAUPHINE.patient_id}"),
            metadata=bearer(mint(rpps="10000000501")),
        )
    ).patient
    assert validated.ins.matricule == "" and validated.ins.birth_place_code == "2A004"


async def test_another_ght_cannot_tell_a_hidden_patient_from_a_missing_one(
    dauphine: directory_pb2_grpc.DirectoryServiceStub, mint: Minter, operator: tuple[tuple[str, str], ...]
) -> None:
    token = bearer(mint(rpps="10000000501"))
    hidden = await call(
        dauphine.GetPatient(
            directory_pb2.GetPatientRequest(name=f"patients/{QUALIFIED_LOIRE.patient_id}"), metadata=token
        )
    )
    missing = await call(
        dauphine.GetPatient(
            directory_pb2.GetPatientRequest(name="patients/00000000-0000-4000-8000-000000000000"),
            metadata=token,
        )
    )
    assert hidden.code() == missing.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(hidden)[0].reason == details(missing)[0].reason == "PATIENT_NOT_VISIBLE"  # type: ignore[union-attr]
    as_operator = await call(
        dauphine.GetPatient(
            directory_pb2.GetPatientRequest(name="patients/00000000-0000-4000-8000-000000000000"),
            metadata=operator,
        )
    )
    assert as_operator.code() == grpc.StatusCode.NOT_FOUND


async def test_listing_patients_of_another_ght_is_refused(
    dauphine: directory_pb2_grpc.DirectoryServiceStub, mint: Minter
) -> None:
    token = bearer(mint(rpps="10000000501"))
    mine = await dauphine.ListPatients(
        directory_pb2.ListPatientsRequest(establishment=f"establishments/{DAUPHINE}"), metadata=token
    )
    assert {p.name for p in mine.patients} >= {f"patients/{VALIDATED_DAUPHINE.patient_id}"}
    error = await call(
        dauphine.ListPatients(
            directory_pb2.ListPatientsRequest(establishment=f"establishments/{LOIRE}"), metadata=token
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def _nir(first13: str) -> str:
    return first13 + nir_key(first13)


def _ins(matricule: str) -> directory_pb2.InsIdentityInput:
    return directory_pb2.InsIdentityInput(
        matricule=matricule,
        oid="1.2.250.1.213.1.4.10",
        birth_family_name="ESSAI",
        birth_given_names="ALICE",
        birth_date=date_pb2.Date(year=1990, month=4, day=12),
        sex=directory_pb2.SEX_FEMALE,
        birth_place_code="42218",
    )


async def test_creating_a_patient_is_idempotent_on_the_ins_and_resolvable_by_ipp(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    matricule = _nir("2900442218555")
    local = directory_pb2.LocalIdentifier(establishment=f"establishments/{LOIRE}", ipp="T-0001")
    created = await loire.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=_ins(matricule),
            identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
            local_identifier=local,
        ),
        metadata=gp,
    )
    again = await loire.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=_ins(matricule),
            identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
        ),
        metadata=gp,
    )
    assert again.patient.name == created.patient.name
    resolved = await loire.ResolvePatient(
        directory_pb2.ResolvePatientRequest(local_identifier=local), metadata=gp
    )
    assert resolved.patient.name == created.patient.name
    by_ins = await loire.ResolvePatient(directory_pb2.ResolvePatientRequest(matricule=matricule), metadata=gp)
    assert by_ins.patient.name == created.patient.name


async def test_the_same_ins_with_other_traits_is_an_identity_vigilance_refusal(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    matricule = _nir("2900442218556")
    local = directory_pb2.LocalIdentifier(establishment=f"establishments/{LOIRE}", ipp="T-0002")
    await loire.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=_ins(matricule),
            identity_status=directory_pb2.IDENTITY_STATUS_VALIDATED,
            local_identifier=local,
        ),
        metadata=gp,
    )
    other = _ins(matricule)
    other.birth_given_names = "BRIGITTE"
    error = await call(
        loire.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(), ins=other, identity_status=directory_pb2.IDENTITY_STATUS_VALIDATED
            ),
            metadata=gp,
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "IDENTITY_TRAITS_MISMATCH"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("matricule", "fragment"),
    [
        ("290044221855500", "key"),  # wrong key
        ("1900999123456", "pattern"),  # 13 characters
        ("284072A00402300", "key"),  # Corsican NIR with a wrong key
    ],
)
async def test_a_bad_nir_is_invalid_argument_on_ins_matricule(
    matricule: str,
    fragment: str,
    loire: directory_pb2_grpc.DirectoryServiceStub,
    gp: tuple[tuple[str, str], ...],
) -> None:
    error = await call(
        loire.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(),
                ins=_ins(matricule),
                identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
            ),
            metadata=gp,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)[1]
    assert [f for f, _ in violations] == ["ins.matricule"]
    assert fragment in violations[0][1] or "regex" in violations[0][1]


async def test_a_valid_corsican_nir_is_accepted(
    loire: directory_pb2_grpc.DirectoryServiceStub, gp: tuple[tuple[str, str], ...]
) -> None:
    matricule = _nir("185072B033123")
    assert matricule[-2:] == f"{97 - int('1850718033123') % 97:02d}"
    ins = _ins(matricule)
    ins.birth_place_code = "2B033"
    ins.sex, ins.birth_date.year, ins.birth_date.month = directory_pb2.SEX_MALE, 1985, 7
    created = await loire.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=ins,
            identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
            local_identifier=directory_pb2.LocalIdentifier(
                establishment=f"establishments/{LOIRE}", ipp="T-2B"
            ),
        ),
        metadata=gp,
    )
    assert created.patient.ins.matricule == matricule
