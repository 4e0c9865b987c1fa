"""Teleconsultation activity reports against a seeded set of cases: no-show rate, cancellations and slot
utilisation per region, GHT, specialty and local month; an ARS officer sees their region, an establishment its
GHT (itself outside any), the hub everything; the numbers survive the pruning of past slots.

The cases are written straight into a scheduling database of their own: past months cannot be booked through
the API (slots in the past are not bookable), and the report reads the tables the service writes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
import temporalio.client
from google.type import date_pb2
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.devstack.postgres import PostgresHandle
from services.kit.pki import DevPki
from services.scheduling import store
from tests.conftest import Minter
from tests.scheduling.conftest import create_database, scheduling_settings, start_scheduling
from tests.support import DAUPHINE, LOIRE, REUNION, bearer, component_channel, establishment_channel
from tests.support.calls import call, details

PARIS, REUNION_ZONE = "Europe/Paris", "Indian/Reunion"


def paris(text: str) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(PARIS))


async def schedule(
    conn: asyncpg.Connection, finess: str, ght: str | None, region: str, specialty: str, zone: str
) -> dict[str, object]:
    row = {
        "schedule_id": uuid.uuid4(),
        "rpps": "3" + str(uuid.uuid4().int)[:10],
        "finess": finess,
        "ght_id": ght,
        "region_code": region,
        "specialty": specialty,
        "time_zone": zone,
    }
    await conn.execute(
        "INSERT INTO scheduling.schedules (schedule_id, rpps, profession, specialty, finess, ght_id,"
        " region_code, time_zone) VALUES ($1, $2, 'PROFESSION_PHYSICIAN', $3, $4, $5, $6, $7)",
        row["schedule_id"], row["rpps"], specialty, finess, ght, region, zone,
    )  # fmt: skip
    return row


async def appointment(
    conn: asyncpg.Connection,
    sc: dict[str, object],
    start: datetime,
    status: str,
    *,
    booked: bool = True,
    rescheduled_to: uuid.UUID | None = None,
    slot_id: uuid.UUID | None = None,
) -> uuid.UUID:
    appointment_id = uuid.uuid4()
    end = start + timedelta(minutes=20)
    held = status == "pending"
    await conn.execute(
        """
INSERT INTO scheduling.appointments (
    appointment_id, slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty, time_zone,
    service_type, start_time, end_time, occupied, status, claimed, hold_expire_time, patient_id,
    join_open_time, no_show_time, workflow_id, rescheduled_to)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'SERVICE_TYPE_FOLLOW_UP', $10, $11, tstzrange($10, $11), $12,
        tstzrange($10 - interval '2 days', CASE WHEN $13 THEN $10 - interval '1 day' END),
        CASE WHEN $13 THEN $10 - interval '1 day' END, $14, $10 - interval '15 minutes',
        $10 + interval '30 minutes', $15, $16)
""",
        appointment_id, slot_id, sc["schedule_id"], sc["rpps"], sc["finess"], sc["ght_id"],
        sc["region_code"], sc["specialty"], sc["time_zone"], start, end, status, held,
        None if held else uuid.uuid4(),
        f"teleconsultation-{appointment_id}" if booked else None, rescheduled_to,
    )  # fmt: skip
    return appointment_id


async def slot(conn: asyncpg.Connection, sc: dict[str, object], start: datetime) -> uuid.UUID:
    slot_id = uuid.uuid4()
    end = start + timedelta(minutes=20)
    await conn.execute(
        "INSERT INTO scheduling.slots (slot_id, schedule_id, rpps, finess, ght_id, region_code, specialty,"
        " time_zone, service_type, start_time, end_time, occupied, minimum_notice)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'SERVICE_TYPE_FOLLOW_UP', $9, $10,"
        " tstzrange($9, $10), '0')",
        slot_id, sc["schedule_id"], sc["rpps"], sc["finess"], sc["ght_id"], sc["region_code"],
        sc["specialty"], sc["time_zone"], start, end,
    )  # fmt: skip
    return slot_id


async def seed(conn: asyncpg.Connection) -> None:
    loire = await schedule(conn, LOIRE, "ght-loire", "84", "SPECIALTY_GENERAL_MEDICINE", PARIS)
    dauphine = await schedule(conn, DAUPHINE, "ght-alpes-dauphine", "84", "SPECIALTY_CARDIOLOGY", PARIS)
    reunion = await schedule(conn, REUNION, None, "04", "SPECIALTY_GENERAL_MEDICINE", REUNION_ZONE)
    # GHT Loire, January 2025 (Paris time): five held (one at 23:30 on the 31st: still January), a no-show, a
    # cancellation, a move (its new appointment is one of the five), an entry in error, a hold that lapsed.
    moved_to = await appointment(conn, loire, paris("2025-01-20 10:00"), "fulfilled")
    for day in ("06", "13", "27"):
        await appointment(conn, loire, paris(f"2025-01-{day} 09:00"), "fulfilled")
    await appointment(conn, loire, paris("2025-01-31 23:30"), "fulfilled")
    await appointment(conn, loire, paris("2025-01-14 09:00"), "noshow")
    await appointment(conn, loire, paris("2025-01-15 09:00"), "cancelled")
    await appointment(conn, loire, paris("2025-01-16 09:00"), "cancelled", rescheduled_to=moved_to)
    await appointment(conn, loire, paris("2025-01-17 09:00"), "entered-in-error")
    await appointment(conn, loire, paris("2025-01-18 09:00"), "pending", booked=False)
    # January's slots were pruned already: their tally.
    await conn.execute(
        "INSERT INTO scheduling.slot_supply (schedule_id, month, region_code, ght_id, finess, specialty,"
        " offered, used)"
        " VALUES ($1, '2025-01-01', '84', 'ght-loire', $2, 'SPECIALTY_GENERAL_MEDICINE', 20, 6)",
        loire["schedule_id"], LOIRE,
    )  # fmt: skip
    # February (00:15 on the 1st in Paris, still 31 January in UTC): four past slots still there, one used.
    slots = [await slot(conn, loire, paris(f"2025-02-01 00:{m:02d}")) for m in (15, 35, 55)]
    slots.append(await slot(conn, loire, paris("2025-02-03 10:00")))
    await appointment(conn, loire, paris("2025-02-01 00:15"), "fulfilled", slot_id=slots[0])
    # GHT Alpes-Dauphiné, January: one held, one no-show.
    await appointment(conn, dauphine, paris("2025-01-10 14:00"), "fulfilled")
    await appointment(conn, dauphine, paris("2025-01-11 14:00"), "noshow")
    # La Réunion (outside any GHT): 22:30 UTC on 31 January is 02:30 on 1 February there.
    await appointment(conn, reunion, datetime(2025, 1, 31, 22, 30, tzinfo=UTC), "fulfilled")


@pytest.fixture(scope="module")
async def reported(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    temporal: object,
    temporal_client: temporalio.client.Client,
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    name, url = await create_database(postgres, pool, "scheduling_report")
    own_pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        async with own_pool.acquire() as conn, conn.transaction():
            await seed(conn)
        settings = scheduling_settings(pki, url, directory_address, temporal.address)  # type: ignore[attr-defined]
        runtime = await start_scheduling(settings, own_pool, temporal_client)
        try:
            yield f"127.0.0.1:{runtime.port}", own_pool
        finally:
            await runtime.stop(0.5)
    finally:
        await own_pool.close()
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def months(
    first: tuple[int, int], last: tuple[int, int], **filters: object
) -> s.GetTeleconsultationActivityReportRequest:
    return s.GetTeleconsultationActivityReportRequest(
        start_month=date_pb2.Date(year=first[0], month=first[1]),
        end_month=date_pb2.Date(year=last[0], month=last[1]),
        **filters,  # type: ignore[arg-type]
    )


def summary(rows: list[s.TeleconsultationActivity]) -> list[tuple[object, ...]]:
    return [
        (
            f"{r.month.year}-{r.month.month:02d}",
            r.region,
            r.ght,
            p.Specialty.Name(r.specialty),
            r.appointments,
            r.fulfilled,
            r.no_shows,
            r.cancelled,
            round(r.no_show_rate, 4),
            r.slots_offered,
            r.slots_used,
            round(r.slot_utilisation, 4),
        )
        for r in rows
    ]


DAUPHINE_JAN = (
    "2025-01",
    "regions/84",
    "ghts/ght-alpes-dauphine",
    "SPECIALTY_CARDIOLOGY",
    2,
    1,
    1,
    0,
    0.5,
    0,
    0,
    0.0,
)
LOIRE_JAN = (
    "2025-01",
    "regions/84",
    "ghts/ght-loire",
    "SPECIALTY_GENERAL_MEDICINE",
    7,
    5,
    1,
    1,
    0.1667,
    20,
    6,
    0.3,
)
REUNION_FEB = ("2025-02", "regions/04", "", "SPECIALTY_GENERAL_MEDICINE", 1, 1, 0, 0, 0.0, 0, 0, 0.0)
LOIRE_FEB = (
    "2025-02",
    "regions/84",
    "ghts/ght-loire",
    "SPECIALTY_GENERAL_MEDICINE",
    1,
    1,
    0,
    0,
    0.0,
    4,
    1,
    0.25,
)


async def test_the_numbers_of_a_seeded_set_of_cases_for_each_scope(
    reported: tuple[str, asyncpg.Pool], pki: DevPki, mint: Minter
) -> None:
    address, own_pool = reported
    hub = scheduling_pb2_grpc.SchedulingServiceStub(component_channel(pki, address, "workflows"))
    everything = await hub.GetTeleconsultationActivityReport(months((2025, 1), (2025, 2)))
    assert summary(list(everything.rows)) == [DAUPHINE_JAN, LOIRE_JAN, REUNION_FEB, LOIRE_FEB]

    # Page by page, the same rows.
    paged, token = [], ""
    while True:
        page = await hub.GetTeleconsultationActivityReport(
            months((2025, 1), (2025, 2), page_size=1, page_token=token)
        )
        paged += page.rows
        token = page.next_page_token
        if not token:
            break
    assert summary(paged) == summary(list(everything.rows))

    # An ARS officer (through the console) sees their region, whatever else they ask; not another region.
    console = scheduling_pb2_grpc.SchedulingServiceStub(component_channel(pki, address, "console"))
    officer = bearer(mint(staff="ars-ara-officer", roles=["ars_officer"], region="84"))
    theirs = await console.GetTeleconsultationActivityReport(months((2025, 1), (2025, 2)), metadata=officer)
    assert summary(list(theirs.rows)) == [DAUPHINE_JAN, LOIRE_JAN, LOIRE_FEB]
    refused = await call(
        console.GetTeleconsultationActivityReport(
            months((2025, 1), (2025, 2), region="regions/04"), metadata=officer
        )
    )
    assert (refused.code(), details(refused)[0].reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "REPORT_SCOPE_NOT_VISIBLE",
    )  # type: ignore[union-attr]

    # An establishment sees its GHT (its practice places'), one outside any GHT itself only.
    loire = scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, address, LOIRE))
    staff = bearer(mint(staff="direction-forez"))
    ght = await loire.GetTeleconsultationActivityReport(months((2025, 1), (2025, 2)), metadata=staff)
    assert summary(list(ght.rows)) == [LOIRE_JAN, LOIRE_FEB]
    refused = await call(
        loire.GetTeleconsultationActivityReport(
            months((2025, 1), (2025, 2), ght="ghts/ght-alpes-dauphine"), metadata=staff
        )
    )
    assert details(refused)[0].reason == "REPORT_SCOPE_NOT_VISIBLE"  # type: ignore[union-attr]
    reunion = scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, address, REUNION))
    alone = await reunion.GetTeleconsultationActivityReport(
        months((2025, 1), (2025, 3)), metadata=bearer(mint(staff="direction-sud-sauvage"))
    )
    assert summary(list(alone.rows)) == [REUNION_FEB]

    # Filters narrow; a month span is checked on the request.
    january = await hub.GetTeleconsultationActivityReport(
        months((2025, 1), (2025, 1), specialty=p.SPECIALTY_GENERAL_MEDICINE)
    )
    assert summary(list(january.rows)) == [LOIRE_JAN]
    bad = await call(hub.GetTeleconsultationActivityReport(months((2025, 3), (2025, 1))))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Pruning February's past slots keeps what they offered: the same numbers.
    await store.prune_past_slots(own_pool)
    assert await own_pool.fetchval("SELECT count(*) FROM scheduling.slots") == 0
    after = await hub.GetTeleconsultationActivityReport(months((2025, 1), (2025, 2)))
    assert summary(list(after.rows)) == summary(list(everything.rows))
