"""The directory as an attacker inside the network sees it: a valid certificate and a valid practitioner token
of another GHT, of another region, or a token presented through an establishment where its holder does not
practise. Every patient RPC answers a hidden patient exactly as a missing one — code, message and details —
and registering or linking an INS known elsewhere tells nothing of the other GHT."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_status import rpc_status
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.directory.builders import Metadata, ipp, random_ins, register
from tests.support import DAUPHINE, LOIRE, REUNION, bearer, establishment_channel, request_id
from tests.support.calls import call, details

GP_LOIRE = "10000000101"  # practises at 420000025, GHT Loire
GP_DAUPHINE = "10000000501"  # practises at 380000032, GHT Alpes-Dauphiné
GP_REUNION = "10000001501"  # practises at 974000013, La Réunion, outside any GHT
Stub = directory_pb2_grpc.DirectoryServiceStub
QUALIFIED = directory_pb2.IDENTITY_STATUS_QUALIFIED
VALIDATED = directory_pb2.IDENTITY_STATUS_VALIDATED


@dataclass(frozen=True)
class Caller:
    stub: Stub
    metadata: Metadata
    finess: str


@pytest.fixture
def stub(pki: DevPki, directory_address: str) -> Callable[[str], Stub]:
    return lambda finess: Stub(establishment_channel(pki, directory_address, finess))


@pytest.fixture
async def loire(stub: Callable[[str], Stub], mint: Minter) -> Caller:
    return Caller(stub(LOIRE), bearer(mint(rpps=GP_LOIRE)), LOIRE)


@pytest.fixture
async def dauphine(stub: Callable[[str], Stub], mint: Minter) -> Caller:
    return Caller(stub(DAUPHINE), bearer(mint(rpps=GP_DAUPHINE)), DAUPHINE)


@pytest.fixture
async def operator(stub: Callable[[str], Stub], mint: Minter) -> Caller:
    return Caller(stub(LOIRE), bearer(mint(staff="ops-visibility", roles=["hub_operator"])), LOIRE)


ATTACKERS = ["another GHT", "another region", "a token through another establishment"]


@pytest.fixture(params=ATTACKERS)
async def attacker(request: pytest.FixtureRequest, stub: Callable[[str], Stub], mint: Minter) -> Caller:
    finess, rpps = {
        "another GHT": (DAUPHINE, GP_DAUPHINE),
        "another region": (REUNION, GP_REUNION),
        # A Dauphiné doctor's valid token, presented with GHT Loire's certificate.
        "a token through another establishment": (LOIRE, GP_DAUPHINE),
    }[request.param]
    return Caller(stub(finess), bearer(mint(rpps=rpps)), finess)


@dataclass(frozen=True)
class Registered:
    patient: directory_pb2.Patient
    ins: directory_pb2.InsIdentityInput
    ipp: str


@pytest.fixture
async def loire_patient(loire: Caller) -> Registered:
    """A patient known only at Loire's support establishment, registered by a Loire doctor."""
    ins = random_ins(family="CACHEE", given="MARIE")
    patient = await register(loire.stub, loire.metadata, LOIRE, ins)
    return Registered(patient, ins, patient.local_identifiers[0].ipp)


def _status(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, bytes]:
    """Everything a client can read of a refusal: code, message and the serialized google.rpc.Status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return error.code(), error.details() or "", status.SerializeToString()


async def _same_refusal(hidden: Awaitable[object], missing: Awaitable[object]) -> str:
    """Both calls are refused identically; the reason."""
    first, second = await call(hidden), await call(missing)
    assert _status(first) == _status(second)
    info = details(first)[0]
    assert info is not None
    return info.reason


def _random_name() -> str:
    return f"patients/{uuid.uuid4()}"


def _expected_reason(caller: Caller, otherwise: str) -> str:
    return "PRACTITIONER_NOT_AT_ESTABLISHMENT" if caller.finess == LOIRE else otherwise


# --- a hidden patient is a missing one ------------------------------------------------------------------


async def test_reading_or_updating_a_hidden_patient_is_answered_as_for_a_missing_one(
    attacker: Caller, loire_patient: Registered
) -> None:
    hidden, missing = loire_patient.patient.name, _random_name()
    reason = await _same_refusal(
        attacker.stub.GetPatient(directory_pb2.GetPatientRequest(name=hidden), metadata=attacker.metadata),
        attacker.stub.GetPatient(directory_pb2.GetPatientRequest(name=missing), metadata=attacker.metadata),
    )
    assert reason == _expected_reason(attacker, "PATIENT_NOT_VISIBLE")

    def update(name: str) -> Awaitable[object]:
        return attacker.stub.UpdatePatient(
            directory_pb2.UpdatePatientRequest(request_id=request_id(), name=name, identity_status=VALIDATED),
            metadata=attacker.metadata,
        )

    assert await _same_refusal(update(hidden), update(missing)) == reason


async def test_resolving_a_hidden_patient_is_answered_as_for_a_missing_one(
    attacker: Caller, loire_patient: Registered
) -> None:
    unknown_nir = random_ins().matricule

    def by_matricule(matricule: str) -> Awaitable[object]:
        return attacker.stub.ResolvePatient(
            directory_pb2.ResolvePatientRequest(matricule=matricule), metadata=attacker.metadata
        )

    reason = await _same_refusal(by_matricule(loire_patient.ins.matricule), by_matricule(unknown_nir))
    assert reason == _expected_reason(attacker, "PATIENT_NOT_VISIBLE")

    def by_ipp(value: str) -> Awaitable[object]:
        local = directory_pb2.LocalIdentifier(establishment=f"establishments/{LOIRE}", ipp=value)
        return attacker.stub.ResolvePatient(
            directory_pb2.ResolvePatientRequest(local_identifier=local), metadata=attacker.metadata
        )

    assert await _same_refusal(by_ipp(loire_patient.ipp), by_ipp(ipp())) == reason


async def test_linking_a_hidden_patient_is_answered_as_for_a_missing_one(
    attacker: Caller, loire_patient: Registered
) -> None:
    """Issue 9.1: knowing the opaque id is not enough to make another GHT's patient one's own."""

    def link(name: str, ins: directory_pb2.InsIdentityInput | None = None) -> Awaitable[object]:
        return attacker.stub.LinkLocalIdentifier(
            directory_pb2.LinkLocalIdentifierRequest(
                request_id=request_id(),
                name=name,
                establishment=f"establishments/{attacker.finess}",
                ipp=ipp(),
                ins=ins,
                identity_status=VALIDATED if ins is not None else 0,
            ),
            metadata=attacker.metadata,
        )

    hidden, missing = loire_patient.patient.name, _random_name()
    reason = await _same_refusal(link(hidden), link(missing))
    assert reason == _expected_reason(attacker, "PATIENT_NOT_VISIBLE")
    # The INS with one trait wrong proves nothing either.
    almost = directory_pb2.InsIdentityInput()
    almost.CopyFrom(loire_patient.ins)
    almost.birth_given_names = "MARIA"
    assert await _same_refusal(link(hidden, almost), link(missing, almost)) == reason
    # And the patient is still not the attacker's.
    error = await call(
        attacker.stub.GetPatient(directory_pb2.GetPatientRequest(name=hidden), metadata=attacker.metadata)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_listing_another_ghts_establishment_is_answered_as_for_an_unknown_one(
    attacker: Caller, loire_patient: Registered
) -> None:
    def patients_of(finess: str) -> Awaitable[object]:
        return attacker.stub.ListPatients(
            directory_pb2.ListPatientsRequest(establishment=f"establishments/{finess}"),
            metadata=attacker.metadata,
        )

    reason = await _same_refusal(patients_of(LOIRE), patients_of("010099999"))
    assert reason == _expected_reason(attacker, "ESTABLISHMENT_NOT_VISIBLE")


# --- registering and linking an identity known elsewhere ------------------------------------------------


def _as_sent(patient: directory_pb2.Patient) -> directory_pb2.Patient:
    """The answer with what necessarily differs between two registrations (id, IPP, instants) blanked."""
    shape = directory_pb2.Patient()
    shape.CopyFrom(patient)
    shape.name = "patients/*"
    for local in shape.local_identifiers:
        local.ipp = "*"
    assert shape.create_time == shape.update_time, "a registration is one instant"
    shape.ClearField("create_time")
    shape.ClearField("update_time")
    return shape


def _expected(ins: directory_pb2.InsIdentityInput, status: int, finess: str | None) -> directory_pb2.Patient:
    expected = directory_pb2.Patient(name="patients/*", identity_status=status)  # type: ignore[arg-type]
    expected.ins.matricule = ins.matricule if status == QUALIFIED else ""
    for field in ("oid", "birth_family_name", "birth_given_names", "sex", "birth_place_code"):
        setattr(expected.ins, field, getattr(ins, field))
    expected.ins.birth_date.CopyFrom(ins.birth_date)
    if finess is not None:
        expected.local_identifiers.add(establishment=f"establishments/{finess}", ipp="*")
    return expected


@pytest.mark.parametrize("with_ipp", [True, False], ids=["with an IPP", "without an IPP"])
async def test_registering_an_ins_known_in_another_ght_answers_as_a_new_one(
    loire: Caller, dauphine: Caller, with_ipp: bool
) -> None:
    """Issue 9.2: the same traits, other traits, or a new INS — three answers of one shape, made of what was
    sent (and the caller's own IPP), never IDENTITY_TRAITS_MISMATCH, never Loire's data."""
    same = await register(loire.stub, loire.metadata, LOIRE, random_ins(family="CACHEE", given="MARIE"))
    known = random_ins(family="CACHEE", given="MARIE")
    await register(loire.stub, loire.metadata, LOIRE, known)
    other_traits = directory_pb2.InsIdentityInput()
    other_traits.CopyFrom(known)
    other_traits.birth_given_names = "MARIE LOUISE"
    same_ins = directory_pb2.InsIdentityInput(
        matricule=same.ins.matricule,
        oid=same.ins.oid,
        birth_family_name=same.ins.birth_family_name,
        birth_given_names=same.ins.birth_given_names,
        birth_date=same.ins.birth_date,
        sex=same.ins.sex,
        birth_place_code=same.ins.birth_place_code,
    )
    answers = []
    for ins in (same_ins, other_traits, random_ins(family="CACHEE", given="MARIE")):
        local = (
            directory_pb2.LocalIdentifier(establishment=f"establishments/{DAUPHINE}", ipp=ipp())
            if with_ipp
            else None
        )
        reply = await dauphine.stub.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(), ins=ins, identity_status=VALIDATED, local_identifier=local
            ),
            metadata=dauphine.metadata,
        )
        assert _as_sent(reply.patient) == _expected(ins, VALIDATED, DAUPHINE if with_ipp else None)
        answers.append(reply.patient)
    # Same traits: the national INS's one record; other traits: a record of their own.
    assert answers[0].name == same.name
    assert len({a.name for a in answers}) == 3


async def test_an_identity_shared_by_two_ghts_shows_each_only_its_own(
    loire: Caller, dauphine: Caller, operator: Caller, loire_patient: Registered
) -> None:
    name = loire_patient.patient.name
    await dauphine.stub.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=loire_patient.ins,
            identity_status=VALIDATED,
            local_identifier=directory_pb2.LocalIdentifier(
                establishment=f"establishments/{DAUPHINE}", ipp=ipp()
            ),
        ),
        metadata=dauphine.metadata,
    )
    as_loire = (
        await loire.stub.GetPatient(directory_pb2.GetPatientRequest(name=name), metadata=loire.metadata)
    ).patient
    as_dauphine = (
        await dauphine.stub.GetPatient(directory_pb2.GetPatientRequest(name=name), metadata=dauphine.metadata)
    ).patient
    assert [li.establishment for li in as_loire.local_identifiers] == [f"establishments/{LOIRE}"]
    assert [li.establishment for li in as_dauphine.local_identifiers] == [f"establishments/{DAUPHINE}"]
    # Each GHT keeps the identity status it established; the matricule follows it.
    assert (as_loire.identity_status, as_loire.ins.matricule) == (QUALIFIED, loire_patient.ins.matricule)
    assert (as_dauphine.identity_status, as_dauphine.ins.matricule) == (VALIDATED, "")
    # Dauphiné knows the patient since its own registration, not since Loire's.
    assert as_dauphine.create_time.ToDatetime() > as_loire.create_time.ToDatetime()
    await dauphine.stub.UpdatePatient(
        directory_pb2.UpdatePatientRequest(
            request_id=request_id(), name=name, identity_status=directory_pb2.IDENTITY_STATUS_PROVISIONAL
        ),
        metadata=dauphine.metadata,
    )
    again = (
        await loire.stub.GetPatient(directory_pb2.GetPatientRequest(name=name), metadata=loire.metadata)
    ).patient
    assert again.identity_status == QUALIFIED and again.update_time == as_loire.update_time
    # The hub's operators see the record whole.
    whole = (
        await operator.stub.GetPatient(directory_pb2.GetPatientRequest(name=name), metadata=operator.metadata)
    ).patient
    assert {li.establishment for li in whole.local_identifiers} == {
        f"establishments/{LOIRE}",
        f"establishments/{DAUPHINE}",
    }


async def test_other_traits_in_another_ght_become_a_conflict_record_for_the_operators(
    loire: Caller, dauphine: Caller, operator: Caller, loire_patient: Registered
) -> None:
    typo = directory_pb2.InsIdentityInput()
    typo.CopyFrom(loire_patient.ins)
    typo.birth_family_name = "CACHE"
    created = (
        await dauphine.stub.CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(),
                ins=typo,
                identity_status=VALIDATED,
                local_identifier=directory_pb2.LocalIdentifier(
                    establishment=f"establishments/{DAUPHINE}", ipp=ipp()
                ),
            ),
            metadata=dauphine.metadata,
        )
    ).patient
    assert created.ins.birth_family_name == "CACHE" and not created.identity_conflict
    seen = (
        await operator.stub.GetPatient(
            directory_pb2.GetPatientRequest(name=created.name), metadata=operator.metadata
        )
    ).patient
    assert seen.identity_conflict == loire_patient.patient.name
    # Loire's record is untouched, and Loire resolves its INS to its own patient.
    resolved = await loire.stub.ResolvePatient(
        directory_pb2.ResolvePatientRequest(matricule=loire_patient.ins.matricule), metadata=loire.metadata
    )
    assert resolved.patient.name == loire_patient.patient.name
    assert resolved.patient.ins.birth_family_name == "CACHEE"
    # Within its own GHT, the same typo is still caught.
    error = await call(
        loire.stub.CreatePatient(
            directory_pb2.CreatePatientRequest(request_id=request_id(), ins=typo, identity_status=VALIDATED),
            metadata=loire.metadata,
        )
    )
    assert details(error)[0].reason == "IDENTITY_TRAITS_MISMATCH"  # type: ignore[union-attr]


async def test_presenting_the_full_ins_links_a_patient_and_answers_only_what_was_sent(
    loire: Caller, dauphine: Caller, loire_patient: Registered
) -> None:
    """Issue 9.1, the rightful way: the INS identity proves the patient, as a registration does."""
    reply = await dauphine.stub.LinkLocalIdentifier(
        directory_pb2.LinkLocalIdentifierRequest(
            request_id=request_id(),
            name=loire_patient.patient.name,
            establishment=f"establishments/{DAUPHINE}",
            ipp=ipp(),
            ins=loire_patient.ins,
            identity_status=VALIDATED,
        ),
        metadata=dauphine.metadata,
    )
    expected = _expected(loire_patient.ins, VALIDATED, DAUPHINE)
    assert _as_sent(reply.patient) == expected
    assert reply.patient.name == loire_patient.patient.name
    mine = await loire.stub.GetPatient(
        directory_pb2.GetPatientRequest(name=loire_patient.patient.name), metadata=loire.metadata
    )
    assert [li.establishment for li in mine.patient.local_identifiers] == [f"establishments/{LOIRE}"]


async def test_a_request_id_replayed_by_another_caller_never_returns_the_first_answer(
    loire: Caller, dauphine: Caller
) -> None:
    request = directory_pb2.CreatePatientRequest(
        request_id=request_id(), ins=random_ins(), identity_status=QUALIFIED
    )
    first = await loire.stub.CreatePatient(request, metadata=loire.metadata)
    assert (await loire.stub.CreatePatient(request, metadata=loire.metadata)) == first
    request.ins.CopyFrom(random_ins())
    error = await call(dauphine.stub.CreatePatient(request, metadata=dauphine.metadata))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]


# --- a token is bound to the establishment that presents it ----------------------------------------------


async def test_a_token_works_only_through_an_establishment_where_its_holder_practises(
    stub: Callable[[str], Stub], mint: Minter
) -> None:
    request = directory_pb2.ListRegionsRequest()
    # Through one of their practice places' GHT: accepted (the GP practises at 380000032, same GHT).
    assert (await stub(DAUPHINE).ListRegions(request, metadata=bearer(mint(rpps=GP_DAUPHINE)))).regions
    # Through another GHT's establishment, another region's, or one the directory does not know: refused.
    for finess in (LOIRE, REUNION):
        error = await call(stub(finess).ListRegions(request, metadata=bearer(mint(rpps=GP_DAUPHINE))))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert details(error)[0].reason == "PRACTITIONER_NOT_AT_ESTABLISHMENT"  # type: ignore[union-attr]
    # A practitioner unknown to the directory acts through no establishment.
    error = await call(stub(LOIRE).ListRegions(request, metadata=bearer(mint(rpps="19999999999"))))
    assert details(error)[0].reason == "PRACTITIONER_NOT_AT_ESTABLISHMENT"  # type: ignore[union-attr]
    # Staff tokens (no RPPS) are not bound to practice places.
    staff = bearer(mint(staff="ops-binding", roles=["hub_operator"]))
    assert (await stub(REUNION).ListRegions(request, metadata=staff)).regions
