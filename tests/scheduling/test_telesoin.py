"""Télésoin agendas (issue 13 item 10) end to end over real gRPC, PostgreSQL, the time-skipping Temporal
server, the worker and billing: a nurse's and a physiotherapist's agendas, a télésoin booked, started,
completed and billed as ACT_TYPE_TELESOIN with the catalog's code (TMI for nurses; the physiotherapist's
unconfirmed TSP); the physiotherapist's prior in-person visit at its 12-month boundary, and the
hospital-discharge exception."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.type.v1 import practice_pb2 as p

from services.devstack.postgres import PostgresHandle
from services.kit.cases import Relay
from services.kit.pki import DevPki
from services.kit.regions import local_date
from tests.conftest import Minter
from tests.scheduling.helpers import (
    PATIENT_LOIRE,
    Metadata,
    add_rules,
    every_day,
    new_practitioner,
    new_schedule,
    stamp,
)
from tests.scheduling.workflow import (
    Case,
    Stack,
    appointment_id,
    complete,
    get,
    outcome,
    record,
    skip_to_join_window,
    start,
    workflow_stack,
)
from tests.support import LOIRE, bearer, request_id
from tests.support.calls import call, details

A = s.Appointment


@pytest.fixture(scope="module")
async def stack(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
) -> AsyncIterator[Stack]:
    async with workflow_stack(pki, postgres, pool, directory_address, billing_address) as found:
        yield found


async def telesoin_case(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    profession: int,
) -> Case:
    """A paramedical professional's agenda at the Loire hospital and a télésoin booked on it, consented."""
    rpps = await new_practitioner(directory, operator, LOIRE, profession=profession)
    professional = bearer(
        mint(rpps=rpps, profession=p.Profession.Name(profession), specialty="SPECIALTY_NONE")
    )
    schedule = await new_schedule(stack.stub, operator, rpps, LOIRE, horizon_days=30)
    await add_rules(stack.stub, operator, schedule.name, every_day((8, 0), (18, 0)))
    after = await stack.env.get_current_time() + timedelta(hours=30)
    [slot] = (
        await stack.stub.SearchSlots(
            s.SearchSlotsRequest(practitioner=f"practitioners/{rpps}", start_time=stamp(after), page_size=1),
            metadata=professional,
        )
    ).slots
    booked = await stack.stub.BookAppointment(
        s.BookAppointmentRequest(
            request_id=request_id(),
            slot=slot.name,
            patient=PATIENT_LOIRE,
            consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL),
        ),
        metadata=bearer(mint(staff="front-desk-forez")),
    )
    await stack.scheduling.task(Relay).relay_now(appointment_id(booked.appointment))
    return Case(booked.appointment, professional, rpps)


def telesoin_record(rpps: str) -> s.TeleconsultationRecord:
    return record(
        rpps,
        report="Séance de rééducation à distance, exercices revus avec le patient.",
        acts=[s.RecordedAct(code="TSP", description="Télésoin")],
        prescriptions=[],
    )


def proto_date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def charges(pool: asyncpg.Pool, act_id: str) -> list[tuple[str, str, int, bool]]:
    rows = await pool.fetch(
        "SELECT code, act_type, amount_cents, unconfirmed FROM billing.charges"
        " WHERE act_id = $1 ORDER BY line",
        act_id,
    )
    return [(r["code"], r["act_type"], r["amount_cents"], r["unconfirmed"]) for r in rows]


def act_day() -> date:
    """The act's civil date at the Loire hospital (billing dates the act there, §7.14)."""
    return local_date(datetime.now(UTC) - timedelta(minutes=25), "84")


async def test_a_nurse_telesoin_is_booked_and_billed_tmi(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
) -> None:
    case = await telesoin_case(stack, directory, operator, mint, p.PROFESSION_NURSE)
    await skip_to_join_window(stack, case)
    assert (await start(stack, case)).state == A.STATE_ARRIVED
    await complete(
        stack,
        case,
        telesoin_record(case.rpps),
        circumstances=billing_pb2.Circumstances(patient_seen_in_person=True),  # the patient is known
    )
    result = await outcome(stack, case)
    assert result.state == "BILLED"
    final = await get(stack, case)
    assert final.billing.state == s.BillingOutcome.STATE_RECORDED
    assert await charges(pool, final.billing.act_id) == [("TMI", "ACT_TYPE_TELESOIN", 315, True)]


async def test_a_physiotherapist_telesoin_needs_a_visit_within_twelve_months_or_a_discharge(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
) -> None:
    today = act_day()
    # The same day a year before (28 February for a 29 February).
    year_ago = date(today.year - 1, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)

    # Seen in person exactly 12 months before the act: billed, under the unconfirmed TSP line.
    case = await telesoin_case(stack, directory, operator, mint, p.PROFESSION_PHYSIOTHERAPIST)
    await skip_to_join_window(stack, case)
    await start(stack, case)
    await complete(
        stack,
        case,
        telesoin_record(case.rpps),
        circumstances=billing_pb2.Circumstances(last_in_person_visit_date=proto_date(year_ago)),
    )
    assert (await outcome(stack, case)).state == "BILLED"
    final = await get(stack, case)
    assert await charges(pool, final.billing.act_id) == [("TSP", "ACT_TYPE_TELESOIN", 0, True)]

    # One day more: refused, the reason kept on the appointment.
    late = await telesoin_case(stack, directory, operator, mint, p.PROFESSION_PHYSIOTHERAPIST)
    await skip_to_join_window(stack, late)
    await start(stack, late)
    await complete(
        stack,
        late,
        telesoin_record(late.rpps),
        circumstances=billing_pb2.Circumstances(
            last_in_person_visit_date=proto_date(year_ago - timedelta(days=1))
        ),
    )
    result = await outcome(stack, late)
    assert (result.state, result.billing_reason) == ("BILLING_REFUSED", "PRIOR_IN_PERSON_VISIT_REQUIRED")
    refused = await get(stack, late)
    assert refused.billing.state == s.BillingOutcome.STATE_REFUSED and not refused.billing.charges

    # Never seen in person, but the télésoin follows a hospital discharge: the exception (unconfirmed window).
    discharged = await telesoin_case(stack, directory, operator, mint, p.PROFESSION_PHYSIOTHERAPIST)
    await skip_to_join_window(stack, discharged)
    await start(stack, discharged)
    await complete(
        stack,
        discharged,
        telesoin_record(discharged.rpps),
        circumstances=billing_pb2.Circumstances(
            hospital_discharge_date=proto_date(today - timedelta(days=10))
        ),
    )
    assert (await outcome(stack, discharged)).state == "BILLED"
    final = await get(stack, discharged)
    assert await charges(pool, final.billing.act_id) == [("TSP", "ACT_TYPE_TELESOIN", 0, True)]


async def test_a_psychologist_keeps_no_telehealth_agenda(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata
) -> None:
    psychologist = await new_practitioner(directory, operator, LOIRE, profession=p.PROFESSION_PSYCHOLOGIST)
    error = await call(new_schedule(stack.stub, operator, psychologist, LOIRE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "NOT_A_MEDICAL_PROFESSIONAL"  # type: ignore[union-attr]
