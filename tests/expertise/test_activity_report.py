"""Téléexpertise activity reports against a seeded set of requests: answer times (median, 90th percentile) and
breach rate per region, GHT, specialty and month local to the region; an ARS officer sees their region, an
establishment its GHT (itself outside any), the hub everything.

The requests are written straight into the expertise tables, in 2024 (no other test writes there then): past
months cannot be made through the API, and the report reads the tables the workflow writes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc
from google.type import date_pb2
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from parcours.type.v1 import practice_pb2

from tests.expertise.conftest import Stack
from tests.support import LOIRE, REUNION, bearer, component_channel, establishment_channel
from tests.support.calls import call, details

PARIS = ZoneInfo("Europe/Paris")
GHT_LOIRE_FINESS = "420000025"


def paris(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


async def request(
    pool: asyncpg.Pool,
    created: datetime,
    state: str,
    *,
    answer: timedelta | None = None,
    breached: bool = False,
    region: str = "84",
    ght: str | None = "ght-loire",
    establishment: str = GHT_LOIRE_FINESS,
    specialty: str = "DERMATOLOGY",
) -> None:
    case_id = uuid.uuid4()
    closed = created + answer if answer is not None else None
    assigned = state in ("COMPLETED", "ACCEPTED")
    report = None
    if state == "COMPLETED":
        assert closed is not None
        report = json.dumps(
            {
                "summary": "x",
                "acts_and_prescriptions": [],
                "participants": [],
                "act_time": closed.isoformat(),
                "technical_incidents": "",
                "author": "practitioners/10000002001",
            }
        )
    await pool.execute(
        """
INSERT INTO expertise.requests (
    case_id, request_id, requester, requester_establishment, ght, region, patient, patient_identity,
    specialty, question, clinical_context, urgency, requested_answer_time, routing, timeline, workflow_id,
    state, answer_due_time, breached, breach_time, assigned_expert, close_time, report, create_time)
VALUES ($1::uuid, $2, '10000000101', $3, $4, $5, $6, '{}', $7, 'q', 'c', 'ROUTINE',
        $8::timestamptz + interval '7 days', '[]', '{}', 'teleexpertise-' || $1::uuid::text, $9,
        $8::timestamptz + interval '7 days', $10,
        CASE WHEN $10 THEN $8::timestamptz + interval '7 days' END, $11, $12, $13::jsonb, $8)
""",
        case_id, uuid.uuid4(), establishment, ght, region, uuid.uuid4(), specialty, created, state, breached,
        "10000002001" if assigned else None, closed, report,
    )  # fmt: skip


async def seed(pool: asyncpg.Pool) -> None:
    hours = timedelta(hours=1)
    # GHT Loire, dermatology, March 2024 (Paris): three answered in 2 h, 4 h and 10 h (late: breached), one
    # expired (breached), one cancelled in time, one still waiting past its breached deadline. The 4 h one
    # is created at 23:30 on 31 March (CEST, 21:30 UTC): still March.
    await request(pool, paris("2024-03-04 10:00"), "COMPLETED", answer=2 * hours)
    await request(pool, paris("2024-03-31 23:30"), "COMPLETED", answer=4 * hours)
    await request(pool, paris("2024-03-11 10:00"), "COMPLETED", answer=10 * hours, breached=True)
    await request(pool, paris("2024-03-12 10:00"), "EXPIRED", breached=True)
    await request(pool, paris("2024-03-13 10:00"), "CANCELLED")
    await request(pool, paris("2024-03-14 10:00"), "AWAITING_EXPERT", breached=True)
    # 00:30 on 1 April in Paris (22:30 UTC on 31 March): April.
    await request(pool, paris("2024-04-01 00:30"), "COMPLETED", answer=hours)
    # GHT Alpes-Dauphiné, cardiology, March: cancelled before its deadline (not due).
    await request(
        pool,
        paris("2024-03-20 09:00"),
        "CANCELLED",
        ght="ght-alpes-dauphine",
        establishment="380000024",
        specialty="CARDIOLOGY",
    )
    # La Réunion, outside any GHT: 21:00 UTC on 31 March is 01:00 on 1 April there.
    await request(
        pool,
        datetime(2024, 3, 31, 21, 0, tzinfo=UTC),
        "COMPLETED",
        answer=timedelta(minutes=30),
        region="04",
        ght=None,
        establishment=REUNION,
    )


def months(**filters: object) -> expertise_pb2.GetTeleexpertiseActivityReportRequest:
    return expertise_pb2.GetTeleexpertiseActivityReportRequest(
        start_month=date_pb2.Date(year=2024, month=3),
        end_month=date_pb2.Date(year=2024, month=4),
        **filters,  # type: ignore[arg-type]
    )


def summary(rows: list[expertise_pb2.TeleexpertiseActivity]) -> list[tuple[object, ...]]:
    return [
        (
            f"{r.month.year}-{r.month.month:02d}",
            r.region,
            r.ght,
            r.specialty,
            r.requests,
            r.completed,
            r.cancelled,
            r.expired,
            r.median_answer_time.seconds if r.HasField("median_answer_time") else None,
            r.p90_answer_time.seconds if r.HasField("p90_answer_time") else None,
            r.due,
            r.breached,
            round(r.breach_rate, 4),
        )
        for r in rows
    ]


DERMATOLOGY, CARDIOLOGY = practice_pb2.SPECIALTY_DERMATOLOGY, practice_pb2.SPECIALTY_CARDIOLOGY
DAUPHINE_MARCH = (
    "2024-03",
    "regions/84",
    "ghts/ght-alpes-dauphine",
    CARDIOLOGY,
    1,
    0,
    1,
    0,
    None,
    None,
    0,
    0,
    0.0,
)
# Answers 2 h, 4 h, 10 h: median 4 h; 90th percentile 4 h + 0.8 × 6 h = 31,680 s. Due: all but the
# cancelled one; breached: 3 of 5.
LOIRE_MARCH = ("2024-03", "regions/84", "ghts/ght-loire", DERMATOLOGY, 6, 3, 1, 1, 14400, 31680, 5, 3, 0.6)
REUNION_APRIL = ("2024-04", "regions/04", "", DERMATOLOGY, 1, 1, 0, 0, 1800, 1800, 1, 0, 0.0)
LOIRE_APRIL = ("2024-04", "regions/84", "ghts/ght-loire", DERMATOLOGY, 1, 1, 0, 0, 3600, 3600, 1, 0, 0.0)


async def test_answer_times_and_breach_rate_of_a_seeded_set_for_each_scope(
    make_stack: Callable[..., Awaitable[Stack]], seeded_pool: asyncpg.Pool
) -> None:
    stack = await make_stack(worker=False)
    await seed(seeded_pool)
    hub = expertise_pb2_grpc.ExpertiseServiceStub(component_channel(stack.pki, stack.address, "workflows"))
    everything = await hub.GetTeleexpertiseActivityReport(months())
    assert summary(list(everything.rows)) == [DAUPHINE_MARCH, LOIRE_MARCH, REUNION_APRIL, LOIRE_APRIL]

    console = expertise_pb2_grpc.ExpertiseServiceStub(component_channel(stack.pki, stack.address, "console"))
    officer = bearer(stack.mint(staff="ars-ara", roles=["ars_officer"], region="84"))
    theirs = await console.GetTeleexpertiseActivityReport(months(), metadata=officer)
    assert summary(list(theirs.rows)) == [DAUPHINE_MARCH, LOIRE_MARCH, LOIRE_APRIL]
    refused = await call(
        console.GetTeleexpertiseActivityReport(months(region="regions/04"), metadata=officer)
    )
    assert (refused.code(), details(refused)[0].reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "REPORT_SCOPE_NOT_VISIBLE",
    )  # type: ignore[union-attr]

    loire = expertise_pb2_grpc.ExpertiseServiceStub(establishment_channel(stack.pki, stack.address, LOIRE))
    staff = bearer(stack.mint(staff="direction-forez"))
    assert summary(list((await loire.GetTeleexpertiseActivityReport(months(), metadata=staff)).rows)) == [
        LOIRE_MARCH,
        LOIRE_APRIL,
    ]
    reunion = expertise_pb2_grpc.ExpertiseServiceStub(
        establishment_channel(stack.pki, stack.address, REUNION)
    )
    alone = await reunion.GetTeleexpertiseActivityReport(
        months(), metadata=bearer(stack.mint(staff="dir-974"))
    )
    assert summary(list(alone.rows)) == [REUNION_APRIL]

    # A practitioner of the GHT calls through their establishment: its GHT, as its staff.
    doctor = await loire.GetTeleexpertiseActivityReport(
        months(specialty=DERMATOLOGY), metadata=bearer(stack.mint(rpps="10000000101"))
    )
    assert summary(list(doctor.rows)) == [LOIRE_MARCH, LOIRE_APRIL]
