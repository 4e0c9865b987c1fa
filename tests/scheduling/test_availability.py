"""Weekly rules → slots, in the practice place's own time zone (pure functions, no I/O): the DST nights of
March and October in Paris, an overseas zone without DST, buffers, exceptions."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduling.availability import (
    Blackout,
    WeeklyRule,
    day_span,
    materialise,
    wall_clock_instant,
)

PARIS = ZoneInfo("Europe/Paris")
REUNION = ZoneInfo("Indian/Reunion")
GUADELOUPE = ZoneInfo("America/Guadeloupe")
# 2027's changes in the EU: clocks go forward on Sunday 28 March, back on Sunday 31 October.
SPRING = date(2027, 3, 28)
AUTUMN = date(2027, 10, 31)
HALF_HOUR = {"X": timedelta(minutes=30)}


def week(center: date) -> tuple[date, date]:
    return center - timedelta(days=3), center + timedelta(days=3)


def locals_of(slots: list, zone: ZoneInfo) -> list[str]:  # type: ignore[type-arg]
    return [s.start.astimezone(zone).strftime("%H:%M%z") for s in slots]


def test_nine_o_clock_in_paris_is_eight_utc_in_winter_and_seven_in_summer() -> None:
    rules = [WeeklyRule(day, time(9), time(10), "X") for day in range(1, 8)]
    slots = materialise(rules, {"X": timedelta(hours=1)}, timedelta(0), PARIS, *week(SPRING))
    assert [s.start.astimezone(UTC).hour for s in slots] == [8, 8, 8, 7, 7, 7, 7]
    assert {s.start.astimezone(PARIS).time() for s in slots} == {time(9)}
    slots = materialise(rules, {"X": timedelta(hours=1)}, timedelta(0), PARIS, *week(AUTUMN))
    assert [s.start.astimezone(UTC).hour for s in slots] == [7, 7, 7, 8, 8, 8, 8]
    assert {s.start.astimezone(PARIS).time() for s in slots} == {time(9)}


def test_no_slot_in_the_hour_that_does_not_exist() -> None:
    rules = [WeeklyRule(7, time(1), time(4), "X")]
    slots = materialise(rules, HALF_HOUR, timedelta(0), PARIS, SPRING, SPRING)
    assert locals_of(slots, PARIS) == ["01:00+0100", "01:30+0100", "03:00+0200", "03:30+0200"]
    # Back to back in real time: the night is an hour shorter, nothing overlaps, nothing is lost around it.
    assert [s.start.astimezone(UTC).strftime("%H:%M") for s in slots] == ["00:00", "00:30", "01:00", "01:30"]


def test_the_repeated_hour_is_offered_once() -> None:
    rules = [WeeklyRule(7, time(1), time(4), "X")]
    slots = materialise(rules, HALF_HOUR, timedelta(0), PARIS, AUTUMN, AUTUMN)
    # Every wall-clock slot of the rule once, the ambiguous ones at their first occurrence.
    assert locals_of(slots, PARIS) == [
        "01:00+0200",
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "03:00+0100",
        "03:30+0100",
    ]
    starts = [s.start for s in slots]
    assert len(set(starts)) == len(starts)
    assert all(a.end <= b.start for a, b in itertools.pairwise(slots))


def test_a_rule_ending_in_the_missing_hour_ends_at_the_change() -> None:
    slots = materialise(
        [WeeklyRule(7, time(1), time(2, 30), "X")], HALF_HOUR, timedelta(0), PARIS, SPRING, SPRING
    )
    assert locals_of(slots, PARIS) == ["01:00+0100", "01:30+0100"]


def test_a_slot_that_would_overlap_its_predecessor_on_the_short_night_is_dropped() -> None:
    rules = [WeeklyRule(7, time(1), time(5), "X")]
    slots = materialise(rules, {"X": timedelta(minutes=40)}, timedelta(0), PARIS, SPRING, SPRING)
    assert all(a.end <= b.start for a, b in itertools.pairwise(slots))
    assert "02:20+0100" not in locals_of(slots, PARIS)


@pytest.mark.parametrize("zone", [REUNION, GUADELOUPE], ids=["reunion", "guadeloupe"])
def test_overseas_zones_have_no_dst(zone: ZoneInfo) -> None:
    rules = [WeeklyRule(day, time(9), time(10), "X") for day in range(1, 8)]
    for center in (SPRING, AUTUMN):
        slots = materialise(rules, {"X": timedelta(hours=1)}, timedelta(0), zone, *week(center))
        assert len({s.start.astimezone(UTC).time() for s in slots}) == 1
        assert {s.start.astimezone(zone).time() for s in slots} == {time(9)}


def test_the_local_weekday_decides_overseas() -> None:
    # Monday 21:00 in Guadeloupe is already Tuesday in UTC.
    slots = materialise(
        [WeeklyRule(1, time(21), time(22), "X")],
        {"X": timedelta(hours=1)},
        timedelta(0),
        GUADELOUPE,
        date(2027, 1, 4),
        date(2027, 1, 10),
    )
    assert [s.start for s in slots] == [datetime(2027, 1, 5, 1, 0, tzinfo=UTC)]


def test_buffers_space_the_slots() -> None:
    slots = materialise(
        [WeeklyRule(1, time(9), time(11), "X")],
        {"X": timedelta(minutes=20)},
        timedelta(minutes=10),
        PARIS,
        date(2027, 1, 4),
        date(2027, 1, 4),
    )
    assert [s.start.astimezone(PARIS).strftime("%H:%M") for s in slots] == [
        "09:00",
        "09:30",
        "10:00",
        "10:30",
    ]


def test_exceptions_remove_the_slots_they_overlap() -> None:
    rules = [WeeklyRule(day, time(9), time(12), "X") for day in range(1, 8)]
    holiday = day_span(date(2027, 5, 1), date(2027, 5, 1), PARIS)
    closure = Blackout(datetime(2027, 5, 3, 9, 15, tzinfo=PARIS), datetime(2027, 5, 3, 10, 0, tzinfo=PARIS))
    slots = materialise(
        rules, HALF_HOUR, timedelta(0), PARIS, date(2027, 4, 30), date(2027, 5, 3), [holiday, closure]
    )
    days = {s.start.astimezone(PARIS).date() for s in slots}
    assert date(2027, 5, 1) not in days and date(2027, 4, 30) in days
    may_3 = [s.start.astimezone(PARIS).strftime("%H:%M") for s in slots if s.start.astimezone(PARIS).day == 3]
    assert may_3 == ["10:00", "10:30", "11:00", "11:30"]


def test_whole_local_days_follow_the_zone() -> None:
    paris_day = day_span(SPRING, SPRING, PARIS)
    assert paris_day.end - paris_day.start == timedelta(hours=23)
    reunion_day = day_span(SPRING, SPRING, REUNION)
    assert reunion_day.start == datetime(2027, 3, 27, 20, 0, tzinfo=UTC)


def test_wall_clock_instants() -> None:
    assert wall_clock_instant(SPRING, time(2, 30), PARIS) is None
    assert wall_clock_instant(AUTUMN, time(2, 30), PARIS) == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)
    assert wall_clock_instant(SPRING, time(9), REUNION) == datetime(2027, 3, 28, 5, 0, tzinfo=UTC)


def test_validity_dates_bound_a_rule() -> None:
    rules = [
        WeeklyRule(day, time(9), time(10), "X", valid_from=date(2027, 1, 6), valid_until=date(2027, 1, 8))
        for day in range(1, 8)
    ]
    slots = materialise(
        rules, {"X": timedelta(hours=1)}, timedelta(0), PARIS, date(2027, 1, 4), date(2027, 1, 10)
    )
    assert [s.start.astimezone(PARIS).day for s in slots] == [6, 7, 8]
