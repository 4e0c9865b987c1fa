"""Téléconseil personnalisé traced in the parcours (seed 001, CNOM 2016 proposal 7): the patient's doctor
records it through the hub, it is listed on the patient's care within the GHT, hidden from another GHT exactly
as a missing one is, and never billed (§7.1: billing refuses it and its ledger holds nothing)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.scheduling.helpers import PATIENT_LOIRE, Metadata, new_practitioner
from tests.support import DAUPHINE, LOIRE, bearer, component_channel, establishment_channel, request_id
from tests.support.calls import call, details

GP = "10000000101"  # a demo GP of GHT Loire, practising at CH des Monts du Forez


def advice(patient: str = PATIENT_LOIRE) -> s.TeleconseilInput:
    given = Timestamp()
    given.FromDatetime(datetime.now(UTC) - timedelta(hours=2))
    return s.TeleconseilInput(
        patient=patient,
        advice_time=given,
        channel=s.Teleconseil.CHANNEL_PHONE,
        summary="Conseil : poursuivre le traitement, reconsulter si la fièvre persiste au-delà de 48 h.",
    )


async def test_the_patients_doctor_records_a_teleconseil_listed_in_the_ght_and_never_billed(
    loire: scheduling_pb2_grpc.SchedulingServiceStub,
    scheduling_address: str,
    billing_address: str,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pki: DevPki,
    pool: asyncpg.Pool,
) -> None:
    doctor = bearer(mint(rpps=GP))
    request = s.RecordTeleconseilRequest(request_id=request_id(), teleconseil=advice())
    recorded = (await loire.RecordTeleconseil(request, metadata=doctor)).teleconseil
    assert recorded.name.startswith("teleconseils/")
    assert (recorded.patient, recorded.practitioner, recorded.establishment, recorded.ght) == (
        PATIENT_LOIRE,
        f"practitioners/{GP}",
        f"establishments/{LOIRE}",
        "ghts/ght-loire",
    )
    # A retry is the same téléconseil, recorded once.
    again = (await loire.RecordTeleconseil(request, metadata=doctor)).teleconseil
    assert again == recorded

    # Anyone of the GHT sees it on the patient's care: the doctor, the establishment's staff.
    front_desk = bearer(mint(staff="front-desk-forez"))
    listed = await loire.ListTeleconseils(
        s.ListTeleconseilsRequest(patient=PATIENT_LOIRE), metadata=front_desk
    )
    assert recorded in listed.teleconseils
    got = await loire.GetTeleconseil(s.GetTeleconseilRequest(name=recorded.name), metadata=doctor)
    assert got.teleconseil.summary.startswith("Conseil")

    # Another GHT: the téléconseil answers exactly as a missing one, the patient as an unknown one.
    dauphine = scheduling_pb2_grpc.SchedulingServiceStub(
        establishment_channel(pki, scheduling_address, DAUPHINE)
    )
    stranger = bearer(mint(staff="front-desk-dauphine"))
    hidden = await call(
        dauphine.GetTeleconseil(s.GetTeleconseilRequest(name=recorded.name), metadata=stranger)
    )
    missing = await call(
        dauphine.GetTeleconseil(
            s.GetTeleconseilRequest(name=f"teleconseils/{uuid.uuid4()}"), metadata=stranger
        )
    )
    assert (
        (hidden.code(), details(hidden)[0].reason)
        == (missing.code(), details(missing)[0].reason)
        == (
            grpc.StatusCode.PERMISSION_DENIED,
            "TELECONSEIL_NOT_VISIBLE",
        )
    )  # type: ignore[union-attr]
    listed_elsewhere = await call(
        dauphine.ListTeleconseils(s.ListTeleconseilsRequest(patient=PATIENT_LOIRE), metadata=stranger)
    )
    assert details(listed_elsewhere)[0].reason == "PATIENT_NOT_VISIBLE"  # type: ignore[union-attr]

    # Never billed (§7.1): billing refuses it as an act, and its ledger holds nothing for it.
    hub = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))
    act = billing_pb2.Act(
        type=billing_pb2.ACT_TYPE_TELECONSEIL,
        act_time=recorded.advice_time,
        establishment=recorded.establishment,
        region="regions/84",
        performer=billing_pb2.Participant(
            practitioner=recorded.practitioner,
            profession=p.PROFESSION_PHYSICIAN,
            specialty=p.SPECIALTY_GENERAL_MEDICINE,
            sector=p.CONVENTION_SECTOR_1,
        ),
        patient_age=78,
    )
    act_id = recorded.name.replace("teleconseils/", "teleconseil-")
    refused = await call(
        hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(), act_id=act_id, patient=PATIENT_LOIRE, act=act
            )
        )
    )
    assert (refused.code(), details(refused)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_A_BILLABLE_ACT",
    )  # type: ignore[union-attr]
    assert await pool.fetchval("SELECT count(*) FROM billing.acts WHERE act_id = $1", act_id) == 0

    # It is given by the patient's doctor: a nurse of the same place is refused.
    nurse = await new_practitioner(directory, operator, LOIRE, profession=p.PROFESSION_NURSE)
    error = await call(
        loire.RecordTeleconseil(
            s.RecordTeleconseilRequest(request_id=request_id(), teleconseil=advice()),
            metadata=bearer(mint(rpps=nurse, profession="PROFESSION_NURSE", specialty=None)),
        )
    )
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_A_MEDICAL_PROFESSIONAL",
    )  # type: ignore[union-attr]
    # Advice in the future is bad input, naming the field.
    future = advice()
    future.advice_time.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    error = await call(
        loire.RecordTeleconseil(
            s.RecordTeleconseilRequest(request_id=request_id(), teleconseil=future), metadata=doctor
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["teleconseil.advice_time"]
