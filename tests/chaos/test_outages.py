"""Outages under load. PostgreSQL killed (SIGKILL, every backend) and started again while front desks book:
no booking a client was told about is lost, every other answer is UNAVAILABLE (never INTERNAL), health says
NOT_SERVING during the outage and SERVING again within seconds of the database's return. Temporal killed for
3 s (and, under `make chaos`, 30 s) while doctors create téléexpertises and never retry: every request saved
gets its workflow once Temporal is back, whether or not its client heard of it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from parcours.expertise.v1 import expertise_pb2 as e
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2
from temporalio.service import RPCError, RPCStatusCode

from tests.chaos.conftest import Scale
from tests.chaos.stack import ChaosStack, Outcomes, code_key, until
from tests.scheduling.helpers import PATIENT_LOIRE, add_rules, every_day, new_schedule, stamp
from tests.support import LOIRE, bearer, request_id

GP = "10000000101"
CLIENTS = 8
# A booking client retries what answered UNAVAILABLE (same request id) for this long, then gives up.
PATIENCE_SECONDS = 30.0
SERVING_AGAIN_WITHIN_SECONDS = 10.0


class HealthWatch:
    """Follows a service's health with grpc.health.v1 Watch: each status change and when it came."""

    def __init__(self, chaos: ChaosStack, service: str) -> None:
        self._stub = chaos.health(service)
        self.changes: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        async for reply in self._stub.Watch(health_pb2.HealthCheckRequest(service="")):
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            self.changes.append((time.monotonic(), status))

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await self._task

    def first(self, status: str, after: float) -> float | None:
        return next((t for t, found in self.changes if found == status and t >= after), None)


async def test_postgres_killed_under_booking_load_loses_no_acknowledged_booking(
    chaos: ChaosStack, scale: Scale, figures: Callable[[str], None]
) -> None:
    # Down long enough for the health probe (every second) to notice, with a margin for a busy machine.
    load_seconds, down_seconds = scale(test=5, full=20), scale(test=2, full=3)
    stub = chaos.scheduling()
    operator, desk = chaos.operator(), bearer(chaos.mint(staff="front-desk-chaos"))
    free: list[str] = []
    for _ in range(4):
        rpps = await chaos.new_practitioner()
        schedule = await new_schedule(stub, operator, rpps, LOIRE, horizon_days=4)
        await add_rules(stub, operator, schedule.name, every_day())
        reply = await stub.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{rpps}",
                start_time=stamp(datetime.now(UTC) + timedelta(hours=2)),
                page_size=500,
            ),
            metadata=desk,
        )
        free += [slot.name for slot in reply.slots]
    acknowledged: list[str] = []
    outcomes, searches = Outcomes(), Outcomes()
    health = HealthWatch(chaos, "scheduling")
    health.start()
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + load_seconds

    async def front_desk() -> None:
        while loop.time() < stop_at and free:
            slot = free.pop()
            request = s.BookAppointmentRequest(request_id=request_id(), slot=slot, patient=PATIENT_LOIRE)
            give_up = loop.time() + PATIENCE_SECONDS
            while True:
                try:
                    reply = await stub.BookAppointment(request, metadata=desk, timeout=10)
                    acknowledged.append(reply.appointment.name)
                    outcomes.count("OK")
                    break
                except grpc.aio.AioRpcError as error:
                    outcomes.count(code_key(error))
                    if error.code() != grpc.StatusCode.UNAVAILABLE or loop.time() > give_up:
                        break
                    outcomes.retries += 1
                    await asyncio.sleep(0.2)
            # Someone looks for the next slot in between.
            try:
                await stub.SearchSlots(s.SearchSlotsRequest(page_size=5), metadata=desk, timeout=10)
                searches.count("OK")
            except grpc.aio.AioRpcError as error:
                searches.count(code_key(error))

    desks = [asyncio.create_task(front_desk()) for _ in range(CLIENTS)]
    await asyncio.sleep(load_seconds / 3)  # the load is under way
    killed_at = time.monotonic()
    await chaos.kill_postgres()
    await asyncio.sleep(down_seconds)  # the outage itself
    restarted_at = time.monotonic()
    # When PostgreSQL accepts connections again (its crash recovery is its own, not the hub's): the first
    # moment a connection of this test's own succeeds.
    accepting = asyncio.create_task(first_connection(chaos.database_url))
    await chaos.restart_postgres()
    back_at = await accepting
    await asyncio.gather(*desks)

    # The service may still be coming back when the load ends: wait for it as a probe would, bounded.
    async def serving_again() -> bool:
        return health.first("SERVING", restarted_at) is not None

    await until(serving_again, SERVING_AGAIN_WITHIN_SECONDS * 3)
    await health.stop()

    stored = await chaos.pools["scheduling"].fetch(
        "SELECT appointment_id, status FROM scheduling.appointments WHERE appointment_id = ANY($1::uuid[])",
        [uuid.UUID(name.removeprefix("appointments/")) for name in acknowledged],
    )
    lost = len(acknowledged) - sum(1 for row in stored if row["status"] == "booked")
    not_serving = health.first("NOT_SERVING", killed_at)
    serving = health.first("SERVING", restarted_at)
    assert serving is not None
    # The probe may see the database back a moment before this test's own connection does.
    serving_after = max(0.0, serving - back_at)
    figures(
        f"PostgreSQL SIGKILLed under booking load ({CLIENTS} front desks, {load_seconds} s, down "
        f"{down_seconds} s, then {back_at - restarted_at:.1f} s of restart and crash recovery): "
        f"{len(acknowledged)} bookings acknowledged, {lost} lost; bookings {outcomes.summary()} "
        f"({outcomes.retries} retried); searches {searches.summary()}; NOT_SERVING "
        + (f"{not_serving - killed_at:.1f} s after the kill" if not_serving else "never")
        + f", SERVING again {serving_after:.1f} s after PostgreSQL accepted connections"
    )
    assert lost == 0
    assert not [k for k in (*outcomes.codes, *searches.codes) if k.startswith(("INTERNAL", "UNKNOWN"))]
    assert not_serving is not None and not_serving < restarted_at
    assert serving_after <= SERVING_AGAIN_WITHIN_SECONDS


async def first_connection(url: str, within: float = 120.0) -> float:
    """The monotonic instant at which a connection to `url` first succeeds (tried every 50 ms)."""
    async with asyncio.timeout(within):
        while True:
            try:
                connection = await asyncpg.connect(url, timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            at = time.monotonic()
            await connection.close()
            return at


@pytest.mark.parametrize("outage_seconds", [3, 30])
async def test_temporal_killed_under_case_creation_leaves_no_saved_request_without_its_workflow(
    chaos: ChaosStack, scale: Scale, figures: Callable[[str], None], outage_seconds: int
) -> None:
    if outage_seconds > 3 and scale(test=0, full=1) == 0:
        pytest.skip("the 30 s outage runs under make chaos")
    stub = chaos.expertise()
    gp = chaos.practitioner(GP)
    patients = [(await chaos.new_patient(by=GP))[0] for _ in range(CLIENTS)]
    outcomes = Outcomes()
    acknowledged: list[str] = []
    loop = asyncio.get_running_loop()
    started = datetime.now(UTC)
    load_seconds = outage_seconds + 3.0
    stop_at = loop.time() + load_seconds

    async def doctor(patient: str) -> None:
        # One try per request, never retried: the client gives up at the first error.
        while loop.time() < stop_at:
            request = e.CreateTeleexpertiseRequestRequest(
                request_id=request_id(),
                teleexpertise_request=e.TeleexpertiseRequestInput(
                    patient=patient,
                    patient_consent=True,
                    specialty=practice_pb2.SPECIALTY_DERMATOLOGY,
                    question="Lésion pigmentée du dos évolutive : exérèse ?",
                    clinical_context="Lésion de 8 mm apparue il y a 6 mois, asymétrique.",
                    urgency=e.URGENCY_ROUTINE,
                ),
            )
            try:
                reply = await stub.CreateTeleexpertiseRequest(request, metadata=gp, timeout=30)
                acknowledged.append(reply.teleexpertise_request.name)
                outcomes.count("OK")
            except grpc.aio.AioRpcError as error:
                outcomes.count(code_key(error))
                await asyncio.sleep(0.2)

    doctors = [asyncio.create_task(doctor(p)) for p in patients]
    await asyncio.sleep(2.0)  # the load is under way
    await chaos.kill_temporal()
    await asyncio.sleep(outage_seconds)  # the outage itself
    await chaos.restart_temporal()
    back_at = time.monotonic()
    await asyncio.gather(*doctors)

    # Every request saved since the scenario began, whatever its client heard.
    pool = chaos.pools["expertise"]
    saved = [
        row["case_id"]
        for row in await pool.fetch("SELECT case_id FROM expertise.requests WHERE create_time >= $1", started)
    ]

    async def drained_all() -> bool:
        pending = await pool.fetchval(
            "SELECT count(*) FROM expertise.outbox WHERE done_time IS NULL AND case_id = ANY($1::uuid[])",
            saved,
        )
        return not pending

    await until(drained_all, 90)
    drained = time.monotonic() - back_at
    without: list[str] = []
    for case_id in saved:
        try:
            await chaos.client.get_workflow_handle(f"teleexpertise-{case_id}").describe()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            without.append(str(case_id))
    acknowledged_ids = {name.removeprefix("teleexpertiseRequests/") for name in acknowledged}
    refused = sum(outcomes.codes.values()) - outcomes.of("OK")
    figures(
        f"Temporal SIGKILLed for {outage_seconds} s under téléexpertise creation ({CLIENTS} doctors who "
        f"never retry): {outcomes.of('OK')} acknowledged, {refused} refused ({outcomes.summary()}); "
        f"{len(saved)} saved, {len(saved) - len(without)} with their workflow, {len(without)} without; "
        f"outbox drained {drained:.1f} s after Temporal was back"
    )
    assert not without
    assert acknowledged_ids <= {str(c) for c in saved}
    assert not [k for k in outcomes.codes if k.startswith(("INTERNAL", "UNKNOWN"))]
