"""Contention: the double-booking race. Round after round, 50 hospital systems go for the same slot at once —
half hold it and then book what they hold, half book it outright — and exactly one of them gets it, the
others hear SLOT_ALREADY_BOOKED: no deadlock, no INTERNAL, no booking lost by its winner, no hold left
blocking the slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from parcours.scheduling.v1 import scheduling_pb2 as s

from tests.chaos.conftest import Scale
from tests.chaos.stack import ChaosStack, Outcomes, code_key, patiently
from tests.scheduling.helpers import PATIENT_LOIRE, add_rules, every_day, new_schedule, stamp
from tests.support import LOIRE, bearer, request_id

CALLERS = 50
ARRIVAL_SECONDS = 0.15


async def test_fifty_callers_racing_for_one_slot_book_it_exactly_once_per_round(
    chaos: ChaosStack, scale: Scale, figures: Callable[[str], None]
) -> None:
    rounds = scale(test=3, full=20)
    stub = chaos.scheduling()
    operator = chaos.operator()
    desk = bearer(chaos.mint(staff="front-desk-chaos"))
    rpps = await chaos.new_practitioner()
    schedule = await new_schedule(stub, operator, rpps, LOIRE, horizon_days=3)
    await add_rules(stub, operator, schedule.name, every_day())
    slots = (
        await stub.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{rpps}",
                start_time=stamp(datetime.now(UTC) + timedelta(hours=2)),
                page_size=rounds,
            ),
            metadata=desk,
        )
    ).slots
    assert len(slots) == rounds
    deadlocks_before = chaos.postgres_log().count("deadlock detected")
    outcomes = Outcomes()

    async def book(slot: str) -> s.Appointment:
        request = s.BookAppointmentRequest(request_id=request_id(), slot=slot, patient=PATIENT_LOIRE)
        reply = await patiently(lambda: stub.BookAppointment(request, metadata=desk), outcomes)
        return reply.appointment

    async def hold_then_book(slot: str) -> s.Appointment:
        hold = s.HoldSlotRequest(request_id=request_id(), slot=slot, patient=PATIENT_LOIRE)
        held = (await patiently(lambda: stub.HoldSlot(hold, metadata=desk), outcomes)).appointment
        request = s.BookAppointmentRequest(
            request_id=request_id(), appointment=held.name, patient=PATIENT_LOIRE
        )
        reply = await patiently(lambda: stub.BookAppointment(request, metadata=desk), outcomes)
        return reply.appointment

    async def caller(index: int, slot: str) -> s.Appointment | None:
        # Callers arrive over a few tens of milliseconds, so that the winner books what it holds while
        # late callers still try to hold the slot.
        await asyncio.sleep(chaos.rng.uniform(0, ARRIVAL_SECONDS))
        started = time.perf_counter()
        try:
            return await (hold_then_book(slot) if index % 2 else book(slot))
        except grpc.aio.AioRpcError as error:
            outcomes.count(code_key(error))
            return None
        finally:
            outcomes.latencies.append(time.perf_counter() - started)

    winners_per_round: list[int] = []
    for slot in slots:
        results = await asyncio.gather(*(caller(i, slot.name) for i in range(CALLERS)))
        winners = [r for r in results if r is not None]
        winners_per_round.append(len(winners))
        for winner in winners:
            assert winner.state == s.Appointment.STATE_BOOKED
            outcomes.count("OK booked")

    booked = await chaos.pools["scheduling"].fetchval(
        "SELECT count(*) FROM scheduling.appointments WHERE rpps = $1 AND status = 'booked'", rpps
    )
    # Holds that won and then booked became the booking; no other hold was ever written.
    holds_left = await chaos.pools["scheduling"].fetchval(
        "SELECT count(*) FROM scheduling.appointments WHERE rpps = $1 AND status IN ('pending', 'proposed')",
        rpps,
    )
    deadlocks = chaos.postgres_log().count("deadlock detected") - deadlocks_before
    figures(
        f"double-booking race: {rounds} rounds × {CALLERS} concurrent callers (half hold then book, half "
        f"book): {booked} booked ({min(winners_per_round)}–{max(winners_per_round)} per round); "
        f"{outcomes.summary()}; {deadlocks} deadlocks, {outcomes.retries} retries; "
        f"p50 {outcomes.percentile(0.5) * 1000:.0f} ms, p99 {outcomes.percentile(0.99) * 1000:.0f} ms"
    )
    assert winners_per_round == [1] * rounds
    assert booked == rounds and holds_left == 0
    assert set(outcomes.codes) == {"OK booked", "FAILED_PRECONDITION SLOT_ALREADY_BOOKED"}
    assert outcomes.codes["FAILED_PRECONDITION SLOT_ALREADY_BOOKED"] == rounds * (CALLERS - 1)
    assert deadlocks == 0
