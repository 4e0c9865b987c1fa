"""Recovery is quick and the rules follow the clock. A teleconsultation booked just before its join window
opens is started the instant the window opens (the workflow's rule reads the clock, not whether the join-link
notification has gone yet); and after its worker is SIGKILLed, the next step of a case is applied within
seconds (the sticky queue's timeout and the activities' heartbeats), not after Temporal's default 10 s or a
whole activity timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.service import RPCError, RPCStatusCode

from services.kit.server import open_channel
from services.scheduling.models import CaseStatus
from services.scheduling.server import build as build_scheduling
from tests.chaos.stack import ChaosStack, reason_of
from tests.chaos.test_workers import GP
from tests.scheduling.helpers import FOLLOW_UP, add_rules, every_day, new_schedule, stamp, when
from tests.support import LOIRE, bearer, establishment_channel, request_id

# The join window opens this long after the booking.
OPENS_AFTER = timedelta(seconds=3)
# A step after a worker's death: the sticky queue's timeout (2 s), a new worker's start, the Update itself,
# on a busy machine; Temporal's default sticky timeout alone would take 10 s.
RECOVERED_WITHIN_SECONDS = 9.0


async def test_a_teleconsultation_starts_the_instant_its_join_window_opens(
    chaos: ChaosStack, figures: Callable[[str], None]
) -> None:
    stub = chaos.scheduling()
    operator, desk = chaos.operator(), bearer(chaos.mint(staff="front-desk-chaos"))
    rpps = await chaos.new_practitioner()
    schedule = await new_schedule(stub, operator, rpps, LOIRE, durations={FOLLOW_UP: 5}, horizon_days=2)
    await add_rules(stub, operator, schedule.name, every_day())
    [slot] = (
        await stub.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{rpps}",
                start_time=stamp(datetime.now(UTC) + timedelta(seconds=30)),
                page_size=1,
            ),
            metadata=desk,
        )
    ).slots
    # A scheduling service whose join window opens OPENS_AFTER from now for this slot.
    opening = datetime.now(UTC) + OPENS_AFTER
    settings = chaos.scheduling_settings(join_window_before=when(slot.start_time) - opening)
    runtime = await build_scheduling(
        settings,
        chaos.pools["scheduling"],
        temporal=chaos.client,
        directory=open_channel(settings, settings.directory_address),
    )
    await runtime.start()
    channel = establishment_channel(chaos.pki, f"127.0.0.1:{runtime.port}", LOIRE)
    try:
        scheduling = scheduling_pb2_grpc.SchedulingServiceStub(channel)
        patient, _ = await chaos.new_patient(by=GP)
        booked = (
            await scheduling.BookAppointment(
                s.BookAppointmentRequest(
                    request_id=request_id(),
                    slot=slot.name,
                    patient=patient,
                    consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
                ),
                metadata=desk,
            )
        ).appointment
        doctor = chaos.practitioner(rpps)

        async def start() -> s.Appointment:
            reply = await scheduling.StartTeleconsultation(
                s.StartTeleconsultationRequest(request_id=request_id(), name=booked.name), metadata=doctor
            )
            return reply.appointment

        # Right after booking, before the opening: refused by the clock.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start()
        assert (refused.value.code(), reason_of(refused.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "JOIN_WINDOW_NOT_OPEN",
        )
        # The opening is an instant on the clock: nothing to await but the clock itself.
        await asyncio.sleep((when(booked.join_open_time) - datetime.now(UTC)).total_seconds())
        late_by = datetime.now(UTC) - when(booked.join_open_time)
        started = await start()
        assert started.state == s.Appointment.STATE_ARRIVED
        figures(
            f"join window: StartTeleconsultation {late_by.total_seconds() * 1000:.0f} ms after the opening "
            "(booked 3 s before it) started the teleconsultation at the first call"
        )
    finally:
        await channel.close()
        await runtime.stop(0.5)


async def test_the_next_step_after_a_worker_s_death_waits_seconds(
    chaos: ChaosStack, figures: Callable[[str], None]
) -> None:
    stub = chaos.scheduling()
    operator, desk = chaos.operator(), bearer(chaos.mint(staff="front-desk-chaos"))
    rpps = await chaos.new_practitioner()
    schedule = await new_schedule(stub, operator, rpps, LOIRE, horizon_days=3)
    await add_rules(stub, operator, schedule.name, every_day())
    [slot] = (
        await stub.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{rpps}",
                start_time=stamp(datetime.now(UTC) + timedelta(hours=2)),
                page_size=1,
            ),
            metadata=desk,
        )
    ).slots
    patient, _ = await chaos.new_patient(by=GP)
    booked = (
        await stub.BookAppointment(
            s.BookAppointmentRequest(
                request_id=request_id(),
                slot=slot.name,
                patient=patient,
                consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
            ),
            metadata=desk,
        )
    ).appointment
    # The relay has started the case and the worker has taken it (it holds it in its cache): the join link
    # is sent.
    handle = chaos.client.get_workflow_handle(booked.workflow_id)
    async with asyncio.timeout(30):
        while True:
            try:
                if (await handle.query("status", result_type=CaseStatus)).state == "JOIN_OPEN":
                    break
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.1)
    worker = chaos.workers["teleconsultation"]
    await worker.kill()
    await worker.restart()
    sent = time.perf_counter()
    started = await stub.StartTeleconsultation(
        s.StartTeleconsultationRequest(request_id=request_id(), name=booked.name),
        metadata=chaos.practitioner(rpps),
    )
    took = time.perf_counter() - sent
    assert started.appointment.state == s.Appointment.STATE_ARRIVED
    figures(
        f"worker SIGKILLed with a case in its cache: the next Update (StartTeleconsultation) answered in "
        f"{took:.1f} s (a new worker's start included; Temporal's default sticky timeout alone is 10 s)"
    )
    assert took < RECOVERED_WITHIN_SECONDS
