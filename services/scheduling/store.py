"""The scheduling service's SQL (schema `scheduling`), shared with the Teleconsultation worker's activities.

Methods take a connection (`conn`): the pool for a one-statement read or write, or a connection inside a
transaction the caller opened with `transaction()`. Rows come back as asyncpg records; `resources.py` turns
them into API messages.

The invariants are constraints in the database (see the migration): above all `appointments_no_overlap`, the
exclusion constraint that makes double booking impossible whatever the concurrency, and that holds lapse by
themselves. A violation comes back from here as a domain error with a stable reason (`_CONSTRAINT_ERRORS`).

Booking a free slot is one statement (a chain of data-modifying CTEs): the appointment, its first history row,
the outbox row that starts its workflow and the request id all commit together or not at all.

Every write that creates or extends a claim on a practitioner's time (a hold, a proposal, a booking, the
booking of a held slot) first takes that practitioner's agenda lock (`AGENDA_LOCK`, transaction-scoped), so
concurrent claims on one agenda queue up instead of meeting inside the exclusion constraint's check: two
transactions inserting overlapping rows each wait there for the other to end, which PostgreSQL can only
resolve by aborting one (a deadlock, the booking of a held slot included). Behind the lock the loser finds
the winner committed and is refused `SLOT_ALREADY_BOOKED` at once. Agendas of different practitioners never
wait for each other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.kit.cases import Outbox
from services.kit.errors import AlreadyExists, DomainError, FailedPrecondition
from services.kit.idempotency import Call, Ledger
from services.kit.reports import Scope

# The service's idempotency ledger and workflow outbox (the kit's shapes, in this schema).
LEDGER = Ledger("scheduling")
OUTBOX = Outbox("scheduling")

# pg_advisory_xact_lock(class, key) of a practitioner's agenda (see the module docstring); the class (ASCII
# "agnd") keeps it apart from every other advisory lock.
_AGENDA_LOCK_CLASS = 0x61676E64
AGENDA_LOCK = f"pg_advisory_xact_lock({_AGENDA_LOCK_CLASS}, hashtext({{rpps}}))"

_CONSTRAINT_ERRORS: dict[str, tuple[type[DomainError], str, str]] = {
    "appointments_no_overlap": (
        FailedPrecondition,
        "SLOT_ALREADY_BOOKED",
        "the slot is already held or booked (or overlaps an appointment of the same practitioner)",
    ),
    "schedules_rpps_finess_key": (
        AlreadyExists,
        "SCHEDULE_EXISTS",
        "the practitioner already has a schedule at this practice place",
    ),
    "availability_rules_service_type_fkey": (
        FailedPrecondition,
        "SERVICE_TYPE_NOT_OFFERED",
        "the schedule has no slot length for this service type",
    ),
    "availability_rules_distinct": (
        AlreadyExists,
        "AVAILABILITY_RULE_EXISTS",
        "the schedule already has this rule (same day, times, service type and validity)",
    ),
}


def constraint_error(exc: asyncpg.IntegrityConstraintViolationError) -> DomainError | None:
    found = _CONSTRAINT_ERRORS.get(getattr(exc, "constraint_name", None) or "")
    if found is None:
        return None
    kind, reason, message = found
    return kind(reason, message)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction():
        yield conn


# Statements marked `noqa: S608` are composed of this module's constant SQL fragments (column lists)
# only; every value is a bind parameter.

# --- schedules --------------------------------------------------------------------------------------------

SCHEDULE_COLUMNS = """
    sc.schedule_id, sc.rpps, sc.profession, sc.specialty, sc.finess, sc.ght_id, sc.region_code, sc.time_zone,
    sc.buffer, sc.minimum_notice, sc.cancellation_cutoff, sc.booking_horizon_days, sc.active,
    sc.materialised_until, sc.create_time, sc.update_time,
    ARRAY(SELECT t.service_type FROM scheduling.schedule_service_types t
          WHERE t.schedule_id = sc.schedule_id ORDER BY t.service_type) AS service_types,
    ARRAY(SELECT t.slot_duration FROM scheduling.schedule_service_types t
          WHERE t.schedule_id = sc.schedule_id ORDER BY t.service_type) AS slot_durations
"""
INSERT_SCHEDULE = """
INSERT INTO scheduling.schedules (
    schedule_id, rpps, profession, specialty, finess, ght_id, region_code, time_zone, buffer, minimum_notice,
    cancellation_cutoff, booking_horizon_days)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
"""
INSERT_SERVICE_TYPES = """
INSERT INTO scheduling.schedule_service_types (schedule_id, service_type, slot_duration)
SELECT $1, t, d FROM unnest($2::text[], $3::interval[]) AS u(t, d)
"""
DELETE_SERVICE_TYPES_NOT_IN = """
DELETE FROM scheduling.schedule_service_types WHERE schedule_id = $1 AND NOT (service_type = ANY($2::text[]))
"""
UPSERT_SERVICE_TYPES = """
INSERT INTO scheduling.schedule_service_types (schedule_id, service_type, slot_duration)
SELECT $1, t, d FROM unnest($2::text[], $3::interval[]) AS u(t, d)
ON CONFLICT (schedule_id, service_type) DO UPDATE SET slot_duration = EXCLUDED.slot_duration
"""
GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM scheduling.schedules sc WHERE sc.schedule_id = $1"  # noqa: S608
LOCK_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM scheduling.schedules sc WHERE sc.schedule_id = $1 FOR UPDATE"  # noqa: S608
LIST_SCHEDULES = f"""
SELECT {SCHEDULE_COLUMNS} FROM scheduling.schedules sc
WHERE ($1::uuid IS NULL OR sc.schedule_id > $1)
  AND ($2::text IS NULL OR sc.rpps = $2)
  AND ($3::text IS NULL OR sc.finess = $3)
ORDER BY sc.schedule_id LIMIT $4
"""  # noqa: S608
UPDATE_SCHEDULE = """
UPDATE scheduling.schedules SET
    buffer = COALESCE($2, buffer),
    minimum_notice = COALESCE($3, minimum_notice),
    cancellation_cutoff = COALESCE($4, cancellation_cutoff),
    booking_horizon_days = COALESCE($5, booking_horizon_days),
    active = COALESCE($6, active)
WHERE schedule_id = $1
"""
SET_MATERIALISED_UNTIL = "UPDATE scheduling.schedules SET materialised_until = $2 WHERE schedule_id = $1"


@dataclass(frozen=True)
class ScheduleValues:
    rpps: str
    profession: str
    specialty: str
    finess: str
    ght_id: str | None
    region_code: str
    time_zone: str
    buffer: timedelta
    minimum_notice: timedelta
    cancellation_cutoff: timedelta
    booking_horizon_days: int
    service_types: dict[str, timedelta]


async def insert_schedule(tx: asyncpg.Connection, schedule_id: uuid.UUID, values: ScheduleValues) -> None:
    await tx.execute(
        INSERT_SCHEDULE,
        schedule_id,
        values.rpps,
        values.profession,
        values.specialty,
        values.finess,
        values.ght_id,
        values.region_code,
        values.time_zone,
        values.buffer,
        values.minimum_notice,
        values.cancellation_cutoff,
        values.booking_horizon_days,
    )
    await tx.execute(
        INSERT_SERVICE_TYPES, schedule_id, list(values.service_types), list(values.service_types.values())
    )


async def get_schedule(conn: Any, schedule_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(LOCK_SCHEDULE if lock else GET_SCHEDULE, schedule_id)


async def list_schedules(
    conn: Any, limit: int, after: uuid.UUID | None, rpps: str | None, finess: str | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(LIST_SCHEDULES, after, rpps, finess, limit))


async def update_schedule(
    tx: asyncpg.Connection,
    schedule_id: uuid.UUID,
    *,
    buffer: timedelta | None = None,
    minimum_notice: timedelta | None = None,
    cancellation_cutoff: timedelta | None = None,
    booking_horizon_days: int | None = None,
    active: bool | None = None,
    service_types: dict[str, timedelta] | None = None,
) -> None:
    await tx.execute(
        UPDATE_SCHEDULE,
        schedule_id,
        buffer,
        minimum_notice,
        cancellation_cutoff,
        booking_horizon_days,
        active,
    )
    if service_types is not None:
        # Rules of a service type no longer offered go with it (ON DELETE CASCADE).
        await tx.execute(DELETE_SERVICE_TYPES_NOT_IN, schedule_id, list(service_types))
        await tx.execute(UPSERT_SERVICE_TYPES, schedule_id, list(service_types), list(service_types.values()))


# --- rules ------------------------------------------------------------------------------------------------

RULE_COLUMNS = """
    r.rule_id, r.schedule_id, r.day_of_week, r.start_local, r.end_local, r.service_type, r.valid_from,
    r.valid_until, r.create_time
"""
INSERT_RULE = f"""
INSERT INTO scheduling.availability_rules AS r (rule_id, schedule_id, day_of_week, start_local, end_local,
                                                service_type, valid_from, valid_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {RULE_COLUMNS}
"""  # noqa: S608
GET_RULE = f"SELECT {RULE_COLUMNS} FROM scheduling.availability_rules r WHERE r.rule_id = $1"  # noqa: S608
RULES_OF_SCHEDULE = f"""
SELECT {RULE_COLUMNS} FROM scheduling.availability_rules r WHERE r.schedule_id = $1 ORDER BY r.rule_id
"""  # noqa: S608
LIST_RULES = f"""
SELECT {RULE_COLUMNS} FROM scheduling.availability_rules r
WHERE r.schedule_id = $1 AND ($2::uuid IS NULL OR r.rule_id > $2)
ORDER BY r.rule_id LIMIT $3
"""  # noqa: S608
DELETE_RULE = "DELETE FROM scheduling.availability_rules WHERE rule_id = $1 AND schedule_id = $2"


async def insert_rule(
    tx: asyncpg.Connection,
    rule_id: uuid.UUID,
    schedule_id: uuid.UUID,
    day_of_week: int,
    start: Any,
    end: Any,
    service_type: str,
    valid_from: date | None,
    valid_until: date | None,
) -> asyncpg.Record:
    return await tx.fetchrow(
        INSERT_RULE, rule_id, schedule_id, day_of_week, start, end, service_type, valid_from, valid_until
    )


async def get_rule(conn: Any, rule_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_RULE, rule_id)


async def rules_of(conn: Any, schedule_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(await conn.fetch(RULES_OF_SCHEDULE, schedule_id))


async def list_rules(
    conn: Any, schedule_id: uuid.UUID, limit: int, after: uuid.UUID | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(LIST_RULES, schedule_id, after, limit))


async def delete_rule(tx: asyncpg.Connection, rule_id: uuid.UUID, schedule_id: uuid.UUID) -> bool:
    return str(await tx.execute(DELETE_RULE, rule_id, schedule_id)).endswith(" 1")


# --- exceptions -------------------------------------------------------------------------------------------

EXCEPTION_COLUMNS = """
    x.exception_id, x.schedule_id, x.rpps, x.finess, x.region_code, x.kind, x.period, x.days, x.note,
    x.create_time
"""
INSERT_EXCEPTION = f"""
INSERT INTO scheduling.availability_exceptions AS x (
    exception_id, schedule_id, rpps, finess, region_code, kind, period, days, note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {EXCEPTION_COLUMNS}
"""  # noqa: S608
GET_EXCEPTION = (
    f"SELECT {EXCEPTION_COLUMNS} FROM scheduling.availability_exceptions x WHERE x.exception_id = $1"  # noqa: S608
)
DELETE_EXCEPTION = "DELETE FROM scheduling.availability_exceptions WHERE exception_id = $1"
# The exceptions that apply to a schedule, whatever their scope.
EXCEPTIONS_OF_SCHEDULE = f"""
SELECT {EXCEPTION_COLUMNS} FROM scheduling.availability_exceptions x
WHERE x.schedule_id = $1 OR x.rpps = $2 OR x.finess = $3 OR x.region_code = $4
"""  # noqa: S608
LIST_EXCEPTIONS = f"""
SELECT {EXCEPTION_COLUMNS} FROM scheduling.availability_exceptions x
LEFT JOIN scheduling.schedules sc ON sc.schedule_id = $2
WHERE ($1::uuid IS NULL OR x.exception_id > $1)
  AND ($2::uuid IS NULL OR x.schedule_id = $2 OR x.rpps = sc.rpps OR x.finess = sc.finess
       OR x.region_code = sc.region_code)
  AND ($3::text IS NULL OR x.region_code = $3)
ORDER BY x.exception_id LIMIT $4
"""  # noqa: S608
# The schedules an exception scope covers, with their time zones.
SCHEDULES_IN_SCOPE = """
SELECT sc.schedule_id, sc.time_zone FROM scheduling.schedules sc
WHERE sc.schedule_id = $1 OR sc.rpps = $2 OR sc.finess = $3 OR sc.region_code = $4
"""
DELETE_SLOTS_IN_PERIOD = """
DELETE FROM scheduling.slots s
WHERE s.schedule_id = ANY($1::uuid[]) AND s.start_time < $3 AND s.end_time > $2
"""
LIVE_APPOINTMENTS_IN_PERIOD = """
SELECT a.appointment_id FROM scheduling.appointments a
WHERE a.schedule_id = ANY($1::uuid[]) AND a.start_time < $3 AND a.end_time > $2
  AND a.status IN ('proposed', 'pending', 'booked')
  AND (a.hold_expire_time IS NULL OR a.hold_expire_time > now())
ORDER BY a.start_time, a.appointment_id
"""


@dataclass(frozen=True)
class ExceptionScope:
    schedule_id: uuid.UUID | None = None
    rpps: str | None = None
    finess: str | None = None
    region_code: str | None = None


async def insert_exception(
    tx: asyncpg.Connection,
    exception_id: uuid.UUID,
    scope: ExceptionScope,
    kind: str,
    period: asyncpg.Range | None,
    days: asyncpg.Range | None,
    note: str,
) -> asyncpg.Record:
    return await tx.fetchrow(
        INSERT_EXCEPTION,
        exception_id,
        scope.schedule_id,
        scope.rpps,
        scope.finess,
        scope.region_code,
        kind,
        period,
        days,
        note,
    )


async def get_exception(conn: Any, exception_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_EXCEPTION, exception_id)


async def delete_exception(tx: asyncpg.Connection, exception_id: uuid.UUID) -> None:
    await tx.execute(DELETE_EXCEPTION, exception_id)


async def exceptions_of(conn: Any, schedule: asyncpg.Record) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            EXCEPTIONS_OF_SCHEDULE,
            schedule["schedule_id"],
            schedule["rpps"],
            schedule["finess"],
            schedule["region_code"],
        )
    )


async def list_exceptions(
    conn: Any, limit: int, after: uuid.UUID | None, schedule_id: uuid.UUID | None, region: str | None
) -> list[asyncpg.Record]:
    return list(await conn.fetch(LIST_EXCEPTIONS, after, schedule_id, region, limit))


async def schedules_in_scope(conn: Any, scope: ExceptionScope) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(SCHEDULES_IN_SCOPE, scope.schedule_id, scope.rpps, scope.finess, scope.region_code)
    )


async def delete_slots_in_period(
    tx: asyncpg.Connection, schedule_ids: Sequence[uuid.UUID], start: datetime, end: datetime
) -> None:
    await tx.execute(DELETE_SLOTS_IN_PERIOD, list(schedule_ids), start, end)


async def live_appointments_in_period(
    conn: Any, schedule_ids: Sequence[uuid.UUID], start: datetime, end: datetime
) -> list[uuid.UUID]:
    rows = await conn.fetch(LIVE_APPOINTMENTS_IN_PERIOD, list(schedule_ids), start, end)
    return [r["appointment_id"] for r in rows]


# --- slots ------------------------------------------------------------------------------------------------

SLOT_COLUMNS = """
    s.slot_id, s.schedule_id, s.rpps, s.finess, s.ght_id, s.region_code, s.specialty, s.time_zone,
    s.service_type, s.start_time, s.end_time
"""
# Re-materialising keeps the ids of slots that still exist (and so their names, held by clients).
DELETE_STALE_SLOTS = """
DELETE FROM scheduling.slots WHERE schedule_id = $1 AND start_time >= $2 AND NOT (slot_id = ANY($3::uuid[]))
"""
DELETE_FUTURE_SLOTS = "DELETE FROM scheduling.slots WHERE schedule_id = $1 AND start_time >= $2"
UPSERT_SLOTS = """
INSERT INTO scheduling.slots (slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone,
                              service_type, start_time, end_time, occupied, minimum_notice)
SELECT u.slot_id, $1, $2, $3, $4, $5, $6, $7, u.service_type, u.start_time, u.end_time,
       tstzrange(u.start_time, u.end_time + $8::interval), $9
FROM unnest($10::uuid[], $11::text[], $12::timestamptz[], $13::timestamptz[])
     AS u(slot_id, service_type, start_time, end_time)
ON CONFLICT (slot_id) DO UPDATE SET
    occupied = EXCLUDED.occupied, minimum_notice = EXCLUDED.minimum_notice, ght_id = EXCLUDED.ght_id,
    specialty = EXCLUDED.specialty
WHERE scheduling.slots.occupied IS DISTINCT FROM EXCLUDED.occupied
   OR scheduling.slots.minimum_notice IS DISTINCT FROM EXCLUDED.minimum_notice
"""
# Past slots go, but what they offered stays: each (schedule, local month) keeps how many slots it offered and
# how many were taken, for the activity reports' slot utilisation.
PRUNE_PAST_SLOTS = """
WITH gone AS (
    DELETE FROM scheduling.slots s WHERE s.end_time < now() - interval '1 day'
    RETURNING s.slot_id, s.schedule_id, s.region_code, s.ght_id, s.finess, s.specialty,
              date_trunc('month', s.start_time AT TIME ZONE s.time_zone)::date AS month
), tally AS (
    SELECT g.schedule_id, g.month, min(g.region_code) AS region_code, min(g.ght_id) AS ght_id,
           min(g.finess) AS finess, min(g.specialty) AS specialty, count(*) AS offered,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM scheduling.appointments a
               WHERE a.slot_id = g.slot_id
                 AND a.status IN ('booked', 'arrived', 'fulfilled', 'noshow'))) AS used
    FROM gone g GROUP BY g.schedule_id, g.month
)
INSERT INTO scheduling.slot_supply AS t
    (schedule_id, month, region_code, ght_id, finess, specialty, offered, used)
SELECT schedule_id, month, region_code, ght_id, finess, specialty, offered, used FROM tally
ON CONFLICT (schedule_id, month)
    DO UPDATE SET offered = t.offered + EXCLUDED.offered, used = t.used + EXCLUDED.used
"""
GET_SLOT = f"""
SELECT {SLOT_COLUMNS}, sc.active, sc.minimum_notice, (s.start_time >= now() + s.minimum_notice) AS bookable
FROM scheduling.slots s JOIN scheduling.schedules sc ON sc.schedule_id = s.schedule_id
WHERE s.slot_id = $1
"""  # noqa: S608
# In schedule id order after `$2`, so a refresh run walks every schedule once even when some keep failing.
SCHEDULES_TO_REFRESH = """
SELECT schedule_id FROM scheduling.schedules
WHERE active AND (materialised_until IS NULL
                  OR materialised_until < (now() AT TIME ZONE time_zone)::date + booking_horizon_days - 1)
  AND ($2::uuid IS NULL OR schedule_id > $2)
ORDER BY schedule_id LIMIT $1
"""


@dataclass(frozen=True)
class SlotRow:
    slot_id: uuid.UUID
    service_type: str
    start: datetime
    end: datetime


async def replace_future_slots(
    tx: asyncpg.Connection, schedule: asyncpg.Record, since: datetime, slots: Sequence[SlotRow]
) -> None:
    """Make the schedule's slots from `since` on exactly `slots` (ids kept where unchanged)."""
    ids = [s.slot_id for s in slots]
    await tx.execute(DELETE_STALE_SLOTS, schedule["schedule_id"], since, ids)
    if not slots:
        return
    await tx.execute(
        UPSERT_SLOTS,
        schedule["schedule_id"],
        schedule["rpps"],
        schedule["finess"],
        schedule["ght_id"],
        schedule["region_code"],
        schedule["specialty"],
        schedule["time_zone"],
        schedule["buffer"],
        schedule["minimum_notice"],
        ids,
        [s.service_type for s in slots],
        [s.start for s in slots],
        [s.end for s in slots],
    )


async def delete_future_slots(tx: asyncpg.Connection, schedule_id: uuid.UUID, since: datetime) -> None:
    await tx.execute(DELETE_FUTURE_SLOTS, schedule_id, since)


async def set_materialised_until(tx: asyncpg.Connection, schedule_id: uuid.UUID, day: date | None) -> None:
    await tx.execute(SET_MATERIALISED_UNTIL, schedule_id, day)


async def get_slot(conn: Any, slot_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_SLOT, slot_id)


async def schedules_to_refresh(conn: Any, limit: int, after: uuid.UUID | None = None) -> list[uuid.UUID]:
    return [r["schedule_id"] for r in await conn.fetch(SCHEDULES_TO_REFRESH, limit, after)]


async def prune_past_slots(conn: Any) -> None:
    await conn.execute(PRUNE_PAST_SLOTS)


@dataclass(frozen=True)
class SlotFilters:
    specialty: str | None = None
    ght_id: str | None = None
    region_code: str | None = None
    rpps: str | None = None
    finess: str | None = None
    service_type: str | None = None


# A slot is free when no live claim of its practitioner overlaps it (buffer included). Both periods run from
# their start_time to their upper bound, excluded, so they overlap when each starts before the other ends.
# An appointment occupies at most 6 hours (a slot of at most 4 and a buffer of at most 2; the constraint
# appointments_occupied_bounded holds every row to it), so a claim that overlaps the slot started less than 6
# hours before it: a short range of appointments_live_rpps_start_idx, read from the index alone. Written with
# `occupied &&`, the check probed the exclusion constraint's GiST index once per candidate slot at ~10 times
# the cost: 90 % of a search's time in the database (issue 15).
_FREE = """
NOT EXISTS (
    SELECT 1 FROM scheduling.appointments a
    WHERE a.rpps = s.rpps
      AND a.start_time > s.start_time - interval '6 hours' AND a.start_time < upper(s.occupied)
      AND upper(a.occupied) > s.start_time
      AND a.claimed && tstzrange(now(), NULL)
      AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'noshow')
)
"""


def search_statement(filters: SlotFilters, keyset: bool) -> str:
    """One static statement per combination of filters, so that each gets a plan using its index (a single
    statement with `($n IS NULL OR ...)` would be planned once, generically, and scan)."""
    conditions = ["s.start_time >= $1", "s.start_time < $2", "s.start_time >= now() + s.minimum_notice"]
    position = 4
    for column, value in (
        ("specialty", filters.specialty),
        ("ght_id", filters.ght_id),
        ("region_code", filters.region_code),
        ("rpps", filters.rpps),
        ("finess", filters.finess),
        ("service_type", filters.service_type),
    ):
        if value is not None:
            conditions.append(f"s.{column} = ${position}")
            position += 1
    if keyset:
        conditions.append(f"(s.start_time, s.slot_id) > (${position}, ${position + 1})")
    where = "\n  AND ".join([*conditions, _FREE.strip()])
    # Composed of constant fragments and numbered placeholders only; every value is a bind parameter.
    return (
        f"SELECT {SLOT_COLUMNS}\nFROM scheduling.slots s\nWHERE {where}\n"
        "ORDER BY s.start_time, s.slot_id\nLIMIT $3"
    )


async def search_slots(
    conn: Any,
    filters: SlotFilters,
    start: datetime,
    end: datetime,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    args: list[Any] = [start, end, limit]
    args += [
        v
        for v in (
            filters.specialty,
            filters.ght_id,
            filters.region_code,
            filters.rpps,
            filters.finess,
            filters.service_type,
        )
        if v is not None
    ]
    if after is not None:
        args += [after[0], after[1]]
    return list(await conn.fetch(search_statement(filters, after is not None), *args))


# --- appointments -----------------------------------------------------------------------------------------

APPOINTMENT_COLUMNS = """
    a.*,
    CASE WHEN a.status IN ('proposed', 'pending') AND a.hold_expire_time <= now() THEN 'cancelled'
         ELSE a.status END AS effective_status,
    (a.status IN ('proposed', 'pending') AND a.hold_expire_time <= now()) AS lapsed
"""
APPOINTMENT_DETAILS = """
    COALESCE((SELECT jsonb_agg(jsonb_build_object('status', h.status, 'time', h.change_time,
                                                  'actor', h.actor, 'reason', h.reason) ORDER BY h.change_id)
              FROM scheduling.appointment_history h WHERE h.appointment_id = a.appointment_id),
             '[]'::jsonb) AS history,
    COALESCE((SELECT jsonb_agg(jsonb_build_object('kind', n.kind, 'label', n.label, 'recipient', n.recipient,
                                                  'time', n.send_time, 'channel', n.channel,
                                                  'delivery_state', n.delivery_state)
                               ORDER BY n.send_time, n.kind, n.label, n.recipient)
              FROM scheduling.notifications n WHERE n.appointment_id = a.appointment_id),
             '[]'::jsonb) AS notifications
"""
GET_APPOINTMENT = f"""
SELECT {APPOINTMENT_COLUMNS}, {APPOINTMENT_DETAILS}
FROM scheduling.appointments a WHERE a.appointment_id = $1
"""  # noqa: S608
LOCK_APPOINTMENT = f"""
SELECT {APPOINTMENT_COLUMNS} FROM scheduling.appointments a WHERE a.appointment_id = $1 FOR UPDATE
"""  # noqa: S608

# Booking (or holding, or proposing) a free slot: one statement. Nothing is written unless the slot exists,
# its schedule is active and its minimum notice is respected; the exclusion constraint refuses an overlap.
INSERT_APPOINTMENT_ON_SLOT = f"""
WITH slot AS MATERIALIZED (
    -- The practitioner's agenda lock is taken here, before the appointment is written (see above).
    SELECT s.slot_id, s.schedule_id, s.rpps, s.finess, s.ght_id, s.region_code, s.specialty, s.time_zone,
           s.service_type, s.start_time, s.end_time, s.occupied, {AGENDA_LOCK.format(rpps="s.rpps")} AS agenda
    FROM scheduling.slots s JOIN scheduling.schedules sc ON sc.schedule_id = s.schedule_id
    WHERE s.slot_id = $1 AND sc.active AND s.start_time >= now() + s.minimum_notice
), appointment AS (
    INSERT INTO scheduling.appointments (
        appointment_id, slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone,
        service_type, start_time, end_time, occupied, status, claimed, hold_expire_time, patient_id,
        requester_rpps, treating_rpps, booked_by_finess, booked_by_ght, booked_by_rpps, consent_method,
        consent_time, consent_recorded_by, join_open_time, no_show_time, rescheduled_from, workflow_id)
    SELECT $2, slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone, service_type,
           start_time, end_time, occupied, $3,
           tstzrange(now(), now() + $4::interval), now() + $4::interval,
           $5, $6, $7, $8, $9, $10, $11,
           CASE WHEN $11::text IS NULL THEN NULL ELSE now() END,
           CASE WHEN $11::text IS NULL THEN NULL ELSE $12 END,
           start_time - $13::interval, start_time + $14::interval, $15,
           CASE WHEN $3 = 'booked' THEN 'teleconsultation-' || $2::uuid::text END
    FROM slot
    RETURNING *
), history AS (
    INSERT INTO scheduling.appointment_history (appointment_id, status, actor, reason)
    SELECT appointment_id, status, $12, $16 FROM appointment
), outbox AS (
    INSERT INTO scheduling.outbox (case_id, command)
    SELECT appointment_id, 'start' FROM appointment WHERE workflow_id IS NOT NULL
), request AS (
    INSERT INTO scheduling.idempotency (request_id, method, actor, digest, resources)
    SELECT $17, $18, $19, $20, ARRAY['appointments/' || appointment_id::text] FROM appointment
    WHERE $17::uuid IS NOT NULL  -- an occurrence of a series: the series' request is in the ledger
)
-- The new row as the API shows it; its one history row is known without reading it back (see
-- resources.appointment_resource), the ranges are not shown.
SELECT appointment_id, slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone,
       service_type, start_time, end_time, status, status AS effective_status, false AS lapsed,
       hold_expire_time, patient_id, requester_rpps, treating_rpps, booked_by_finess, consent_method,
       consent_time, consent_recorded_by, cancel_initiator, cancel_reason, cancel_note, cancel_time,
       cancelled_by, rescheduled_from, rescheduled_to, join_open_time, no_show_time, record, billing_state,
       billing_charges, billing_reason, billing_message, billing_update_time, workflow_id, create_time,
       update_time
FROM appointment
"""  # noqa: S608

BOOK_HELD = f"""
WITH agenda AS MATERIALIZED (
    SELECT {AGENDA_LOCK.format(rpps="a.rpps")} FROM scheduling.appointments a WHERE a.appointment_id = $1
), appointment AS (
    UPDATE scheduling.appointments SET
        status = 'booked', claimed = tstzrange(now(), NULL), hold_expire_time = NULL, patient_id = $2,
        requester_rpps = COALESCE($3, requester_rpps), treating_rpps = $4, booked_by_finess = $5,
        booked_by_ght = $6, booked_by_rpps = COALESCE($7, booked_by_rpps),
        consent_method = COALESCE($8, consent_method),
        consent_time = CASE WHEN $8::text IS NULL THEN consent_time ELSE now() END,
        consent_recorded_by = CASE WHEN $8::text IS NULL THEN consent_recorded_by ELSE $9 END,
        workflow_id = 'teleconsultation-' || appointment_id::text
    WHERE appointment_id = $1 AND status IN ('pending', 'proposed') AND hold_expire_time > now()
      AND EXISTS (SELECT FROM agenda)
    RETURNING appointment_id
), history AS (
    INSERT INTO scheduling.appointment_history (appointment_id, status, actor, reason)
    SELECT appointment_id, 'booked', $9, '' FROM appointment
), outbox AS (
    INSERT INTO scheduling.outbox (case_id, command)
    SELECT appointment_id, 'start' FROM appointment
)
SELECT count(*) FROM appointment
"""  # noqa: S608


@dataclass(frozen=True)
class NewAppointment:
    """What a hold, a proposal or a booking of a free slot writes besides the slot's own facts."""

    appointment_id: uuid.UUID
    status: str  # 'pending' | 'proposed' | 'booked'
    claim: timedelta | None  # a hold's or proposal's lifetime; None: booked
    patient_id: uuid.UUID | None
    requester_rpps: str | None
    treating_rpps: str | None
    booked_by_finess: str | None
    booked_by_ght: str | None
    booked_by_rpps: str | None
    consent_method: str | None
    actor: str
    join_window_before: timedelta
    no_show_grace: timedelta
    rescheduled_from: uuid.UUID | None = None
    reason: str = ""


async def insert_appointment_on_slot(
    conn: Any, slot_id: uuid.UUID, new: NewAppointment, call: Call | None
) -> asyncpg.Record | None:
    """The appointment written on a free slot with `call` in the ledger, or None when the slot is not
    bookable (see get_slot). Without `call` (an occurrence of a series), the caller records the request."""
    return await conn.fetchrow(
        INSERT_APPOINTMENT_ON_SLOT,
        slot_id,
        new.appointment_id,
        new.status,
        new.claim,  # NULL: tstzrange(now(), NULL), a claim without end
        new.patient_id,
        new.requester_rpps,
        new.treating_rpps,
        new.booked_by_finess,
        new.booked_by_ght,
        new.booked_by_rpps,
        new.consent_method,
        new.actor,
        new.join_window_before,
        new.no_show_grace,
        new.rescheduled_from,
        new.reason,
        uuid.UUID(call.request_id) if call is not None else None,
        call.method if call is not None else None,
        call.actor if call is not None else None,
        call.digest if call is not None else None,
    )


async def book_held(
    tx: asyncpg.Connection,
    appointment_id: uuid.UUID,
    *,
    patient_id: uuid.UUID,
    requester_rpps: str | None,
    treating_rpps: str | None,
    booked_by_finess: str | None,
    booked_by_ght: str | None,
    booked_by_rpps: str | None,
    consent_method: str | None,
    actor: str,
) -> bool:
    count = await tx.fetchval(
        BOOK_HELD,
        appointment_id,
        patient_id,
        requester_rpps,
        treating_rpps,
        booked_by_finess,
        booked_by_ght,
        booked_by_rpps,
        consent_method,
        actor,
    )
    return bool(count)


async def get_appointment(conn: Any, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_APPOINTMENT, appointment_id)


async def lock_appointment(tx: asyncpg.Connection, appointment_id: uuid.UUID) -> asyncpg.Record | None:
    return await tx.fetchrow(LOCK_APPOINTMENT, appointment_id)


TRANSITION = """
WITH appointment AS (
    UPDATE scheduling.appointments SET status = $2
    WHERE appointment_id = $1 AND status = ANY($3::text[])
      AND (hold_expire_time IS NULL OR hold_expire_time > now() OR status NOT IN ('pending', 'proposed'))
    RETURNING appointment_id, status
)
INSERT INTO scheduling.appointment_history (appointment_id, status, actor, reason)
SELECT appointment_id, status, $4, $5 FROM appointment
RETURNING appointment_id
"""
CANCEL = """
UPDATE scheduling.appointments SET
    status = $2, cancel_initiator = $3, cancel_reason = $4, cancel_note = $5, cancel_time = now(),
    cancelled_by = $6, rescheduled_to = COALESCE($7, rescheduled_to)
WHERE appointment_id = $1
"""
INSERT_HISTORY = """
INSERT INTO scheduling.appointment_history (appointment_id, status, actor, reason) VALUES ($1, $2, $3, $4)
"""
RECORD_CONSENT = """
UPDATE scheduling.appointments SET consent_method = $2, consent_time = now(), consent_recorded_by = $3
WHERE appointment_id = $1
"""
RECORD_COMPLETION = """
WITH appointment AS (
    UPDATE scheduling.appointments SET status = 'fulfilled', record = $2, billing_circumstances = $3,
                                       billing_state = 'STATE_PENDING', billing_update_time = now(),
                                       billing_performer_activity = $5::jsonb
    WHERE appointment_id = $1 AND status = 'arrived'
    RETURNING appointment_id
)
INSERT INTO scheduling.appointment_history (appointment_id, status, actor, reason)
SELECT appointment_id, 'fulfilled', $4, '' FROM appointment
RETURNING appointment_id
"""
RECORD_BILLING = """
UPDATE scheduling.appointments SET billing_state = $2, billing_charges = $3, billing_reason = $4,
                                   billing_message = $5, billing_update_time = now(),
                                   billing_prescription_refusals = $6::jsonb
WHERE appointment_id = $1
"""
# The patient's refusal (see 0007): it supersedes a consent; withdrawing it clears both (consent again).
RECORD_REFUSAL = """
UPDATE scheduling.appointments SET refusal_kind = $2, refusal_time = now(), refusal_recorded_by = $3,
                                   consent_method = NULL, consent_time = NULL, consent_recorded_by = NULL
WHERE appointment_id = $1
"""
WITHDRAW_REFUSAL = """
UPDATE scheduling.appointments SET refusal_kind = NULL, refusal_time = NULL, refusal_recorded_by = NULL
WHERE appointment_id = $1
"""
# §7.18: who assisted the patient, named when the teleconsultation starts.
RECORD_ASSISTANT = """
UPDATE scheduling.appointments SET assistant_rpps = $2, assistance_setting = $3 WHERE appointment_id = $1
"""
# A notification to deliver is recorded PENDING (its delivery activity settles it); one that nothing will
# deliver (a workflow started before deliveries existed) is RECORDED at once.
INSERT_NOTIFICATION = """
INSERT INTO scheduling.notifications (appointment_id, kind, label, recipient, delivery_state)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
"""


async def transition(
    conn: Any, appointment_id: uuid.UUID, to: str, from_: Sequence[str], actor: str, reason: str = ""
) -> bool:
    """Move an appointment from one of `from_` to `to`, with its history row; False when it was not in
    one of them (the caller reads it again to say why)."""
    return await conn.fetchval(TRANSITION, appointment_id, to, list(from_), actor, reason) is not None


async def cancel(
    tx: asyncpg.Connection,
    appointment: asyncpg.Record,
    *,
    status: str,
    initiator: str,
    reason: str,
    note: str,
    actor: str,
    rescheduled_to: uuid.UUID | None = None,
) -> None:
    """Cancel (or mark entered-in-error) a locked appointment; a booked one's workflow is told."""
    appointment_id = appointment["appointment_id"]
    await tx.execute(CANCEL, appointment_id, status, initiator, reason, note, actor, rescheduled_to)
    await tx.execute(INSERT_HISTORY, appointment_id, status, actor, reason)
    if appointment["workflow_id"] is not None:
        await OUTBOX.enqueue(tx, appointment_id, "cancel")


async def record_consent(tx: asyncpg.Connection, appointment_id: uuid.UUID, method: str, actor: str) -> None:
    await tx.execute(RECORD_CONSENT, appointment_id, method, actor)


async def record_completion(
    conn: Any,
    appointment_id: uuid.UUID,
    record_json: str,
    circumstances_json: str,
    actor: str,
    performer_activity_json: str | None = None,
) -> bool:
    return (
        await conn.fetchval(
            RECORD_COMPLETION,
            appointment_id,
            record_json,
            circumstances_json or "{}",
            actor,
            performer_activity_json,
        )
        is not None
    )


async def record_billing(
    conn: Any,
    appointment_id: uuid.UUID,
    state: str,
    charges: Sequence[str],
    reason: str | None,
    message: str | None,
    prescription_refusals: Sequence[Mapping[str, str]] = (),
) -> None:
    await conn.execute(
        RECORD_BILLING,
        appointment_id,
        state,
        list(charges),
        reason,
        message,
        json.dumps(list(prescription_refusals)),
    )


async def record_refusal(
    tx: asyncpg.Connection, appointment_id: uuid.UUID, kind: str, actor: str, reason: str
) -> None:
    """Record the patient's refusal (kept in the history under `reason`, the status unchanged)."""
    await tx.execute(RECORD_REFUSAL, appointment_id, kind, actor)
    await tx.execute(INSERT_HISTORY, appointment_id, "booked", actor, reason)


async def withdraw_refusal(
    tx: asyncpg.Connection, appointment_id: uuid.UUID, actor: str, reason: str
) -> None:
    await tx.execute(WITHDRAW_REFUSAL, appointment_id)
    await tx.execute(INSERT_HISTORY, appointment_id, "booked", actor, reason)


async def record_assistant(
    tx: asyncpg.Connection, appointment_id: uuid.UUID, rpps: str, setting: str
) -> None:
    await tx.execute(RECORD_ASSISTANT, appointment_id, rpps, setting)


async def add_notification(
    conn: Any, appointment_id: uuid.UUID, kind: str, label: str, recipient: str, *, deliver: bool = False
) -> None:
    state = "DELIVERY_STATE_PENDING" if deliver else "DELIVERY_STATE_RECORDED"
    await conn.execute(INSERT_NOTIFICATION, appointment_id, kind, label, recipient, state)


@dataclass(frozen=True)
class AppointmentScope:
    """Whose appointments a caller may list: all (privileged), a practitioner's, or an establishment's."""

    privileged: bool = False
    rpps: str | None = None
    finess: str | None = None
    ght_id: str | None = None


@dataclass(frozen=True)
class AppointmentFilters:
    rpps: str | None = None
    patient_id: uuid.UUID | None = None
    finess: str | None = None
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None


def list_statement(
    scope: AppointmentScope, filters: AppointmentFilters, keyset: bool
) -> tuple[str, list[str]]:
    """A ListAppointments statement and the names of its parameters after $1 (limit), in order."""
    conditions: list[str] = []
    params: list[str] = []

    def param(name: str) -> str:
        params.append(name)
        return f"${len(params) + 1}"

    if not scope.privileged:
        if scope.rpps is not None:
            me = param("scope_rpps")
            conditions.append(
                f"(a.rpps = {me} OR a.requester_rpps = {me} OR a.treating_rpps = {me} "
                f"OR a.booked_by_rpps = {me})"
            )
        else:
            parts = []
            if scope.finess is not None:
                mine = param("scope_finess")
                parts += [f"a.finess = {mine}", f"a.booked_by_finess = {mine}"]
            if scope.ght_id is not None:
                ght = param("scope_ght")
                parts += [f"a.ght_id = {ght}", f"a.booked_by_ght = {ght}"]
            conditions.append("(" + " OR ".join(parts or ["false"]) + ")")
    if filters.rpps is not None:
        conditions.append(f"a.rpps = {param('rpps')}")
    if filters.patient_id is not None:
        conditions.append(f"a.patient_id = {param('patient_id')}")
    if filters.finess is not None:
        conditions.append(f"a.finess = {param('finess')}")
    if filters.start is not None:
        conditions.append(f"a.start_time >= {param('start')}")
    if filters.end is not None:
        conditions.append(f"a.start_time < {param('end')}")
    if filters.statuses:
        conditions.append(
            "(CASE WHEN a.status IN ('proposed', 'pending') AND a.hold_expire_time <= now() THEN 'cancelled' "
            f"ELSE a.status END) = ANY({param('statuses')}::text[])"
        )
    if keyset:
        conditions.append(f"(a.start_time, a.appointment_id) > ({param('after_time')}, {param('after_id')})")
    where = " AND ".join(conditions) or "true"
    statement = (
        f"SELECT {APPOINTMENT_COLUMNS}, {APPOINTMENT_DETAILS}\n"
        f"FROM scheduling.appointments a\nWHERE {where}\nORDER BY a.start_time, a.appointment_id LIMIT $1"
    )
    return statement, params


async def list_appointments(
    conn: Any,
    scope: AppointmentScope,
    filters: AppointmentFilters,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    statement, names = list_statement(scope, filters, after is not None)
    values: dict[str, Any] = {
        "scope_rpps": scope.rpps,
        "scope_finess": scope.finess,
        "scope_ght": scope.ght_id,
        "rpps": filters.rpps,
        "patient_id": filters.patient_id,
        "finess": filters.finess,
        "start": filters.start,
        "end": filters.end,
        "statuses": list(filters.statuses),
        "after_time": after[0] if after else None,
        "after_id": after[1] if after else None,
    }
    return list(await conn.fetch(statement, limit, *[values[n] for n in names]))


# --- workflow outbox --------------------------------------------------------------------------------------

OUTBOX_APPOINTMENTS = """
SELECT appointment_id, status, start_time, end_time, join_open_time, no_show_time, ght_id, specialty,
       region_code, workflow_id, cancel_reason
FROM scheduling.appointments WHERE appointment_id = ANY($1::uuid[])
"""


async def outbox_appointments(conn: Any, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    return {r["appointment_id"]: r for r in await conn.fetch(OUTBOX_APPOINTMENTS, list(set(ids)))}


# --- notifications that leave the hub ---------------------------------------------------------------------

_NOTIFICATION_KEY = "appointment_id = $1 AND kind = $2 AND label = $3 AND recipient = $4"
NOTIFICATION_DELIVERY_STATE = f"""
SELECT delivery_state, send_time FROM scheduling.notifications WHERE {_NOTIFICATION_KEY}
"""  # noqa: S608
# Only a pending notification moves: a delivered, failed or recorded one is settled.
MARK_DELIVERY = f"""
UPDATE scheduling.notifications SET
    channel = $5, delivery_state = $6, attempts = attempts + $7, last_error = $8,
    deliver_time = CASE WHEN $6 = 'DELIVERY_STATE_DELIVERED' THEN now() END
WHERE {_NOTIFICATION_KEY} AND delivery_state = 'DELIVERY_STATE_PENDING'
"""  # noqa: S608
MARK_FAILED = """
UPDATE scheduling.notifications SET delivery_state = 'DELIVERY_STATE_FAILED'
WHERE appointment_id = $1 AND kind = $2 AND label = $3 AND recipient = ANY($4::text[])
  AND delivery_state = 'DELIVERY_STATE_PENDING'
"""


async def notification_delivery_state(
    conn: Any, appointment_id: uuid.UUID, kind: str, label: str, recipient: str
) -> asyncpg.Record | None:
    """The notification's delivery state and when it was recorded."""
    return await conn.fetchrow(NOTIFICATION_DELIVERY_STATE, appointment_id, kind, label, recipient)


async def mark_delivery(
    conn: Any,
    appointment_id: uuid.UUID,
    kind: str,
    label: str,
    recipient: str,
    *,
    channel: str | None,
    state: str,
    attempted: bool,
    error: str | None = None,
) -> None:
    await conn.execute(
        MARK_DELIVERY, appointment_id, kind, label, recipient, channel, state, int(attempted), error
    )


async def mark_delivery_failed(
    conn: Any, appointment_id: uuid.UUID, kind: str, label: str, recipients: Sequence[str]
) -> None:
    await conn.execute(MARK_FAILED, appointment_id, kind, label, list(recipients))


# --- join links -------------------------------------------------------------------------------------------

INSERT_JOIN_LINK = """
INSERT INTO scheduling.join_tokens (token_hash, appointment_id, participant, expire_time)
VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING
"""
FIND_JOIN_LINK = """
SELECT t.appointment_id, t.participant, t.expire_time, a.status, a.patient_id
FROM scheduling.join_tokens t JOIN scheduling.appointments a ON a.appointment_id = t.appointment_id
WHERE t.token_hash = $1
"""


async def keep_join_token(
    conn: Any, token_hash: bytes, appointment_id: uuid.UUID, participant: str, expire_time: datetime
) -> None:
    await conn.execute(INSERT_JOIN_LINK, token_hash, appointment_id, participant, expire_time)


async def find_join_token(conn: Any, token_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(FIND_JOIN_LINK, token_hash)


# --- téléconseils -----------------------------------------------------------------------------------------

TELECONSEIL_COLUMNS = """
    t.teleconseil_id, t.patient_id, t.rpps, t.finess, t.ght_id, t.region_code, t.advice_time, t.channel,
    t.summary, t.create_time
"""
INSERT_TELECONSEIL = f"""
INSERT INTO scheduling.teleconseils AS t (teleconseil_id, patient_id, rpps, finess, ght_id, region_code,
                                          advice_time, channel, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {TELECONSEIL_COLUMNS}
"""  # noqa: S608
GET_TELECONSEIL = f"SELECT {TELECONSEIL_COLUMNS} FROM scheduling.teleconseils t WHERE t.teleconseil_id = $1"  # noqa: S608
# A patient's téléconseils within a scope: every one (privileged), a GHT's, or one establishment's (outside
# any GHT); most recent advice first.
LIST_TELECONSEILS = f"""
SELECT {TELECONSEIL_COLUMNS} FROM scheduling.teleconseils t
WHERE t.patient_id = $1
  AND ($2 OR t.ght_id = $3 OR ($3::text IS NULL AND t.finess = $4))
  AND ($5::timestamptz IS NULL OR (t.advice_time, t.teleconseil_id) < ($5, $6::uuid))
ORDER BY t.advice_time DESC, t.teleconseil_id DESC LIMIT $7
"""  # noqa: S608


@dataclass(frozen=True)
class NewTeleconseil:
    teleconseil_id: uuid.UUID
    patient_id: uuid.UUID
    rpps: str
    finess: str
    ght_id: str | None
    region_code: str
    advice_time: datetime
    channel: str
    summary: str


async def insert_teleconseil(tx: asyncpg.Connection, new: NewTeleconseil) -> asyncpg.Record:
    return await tx.fetchrow(
        INSERT_TELECONSEIL,
        new.teleconseil_id,
        new.patient_id,
        new.rpps,
        new.finess,
        new.ght_id,
        new.region_code,
        new.advice_time,
        new.channel,
        new.summary,
    )


async def get_teleconseil(conn: Any, teleconseil_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_TELECONSEIL, teleconseil_id)


async def list_teleconseils(
    conn: Any,
    patient_id: uuid.UUID,
    *,
    privileged: bool,
    ght_id: str | None,
    finess: str | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            LIST_TELECONSEILS,
            patient_id,
            privileged,
            ght_id,
            finess,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


# --- activity reports -------------------------------------------------------------------------------------

# Rows of one scope and period, one per (month, region, GHT, specialty), in that order; the scope is a region
# ($3), a GHT ($4) or an establishment outside any GHT ($5), each optional; the months [$1, $2] are local to
# the practice place. $6/$7 narrow to a GHT and a specialty; $8..$11 are the keyset of the last row seen.
# Appointments count when they were booked (a workflow id), not entered in error and not moved (their new
# appointment counts); slots count once started, from the live table and from the tallies of pruned ones.
ACTIVITY_REPORT = """
WITH appointment_rows AS (
    SELECT a.region_code, COALESCE(a.ght_id, '') AS ght, a.specialty,
           date_trunc('month', a.start_time AT TIME ZONE a.time_zone)::date AS month, a.status
    FROM scheduling.appointments a
    WHERE a.workflow_id IS NOT NULL AND a.status <> 'entered-in-error'
      AND NOT (a.status = 'cancelled' AND a.rescheduled_to IS NOT NULL)
      AND a.start_time >= $1::date - 2 AND a.start_time < ($2::date + interval '1 month') + interval '2 days'
      AND ($3::text IS NULL OR a.region_code = $3) AND ($4::text IS NULL OR a.ght_id = $4)
      AND ($5::text IS NULL OR (a.ght_id IS NULL AND a.finess = $5))
      AND ($6::text IS NULL OR a.ght_id = $6) AND ($7::text IS NULL OR a.specialty = $7)
), appointment_counts AS (
    SELECT region_code, ght, specialty, month, count(*) AS appointments,
           count(*) FILTER (WHERE status = 'fulfilled') AS fulfilled,
           count(*) FILTER (WHERE status = 'noshow') AS no_shows,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM appointment_rows WHERE month BETWEEN $1 AND $2 GROUP BY 1, 2, 3, 4
), slot_rows AS (
    SELECT s.region_code, COALESCE(s.ght_id, '') AS ght, s.specialty,
           date_trunc('month', s.start_time AT TIME ZONE s.time_zone)::date AS month, 1 AS offered,
           CASE WHEN EXISTS (
               SELECT 1 FROM scheduling.appointments a
               WHERE a.slot_id = s.slot_id AND a.status IN ('booked', 'arrived', 'fulfilled', 'noshow'))
           THEN 1 ELSE 0 END AS used
    FROM scheduling.slots s
    WHERE s.start_time < now()
      AND s.start_time >= $1::date - 2 AND s.start_time < ($2::date + interval '1 month') + interval '2 days'
      AND ($3::text IS NULL OR s.region_code = $3) AND ($4::text IS NULL OR s.ght_id = $4)
      AND ($5::text IS NULL OR (s.ght_id IS NULL AND s.finess = $5))
      AND ($6::text IS NULL OR s.ght_id = $6) AND ($7::text IS NULL OR s.specialty = $7)
    UNION ALL
    SELECT t.region_code, COALESCE(t.ght_id, ''), t.specialty, t.month, t.offered, t.used
    FROM scheduling.slot_supply t
    WHERE t.month BETWEEN $1 AND $2
      AND ($3::text IS NULL OR t.region_code = $3) AND ($4::text IS NULL OR t.ght_id = $4)
      AND ($5::text IS NULL OR (t.ght_id IS NULL AND t.finess = $5))
      AND ($6::text IS NULL OR t.ght_id = $6) AND ($7::text IS NULL OR t.specialty = $7)
), slot_counts AS (
    SELECT region_code, ght, specialty, month, sum(offered)::int AS offered, sum(used)::int AS used
    FROM slot_rows WHERE month BETWEEN $1 AND $2 GROUP BY 1, 2, 3, 4
), report AS (
    SELECT COALESCE(a.month, s.month) AS month, COALESCE(a.region_code, s.region_code) AS region_code,
           COALESCE(a.ght, s.ght) AS ght, COALESCE(a.specialty, s.specialty) AS specialty,
           COALESCE(a.appointments, 0)::int AS appointments, COALESCE(a.fulfilled, 0)::int AS fulfilled,
           COALESCE(a.no_shows, 0)::int AS no_shows, COALESCE(a.cancelled, 0)::int AS cancelled,
           COALESCE(s.offered, 0) AS slots_offered, COALESCE(s.used, 0) AS slots_used
    FROM appointment_counts a FULL OUTER JOIN slot_counts s
      ON (s.region_code, s.ght, s.specialty, s.month) = (a.region_code, a.ght, a.specialty, a.month)
)
SELECT * FROM report
WHERE $8::date IS NULL OR (month, region_code, ght, specialty) > ($8, $9, $10, $11)
ORDER BY month, region_code, ght, specialty
LIMIT $12
"""


async def activity_report(
    conn: Any,
    scope: Scope,
    first_month: date,
    last_month: date,
    *,
    ght_id: str | None,
    specialty: str | None,
    limit: int,
    after: tuple[date, str, str, str] | None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            ACTIVITY_REPORT,
            first_month,
            last_month,
            scope.region_code,
            scope.ght_id,
            scope.finess,
            ght_id,
            specialty,
            *(after or (None, None, None, None)),
            limit,
        )
    )


# --- recurring series (issue 13 item 14) --------------------------------------------------------------------

# The slot of the same schedule and service type at the same local wall-clock time `$4` days after `$3`:
# a weekly follow-up stays at 9:00 across a change of summer time.
OCCURRENCE_SLOT = """
SELECT s.slot_id FROM scheduling.slots s
WHERE s.schedule_id = $1 AND s.service_type = $2
  AND s.start_time = (($3::timestamptz AT TIME ZONE s.time_zone) + make_interval(days => $4))
                     AT TIME ZONE s.time_zone
"""
INSERT_SERIES = """
INSERT INTO scheduling.appointment_series (
    series_id, patient_id, schedule_id, rpps, finess, ght_id, requester_rpps, treating_rpps, booked_by_finess,
    booked_by_ght, booked_by_rpps, occurrence_count, interval_days)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
"""
SET_OCCURRENCE = (
    "UPDATE scheduling.appointments SET series_id = $2, series_index = $3 WHERE appointment_id = $1"
)
SERIES_COLUMNS = """
    s.*,
    COALESCE((SELECT array_agg(a.appointment_id ORDER BY a.series_index) FROM scheduling.appointments a
              WHERE a.series_id = s.series_id), '{}'::uuid[]) AS occurrences,
    (SELECT count(*) FROM scheduling.appointments a
     WHERE a.series_id = s.series_id AND a.status = 'booked' AND a.start_time > now()) AS remaining
"""
GET_SERIES = f"SELECT {SERIES_COLUMNS} FROM scheduling.appointment_series s WHERE s.series_id = $1"  # noqa: S608
LOCK_SERIES = "SELECT * FROM scheduling.appointment_series WHERE series_id = $1 FOR UPDATE"
# What a caller may see, as Caller.sees: privileged all; a practitioner the series they are party to; an
# establishment those of its practice place or GHT, or that it booked.
LIST_SERIES = f"""
SELECT {SERIES_COLUMNS} FROM scheduling.appointment_series s
WHERE s.patient_id = $1
  AND ($2::bool
       OR ($3::text IS NOT NULL AND $3 IN (s.rpps, s.requester_rpps, s.treating_rpps, s.booked_by_rpps))
       OR ($3::text IS NULL AND (($4::text IS NOT NULL AND $4 IN (s.finess, s.booked_by_finess))
                                 OR ($5::text IS NOT NULL AND $5 IN (s.ght_id, s.booked_by_ght)))))
  AND ($6::timestamptz IS NULL OR (s.create_time, s.series_id) < ($6, $7::uuid))
ORDER BY s.create_time DESC, s.series_id DESC
LIMIT $8
"""  # noqa: S608
REMAINING_OCCURRENCES = """
SELECT a.appointment_id FROM scheduling.appointments a
WHERE a.series_id = $1 AND a.status = 'booked' AND a.start_time > now()
ORDER BY a.series_index
"""
SET_SERIES_CANCELLED = "UPDATE scheduling.appointment_series SET cancel_time = now() WHERE series_id = $1"


@dataclass(frozen=True)
class NewSeries:
    series_id: uuid.UUID
    patient_id: uuid.UUID
    occurrence_count: int
    interval_days: int


async def occurrence_slot(
    conn: Any, schedule_id: uuid.UUID, service_type: str, first_start: datetime, days: int
) -> uuid.UUID | None:
    """The slot `days` after the first one at the same local time, if the agenda offers it."""
    slot_id: uuid.UUID | None = await conn.fetchval(
        OCCURRENCE_SLOT, schedule_id, service_type, first_start, days
    )
    return slot_id


async def insert_series(
    tx: asyncpg.Connection, series: NewSeries, first: asyncpg.Record, new: NewAppointment
) -> None:
    """The series, with the facts of its first occurrence (the appointment row just written, and what the
    booking wrote besides the slot's facts)."""
    await tx.execute(
        INSERT_SERIES,
        series.series_id,
        series.patient_id,
        first["schedule_id"],
        first["rpps"],
        first["finess"],
        first["ght_id"],
        new.requester_rpps,
        new.treating_rpps,
        new.booked_by_finess,
        new.booked_by_ght,
        new.booked_by_rpps,
        series.occurrence_count,
        series.interval_days,
    )


async def set_occurrence(
    tx: asyncpg.Connection, appointment_id: uuid.UUID, series_id: uuid.UUID, index: int
) -> None:
    await tx.execute(SET_OCCURRENCE, appointment_id, series_id, index)


async def get_series(conn: Any, series_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_SERIES, series_id)


async def lock_series(tx: asyncpg.Connection, series_id: uuid.UUID) -> asyncpg.Record | None:
    return await tx.fetchrow(LOCK_SERIES, series_id)


async def list_series(
    conn: Any,
    patient_id: uuid.UUID,
    scope: AppointmentScope,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            LIST_SERIES,
            patient_id,
            scope.privileged,
            scope.rpps,
            scope.finess,
            scope.ght_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


async def remaining_occurrences(tx: asyncpg.Connection, series_id: uuid.UUID) -> list[uuid.UUID]:
    return [r["appointment_id"] for r in await tx.fetch(REMAINING_OCCURRENCES, series_id)]


async def set_series_cancelled(tx: asyncpg.Connection, series_id: uuid.UUID) -> None:
    await tx.execute(SET_SERIES_CANCELLED, series_id)


# --- waitlist (issue 13 item 15) ----------------------------------------------------------------------------

# An entry with what Caller.sees reads (the booker's columns; an entry has no practitioner of its own) and its
# open offer.
ENTRY_COLUMNS = """
    e.*, NULL::text AS rpps, NULL::text AS treating_rpps, NULL::text AS finess,
    o.appointment_id AS offered_appointment_id, o.expire_time AS offer_expire_time,
    (SELECT count(*) FROM scheduling.waitlist_offers x
     WHERE x.entry_id = e.entry_id AND x.state IN ('LAPSED', 'WITHDRAWN')) AS lapsed_offers
"""
INSERT_ENTRY = """
INSERT INTO scheduling.waitlist_entries (entry_id, patient_id, ght_id, specialty, requester_rpps,
                                         booked_by_finess, booked_by_ght, booked_by_rpps)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
GET_ENTRY = f"""
SELECT {ENTRY_COLUMNS} FROM scheduling.waitlist_entries e
LEFT JOIN scheduling.waitlist_offers o ON o.entry_id = e.entry_id AND o.state = 'OFFERED'
WHERE e.entry_id = $1
"""  # noqa: S608
LOCK_ENTRY = """
SELECT e.*, NULL::text AS rpps, NULL::text AS treating_rpps, NULL::text AS finess
FROM scheduling.waitlist_entries e WHERE e.entry_id = $1 FOR UPDATE
"""
LIST_ENTRIES = f"""
SELECT {ENTRY_COLUMNS} FROM scheduling.waitlist_entries e
LEFT JOIN scheduling.waitlist_offers o ON o.entry_id = e.entry_id AND o.state = 'OFFERED'
WHERE e.patient_id = $1
  AND ($2::bool
       OR ($3::text IS NOT NULL AND $3 IN (e.requester_rpps, e.booked_by_rpps))
       OR ($3::text IS NULL AND (($4::text IS NOT NULL AND $4 = e.booked_by_finess)
                                 OR ($5::text IS NOT NULL AND $5 IN (e.ght_id, e.booked_by_ght)))))
  AND ($6::timestamptz IS NULL OR (e.create_time, e.entry_id) < ($6, $7::uuid))
ORDER BY e.create_time DESC, e.entry_id DESC
LIMIT $8
"""  # noqa: S608
SET_ENTRY_STATE = """
UPDATE scheduling.waitlist_entries SET state = $2, booked_appointment_id = $3, update_time = now()
WHERE entry_id = $1
"""
# The first in line for a freed slot: waiting for its specialty in its GHT, never offered this slot.
NEXT_IN_LINE = """
SELECT e.* FROM scheduling.waitlist_entries e
WHERE e.state = 'STATE_WAITING' AND e.ght_id = $1 AND e.specialty = $2
  AND NOT EXISTS (SELECT FROM scheduling.waitlist_offers o WHERE o.entry_id = e.entry_id AND o.slot_id = $3)
ORDER BY e.create_time, e.entry_id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""
INSERT_OFFER = """
INSERT INTO scheduling.waitlist_offers (offer_id, entry_id, slot_id, appointment_id, expire_time)
VALUES ($1, $2, $3, $4, $5)
"""
OPEN_OFFER = "SELECT * FROM scheduling.waitlist_offers WHERE entry_id = $1 AND state = 'OFFERED' FOR UPDATE"
SET_OFFER_STATE = "UPDATE scheduling.waitlist_offers SET state = $2 WHERE offer_id = $1"
# Offers whose hold time has passed at `$1` (now, for the service's job).
DUE_OFFERS = """
SELECT * FROM scheduling.waitlist_offers WHERE state = 'OFFERED' AND expire_time <= $1
ORDER BY expire_time, offer_id LIMIT $2
FOR UPDATE SKIP LOCKED
"""


async def insert_entry(
    tx: asyncpg.Connection,
    entry_id: uuid.UUID,
    patient_id: uuid.UUID,
    ght_id: str,
    specialty: str,
    requester_rpps: str | None,
    booked_by: tuple[str | None, str | None, str | None],
) -> None:
    await tx.execute(INSERT_ENTRY, entry_id, patient_id, ght_id, specialty, requester_rpps, *booked_by)


async def get_entry(conn: Any, entry_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_ENTRY, entry_id)


async def lock_entry(tx: asyncpg.Connection, entry_id: uuid.UUID) -> asyncpg.Record | None:
    return await tx.fetchrow(LOCK_ENTRY, entry_id)


async def list_entries(
    conn: Any,
    patient_id: uuid.UUID,
    scope: AppointmentScope,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            LIST_ENTRIES,
            patient_id,
            scope.privileged,
            scope.rpps,
            scope.finess,
            scope.ght_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
    )


async def set_entry_state(
    tx: asyncpg.Connection, entry_id: uuid.UUID, state: str, booked: uuid.UUID | None = None
) -> None:
    await tx.execute(SET_ENTRY_STATE, entry_id, state, booked)


async def next_in_line(tx: asyncpg.Connection, ght_id: str, specialty: str, slot_id: uuid.UUID) -> Any:
    return await tx.fetchrow(NEXT_IN_LINE, ght_id, specialty, slot_id)


async def insert_offer(
    tx: asyncpg.Connection,
    entry_id: uuid.UUID,
    slot_id: uuid.UUID,
    appointment_id: uuid.UUID,
    expire_time: datetime,
) -> None:
    await tx.execute(INSERT_OFFER, uuid.uuid4(), entry_id, slot_id, appointment_id, expire_time)


async def open_offer(tx: asyncpg.Connection, entry_id: uuid.UUID) -> asyncpg.Record | None:
    return await tx.fetchrow(OPEN_OFFER, entry_id)


async def set_offer_state(tx: asyncpg.Connection, offer_id: uuid.UUID, state: str) -> None:
    await tx.execute(SET_OFFER_STATE, offer_id, state)


async def due_offers(tx: asyncpg.Connection, as_of: datetime, limit: int) -> list[asyncpg.Record]:
    return list(await tx.fetch(DUE_OFFERS, as_of, limit))
