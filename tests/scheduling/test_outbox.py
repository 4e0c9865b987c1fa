"""Every booking gets its Teleconsultation workflow, exactly once, through the transactional outbox — also
when the process dies between the database commit and the workflow start (a real process, SIGKILLed from
outside while Temporal is unreachable from it, so its relay could not start the workflow)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest
import temporalio.client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from services.devstack import free_port
from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle
from services.kit import search_attributes
from services.kit.cases import Relay
from services.kit.pki import DevPki
from services.kit.server import Runtime
from tests.conftest import Minter
from tests.scheduling.conftest import create_database
from tests.scheduling.helpers import (
    PATIENT_LOIRE,
    Metadata,
    Stub,
    add_rules,
    book,
    every_day,
    first_free,
    new_practitioner,
    new_schedule,
    when,
)
from tests.support import (
    LOIRE,
    PAYLOAD_KEYS,
    bearer,
    establishment_channel,
    process_env,
    repo_root,
    request_id,
)
from tests.support.proxy import Proxy

Directory = directory_pb2_grpc.DirectoryServiceStub


@pytest.fixture(scope="module")
def front_desk(mint: Minter) -> Metadata:
    return bearer(mint(staff="front-desk-forez"))


async def booked_agenda(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> s.Appointment:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(loire, operator, rpps, LOIRE)
    await add_rules(loire, operator, schedule.name, every_day())
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    return await book(loire, front_desk, slot.name, PATIENT_LOIRE)


def appointment_uuid(appointment: s.Appointment) -> uuid.UUID:
    return uuid.UUID(appointment.name.removeprefix("appointments/"))


async def test_a_booking_starts_its_workflow_filterable_by_state_ght_specialty_and_start_time(
    loire: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    scheduling: Runtime,
    temporal_client: temporalio.client.Client,
    pool: asyncpg.Pool,
) -> None:
    booked = await booked_agenda(loire, directory, operator, front_desk)
    await scheduling.task(Relay).relay_now(appointment_uuid(booked))
    assert booked.workflow_id == f"teleconsultation-{appointment_uuid(booked)}"
    described = await temporal_client.get_workflow_handle(booked.workflow_id).describe()
    assert described.workflow_type == "Teleconsultation" and described.task_queue == "teleconsultation"
    assert described.status == temporalio.client.WorkflowExecutionStatus.RUNNING
    attributes = described.typed_search_attributes
    assert attributes.get(search_attributes.CASE_STATE) == "BOOKED"
    assert attributes.get(search_attributes.CASE_KIND) == "teleconsultation"
    assert attributes.get(search_attributes.GHT) == "ght-loire"
    assert attributes.get(search_attributes.REGION) == "84"
    assert attributes.get(search_attributes.SPECIALTY) == "SPECIALTY_GENERAL_MEDICINE"
    assert attributes.get(search_attributes.START_TIME) == when(booked.start_time)
    # No patient data in the id or the attributes.
    patient_id = booked.patient.removeprefix("patients/")
    assert patient_id not in booked.workflow_id
    assert patient_id not in repr([(p.key.name, p.value) for p in attributes])
    done = await pool.fetchval(
        "SELECT bool_and(done_time IS NOT NULL) FROM scheduling.outbox WHERE case_id = $1",
        appointment_uuid(booked),
    )
    assert done


async def test_a_cancellation_reaches_the_workflow(
    loire: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    scheduling: Runtime,
    temporal_client: temporalio.client.Client,
) -> None:
    booked = await booked_agenda(loire, directory, operator, front_desk)
    await loire.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=booked.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=front_desk,
    )
    await scheduling.task(Relay).relay_now(appointment_uuid(booked))
    history = await temporal_client.get_workflow_handle(booked.workflow_id).fetch_history()
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert signals == ["cancel"]


# --- the kill test ---------------------------------------------------------------------------------------


@pytest.fixture
async def own_database(postgres: PostgresHandle, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A database of its own for the killed process, so that no other relay (the suite's in-process
    scheduling service) can start its workflows in its place."""
    name, url = await create_database(postgres, pool, "scheduling_kill")
    yield url
    await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class SchedulingProcess:
    """`python -m services.scheduling` as production runs it."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, **extra: str) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.scheduling",
            env={**self.env, **extra},
            cwd=repo_root(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def serving(self, channel: grpc.aio.Channel) -> None:
        # Polled: health Watch (a stream) fails on kit servers (the OpenTelemetry aio interceptor hands the
        # handler a coroutine where it expects an async iterator), so readiness cannot be awaited as a stream.
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        for _ in range(600):
            reply = await health.Check(request, wait_for_ready=True, timeout=60)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the scheduling process never became SERVING")

    async def kill(self) -> int:
        """SIGKILL from outside (no handler runs, nothing is flushed); the exit code."""
        assert self.process is not None
        self.process.kill()
        return await asyncio.wait_for(self.process.wait(), timeout=30)

    async def stop(self) -> int | None:
        """SIGTERM; the exit code (None if it had to be killed)."""
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return None


async def test_killed_between_commit_and_workflow_start_the_booking_still_gets_exactly_one_workflow(
    pki: DevPki,
    own_database: str,
    directory_address: str,
    temporal: TemporalHandle,
    temporal_client: temporalio.client.Client,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
) -> None:
    # The process reaches Temporal through a proxy the test can cut: once cut, the booking still commits
    # (the relay runs after the commit) but no workflow can start; then the process is killed from outside.
    host, temporal_port = temporal.address.rsplit(":", 1)
    partition = Proxy(host, int(temporal_port))
    await partition.start()
    port = free_port()
    env = process_env(
        pki,
        "scheduling",
        database_url=own_database,
        scheduling_grpc_port=port,
        temporal_address=partition.address,
        payload_keys=PAYLOAD_KEYS,
        directory_address=directory_address,
        shutdown_grace_seconds=1,
    )
    process = SchedulingProcess(env, port)
    channel = establishment_channel(pki, f"127.0.0.1:{port}", LOIRE)
    stub = scheduling_pb2_grpc.SchedulingServiceStub(channel)
    await process.start()
    try:
        await process.serving(channel)
        rpps = await new_practitioner(directory, operator, LOIRE)
        schedule = await new_schedule(stub, operator, rpps, LOIRE)
        await add_rules(stub, operator, schedule.name, every_day())
        slot = await first_free(stub, front_desk, rpps, after=timedelta(hours=2))
        booking = s.BookAppointmentRequest(request_id=request_id(), slot=slot.name, patient=PATIENT_LOIRE)
        partition.blackhole()
        booked = await stub.BookAppointment(booking, metadata=front_desk, timeout=30)
        assert booked.appointment.state == s.Appointment.STATE_BOOKED
        assert await process.kill() == -signal.SIGKILL

        # The booking committed; its workflow was never started.
        conn = await asyncpg.connect(own_database)
        try:
            row = await conn.fetchrow(
                "SELECT a.appointment_id, a.workflow_id, a.status, o.done_time FROM scheduling.appointments a"
                " JOIN scheduling.outbox o ON o.case_id = a.appointment_id WHERE a.rpps = $1",
                rpps,
            )
        finally:
            await conn.close()
        assert row is not None and row["status"] == "booked" and row["done_time"] is None
        assert f"appointments/{row['appointment_id']}" == booked.appointment.name
        handle = temporal_client.get_workflow_handle(row["workflow_id"])
        with pytest.raises(RPCError) as missing:
            await handle.describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND

        # Restarted (Temporal reachable again), the process relays what the dead one left before SERVING.
        partition.resume()
        await process.start()
        await process.serving(channel)
        described = await handle.describe()
        assert described.status == temporalio.client.WorkflowExecutionStatus.RUNNING
        # The client's retry of its request gets the booking it made, and books nothing more.
        again = await stub.BookAppointment(booking, metadata=front_desk, timeout=30)
        assert again.appointment.name == f"appointments/{row['appointment_id']}"
        assert again.appointment.workflow_id == row["workflow_id"]
        query = f'WorkflowId = "{row["workflow_id"]}"'
        runs: list[temporalio.client.WorkflowExecution] = []
        for _ in range(50):  # the visibility store catches up on its own; nothing to await
            runs = [w async for w in temporal_client.list_workflows(query)]
            if runs:
                break
            await asyncio.sleep(0.1)
        assert [(w.id, w.status) for w in runs] == [
            (row["workflow_id"], temporalio.client.WorkflowExecutionStatus.RUNNING)
        ]
        # SIGTERM: NOT_SERVING, in-flight calls finished, the relay stopped, exit 0.
        assert await process.stop() == 0
    finally:
        await channel.close()
        await process.stop()
        await partition.stop()
