"""Billing as an attacker inside the network sees it: a practitioner or billing clerk of another GHT, of
another region, or a token presented through an establishment where its holder does not practise. A patient
they may not see is answered exactly as a missing one (and no quota counter speaks of it), and nobody but the
hub's workflows bills a line in another practitioner's name (issue 9.3)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
import pytest
from grpc_status import rpc_status
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.billing.builders import DERM, GP, gp, md, new_patient, paris, teleconsultation, teleexpertise
from tests.billing.conftest import PatientFactory, establishment_stub
from tests.conftest import Minter
from tests.directory.builders import ipp
from tests.support import DAUPHINE, LOIRE, REUNION, bearer, establishment_channel, request_id
from tests.support.calls import call, details

GP_DAUPHINE = "10000000501"  # GP, practises at 380000032 (GHT Alpes-Dauphiné)
GP_BELLEDONNE = "10000000801"  # GP, practises at 380000024 (GHT Alpes-Dauphiné)
DERM_DAUPHINE = "10000002101"  # dermatologist, practises at 380000024 (GHT Alpes-Dauphiné)
GP_REUNION = "10000001501"  # GP, practises at 974000013 (La Réunion, no GHT)
Stub = billing_pb2_grpc.BillingServiceStub
Metadata = tuple[tuple[str, str], ...]
AUGUST = {
    "start_date": {"year": 2025, "month": 8, "day": 1},
    "end_date": {"year": 2025, "month": 8, "day": 31},
}


@dataclass(frozen=True)
class Attacker:
    stub: Stub
    metadata: Metadata
    finess: str
    region: str
    rpps: str


ATTACKERS = ["another GHT", "another region", "a token through another establishment"]


@pytest.fixture(params=ATTACKERS)
async def attacker(
    request: pytest.FixtureRequest, pki: DevPki, billing_address: str, mint: Minter
) -> Attacker:
    finess, region, rpps = {
        "another GHT": (DAUPHINE, "84", GP_DAUPHINE),
        "another region": (REUNION, "04", GP_REUNION),
        # A Dauphiné doctor's valid token, presented with GHT Loire's certificate.
        "a token through another establishment": (LOIRE, "84", GP_DAUPHINE),
    }[request.param]
    return Attacker(
        establishment_stub(pki, billing_address, finess), bearer(mint(rpps=rpps)), finess, region, rpps
    )


def _record(act: billing_pb2.Act, patient: str) -> billing_pb2.RecordActRequest:
    return billing_pb2.RecordActRequest(
        request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act
    )


@pytest.fixture
async def loire_patient(hub: Stub, known_at: PatientFactory) -> str:
    """A patient known only at Loire, whose téléexpertises with the Loire dermatologist the hub recorded."""
    patient = await known_at(LOIRE)
    for day in ("04", "11", "18"):
        await hub.RecordAct(_record(teleexpertise(paris(f"2025-08-{day} 10:00")), patient))
    return patient


def _status(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, bytes]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    return error.code(), error.details() or "", status.SerializeToString()


async def _same_refusal(hidden: Awaitable[object], missing: Awaitable[object]) -> str:
    first, second = await call(hidden), await call(missing)
    assert _status(first) == _status(second)
    info = details(first)[0]
    assert info is not None
    return info.reason


def _reason(attacker: Attacker, otherwise: str) -> str:
    return "PRACTITIONER_NOT_AT_ESTABLISHMENT" if attacker.finess == LOIRE else otherwise


def _attackers_act(attacker: Attacker) -> billing_pb2.Act:
    """A téléexpertise the attacker asks of the Loire dermatologist, billed at the attacker's establishment:
    its quote would read the dermatologist's quota counter for the patient."""
    return teleexpertise(
        paris("2025-08-25 10:00"),
        md(DERM, p.SPECIALTY_DERMATOLOGY),
        gp(attacker.rpps),
        establishment=attacker.finess,
        region=attacker.region,
    )


async def test_quoting_or_recording_for_a_hidden_patient_is_answered_as_for_a_missing_one(
    attacker: Attacker, loire_patient: str
) -> None:
    act = _attackers_act(attacker)
    reason = await _same_refusal(
        attacker.stub.QuoteAct(
            billing_pb2.QuoteActRequest(act=act, patient=loire_patient), metadata=attacker.metadata
        ),
        attacker.stub.QuoteAct(
            billing_pb2.QuoteActRequest(act=act, patient=new_patient()), metadata=attacker.metadata
        ),
    )
    assert reason == _reason(attacker, "PATIENT_NOT_VISIBLE")
    assert (
        await _same_refusal(
            attacker.stub.RecordAct(_record(act, loire_patient), metadata=attacker.metadata),
            attacker.stub.RecordAct(_record(act, new_patient()), metadata=attacker.metadata),
        )
        == reason
    )


async def test_reading_a_hidden_patients_charges_is_answered_as_for_a_missing_one(
    attacker: Attacker, hub: Stub, loire_patient: str
) -> None:
    def charges_of(patient: str) -> Awaitable[billing_pb2.ListChargesResponse]:
        return attacker.stub.ListCharges(
            billing_pb2.ListChargesRequest(patient=patient, **AUGUST), metadata=attacker.metadata
        )

    if attacker.finess == LOIRE:
        assert await _same_refusal(charges_of(loire_patient), charges_of(new_patient())) == _reason(
            attacker, ""
        )
    else:
        assert (
            await charges_of(loire_patient)
            == await charges_of(new_patient())
            == billing_pb2.ListChargesResponse()
        )
    theirs = (await hub.ListCharges(billing_pb2.ListChargesRequest(patient=loire_patient, **AUGUST))).charges
    assert theirs
    reason = await _same_refusal(
        attacker.stub.GetCharge(
            billing_pb2.GetChargeRequest(name=theirs[0].name), metadata=attacker.metadata
        ),
        attacker.stub.GetCharge(
            billing_pb2.GetChargeRequest(name=f"charges/{uuid.uuid4()}"), metadata=attacker.metadata
        ),
    )
    assert reason == _reason(attacker, "CHARGE_NOT_VISIBLE")


async def test_another_ghts_billing_staff_see_nothing_of_the_patient(
    pki: DevPki, billing_address: str, hub: Stub, mint: Minter, loire_patient: str
) -> None:
    clerk = bearer(mint(staff="clerk-dauphine-attack", roles=["billing"]))
    dauphine = establishment_stub(pki, billing_address, DAUPHINE)
    theirs = (await hub.ListCharges(billing_pb2.ListChargesRequest(patient=loire_patient, **AUGUST))).charges

    def reverse(name: str) -> Awaitable[object]:
        return dauphine.ReverseCharge(
            billing_pb2.ReverseChargeRequest(
                request_id=request_id(), name=name, reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR
            ),
            metadata=clerk,
        )

    assert (
        await _same_refusal(reverse(theirs[0].name), reverse(f"charges/{uuid.uuid4()}"))
        == "CHARGE_NOT_VISIBLE"
    )
    listed = await dauphine.ListCharges(
        billing_pb2.ListChargesRequest(patient=loire_patient, **AUGUST), metadata=clerk
    )
    assert not listed.charges
    exported = await dauphine.ExportCharges(
        billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_CSV, **AUGUST), metadata=clerk
    )
    assert loire_patient.removeprefix("patients/").encode() not in exported.content
    act = teleconsultation(paris("2025-08-26 10:00"), gp(GP_BELLEDONNE), establishment=DAUPHINE)
    assert (
        await _same_refusal(
            dauphine.QuoteAct(billing_pb2.QuoteActRequest(act=act, patient=loire_patient), metadata=clerk),
            dauphine.QuoteAct(billing_pb2.QuoteActRequest(act=act, patient=new_patient()), metadata=clerk),
        )
        == "PATIENT_NOT_VISIBLE"
    )


# --- nobody bills a line in another practitioner's name ---------------------------------------------------


@pytest.fixture
async def shared_patient(pki: DevPki, directory_address: str, mint: Minter, known_at: PatientFactory) -> str:
    """A patient known at Loire and at Dauphiné's university hospital (both GHTs may see them)."""
    patient = await known_at(LOIRE)
    directory = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    await directory.LinkLocalIdentifier(
        directory_pb2.LinkLocalIdentifierRequest(
            request_id=request_id(), name=patient, establishment=f"establishments/{DAUPHINE}", ipp=ipp()
        ),
        metadata=bearer(mint(staff="ops-billing-attacks", roles=["hub_operator"])),
    )
    return patient


async def test_an_outsider_cannot_bill_rqd_in_another_doctors_name_nor_use_up_their_quota(
    pki: DevPki, billing_address: str, hub: Stub, mint: Minter, shared_patient: str, known_at: PatientFactory
) -> None:
    """The attack of issue 9.3: a doctor of another GHT records téléexpertises naming a Loire GP as the
    requester, to use up the GP's yearly RQD quota for the patient before the real téléexpertise is billed."""
    outsider = establishment_stub(pki, billing_address, DAUPHINE)
    token = bearer(mint(rpps=DERM_DAUPHINE, specialty="SPECIALTY_DERMATOLOGY"))
    for day in ("04", "05", "06", "07", "08"):
        forged = teleexpertise(
            paris(f"2025-09-{day} 10:00"),
            md(DERM_DAUPHINE, p.SPECIALTY_DERMATOLOGY),
            gp(GP),
            establishment=DAUPHINE,
        )
        error = await call(outsider.RecordAct(_record(forged, shared_patient), metadata=token))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert details(error)[0].reason == "LINE_OF_ANOTHER_PRACTITIONER"  # type: ignore[union-attr]
    # A patient the outsider's GHT does not know is refused before anything else.
    loire_only = await known_at(LOIRE)
    forged = teleexpertise(
        paris("2025-09-09 10:00"), md(DERM_DAUPHINE, p.SPECIALTY_DERMATOLOGY), gp(GP), establishment=DAUPHINE
    )
    error = await call(outsider.RecordAct(_record(forged, loire_only), metadata=token))
    assert details(error)[0].reason == "PATIENT_NOT_VISIBLE"  # type: ignore[union-attr]
    # The real téléexpertise, recorded by the hub's workflow, bills both lines: the GP's quota is whole.
    real = await hub.RecordAct(_record(teleexpertise(paris("2025-09-10 10:00")), shared_patient))
    assert sorted((c.code, c.practitioner, c.quota_slot) for c in real.charges) == [
        ("RQD", f"practitioners/{GP}", 1),
        ("TE2", f"practitioners/{DERM}", 1),
    ]


async def test_a_practitioner_bills_only_their_own_lines(
    pki: DevPki, billing_address: str, mint: Minter, shared_patient: str
) -> None:
    loire = establishment_stub(pki, billing_address, LOIRE)
    me = bearer(mint(rpps=GP))
    # The requesting GP may not bill the dermatologist's TE2: the hub's workflow records a téléexpertise.
    error = await call(
        loire.RecordAct(_record(teleexpertise(paris("2025-09-15 10:00")), shared_patient), metadata=me)
    )
    assert details(error)[0].reason == "LINE_OF_ANOTHER_PRACTITIONER"  # type: ignore[union-attr]
    # Their own téléconsultation, they may.
    mine = await loire.RecordAct(
        _record(teleconsultation(paris("2025-09-15 11:00")), shared_patient), metadata=me
    )
    assert [(c.code, c.practitioner) for c in mine.charges] == [("TCG", f"practitioners/{GP}")]


async def test_billing_staff_bill_only_their_establishments_practitioners(
    pki: DevPki, billing_address: str, mint: Minter, shared_patient: str
) -> None:
    dauphine = establishment_stub(pki, billing_address, DAUPHINE)
    clerk = bearer(mint(staff="clerk-dauphine-lines", roles=["billing"]))
    # A Loire GP's téléconsultation, billed at Dauphiné by Dauphiné's clerk: not theirs to bill.
    foreign = teleconsultation(paris("2025-09-16 10:00"), gp(GP), establishment=DAUPHINE)
    error = await call(dauphine.RecordAct(_record(foreign, shared_patient), metadata=clerk))
    assert details(error)[0].reason == "LINE_OF_ANOTHER_ESTABLISHMENT"  # type: ignore[union-attr]
    own = teleconsultation(paris("2025-09-16 11:00"), gp(GP_BELLEDONNE), establishment=DAUPHINE)
    recorded = await dauphine.RecordAct(_record(own, shared_patient), metadata=clerk)
    assert [(c.code, c.establishment) for c in recorded.charges] == [("TCG", f"establishments/{DAUPHINE}")]
