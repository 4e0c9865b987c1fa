"""The Teleconsultation workflow under test: scheduling on a database of its own, its outbox relayed to a
time-skipping Temporal test server, the real worker on PostgreSQL, the real billing and directory services;
and the steps of a case as a hospital system takes them (booking, the join window, start, completion)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from services.devstack.postgres import PostgresHandle
from services.kit import search_attributes
from services.kit.cases import Relay
from services.kit.codec import Keyring, data_converter
from services.kit.notify import Notifier
from services.kit.pki import DevPki
from services.kit.server import Runtime
from services.kit.settings import TemporalSettings
from services.kit.temporal import connect_client
from services.scheduling.join import JoinLinks
from services.scheduling.models import TeleconsultationOutcome
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
from workflows.teleconsultation.worker import teleconsultation_worker
from workflows.teleconsultation.workflows import TeleconsultationWorkflow

TREATING_GP = "10000000101"  # a demo GP of GHT Loire: the patient's médecin traitant


def time_skipping_server() -> str:
    return shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")


@dataclass
class Stack:
    env: WorkflowEnvironment
    scheduling: Runtime
    stub: Stub
    pool: asyncpg.Pool


@asynccontextmanager
async def workflow_stack(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
    *,
    settings: Mapping[str, Any] | None = None,
    notifier: Notifier | None = None,
    join_links: JoinLinks | None = None,
) -> AsyncIterator[Stack]:
    """Scheduling (on a database of its own) → outbox → time-skipping Temporal → the worker → billing;
    `settings` override the scheduling service's, `notifier` and `join_links` are the worker's."""
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
        service_settings = scheduling_settings(pki, url, directory_address, address, **(settings or {}))
        runtime = await start_scheduling(service_settings, own_pool, client)
        worker = teleconsultation_worker(
            client,
            own_pool,
            billing=component_channel(pki, billing_address, "workflows"),
            directory=component_channel(pki, directory_address, "workflows"),
            notifier=notifier,
            join_links=join_links,
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


def appointment_id(appointment: s.Appointment) -> uuid.UUID:
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
