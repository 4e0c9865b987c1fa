"""Materialising a schedule's slots: its weekly rules minus its exceptions, over its booking horizon.

Run in the transaction of the change that needs it (a rule or an exception added or removed, a setting
changed), with the schedule's row locked so two materialisations of one schedule never interleave; and by
the horizon refresher, which opens each schedule's next day as days pass.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.scheduling import store
from services.scheduling.availability import (
    Blackout,
    WeeklyRule,
    day_span,
    materialise,
    slot_id,
)


def exception_blackout(row: asyncpg.Record, zone: ZoneInfo) -> Blackout:
    """An exception as instants in a schedule's zone (whole local days are that zone's midnights)."""
    if row["period"] is not None:
        return Blackout(row["period"].lower, row["period"].upper)
    days = row["days"]
    return day_span(days.lower, days.upper - timedelta(days=1), zone)


async def materialise_schedule(
    tx: asyncpg.Connection, schedule_id: uuid.UUID, now: datetime | None = None
) -> int:
    """Make the schedule's future slots what its rules and exceptions say; returns how many exist."""
    schedule = await store.get_schedule(tx, schedule_id, lock=True)
    if schedule is None:
        return 0
    now = now or datetime.now(UTC)
    zone = ZoneInfo(schedule["time_zone"])
    today = now.astimezone(zone).date()
    since = day_span(today, today, zone).start
    if not schedule["active"]:
        await store.delete_future_slots(tx, schedule_id, since)
        await store.set_materialised_until(tx, schedule_id, None)
        return 0
    last_day = today + timedelta(days=schedule["booking_horizon_days"] - 1)
    rules = [
        WeeklyRule(
            day_of_week=r["day_of_week"],
            start=r["start_local"],
            end=r["end_local"],
            service_type=r["service_type"],
            valid_from=r["valid_from"],
            valid_until=r["valid_until"],
        )
        for r in await store.rules_of(tx, schedule_id)
    ]
    blackouts = [exception_blackout(x, zone) for x in await store.exceptions_of(tx, schedule)]
    durations = dict(zip(schedule["service_types"], schedule["slot_durations"], strict=True))
    slots = materialise(rules, durations, schedule["buffer"], zone, today, last_day, blackouts)
    await store.replace_future_slots(
        tx,
        schedule,
        since,
        [
            store.SlotRow(slot_id(schedule_id, s.service_type, s.start), s.service_type, s.start, s.end)
            for s in slots
        ],
    )
    await store.set_materialised_until(tx, schedule_id, last_day)
    return len(slots)
