"""Schedules, weekly rules, exceptions and slot search over real gRPC and PostgreSQL: the DST weeks of March
and October in Paris and an overseas zone without DST, exceptions (leave, closure, bulk public holidays),
search filters and pages, who may manage an agenda, and bad input named by field."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.type import interval_pb2
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.scheduling.helpers import (
    FIRST_VISIT,
    FOLLOW_UP,
    PARIS,
    PATIENT_DAUPHINE,
    Metadata,
    Stub,
    add_rules,
    duration,
    every_day,
    local,
    new_practitioner,
    new_schedule,
    proto_date,
    rule,
    search,
    stamp,
    when,
)
from tests.support import DAUPHINE, LOIRE, REUNION, bearer, establishment_channel, request_id
from tests.support.calls import call, details

REUNION_ZONE = ZoneInfo("Indian/Reunion")
H_CHARTREUSE = "380000032"  # a GHT Dauphiné site without a test certificate


def next_change(zone: ZoneInfo, forward: bool) -> date:
    """The next local day on which the zone's clocks go forward (or back)."""
    # At least 4 days ahead, so that the week around it is all bookable.
    day = datetime.now(UTC).astimezone(zone).date() + timedelta(days=4)
    for _ in range(400):
        before = datetime.combine(day, time(0), zone).utcoffset()
        after = datetime.combine(day + timedelta(days=1), time(0), zone).utcoffset()
        assert before is not None and after is not None
        if (after > before) if forward else (after < before):
            return day
        day += timedelta(days=1)
    raise AssertionError("no DST change within 400 days")


def around(day: date, zone: ZoneInfo) -> dict[str, object]:
    start = datetime.combine(day - timedelta(days=3), time(0), zone)
    return {"start_time": stamp(start), "end_time": stamp(start + timedelta(days=7))}


@pytest.fixture(scope="module")
async def dst_agendas(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> dict[str, str]:
    """A Paris GP (09:00 follow-ups every day, Sunday night first visits across the change) and a Réunion GP
    (09:00 every day), both open 400 days ahead so that the next changes are bookable."""
    agendas: dict[str, str] = {}
    for name, finess in (("paris", LOIRE), ("reunion", REUNION)):
        rpps = await new_practitioner(directory, operator, finess)
        schedule = await new_schedule(
            loire, operator, rpps, finess, durations={FOLLOW_UP: 60, FIRST_VISIT: 30}, horizon_days=400
        )
        rules = [rule(day, (9, 0), (10, 0)) for day in range(1, 8)]
        if name == "paris":
            rules.append(rule(7, (1, 0), (4, 0), FIRST_VISIT))
        await add_rules(loire, operator, schedule.name, rules)
        agendas[name] = rpps
    return agendas


# --- DST -------------------------------------------------------------------------------------------------


async def test_the_march_change_in_paris(
    loire: Stub, operator: Metadata, dst_agendas: dict[str, str]
) -> None:
    change = next_change(PARIS, forward=True)
    practitioner = f"practitioners/{dst_agendas['paris']}"
    mornings = await search(
        loire, operator, practitioner=practitioner, service_type=FOLLOW_UP, **around(change, PARIS)
    )
    assert [local(m).time() for m in mornings] == [time(9)] * 7
    assert [when(m.start_time).hour for m in mornings] == [8, 8, 8, 7, 7, 7, 7]
    assert all(m.local_start.time_zone.id == "Europe/Paris" for m in mornings)
    night = await search(
        loire, operator, practitioner=practitioner, service_type=FIRST_VISIT, **around(change, PARIS)
    )
    assert [local(n).strftime("%H:%M") for n in night] == ["01:00", "01:30", "03:00", "03:30"]
    assert [when(n.start_time) - when(night[0].start_time) for n in night] == [
        timedelta(minutes=m) for m in (0, 30, 60, 90)
    ]


async def test_the_october_change_in_paris(
    loire: Stub, operator: Metadata, dst_agendas: dict[str, str]
) -> None:
    change = next_change(PARIS, forward=False)
    practitioner = f"practitioners/{dst_agendas['paris']}"
    mornings = await search(
        loire, operator, practitioner=practitioner, service_type=FOLLOW_UP, **around(change, PARIS)
    )
    assert [local(m).time() for m in mornings] == [time(9)] * 7
    assert [when(m.start_time).hour for m in mornings] == [7, 7, 7, 8, 8, 8, 8]
    night = await search(
        loire, operator, practitioner=practitioner, service_type=FIRST_VISIT, **around(change, PARIS)
    )
    # The repeated hour is offered once: six wall-clock slots, six distinct instants, none overlapping.
    assert [local(n).strftime("%H:%M") for n in night] == [
        "01:00",
        "01:30",
        "02:00",
        "02:30",
        "03:00",
        "03:30",
    ]
    starts = [when(n.start_time) for n in night]
    assert len(set(starts)) == 6
    assert all(when(a.end_time) <= when(b.start_time) for a, b in itertools.pairwise(night))


async def test_reunion_keeps_its_hours_through_the_paris_changes(
    loire: Stub, operator: Metadata, dst_agendas: dict[str, str]
) -> None:
    practitioner = f"practitioners/{dst_agendas['reunion']}"
    for forward in (True, False):
        change = next_change(PARIS, forward)
        slots = await search(loire, operator, practitioner=practitioner, **around(change, PARIS))
        assert len(slots) == 7
        assert {when(x.start_time).time() for x in slots} == {time(5)}  # 09:00 at UTC+4, all year
        assert {x.local_start.time_zone.id for x in slots} == {"Indian/Reunion"}
        assert {x.region for x in slots} == {"regions/04"} and {x.ght for x in slots} == {""}


# --- schedules and who manages them ----------------------------------------------------------------------


async def test_a_schedule_copies_its_place_and_practitioner_from_the_directory(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE, specialty=p.SPECIALTY_DERMATOLOGY)
    mine = bearer(mint(rpps=rpps, specialty="SPECIALTY_DERMATOLOGY"))
    schedule = await new_schedule(loire, mine, rpps, LOIRE, buffer=timedelta(minutes=10))
    assert schedule.time_zone == "Europe/Paris"
    assert (schedule.ght, schedule.region) == ("ghts/ght-loire", "regions/84")
    assert schedule.specialty == p.SPECIALTY_DERMATOLOGY and schedule.profession == p.PROFESSION_PHYSICIAN
    assert schedule.booking_horizon_days == 3 and schedule.active
    again = await call(
        loire.CreateSchedule(
            s.CreateScheduleRequest(
                request_id=request_id(),
                schedule=s.ScheduleInput(
                    practitioner=f"practitioners/{rpps}",
                    establishment=f"establishments/{LOIRE}",
                    service_types=[
                        s.ServiceTypeDuration(
                            service_type=FOLLOW_UP, slot_duration=duration(timedelta(minutes=15))
                        )
                    ],
                ),
            ),
            metadata=mine,
        )
    )
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(again)[0].reason == "SCHEDULE_EXISTS"  # type: ignore[union-attr]

    listed = await loire.ListSchedules(
        s.ListSchedulesRequest(practitioner=f"practitioners/{rpps}"), metadata=mine
    )
    assert [x.name for x in listed.schedules] == [schedule.name]


async def test_only_the_practitioner_their_place_or_the_hub_manage_an_agenda(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    colleague = bearer(mint(rpps=await new_practitioner(directory, operator, LOIRE)))
    error = await call(new_schedule(loire, colleague, rpps, LOIRE))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)[0].reason == "SCHEDULE_NOT_MANAGED"  # type: ignore[union-attr]
    # The practice place's own staff (no practitioner token) may.
    secretariat = bearer(mint(staff="secretariat-forez"))
    schedule = await new_schedule(loire, secretariat, rpps, LOIRE)
    error = await call(add_rules(loire, colleague, schedule.name, [rule(1, (9, 0), (12, 0))]))
    assert details(error)[0].reason == "SCHEDULE_NOT_MANAGED"  # type: ignore[union-attr]


async def test_only_medical_and_telesoin_professionals_at_their_own_places_keep_agendas(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    # A nurse keeps a télésoin agenda (L.6316-2); a psychologist does not (no health profession of the CSP).
    nurse = await new_practitioner(directory, operator, LOIRE, profession=p.PROFESSION_NURSE)
    assert (await new_schedule(loire, operator, nurse, LOIRE)).name.startswith("schedules/")
    psychologist = await new_practitioner(directory, operator, LOIRE, profession=p.PROFESSION_PSYCHOLOGIST)
    error = await call(new_schedule(loire, operator, psychologist, LOIRE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "NOT_A_MEDICAL_PROFESSIONAL"  # type: ignore[union-attr]
    gp = await new_practitioner(directory, operator, LOIRE)
    error = await call(new_schedule(loire, operator, gp, DAUPHINE))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)[1] == [
        ("schedule.establishment", "is not one of the practitioner's practice places")
    ]


async def test_changing_a_schedule_rematerialises_its_slots(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(loire, operator, rpps, LOIRE)
    await add_rules(loire, operator, schedule.name, every_day((8, 0), (10, 0)))
    practitioner = f"practitioners/{rpps}"
    before = await search(loire, operator, practitioner=practitioner)
    assert before and all(when(x.end_time) - when(x.start_time) == timedelta(minutes=20) for x in before)
    await loire.UpdateSchedule(
        s.UpdateScheduleRequest(
            request_id=request_id(),
            name=schedule.name,
            schedule=s.SchedulePatch(buffer=duration(timedelta(minutes=10))),
            update_mask={"paths": ["buffer"]},
        ),
        metadata=operator,
    )
    spaced = await search(loire, operator, practitioner=practitioner)
    assert {local(x).minute for x in spaced} == {0, 30}
    await loire.UpdateSchedule(
        s.UpdateScheduleRequest(
            request_id=request_id(),
            name=schedule.name,
            schedule=s.SchedulePatch(active=False),
            update_mask={"paths": ["active"]},
        ),
        metadata=operator,
    )
    assert await search(loire, operator, practitioner=practitioner) == []


async def test_deleting_a_rule_removes_its_free_slots(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(loire, operator, rpps, LOIRE, durations={FOLLOW_UP: 20, FIRST_VISIT: 40})
    await add_rules(
        loire,
        operator,
        schedule.name,
        [*every_day((8, 0), (9, 0)), *every_day((14, 0), (16, 0), FIRST_VISIT)],
    )
    rules = (
        await loire.ListAvailabilityRules(
            s.ListAvailabilityRulesRequest(parent=schedule.name), metadata=operator
        )
    ).rules
    assert len(rules) == 14
    for found in rules:
        if found.service_type == FIRST_VISIT:
            await loire.DeleteAvailabilityRule(
                s.DeleteAvailabilityRuleRequest(request_id=request_id(), name=found.name), metadata=operator
            )
    left = await search(loire, operator, practitioner=f"practitioners/{rpps}")
    assert left and {x.service_type for x in left} == {FOLLOW_UP}


# --- exceptions ------------------------------------------------------------------------------------------


async def test_leave_removes_whole_local_days_and_its_removal_restores_them(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    mine = bearer(mint(rpps=rpps))
    schedule = await new_schedule(loire, mine, rpps, LOIRE, horizon_days=5)
    await add_rules(loire, mine, schedule.name, every_day((9, 0), (12, 0)))
    practitioner = f"practitioners/{rpps}"
    before = await search(loire, mine, practitioner=practitioner)
    leave_day = datetime.now(PARIS).date() + timedelta(days=2)
    reply = await loire.CreateAvailabilityException(
        s.CreateAvailabilityExceptionRequest(
            request_id=request_id(),
            exception=s.AvailabilityExceptionInput(
                practitioner=practitioner,
                kind=s.EXCEPTION_KIND_LEAVE,
                dates=s.LocalDateRange(start_date=proto_date(leave_day), end_date=proto_date(leave_day)),
                note="congés",
            ),
        ),
        metadata=mine,
    )
    assert (
        reply.exception.practitioner == practitioner and reply.exception.dates.end_date.day == leave_day.day
    )
    during = await search(loire, mine, practitioner=practitioner)
    assert {local(x).date() for x in during} == {local(x).date() for x in before} - {leave_day}
    listed = await loire.ListAvailabilityExceptions(
        s.ListAvailabilityExceptionsRequest(schedule=schedule.name), metadata=mine
    )
    assert [x.name for x in listed.exceptions] == [reply.exception.name]
    await loire.DeleteAvailabilityException(
        s.DeleteAvailabilityExceptionRequest(request_id=request_id(), name=reply.exception.name),
        metadata=mine,
    )
    assert [x.name for x in await search(loire, mine, practitioner=practitioner)] == [x.name for x in before]


async def test_a_closure_covers_every_agenda_at_the_place_and_names_the_bookings_in_it(
    loire: Stub,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    pki: DevPki,
    scheduling_address: str,
    mint: Minter,
) -> None:
    first = await new_practitioner(directory, operator, H_CHARTREUSE)
    second = await new_practitioner(directory, operator, H_CHARTREUSE)
    for rpps in (first, second):
        schedule = await new_schedule(loire, operator, rpps, H_CHARTREUSE)
        await add_rules(loire, operator, schedule.name, every_day((9, 0), (12, 0)))
    tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
    start = datetime.combine(tomorrow, time(10), PARIS)
    dauphine = s_stub(pki, scheduling_address, DAUPHINE)
    staff = bearer(mint(staff="accueil-belledonne"))
    [slot] = [
        x for x in await search(dauphine, staff, practitioner=f"practitioners/{first}") if local(x) == start
    ]
    booked = await dauphine.BookAppointment(
        s.BookAppointmentRequest(request_id=request_id(), slot=slot.name, patient=PATIENT_DAUPHINE),
        metadata=staff,
    )
    closure = s.AvailabilityExceptionInput(
        establishment=f"establishments/{H_CHARTREUSE}",
        kind=s.EXCEPTION_KIND_CLOSURE,
        interval=interval_pb2.Interval(start_time=stamp(start), end_time=stamp(start + timedelta(hours=1))),
    )
    # Another establishment's staff may not close this one.
    error = await call(
        loire.CreateAvailabilityException(
            s.CreateAvailabilityExceptionRequest(request_id=request_id(), exception=closure),
            metadata=bearer(mint(staff="x")),
        )
    )
    assert details(error)[0].reason == "EXCEPTION_SCOPE_NOT_MANAGED"  # type: ignore[union-attr]
    reply = await loire.CreateAvailabilityException(
        s.CreateAvailabilityExceptionRequest(request_id=request_id(), exception=closure), metadata=operator
    )
    assert list(reply.conflicting_appointments) == [booked.appointment.name]
    for rpps in (first, second):
        left = await search(loire, operator, practitioner=f"practitioners/{rpps}")
        assert not [x for x in left if start <= local(x) < start + timedelta(hours=1)]
        assert [x for x in left if local(x) == start + timedelta(hours=1)]
    await loire.DeleteAvailabilityException(
        s.DeleteAvailabilityExceptionRequest(request_id=request_id(), name=reply.exception.name),
        metadata=operator,
    )


async def test_a_region_s_public_holidays_in_one_batch(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    rpps = await new_practitioner(directory, operator, REUNION)
    schedule = await new_schedule(loire, operator, rpps, REUNION, horizon_days=20)
    await add_rules(loire, operator, schedule.name, every_day((8, 0), (11, 0)))
    today = datetime.now(REUNION_ZONE).date()
    holidays = [today + timedelta(days=10), today + timedelta(days=12)]
    batch = s.BatchCreateAvailabilityExceptionsRequest(
        request_id=request_id(),
        exceptions=[
            s.AvailabilityExceptionInput(
                region="regions/04",
                kind=s.EXCEPTION_KIND_PUBLIC_HOLIDAY,
                dates=s.LocalDateRange(start_date=proto_date(d), end_date=proto_date(d)),
                note="jour férié",
            )
            for d in holidays
        ],
    )
    error = await call(loire.BatchCreateAvailabilityExceptions(batch, metadata=bearer(mint(rpps=rpps))))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    reply = await loire.BatchCreateAvailabilityExceptions(batch, metadata=operator)
    try:
        assert [x.region for x in reply.exceptions] == ["regions/04", "regions/04"]
        # A retry of the batch creates nothing more.
        again = await loire.BatchCreateAvailabilityExceptions(batch, metadata=operator)
        assert [x.name for x in again.exceptions] == [x.name for x in reply.exceptions]
        days = {local(x).date() for x in await search(loire, operator, practitioner=f"practitioners/{rpps}")}
        assert not days & set(holidays)
        assert today + timedelta(days=11) in days
    finally:
        for created in reply.exceptions:
            await loire.DeleteAvailabilityException(
                s.DeleteAvailabilityExceptionRequest(request_id=request_id(), name=created.name),
                metadata=operator,
            )


# --- search --------------------------------------------------------------------------------------------


async def test_search_by_specialty_ght_region_and_service_type_in_start_order_page_by_page(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    loire_derm = await new_practitioner(directory, operator, LOIRE, specialty=p.SPECIALTY_NEPHROLOGY)
    dauphine_derm = await new_practitioner(directory, operator, DAUPHINE, specialty=p.SPECIALTY_NEPHROLOGY)
    for rpps, finess in ((loire_derm, LOIRE), (dauphine_derm, DAUPHINE)):
        schedule = await new_schedule(
            loire, operator, rpps, finess, durations={FOLLOW_UP: 30, FIRST_VISIT: 60}
        )
        await add_rules(
            loire,
            operator,
            schedule.name,
            [*every_day((9, 0), (11, 0)), *every_day((14, 0), (16, 0), FIRST_VISIT)],
        )
    anyone = bearer(mint(staff="front-end"))
    by_specialty = await search(loire, anyone, specialty=p.SPECIALTY_NEPHROLOGY)
    practitioners = {x.practitioner for x in by_specialty}
    assert {f"practitioners/{loire_derm}", f"practitioners/{dauphine_derm}"} <= practitioners
    starts = [(when(x.start_time), x.name) for x in by_specialty]
    assert starts == sorted(starts)
    assert all(when(x.start_time) >= datetime.now(UTC) - timedelta(seconds=5) for x in by_specialty)
    in_ght = await search(loire, anyone, specialty=p.SPECIALTY_NEPHROLOGY, ght="ghts/ght-alpes-dauphine")
    assert f"practitioners/{loire_derm}" not in {x.practitioner for x in in_ght}
    assert {x.ght for x in in_ght} == {"ghts/ght-alpes-dauphine"}
    in_region = await search(
        loire, anyone, specialty=p.SPECIALTY_NEPHROLOGY, region="regions/84", service_type=FIRST_VISIT
    )
    assert {x.service_type for x in in_region} == {FIRST_VISIT} and {x.region for x in in_region} == {
        "regions/84"
    }
    # Pages of 7: each slot once, in order, the token bound to its filters.
    paged: list[str] = []
    token = ""
    while True:
        reply = await loire.SearchSlots(
            s.SearchSlotsRequest(practitioner=f"practitioners/{loire_derm}", page_size=7, page_token=token),
            metadata=anyone,
        )
        paged += [x.name for x in reply.slots]
        token = reply.next_page_token
        if not token:
            break
        assert len(reply.slots) == 7
    assert paged == [x.name for x in await search(loire, anyone, practitioner=f"practitioners/{loire_derm}")]
    first = await loire.SearchSlots(
        s.SearchSlotsRequest(practitioner=f"practitioners/{loire_derm}", page_size=2), metadata=anyone
    )
    error = await call(
        loire.SearchSlots(
            s.SearchSlotsRequest(
                practitioner=f"practitioners/{dauphine_derm}", page_token=first.next_page_token
            ),
            metadata=anyone,
        )
    )
    assert details(error)[1] == [("page_token", "was issued for other filters; start again without it")]


async def test_minimum_notice_keeps_the_next_slots_out_of_search(
    loire: Stub, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(loire, operator, rpps, LOIRE, minimum_notice=timedelta(hours=6))
    await add_rules(loire, operator, schedule.name, every_day())
    found = await search(loire, operator, practitioner=f"practitioners/{rpps}")
    assert min(when(x.start_time) for x in found) >= datetime.now(UTC) + timedelta(hours=6) - timedelta(
        seconds=5
    )


# --- bad input -----------------------------------------------------------------------------------------


async def test_bad_input_is_refused_naming_the_field(loire: Stub, operator: Metadata) -> None:
    error = await call(
        loire.CreateSchedule(
            s.CreateScheduleRequest(
                request_id=request_id(),
                schedule=s.ScheduleInput(
                    practitioner="practitioners/123",
                    establishment=f"establishments/{LOIRE}",
                    service_types=[
                        s.ServiceTypeDuration(
                            service_type=FOLLOW_UP, slot_duration=duration(timedelta(seconds=1230))
                        )
                    ],
                ),
            ),
            metadata=operator,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in details(error)[1]}
    assert fields == {"schedule.practitioner", "schedule.service_types[0].slot_duration"}

    bad_rule = s.CreateAvailabilityRuleRequest(
        request_id=request_id(),
        parent="schedules/00000000-0000-0000-0000-000000000000",
        rule=rule(1, (12, 0), (9, 0)),
    )
    error = await call(loire.CreateAvailabilityRule(bad_rule, metadata=operator))
    assert details(error)[1] == [("rule", "end_time_of_day must be after start_time_of_day")]

    error = await call(
        loire.SearchSlots(
            s.SearchSlotsRequest(
                start_time=stamp(datetime.now(UTC)), end_time=stamp(datetime.now(UTC) - timedelta(days=1))
            ),
            metadata=operator,
        )
    )
    assert details(error)[1] == [("end_time", "must be after start_time")]

    error = await call(
        loire.BookAppointment(
            s.BookAppointmentRequest(request_id="not-a-uuid", slot="slots/42", patient="x"), metadata=operator
        )
    )
    assert {f for f, _ in details(error)[1]} == {"request_id", "slot", "patient"}


def s_stub(pki: DevPki, address: str, finess: str) -> Stub:
    from parcours.scheduling.v1 import scheduling_pb2_grpc

    return scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, address, finess))
