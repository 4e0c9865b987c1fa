"""The Teleconsultation workflow end to end: bookings made over gRPC, the workflow started by the outbox relay
on a time-skipping Temporal test server, the real worker with its activities on PostgreSQL, the real billing
and directory services. Reminders, the join window, no-show, the consent rule, completion with the R.6316-4
items, billing (recorded or refused, the reason kept), the report, cancellation; and a recorded history
replayed."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
import temporalio.client
from parcours.billing.v1 import billing_pb2
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from services.devstack.postgres import PostgresHandle
from services.kit import search_attributes
from services.kit.cases import Relay
from services.kit.codec import Keyring, data_converter
from services.kit.pki import DevPki
from services.kit.server import Runtime
from services.kit.settings import TemporalSettings
from services.kit.temporal import connect_client
from services.scheduling.models import (
    RecordedAct,
    RecordParticipant,
    TeleconsultationOutcome,
    TeleconsultationRecord,
)
from tests.conftest import Minter
from tests.scheduling.conftest import create_database, scheduling_settings, start_scheduling
from tests.scheduling.helpers import (
    PATIENT_LOIRE,
    Metadata,
    Stub,
    add_rules,
    every_day,
    new_practitioner,
    new_schedule,
    stamp,
    when,
)
from tests.support import LOIRE, PAYLOAD_KEYS, bearer, component_channel, establishment_channel, request_id
from tests.support.calls import call, details
from workflows.teleconsultation.worker import teleconsultation_worker
from workflows.teleconsultation.workflows import TeleconsultationWorkflow

A = s.Appointment
TREATING_GP = "10000000101"  # a demo GP of GHT Loire: the patient's médecin traitant


def time_skipping_server() -> str:
    return shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")


@dataclass
class Stack:
    env: WorkflowEnvironment
    scheduling: Runtime
    stub: Stub
    pool: asyncpg.Pool


@pytest.fixture(scope="module")
async def stack(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
) -> AsyncIterator[Stack]:
    """Scheduling (on a database of its own) → outbox → time-skipping Temporal → the worker → billing."""
    name, url = await create_database(postgres, pool, "scheduling_workflow")
    own_pool = await asyncpg.create_pool(url, min_size=1, max_size=10, server_settings={"timezone": "UTC"})
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(),
        data_converter=data_converter(Keyring.parse(PAYLOAD_KEYS)),
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in search_attributes.ALL
                },
            )
        )
        address = env.client.service_client.config.target_host
        client = await connect_client(TemporalSettings(temporal_address=address, payload_keys=PAYLOAD_KEYS))
        settings = scheduling_settings(pki, url, directory_address, address)
        runtime = await start_scheduling(settings, own_pool, client)
        worker = teleconsultation_worker(
            client,
            own_pool,
            billing=component_channel(pki, billing_address, "workflows"),
            directory=component_channel(pki, directory_address, "workflows"),
        )
        async with worker:
            stub = scheduling_pb2_grpc.SchedulingServiceStub(
                establishment_channel(pki, f"127.0.0.1:{runtime.port}", LOIRE)
            )
            yield Stack(env, runtime, stub, own_pool)
        await runtime.stop(0.5)
    finally:
        await env.shutdown()
        await own_pool.close()
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Case:
    appointment: s.Appointment
    doctor: Metadata
    rpps: str

    @property
    def name(self) -> str:
        return self.appointment.name


async def booked_case(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    **fields: object,
) -> Case:
    """A GP's appointment more than a day after the (skipped) clock of the test server, so that both reminders
    (1 day and 1 hour before) are ahead; the médecin traitant and a requester known."""
    rpps = await new_practitioner(directory, operator, LOIRE)
    doctor = bearer(mint(rpps=rpps))
    schedule = await new_schedule(stack.stub, operator, rpps, LOIRE, horizon_days=30)
    await add_rules(stack.stub, operator, schedule.name, every_day((8, 0), (18, 0)))
    after = await stack.env.get_current_time() + timedelta(hours=30)
    [slot] = (
        await stack.stub.SearchSlots(
            s.SearchSlotsRequest(practitioner=f"practitioners/{rpps}", start_time=stamp(after), page_size=1),
            metadata=doctor,
        )
    ).slots
    front_desk = bearer(mint(staff="front-desk-forez"))
    booked = await stack.stub.BookAppointment(
        s.BookAppointmentRequest(
            request_id=request_id(),
            slot=slot.name,
            patient=PATIENT_LOIRE,
            requester=f"practitioners/{TREATING_GP}",
            treating_physician=f"practitioners/{TREATING_GP}",
            **fields,  # type: ignore[arg-type]
        ),
        metadata=front_desk,
    )
    await stack.scheduling.task(Relay).relay_now(appointment_id(booked.appointment))
    return Case(booked.appointment, doctor, rpps)


def appointment_id(appointment: s.Appointment) -> object:
    import uuid

    return uuid.UUID(appointment.name.removeprefix("appointments/"))


async def state_reaches(stack: Stack, case: Case, state: str) -> None:
    """Wait for the workflow to report `state` (its timers fired by a skip run its activities on their own
    time; polled, bounded)."""
    handle = stack.env.client.get_workflow_handle(case.appointment.workflow_id)
    for _ in range(200):
        if (await handle.query(TeleconsultationWorkflow.status)).state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the workflow never reached {state}")


async def skip_to(stack: Stack, instant: datetime) -> None:
    await stack.env.sleep(instant - await stack.env.get_current_time())


async def skip_to_join_window(stack: Stack, case: Case) -> None:
    await skip_to(stack, when(case.appointment.join_open_time) + timedelta(minutes=1))
    await state_reaches(stack, case, "JOIN_OPEN")


async def outcome(stack: Stack, case: Case) -> TeleconsultationOutcome:
    # Time moves only when a test says so (env.sleep): an idle, unlocked test server would jump years ahead.
    handle = stack.env.client.get_workflow_handle_for(
        TeleconsultationWorkflow.run, case.appointment.workflow_id
    )
    result = await handle.result()
    return result


async def get(stack: Stack, case: Case) -> s.Appointment:
    return (
        await stack.stub.GetAppointment(s.GetAppointmentRequest(name=case.name), metadata=case.doctor)
    ).appointment


def record(rpps: str, **fields: object) -> s.TeleconsultationRecord:
    # Billing refuses acts in the future of its own (real) clock: the act took place just now.
    started = datetime.now(UTC) - timedelta(minutes=25)
    found = s.TeleconsultationRecord(
        report="Patiente vue en téléconsultation pour suivi d'HTA. Tension bien contrôlée.",
        acts=[s.RecordedAct(code="TCG", description="Téléconsultation de suivi")],
        prescriptions=[
            s.Prescription(kind=s.Prescription.KIND_MEDICATION, description="Renouvellement amlodipine 5 mg")
        ],
        participants=[
            s.RecordParticipant(
                practitioner=f"practitioners/{rpps}", role=s.RecordParticipant.ROLE_TELECONSULTANT
            )
        ],
        act_start_time=stamp(started),
        act_end_time=stamp(started + timedelta(minutes=20)),
        no_technical_incident=True,
    )
    for key, value in fields.items():
        field = getattr(found, key)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(found, key, value)
    return found


async def start(stack: Stack, case: Case) -> s.Appointment:
    reply = await stack.stub.StartTeleconsultation(
        s.StartTeleconsultationRequest(request_id=request_id(), name=case.name), metadata=case.doctor
    )
    return reply.appointment


async def complete(stack: Stack, case: Case, given: s.TeleconsultationRecord, **kw: object) -> s.Appointment:
    reply = await stack.stub.CompleteTeleconsultation(
        s.CompleteTeleconsultationRequest(request_id=request_id(), name=case.name, record=given, **kw),  # type: ignore[arg-type]
        metadata=case.doctor,
    )
    return reply.appointment


# --- the whole case --------------------------------------------------------------------------------------


async def test_reminders_join_window_start_completion_billing_and_report(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC)
    )
    # Too early: the workflow's validator refuses, the appointment is untouched.
    error = await call(start(stack, case))
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "JOIN_WINDOW_NOT_OPEN",
    )  # type: ignore[union-attr]

    await skip_to_join_window(stack, case)
    arrived = await start(stack, case)
    assert arrived.state == A.STATE_ARRIVED
    # Only the teleconsultant, with their own token, completes it; the record names them.
    error = await call(
        stack.stub.CompleteTeleconsultation(
            s.CompleteTeleconsultationRequest(
                request_id=request_id(), name=case.name, record=record(case.rpps)
            ),
            metadata=bearer(mint(rpps=TREATING_GP)),
        )
    )
    assert details(error)[0].reason == "TELECONSULTANT_ONLY"  # type: ignore[union-attr]
    error = await call(complete(stack, case, record(TREATING_GP)))
    assert details(error)[1] == [("record.participants", "must name the teleconsultant (R.6316-4 3°)")]

    fulfilled = await complete(
        stack,
        case,
        record(case.rpps),
        circumstances=billing_pb2.Circumstances(performer_in_patient_territory=True),
    )
    assert fulfilled.state == A.STATE_FULFILLED
    assert fulfilled.record.report.startswith("Patiente vue") and fulfilled.record.no_technical_incident
    assert fulfilled.billing.state == s.BillingOutcome.STATE_PENDING

    result = await outcome(stack, case)
    assert result.state == "BILLED" and len(result.charges) >= 1
    final = await get(stack, case)
    assert final.billing.state == s.BillingOutcome.STATE_RECORDED
    assert list(final.billing.charges) == result.charges
    assert final.billing.act_id == f"teleconsultation-{appointment_id(final)}"
    assert [h.state for h in final.history] == [A.STATE_BOOKED, A.STATE_ARRIVED, A.STATE_FULFILLED]
    assert final.history[1].actor == f"practitioners/{case.rpps}"
    sent = [(n.kind, n.label, n.recipient) for n in final.notifications]
    N = s.Notification
    assert sorted(sent) == sorted(
        [
            (N.KIND_REMINDER, "P1D", PATIENT_LOIRE),
            (N.KIND_REMINDER, "PT1H", PATIENT_LOIRE),
            (N.KIND_JOIN_LINK, "join", PATIENT_LOIRE),
            (N.KIND_JOIN_LINK, "join", f"practitioners/{case.rpps}"),
            # The report goes to the médecin traitant, who is also the requester here: once.
            (N.KIND_REPORT, "compte-rendu", f"practitioners/{TREATING_GP}"),
        ]
    )
    # Billing holds the act under the appointment's id, with the practitioner's lines.
    billed = await pool.fetchval("SELECT count(*) FROM billing.acts WHERE act_id = $1", final.billing.act_id)
    assert billed == 1
    described = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).describe()
    assert described.typed_search_attributes.get(search_attributes.CASE_STATE) == "BILLED"

    # The recorded history replays with today's code.
    history = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).fetch_history()
    await Replayer(
        workflows=[TeleconsultationWorkflow], data_converter=data_converter(Keyring.parse(PAYLOAD_KEYS))
    ).replay_workflow(history)


async def test_a_billing_refusal_is_kept_on_the_appointment_with_its_reason(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    await start(stack, case)
    # A five-day arrêt de travail prescribed remotely by a doctor who is not the médecin traitant (§7.16).
    sick_leave = s.Prescription(
        kind=s.Prescription.KIND_SICK_LEAVE, description="Arrêt de travail", sick_leave_days=5
    )
    await complete(stack, case, record(case.rpps, prescriptions=[sick_leave]))
    result = await outcome(stack, case)
    assert (result.state, result.billing_reason) == ("BILLING_REFUSED", "SICK_LEAVE_OVER_LIMIT")
    final = await get(stack, case)
    assert final.state == A.STATE_FULFILLED
    assert final.billing.state == s.BillingOutcome.STATE_REFUSED
    assert (
        final.billing.refusal_reason == "SICK_LEAVE_OVER_LIMIT" and "3 days" in final.billing.refusal_message
    )
    assert not final.billing.charges
    assert [n.kind for n in final.notifications].count(s.Notification.KIND_REPORT) == 1


async def test_no_consent_no_start(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    await skip_to_join_window(stack, case)
    error = await call(start(stack, case))
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
    )  # type: ignore[union-attr]
    await stack.stub.RecordConsent(
        s.RecordConsentRequest(
            request_id=request_id(), name=case.name, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
        ),
        metadata=case.doctor,
    )
    assert (await start(stack, case)).state == A.STATE_ARRIVED


async def test_not_started_within_the_grace_period_is_a_no_show(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    assert (await get(stack, case)).state == A.STATE_BOOKED
    await skip_to(stack, when(case.appointment.no_show_time) + timedelta(seconds=1))
    result = await outcome(stack, case)
    assert result.state == "NOSHOW"
    final = await get(stack, case)
    assert final.state == A.STATE_NOSHOW and final.fhir_status == "noshow"
    assert (final.history[-1].reason, final.history[-1].actor) == (
        "NO_SHOW_GRACE_ELAPSED",
        "component/workflows-teleconsultation",
    )
    assert {n.label for n in final.notifications if n.kind == s.Notification.KIND_REMINDER} == {"P1D", "PT1H"}
    error = await call(start(stack, case))
    assert details(error)[0].reason == "INVALID_TRANSITION"  # type: ignore[union-attr]


async def test_a_cancellation_ends_the_workflow(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    await stack.stub.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=case.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=case.doctor,
    )
    await stack.scheduling.task(Relay).relay_now(appointment_id(case.appointment))
    assert (await outcome(stack, case)).state == "CANCELLED"
    described = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).describe()
    assert described.status == temporalio.client.WorkflowExecutionStatus.COMPLETED
    assert described.typed_search_attributes.get(search_attributes.CASE_STATE) == "CANCELLED"
    final = await get(stack, case)
    assert final.state == A.STATE_CANCELLED and not final.notifications


async def test_an_incomplete_record_is_refused_naming_what_is_missing(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    await start(stack, case)
    error = await call(complete(stack, case, s.TeleconsultationRecord(report="")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in details(error)[1]}
    assert {
        "record.report",
        "record.acts",
        "record.participants",
        "record.act_start_time",
        "record",
    } <= fields
    # The workflow's own validator says the same of a record that reached it without the edge's checks.
    record = TeleconsultationRecord(
        report="x",
        acts=[RecordedAct(description="consultation")],
        participants=[
            RecordParticipant(practitioner="practitioners/10000000101", role="ROLE_TELECONSULTANT")
        ],
    )
    assert record.missing_items() == [
        "actStartTime",
        "actEndTime",
        "technicalIncidents",
    ]
