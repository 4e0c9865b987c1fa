"""The same weekly rule given twice, rules that overlap, and the background job that opens each schedule's
next days (issue 9.10): a duplicate is refused with a stable reason, overlapping rules re-materialise (no more
`ON CONFLICT DO UPDATE command cannot affect row a second time`, which left a schedule impossible to
reactivate), and one schedule the database refuses does not stop the others."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import date, datetime, time, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from parcours.scheduling.v1 import scheduling_pb2 as s
from yoyo import get_backend, read_migrations

from services.devstack.postgres import PostgresHandle
from services.kit.migrate import _yoyo_uri, migration_sets
from services.scheduling.availability import WeeklyRule, materialise
from services.scheduling.server import HorizonRefresher
from tests.conftest import Minter
from tests.scheduling.helpers import (
    PARIS,
    add_rules,
    new_practitioner,
    new_schedule,
    proto_date,
    rule,
    search,
)
from tests.security.conftest import SecurityHub
from tests.support import LOIRE, bearer, request_id, role_url
from tests.support.calls import call, details


@pytest.fixture
def operator(mint: Minter) -> tuple[tuple[str, str], ...]:
    return bearer(mint(staff="ops-security-rules", roles=["hub_operator"]))


async def _schedule(hub: SecurityHub, operator: tuple[tuple[str, str], ...]) -> s.Schedule:
    rpps = await new_practitioner(hub.directory(LOIRE), operator, LOIRE)
    return await new_schedule(hub.scheduling(LOIRE), operator, rpps, LOIRE, horizon_days=14)


async def test_the_same_rule_twice_is_refused_and_overlapping_rules_stay_manageable(
    hub: SecurityHub, operator: tuple[tuple[str, str], ...]
) -> None:
    stub = hub.scheduling(LOIRE)
    schedule = await _schedule(hub, operator)
    monday_morning = rule(1, (9, 0), (12, 0))
    await add_rules(stub, operator, schedule.name, [monday_morning])

    error = await call(
        stub.CreateAvailabilityRule(
            s.CreateAvailabilityRuleRequest(
                request_id=request_id(), parent=schedule.name, rule=monday_morning
            ),
            metadata=operator,
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info, _ = details(error)
    assert info is not None and info.reason == "AVAILABILITY_RULE_EXISTS"

    # An overlapping rule gives the same slots 10:00-11:00 again: they are offered once.
    await add_rules(stub, operator, schedule.name, [rule(1, (10, 0), (11, 0))])
    slots = await search(stub, operator, practitioner=schedule.practitioner)
    starts = [(slot.service_type, slot.start_time.ToDatetime()) for slot in slots]
    assert slots and len(starts) == len(set(starts))
    assert {slot.start_time.ToDatetime().astimezone(PARIS).time() for slot in slots} == {
        time(9, 0),
        time(9, 20),
        time(9, 40),
        time(10, 0),
        time(10, 20),
        time(10, 40),
        time(11, 0),
        time(11, 20),
        time(11, 40),
    }

    # Every change that re-materialises the schedule still works: a longer horizon, deactivation and
    # reactivation, an exception added and removed.
    async def update(**fields: object) -> None:
        await stub.UpdateSchedule(
            s.UpdateScheduleRequest(
                request_id=request_id(),
                name=schedule.name,
                schedule=s.SchedulePatch(**fields),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
            ),
            metadata=operator,
        )

    tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
    await update(booking_horizon_days=28)
    await update(active=False)
    await update(active=True)
    exception = await stub.CreateAvailabilityException(
        s.CreateAvailabilityExceptionRequest(
            request_id=request_id(),
            exception=s.AvailabilityExceptionInput(
                schedule=schedule.name,
                kind=s.EXCEPTION_KIND_LEAVE,
                dates=s.LocalDateRange(start_date=proto_date(tomorrow), end_date=proto_date(tomorrow)),
                note="congrès",
            ),
        ),
        metadata=operator,
    )
    await stub.DeleteAvailabilityException(
        s.DeleteAvailabilityExceptionRequest(request_id=request_id(), name=exception.exception.name),
        metadata=operator,
    )
    assert len(await search(stub, operator, practitioner=schedule.practitioner)) > len(slots)


def test_two_rules_giving_the_same_slot_give_it_once() -> None:
    rules = [WeeklyRule(1, time(9), time(12), "FOLLOW_UP"), WeeklyRule(1, time(9), time(12), "FOLLOW_UP")]
    monday = date(2026, 3, 2)
    slots = materialise(rules, {"FOLLOW_UP": timedelta(minutes=30)}, timedelta(0), PARIS, monday, monday)
    assert len(slots) == 6 and len({(s.service_type, s.start) for s in slots}) == 6


async def test_the_migration_keeps_one_copy_of_rules_given_twice(
    postgres: PostgresHandle, pool: asyncpg.Pool
) -> None:
    """Rules given twice before the constraint existed: the migration keeps the oldest of each set."""
    name = f"rules_{uuid.uuid4().hex[:12]}"
    await pool.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url_for(name)
    try:
        migrations = {
            set_name: read_migrations(str(folder))
            for set_name, folder in migration_sets()
            if set_name in ("kit", "scheduling")
        }

        def apply(until_scheduling: str | None) -> None:
            backend = get_backend(_yoyo_uri(url))
            with backend.lock():
                backend.apply_migrations(backend.to_apply(migrations["kit"]))
                wanted = migrations["scheduling"].filter(
                    lambda m: until_scheduling is None or m.id < until_scheduling
                )
                backend.apply_migrations(backend.to_apply(wanted))

        await asyncio.to_thread(apply, "0003.scheduling-distinct-rules")
        conn = await asyncpg.connect(url)
        try:
            schedule = uuid.uuid4()
            await conn.execute(
                """
                INSERT INTO scheduling.schedules (schedule_id, rpps, profession, specialty, finess,
                                                  region_code, time_zone)
                VALUES ($1, '10000000101', 'PROFESSION_PHYSICIAN', 'SPECIALTY_GENERAL_MEDICINE',
                        '420000025', '84', 'Europe/Paris')
                """,
                schedule,
            )
            await conn.execute(
                "INSERT INTO scheduling.schedule_service_types"
                " VALUES ($1, 'SERVICE_TYPE_FOLLOW_UP', '20 minutes')",
                schedule,
            )
            for start in ("09:00", "09:00", "09:00", "10:00"):
                await conn.execute(
                    """
                    INSERT INTO scheduling.availability_rules (rule_id, schedule_id, day_of_week, start_local,
                                                               end_local, service_type)
                    VALUES ($1, $2, 1, $3::text::time, '12:00', 'SERVICE_TYPE_FOLLOW_UP')
                    """,
                    uuid.uuid4(),
                    schedule,
                    start,
                )
            await asyncio.to_thread(apply, None)
            kept = await conn.fetch(
                "SELECT start_local FROM scheduling.availability_rules WHERE schedule_id = $1 ORDER BY 1",
                schedule,
            )
            assert [str(r["start_local"]) for r in kept] == ["09:00:00", "10:00:00"]
        finally:
            await conn.close()
    finally:
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_one_schedule_the_database_refuses_does_not_stop_the_horizon_job(
    hub: SecurityHub, operator: tuple[tuple[str, str], ...], caplog: pytest.LogCaptureFixture
) -> None:
    stub = hub.scheduling(LOIRE)
    first, second = [await _schedule(hub, operator) for _ in range(2)]
    for schedule in (first, second):
        await add_rules(stub, operator, schedule.name, [rule(day, (9, 0), (10, 0)) for day in range(1, 8)])
    ids = sorted(uuid.UUID(x.name.removeprefix("schedules/")) for x in (first, second))
    bad, good = ids  # the bad one comes first in the job's order
    # The database refuses every slot of one schedule (as a constraint added by an operator would).
    await hub.admin.execute(
        f"""
        CREATE FUNCTION scheduling.refuse_probe() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.schedule_id = '{bad}' THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END;
        $$;
        CREATE TRIGGER refuse_probe BEFORE INSERT ON scheduling.slots
            FOR EACH ROW EXECUTE FUNCTION scheduling.refuse_probe();
        UPDATE scheduling.schedules SET materialised_until = NULL WHERE schedule_id IN ('{bad}', '{good}');
        DELETE FROM scheduling.slots WHERE schedule_id IN ('{bad}', '{good}');
        """  # noqa: S608 (two uuids this test made)
    )
    service_pool = await asyncpg.create_pool(
        role_url(hub.database_url, "parcours_scheduling"), min_size=1, max_size=2
    )
    assert service_pool is not None
    try:
        caplog.set_level(logging.INFO)
        refreshed = await HorizonRefresher(service_pool)()
    finally:
        await service_pool.close()
        await hub.admin.execute(
            "DROP TRIGGER refuse_probe ON scheduling.slots; DROP FUNCTION scheduling.refuse_probe()"
        )
    until = {
        r["schedule_id"]: r["materialised_until"]
        for r in await hub.admin.fetch(
            "SELECT schedule_id, materialised_until FROM scheduling.schedules WHERE schedule_id = ANY($1)",
            ids,
        )
    }
    assert until[bad] is None and until[good] is not None
    assert refreshed >= 1
    failures = [r for r in caplog.records if f"schedule {bad} not extended" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None
    good_schedule = next(x for x in (first, second) if x.name == f"schedules/{good}")
    assert await search(stub, operator, practitioner=good_schedule.practitioner)
