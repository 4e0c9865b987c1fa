"""Holds, proposals and bookings over real gRPC and PostgreSQL: no double booking under a 50-way race,
holds that lapse by themselves, idempotent retries, buffers and overlaps across service types and practice
places, cancel and reschedule rules, consent, entered-in-error, who sees what, and the audit of every read."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.scheduling.helpers import (
    FIRST_VISIT,
    FOLLOW_UP,
    PATIENT_DAUPHINE,
    PATIENT_LOIRE,
    Metadata,
    Stub,
    add_rules,
    book,
    duration,
    every_day,
    first_free,
    local,
    new_practitioner,
    new_schedule,
    search,
    stamp,
    when,
)
from tests.support import DAUPHINE, LOIRE, bearer, establishment_channel, request_id
from tests.support.calls import call, details

Directory = directory_pb2_grpc.DirectoryServiceStub
A = s.Appointment


@pytest.fixture(scope="module")
def front_desk(mint: Minter) -> Metadata:
    """GHT Loire's booking front-end: the establishment's certificate and a non-practitioner token."""
    return bearer(mint(staff="front-desk-forez"))


@pytest.fixture(scope="module")
async def dauphine(pki: DevPki, scheduling_address: str) -> Stub:
    from parcours.scheduling.v1 import scheduling_pb2_grpc

    return scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, scheduling_address, DAUPHINE))


async def agenda(
    loire: Stub, directory: Directory, operator: Metadata, finess: str = LOIRE, **schedule: object
) -> tuple[str, s.Schedule]:
    """A new GP with a schedule open all day every day (20-minute follow-ups unless said otherwise)."""
    rpps = await new_practitioner(directory, operator, finess)
    created = await new_schedule(loire, operator, rpps, finess, **schedule)  # type: ignore[arg-type]
    await add_rules(loire, operator, created.name, every_day())
    return rpps, created


# --- the race --------------------------------------------------------------------------------------------


async def test_fifty_concurrent_bookings_of_one_slot_book_it_once(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, pool: asyncpg.Pool
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    results = await asyncio.gather(
        *(book(loire, front_desk, slot.name, PATIENT_LOIRE) for _ in range(50)), return_exceptions=True
    )
    booked = [r for r in results if isinstance(r, s.Appointment)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(booked) == 1 and len(refused) == 49
    assert {e.code() for e in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert {details(e)[0].reason for e in refused} == {"SLOT_ALREADY_BOOKED"}  # type: ignore[union-attr]
    assert booked[0].state == A.STATE_BOOKED and booked[0].fhir_status == "booked"
    live = await pool.fetchval(
        "SELECT count(*) FROM scheduling.appointments WHERE rpps = $1 AND status = 'booked'", rpps
    )
    starts = await pool.fetchval(
        "SELECT count(*) FROM scheduling.outbox o"
        " JOIN scheduling.appointments a ON a.appointment_id = o.case_id"
        " WHERE a.rpps = $1 AND o.command = 'start'",
        rpps,
    )
    assert (live, starts) == (1, 1)
    assert slot.name not in {x.name for x in await search(loire, front_desk, practitioner=slot.practitioner)}


async def test_a_retried_booking_returns_the_first_answer_and_books_once(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, pool: asyncpg.Pool
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    request = s.BookAppointmentRequest(request_id=request_id(), slot=slot.name, patient=PATIENT_LOIRE)
    first = await loire.BookAppointment(request, metadata=front_desk)
    retries = await asyncio.gather(*(loire.BookAppointment(request, metadata=front_desk) for _ in range(5)))
    assert {r.appointment.name for r in retries} == {first.appointment.name}
    assert await pool.fetchval("SELECT count(*) FROM scheduling.appointments WHERE rpps = $1", rpps) == 1
    # The same request id for another request is refused.
    other = await first_free(loire, front_desk, rpps, after=timedelta(hours=3))
    reused = s.HoldSlotRequest(request_id=request.request_id, slot=other.name)
    error = await call(loire.HoldSlot(reused, metadata=front_desk))
    assert details(error)[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]


# --- holds and proposals ---------------------------------------------------------------------------------


async def test_a_hold_lapses_by_itself(
    loire: Stub, dauphine: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    hold = (
        await loire.HoldSlot(
            s.HoldSlotRequest(request_id=request_id(), slot=slot.name, ttl=duration(timedelta(seconds=1))),
            metadata=front_desk,
        )
    ).appointment
    assert hold.state == A.STATE_PENDING and hold.patient == ""
    assert when(hold.hold_expire_time) - when(hold.create_time) == timedelta(seconds=1)
    other_desk = bearer(mint(staff="front-desk-belledonne"))
    error = await call(book(dauphine, other_desk, slot.name, PATIENT_DAUPHINE))
    assert details(error)[0].reason == "SLOT_ALREADY_BOOKED"  # type: ignore[union-attr]
    assert slot.name not in {x.name for x in await search(loire, front_desk, practitioner=slot.practitioner)}

    # Nothing sweeps it: its expiry instant is enough. (A lapse cannot be awaited; it is waited for.)
    await asyncio.sleep((when(hold.hold_expire_time) - datetime.now(UTC)).total_seconds() + 0.05)
    assert slot.name in {x.name for x in await search(loire, front_desk, practitioner=slot.practitioner)}
    taken = await book(dauphine, other_desk, slot.name, PATIENT_DAUPHINE)
    assert taken.state == A.STATE_BOOKED
    error = await call(
        loire.BookAppointment(
            s.BookAppointmentRequest(request_id=request_id(), appointment=hold.name, patient=PATIENT_LOIRE),
            metadata=front_desk,
        )
    )
    assert details(error)[0].reason == "HOLD_EXPIRED"  # type: ignore[union-attr]
    lapsed = (
        await loire.GetAppointment(s.GetAppointmentRequest(name=hold.name), metadata=front_desk)
    ).appointment
    assert lapsed.state == A.STATE_CANCELLED
    assert lapsed.cancellation.reason == s.CANCELLATION_REASON_HOLD_EXPIRED
    assert [(h.state, h.reason) for h in lapsed.history] == [
        (A.STATE_PENDING, ""),
        (A.STATE_CANCELLED, "HOLD_EXPIRED"),
    ]


async def test_the_holder_books_the_slot_it_holds(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, pool: asyncpg.Pool
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    hold = (
        await loire.HoldSlot(
            s.HoldSlotRequest(request_id=request_id(), slot=slot.name, patient=PATIENT_LOIRE),
            metadata=front_desk,
        )
    ).appointment
    assert when(hold.hold_expire_time) - when(hold.create_time) == timedelta(minutes=10)  # the hub's default
    error = await call(
        loire.BookAppointment(
            s.BookAppointmentRequest(
                request_id=request_id(), appointment=hold.name, patient=PATIENT_DAUPHINE
            ),
            metadata=operator,
        )
    )
    assert details(error)[0].reason == "HOLD_PATIENT_MISMATCH"  # type: ignore[union-attr]
    booked = (
        await loire.BookAppointment(
            s.BookAppointmentRequest(
                request_id=request_id(),
                appointment=hold.name,
                patient=PATIENT_LOIRE,
                consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC),
            ),
            metadata=front_desk,
        )
    ).appointment
    assert booked.name == hold.name and booked.state == A.STATE_BOOKED
    assert not booked.HasField("hold_expire_time")
    assert booked.workflow_id == f"teleconsultation-{hold.name.removeprefix('appointments/')}"
    assert booked.consent.method == s.CONSENT_METHOD_ELECTRONIC
    assert [h.state for h in booked.history] == [A.STATE_PENDING, A.STATE_BOOKED]
    appointment_id = hold.name.removeprefix("appointments/")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM scheduling.outbox WHERE case_id = $1::uuid AND command = 'start'",
            appointment_id,
        )
        == 1
    )


async def test_a_proposal_holds_the_slot_until_the_patient_side_books_it(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    doctor = bearer(mint(rpps=rpps))
    slot = await first_free(loire, doctor, rpps, after=timedelta(hours=2))
    proposed = (
        await loire.ProposeAppointment(
            s.ProposeAppointmentRequest(request_id=request_id(), slot=slot.name, patient=PATIENT_LOIRE),
            metadata=doctor,
        )
    ).appointment
    assert proposed.state == A.STATE_PROPOSED and proposed.fhir_status == "proposed"
    assert proposed.requester == f"practitioners/{rpps}"
    assert when(proposed.hold_expire_time) - when(proposed.create_time) == timedelta(hours=48)
    error = await call(book(loire, front_desk, slot.name, PATIENT_LOIRE))
    assert details(error)[0].reason == "SLOT_ALREADY_BOOKED"  # type: ignore[union-attr]
    booked = (
        await loire.BookAppointment(
            s.BookAppointmentRequest(
                request_id=request_id(), appointment=proposed.name, patient=PATIENT_LOIRE
            ),
            metadata=front_desk,
        )
    ).appointment
    assert booked.state == A.STATE_BOOKED and booked.requester == f"practitioners/{rpps}"
    assert [h.state for h in booked.history] == [A.STATE_PROPOSED, A.STATE_BOOKED]


# --- overlaps ------------------------------------------------------------------------------------------


async def test_buffers_and_service_types_of_one_practitioner_never_overlap(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(
        loire, operator, rpps, LOIRE, durations={FOLLOW_UP: 20, FIRST_VISIT: 40}, buffer=timedelta(minutes=10)
    )
    await add_rules(loire, operator, schedule.name, [*every_day(), *every_day(service_type=FIRST_VISIT)])
    slots = await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    long_one = next(
        x
        for x in slots
        if x.service_type == FIRST_VISIT and when(x.start_time) > datetime.now(UTC) + timedelta(hours=3)
    )
    booked = await book(loire, front_desk, long_one.name, PATIENT_LOIRE)
    # 40 minutes and the 10-minute buffer: short slots starting within the buffer on either side are gone.
    blocked_from = when(booked.start_time) - timedelta(minutes=30)
    blocked_to = when(booked.end_time) + timedelta(minutes=10)
    overlapping = [
        x for x in slots if x.service_type == FOLLOW_UP and blocked_from < when(x.start_time) < blocked_to
    ]
    assert overlapping
    left = {x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")}
    assert not {x.name for x in overlapping} & left
    error = await call(book(loire, front_desk, overlapping[0].name, PATIENT_LOIRE))
    assert details(error)[0].reason == "SLOT_ALREADY_BOOKED"  # type: ignore[union-attr]


async def test_the_longest_slot_and_buffer_keep_every_overlapping_slot_out_of_search(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, pool: asyncpg.Pool
) -> None:
    """A 4-hour visit and a 2-hour buffer, the longest a schedule allows, occupy 6 hours: the short slots
    that start in their last minutes, or whose buffer runs into the visit, are not offered; those that only
    touch them are."""
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(
        loire, operator, rpps, LOIRE, durations={FOLLOW_UP: 10, FIRST_VISIT: 240}, buffer=timedelta(hours=2)
    )
    # First visits at 00:00, 06:00, 12:00 and 18:00; one short slot at 09:50, 10:00, 17:50 and 18:00.
    shorts = {(9, 50): (10, 0), (10, 0): (10, 10), (17, 50): (18, 0), (18, 0): (18, 10)}
    await add_rules(
        loire,
        operator,
        schedule.name,
        [
            *every_day(service_type=FIRST_VISIT),
            *(r for start, end in shorts.items() for r in every_day(start, end)),
        ],
    )
    slots = await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    noon = next(
        x
        for x in slots
        if x.service_type == FIRST_VISIT and local(x).hour == 12 and when(x.start_time) > datetime.now(UTC)
    )
    day = local(noon).date()
    around = {
        (local(x).hour, local(x).minute): x.name
        for x in slots
        if x.service_type == FOLLOW_UP and local(x).date() == day
    }
    assert set(around) == set(shorts)
    booked = await book(loire, front_desk, noon.name, PATIENT_LOIRE)
    assert when(booked.end_time) - when(booked.start_time) == timedelta(hours=4)
    left = {x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")}
    # 10:00-12:10 (buffer included) and 17:50 (5 h 50 after noon) overlap noon-18:00; 09:50-12:00 and 18:00
    # only touch it.
    assert {k for k, name in around.items() if name in left} == {(9, 50), (18, 0)}
    # What the search relies on, held by the database: no appointment occupies more than 6 hours.
    with pytest.raises(asyncpg.CheckViolationError, match="appointments_occupied_bounded"):
        await pool.execute(
            "UPDATE scheduling.appointments SET occupied = tstzrange(start_time, start_time + $2::interval)"
            " WHERE appointment_id = $1",
            uuid.UUID(booked.name.removeprefix("appointments/")),
            timedelta(hours=7),
        )


async def test_one_practitioner_at_two_places_is_never_booked_twice_at_once(
    loire: Stub, dauphine: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE, DAUPHINE, specialty=p.SPECIALTY_NEPHROLOGY)
    for finess in (LOIRE, DAUPHINE):
        schedule = await new_schedule(loire, operator, rpps, finess)
        await add_rules(loire, operator, schedule.name, every_day())
    slots = await search(
        loire, front_desk, practitioner=f"practitioners/{rpps}", start_time=first_free_after(3)
    )
    at_loire = next(x for x in slots if x.establishment == f"establishments/{LOIRE}")
    twin = next(
        x
        for x in slots
        if x.establishment == f"establishments/{DAUPHINE}" and x.start_time == at_loire.start_time
    )
    await book(loire, front_desk, at_loire.name, PATIENT_LOIRE)
    error = await call(book(dauphine, bearer(mint(staff="desk")), twin.name, PATIENT_DAUPHINE))
    assert details(error)[0].reason == "SLOT_ALREADY_BOOKED"  # type: ignore[union-attr]


async def test_a_slot_inside_the_minimum_notice_cannot_be_booked(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps, schedule = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, after=timedelta(minutes=30))
    await loire.UpdateSchedule(
        s.UpdateScheduleRequest(
            request_id=request_id(),
            name=schedule.name,
            schedule=s.SchedulePatch(minimum_notice=duration(timedelta(hours=4))),
            update_mask={"paths": ["minimum_notice"]},
        ),
        metadata=operator,
    )
    error = await call(book(loire, front_desk, slot.name, PATIENT_LOIRE))
    assert (error.code(), details(error)[0].reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MINIMUM_NOTICE")  # type: ignore[union-attr]
    error = await call(book(loire, front_desk, "slots/00000000-0000-0000-0000-000000000000", PATIENT_LOIRE))
    assert (error.code(), details(error)[0].reason) == (grpc.StatusCode.NOT_FOUND, "SLOT_NOT_FOUND")  # type: ignore[union-attr]


# --- cancel and reschedule -------------------------------------------------------------------------------


async def test_cancellation_by_the_patient_side_before_the_cutoff_and_by_the_practitioner_at_any_time(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps, _ = await agenda(loire, directory, operator, cancellation_cutoff=timedelta(hours=24))
    doctor = bearer(mint(rpps=rpps))
    requester = bearer(mint(rpps=await new_practitioner(directory, operator, LOIRE)))
    soon = await book(
        loire, requester, (await first_free(loire, front_desk, rpps, timedelta(hours=2))).name, PATIENT_LOIRE
    )
    later = await book(
        loire,
        front_desk,
        (await first_free(loire, front_desk, rpps, timedelta(hours=30))).name,
        PATIENT_LOIRE,
    )

    def cancel(name: str, initiator: int, reason: int) -> s.CancelAppointmentRequest:
        return s.CancelAppointmentRequest(
            request_id=request_id(), name=name, initiator=initiator, reason=reason, note=""
        )

    error = await call(
        loire.CancelAppointment(
            cancel(soon.name, s.PARTY_PATIENT, s.CANCELLATION_REASON_PATIENT_REQUEST), metadata=front_desk
        )
    )
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CANCELLATION_CUTOFF_PASSED",
    )  # type: ignore[union-attr]
    # The requesting doctor is party to it, but not the teleconsultant's side.
    error = await call(
        loire.CancelAppointment(
            cancel(soon.name, s.PARTY_PRACTITIONER, s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE),
            metadata=requester,
        )
    )
    assert details(error)[0].reason == "PRACTITIONER_ONLY"  # type: ignore[union-attr]
    by_doctor = (
        await loire.CancelAppointment(
            s.CancelAppointmentRequest(
                request_id=request_id(),
                name=soon.name,
                initiator=s.PARTY_PRACTITIONER,
                reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
                note="urgence au bloc",
            ),
            metadata=doctor,
        )
    ).appointment
    assert by_doctor.state == A.STATE_CANCELLED
    assert by_doctor.cancellation.initiator == s.PARTY_PRACTITIONER
    assert by_doctor.cancellation.cancelled_by == f"practitioners/{rpps}"
    assert by_doctor.cancellation.note == "urgence au bloc"
    by_patient = (
        await loire.CancelAppointment(
            cancel(later.name, s.PARTY_PATIENT, s.CANCELLATION_REASON_PATIENT_REQUEST), metadata=front_desk
        )
    ).appointment
    assert (
        by_patient.state == A.STATE_CANCELLED
        and by_patient.cancellation.cancelled_by == f"establishments/{LOIRE}"
    )
    error = await call(
        loire.CancelAppointment(
            cancel(later.name, s.PARTY_PATIENT, s.CANCELLATION_REASON_PATIENT_REQUEST), metadata=front_desk
        )
    )
    assert details(error)[0].reason == "INVALID_TRANSITION"  # type: ignore[union-attr]
    # The slots are free again.
    again = await book(loire, front_desk, soon.slot, PATIENT_LOIRE)
    assert again.state == A.STATE_BOOKED and again.name != soon.name
    error = await call(loire.CancelAppointment(cancel(soon.name, s.PARTY_PATIENT, 0), metadata=front_desk))
    assert details(error)[1] and details(error)[1][0][0] == "reason"


async def test_rescheduling_books_the_new_slot_before_cancelling_the_old_and_links_them(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(
        loire,
        operator,
        rpps,
        LOIRE,
        durations={FOLLOW_UP: 20, FIRST_VISIT: 40},
        cancellation_cutoff=timedelta(hours=1),
    )
    await add_rules(loire, operator, schedule.name, [*every_day(), *every_day(service_type=FIRST_VISIT)])
    slots = await search(
        loire, front_desk, practitioner=f"practitioners/{rpps}", start_time=first_free_after(4)
    )
    long_starts = {when(x.start_time): x for x in slots if x.service_type == FIRST_VISIT}
    short = next(x for x in slots if x.service_type == FOLLOW_UP and when(x.start_time) in long_starts)
    overlapping_long = long_starts[when(short.start_time)]
    old = await book(
        loire,
        front_desk,
        short.name,
        PATIENT_LOIRE,
        consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL),
        treating_physician="practitioners/10000000101",
    )
    # A move onto an overlapping slot: booked first, then the old one cancelled, in one transaction.
    moved = await loire.RescheduleAppointment(
        s.RescheduleAppointmentRequest(
            request_id=request_id(), name=old.name, slot=overlapping_long.name, initiator=s.PARTY_PATIENT
        ),
        metadata=front_desk,
    )
    new, previous = moved.appointment, moved.previous
    assert new.state == A.STATE_BOOKED and new.rescheduled_from == old.name
    assert previous.state == A.STATE_CANCELLED and previous.rescheduled_to == new.name
    assert previous.cancellation.reason == s.CANCELLATION_REASON_RESCHEDULED
    assert (new.patient, new.treating_physician, new.consent.method) == (
        old.patient,
        old.treating_physician,
        s.CONSENT_METHOD_ORAL,
    )
    assert new.history[0].reason == "RESCHEDULED"
    assert when(new.create_time) <= when(previous.cancellation.cancel_time)
    # Onto a taken slot: refused, and the appointment stays where it was.
    taken = await book(loire, front_desk, slots[-1].name, PATIENT_LOIRE)
    error = await call(
        loire.RescheduleAppointment(
            s.RescheduleAppointmentRequest(
                request_id=request_id(), name=new.name, slot=taken.slot, initiator=s.PARTY_PATIENT
            ),
            metadata=front_desk,
        )
    )
    assert details(error)[0].reason == "SLOT_ALREADY_BOOKED"  # type: ignore[union-attr]
    still = (
        await loire.GetAppointment(s.GetAppointmentRequest(name=new.name), metadata=front_desk)
    ).appointment
    assert still.state == A.STATE_BOOKED and not still.rescheduled_to


# --- consent, entered in error ---------------------------------------------------------------------------


async def test_consent_is_recorded_with_who_and_when(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    booked = await book(
        loire, front_desk, (await first_free(loire, front_desk, rpps, timedelta(hours=2))).name, PATIENT_LOIRE
    )
    assert not booked.HasField("consent")
    consented = (
        await loire.RecordConsent(
            s.RecordConsentRequest(
                request_id=request_id(),
                name=booked.name,
                consent=s.ConsentInput(method=s.CONSENT_METHOD_WRITTEN),
            ),
            metadata=front_desk,
        )
    ).appointment
    assert consented.consent.method == s.CONSENT_METHOD_WRITTEN
    assert consented.consent.recorded_by == f"establishments/{LOIRE}"
    assert consented.consent.HasField("record_time")


async def test_entered_in_error_frees_the_slot_and_is_the_practitioner_s_to_say(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    booked_requester = await new_practitioner(directory, operator, LOIRE)
    booked = await book(
        loire,
        front_desk,
        (await first_free(loire, front_desk, rpps, timedelta(hours=2))).name,
        PATIENT_LOIRE,
        requester=f"practitioners/{booked_requester}",
    )
    request = s.MarkAppointmentEnteredInErrorRequest(
        request_id=request_id(), name=booked.name, note="mauvais patient"
    )
    # The requesting doctor sees it but is not the teleconsultant's side.
    requester = bearer(mint(rpps=booked_requester))
    error = await call(loire.MarkAppointmentEnteredInError(request, metadata=requester))
    assert details(error)[0].reason == "PRACTITIONER_ONLY"  # type: ignore[union-attr]
    marked = (
        await loire.MarkAppointmentEnteredInError(request, metadata=bearer(mint(rpps=rpps)))
    ).appointment
    assert marked.state == A.STATE_ENTERED_IN_ERROR and marked.fhir_status == "entered-in-error"
    assert [h.state for h in marked.history] == [A.STATE_BOOKED, A.STATE_ENTERED_IN_ERROR]
    assert (await book(loire, front_desk, booked.slot, PATIENT_LOIRE)).state == A.STATE_BOOKED


# --- who sees what, and the audit ------------------------------------------------------------------------


async def test_a_patient_must_be_known_in_the_caller_s_ght(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    slot = await first_free(loire, front_desk, rpps, timedelta(hours=2))
    for patient in (PATIENT_DAUPHINE, "patients/00000000-0000-4000-8000-000000000000"):
        error = await call(book(loire, front_desk, slot.name, patient))
        assert (error.code(), details(error)[0].reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PATIENT_NOT_VISIBLE",
        )  # type: ignore[union-attr]
    error = await call(
        book(loire, front_desk, slot.name, PATIENT_LOIRE, treating_physician="practitioners/39999999999")
    )
    assert details(error)[1] == [("treating_physician", "is not a practitioner of the directory")]


async def test_practitioners_see_their_own_establishments_their_ght_s_and_every_read_is_audited(
    loire: Stub,
    dauphine: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
    hub: Stub,
) -> None:
    rpps, _ = await agenda(loire, directory, operator)
    requester = await new_practitioner(directory, operator, LOIRE)
    booked = await book(
        loire,
        bearer(mint(rpps=requester)),
        (await first_free(loire, front_desk, rpps, timedelta(hours=2))).name,
        PATIENT_LOIRE,
    )
    assert booked.requester == f"practitioners/{requester}" and booked.booked_by == f"establishments/{LOIRE}"
    get = s.GetAppointmentRequest(name=booked.name)
    missing = s.GetAppointmentRequest(name="appointments/00000000-0000-4000-8000-000000000000")
    for who in (bearer(mint(rpps=rpps)), bearer(mint(rpps=requester)), front_desk):
        assert (await loire.GetAppointment(get, metadata=who)).appointment.name == booked.name
    colleague_rpps = await new_practitioner(directory, operator, LOIRE)
    colleague = bearer(mint(rpps=colleague_rpps))
    for stub, who, request in (
        (loire, colleague, get),
        (dauphine, bearer(mint(staff="desk-belledonne")), get),
        (loire, front_desk, missing),
    ):
        error = await call(stub.GetAppointment(request, metadata=who))
        # Not visible and not existing look the same.
        assert (error.code(), details(error)[0].reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "APPOINTMENT_NOT_VISIBLE",
        )  # type: ignore[union-attr]
    error = await call(loire.GetAppointment(missing, metadata=operator))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # A hub component (a workflow worker's certificate, no token) sees every appointment.
    assert (await hub.GetAppointment(get)).appointment.name == booked.name

    mine = await loire.ListAppointments(s.ListAppointmentsRequest(), metadata=bearer(mint(rpps=rpps)))
    assert [x.name for x in mine.appointments] == [booked.name]
    assert (await loire.ListAppointments(s.ListAppointmentsRequest(), metadata=colleague)).appointments == []
    ght = await loire.ListAppointments(
        s.ListAppointmentsRequest(practitioner=f"practitioners/{rpps}", states=[A.STATE_BOOKED]),
        metadata=front_desk,
    )
    assert [x.name for x in ght.appointments] == [booked.name]
    other_ght = await dauphine.ListAppointments(
        s.ListAppointmentsRequest(practitioner=f"practitioners/{rpps}"),
        metadata=bearer(mint(staff="desk-belledonne")),
    )
    assert other_ght.appointments == []

    rows = await pool.fetch(
        "SELECT method, practitioner, establishment, outcome, outcome_reason, patient FROM audit.events"
        " WHERE chain = 'scheduling' AND resource = $1 ORDER BY seq",
        booked.name,
    )
    reads = [r for r in rows if r["method"].endswith("/GetAppointment")]
    assert [(r["outcome"], r["patient"]) for r in reads] == [
        ("OK", PATIENT_LOIRE)
    ] * 4  # the three parties and the hub component
    created = [r for r in rows if r["method"].endswith("/BookAppointment")]
    assert [(r["practitioner"], r["patient"]) for r in created] == [
        (f"practitioners/{requester}", PATIENT_LOIRE)
    ]
    refused = await pool.fetch(
        "SELECT outcome_reason FROM audit.events"
        " WHERE chain = 'scheduling' AND method LIKE '%/GetAppointment'"
        " AND practitioner = $1",
        f"practitioners/{colleague_rpps}",
    )
    assert [r["outcome_reason"] for r in refused] == ["APPOINTMENT_NOT_VISIBLE"]


def first_free_after(hours: int) -> Timestamp:
    return stamp(datetime.now(UTC) + timedelta(hours=hours))
