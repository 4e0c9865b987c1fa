"""Issue 13 on the Teleconsultation flow, end to end (bookings over gRPC, the outbox relay, the real worker on
a time-skipping Temporal test server, PostgreSQL, the real billing and directory services):

- seed 004 / §7 rule 7: the patient refuses telemedicine or asks to be seen in person; the refusal is
  recorded, blocks the start, and the appointment ends cancelled (CONSENT_REFUSED) with no act and nothing
  billed; a refusal can be withdrawn, and the teleconsultation then goes on once consent is recorded again;
- §7.16: an arrêt de travail beyond 3 days prescribed remotely is refused on the prescription while the
  téléconsultation is billed; a justified impossibility recorded on the prescription lifts the limit;
- §7.18: the nurse or pharmacist named at the start gets their own line, the teleconsultant as prescriber;
- §7.12: the hub's own téléconsultations are counted by billing's remote-activity cap;
- a reminder due after the join window opens no longer holds back the billing of an early completion.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.devstack.postgres import PostgresHandle
from services.kit.cases import Relay
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.scheduling.helpers import PATIENT_LOIRE, Metadata, new_practitioner, when
from tests.scheduling.workflow import (
    Case,
    Stack,
    appointment_id,
    booked_case,
    complete,
    get,
    outcome,
    record,
    skip_to,
    skip_to_join_window,
    start,
    state_reaches,
    workflow_stack,
)
from tests.support import DAUPHINE, LOIRE, component_channel, establishment_channel, request_id
from tests.support.calls import call, details
from tests.support.golden import keep

A = s.Appointment
ORAL = s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
NURSE = "10000004501"  # a nurse of the demo directory
PHARMACIST = "10000005101"  # a pharmacist of the demo directory


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


@pytest.fixture(scope="module")
async def billing(pki: DevPki, billing_address: str) -> billing_pb2_grpc.BillingServiceStub:
    """Billing as the hub's workflows call it."""
    return billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))


async def refuse(stack: Stack, case: Case, kind: int) -> s.Appointment:
    reply = await stack.stub.RefuseTeleconsultation(
        s.RefuseTeleconsultationRequest(request_id=request_id(), name=case.name, kind=kind),
        metadata=case.doctor,
    )
    return reply.appointment


async def withdraw(stack: Stack, case: Case) -> s.Appointment:
    reply = await stack.stub.WithdrawTeleconsultationRefusal(
        s.WithdrawTeleconsultationRefusalRequest(request_id=request_id(), name=case.name),
        metadata=case.doctor,
    )
    return reply.appointment


async def consent(stack: Stack, case: Case) -> s.Appointment:
    reply = await stack.stub.RecordConsent(
        s.RecordConsentRequest(request_id=request_id(), name=case.name, consent=ORAL), metadata=case.doctor
    )
    return reply.appointment


def reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    info = details(error)[0]
    return error.code(), info.reason if info is not None else ""


# --- seed 004: refusal and free choice ----------------------------------------------------------------------


async def test_a_refusal_blocks_the_start_and_ends_cancelled_with_nothing_billed(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
) -> None:
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    refused = await refuse(stack, case, s.REFUSAL_KIND_IN_PERSON_REQUESTED)
    # Recorded, with who and when; the consent it supersedes is gone.
    assert refused.consent_refusal.kind == s.REFUSAL_KIND_IN_PERSON_REQUESTED
    assert refused.consent_refusal.recorded_by == f"practitioners/{case.rpps}"
    assert not refused.HasField("consent") and refused.state == A.STATE_BOOKED
    assert [(h.state, h.reason) for h in refused.history][-1] == (A.STATE_BOOKED, "CONSENT_REFUSED")
    # Consent cannot be recorded over it, nor the refusal recorded twice.
    assert reason(await call(consent(stack, case))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REFUSED",
    )
    assert reason(await call(refuse(stack, case, s.REFUSAL_KIND_TELEMEDICINE_REFUSED))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REFUSED",
    )

    await skip_to_join_window(stack, case)
    assert reason(await call(start(stack, case))) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REFUSED")

    # At the no-show deadline: cancelled for the refusal, not a no-show; the workflow ends with it.
    await skip_to(stack, when(case.appointment.no_show_time) + timedelta(seconds=1))
    for _ in range(200):
        if (await get(stack, case)).state == A.STATE_CANCELLED:
            break
        await asyncio.sleep(0.05)
    await stack.scheduling.task(Relay).relay_now(appointment_id(case.appointment))
    assert (await outcome(stack, case)).state == "CANCELLED"
    final = await get(stack, case)
    assert (final.state, final.fhir_status) == (A.STATE_CANCELLED, "cancelled")
    assert final.cancellation.reason == s.CANCELLATION_REASON_CONSENT_REFUSED
    assert final.cancellation.initiator == s.PARTY_PATIENT
    assert A.STATE_NOSHOW not in [h.state for h in final.history]
    # No act: nothing billed, no reminder or join link sent to a patient who refused.
    assert not final.HasField("billing") and not final.HasField("record")
    assert not [n for n in final.notifications if n.kind != s.Notification.KIND_REPORT]
    act_id = f"teleconsultation-{appointment_id(final)}"
    assert await pool.fetchval("SELECT count(*) FROM billing.acts WHERE act_id = $1", act_id) == 0
    await keep(
        "teleconsultation-consent-refused-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )


async def test_a_withdrawn_refusal_lets_the_teleconsultation_go_on_after_consent(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    await refuse(stack, case, s.REFUSAL_KIND_TELEMEDICINE_REFUSED)
    withdrawn = await withdraw(stack, case)
    assert not withdrawn.HasField("consent_refusal") and not withdrawn.HasField("consent")
    assert [h.reason for h in withdrawn.history][-2:] == ["CONSENT_REFUSED", "REFUSAL_WITHDRAWN"]
    assert reason(await call(withdraw(stack, case))) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_REFUSAL")

    await skip_to_join_window(stack, case)
    # Withdrawn, the refusal no longer stands, but consent is still needed before the act (§7 rule 7).
    assert reason(await call(start(stack, case))) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REQUIRED")
    await consent(stack, case)
    assert (await start(stack, case)).state == A.STATE_ARRIVED
    # Once started it can no longer be refused.
    assert reason(await call(refuse(stack, case, s.REFUSAL_KIND_IN_PERSON_REQUESTED))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_TRANSITION",
    )
    await complete(stack, case, record(case.rpps))
    assert (await outcome(stack, case)).state == "BILLED"


async def test_a_hidden_appointment_answers_a_refusal_like_a_missing_one(
    stack: Stack,
    pki: DevPki,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    elsewhere = scheduling_pb2_grpc.SchedulingServiceStub(
        establishment_channel(pki, f"127.0.0.1:{stack.scheduling.port}", DAUPHINE)
    )
    staff = (("authorization", f"Bearer {mint(staff='front-desk-dauphine')}"),)
    answers = []
    for name in (case.name, f"appointments/{uuid.uuid4()}"):
        for rpc, message in (
            (
                elsewhere.RefuseTeleconsultation,
                s.RefuseTeleconsultationRequest(
                    request_id=request_id(), name=name, kind=s.REFUSAL_KIND_TELEMEDICINE_REFUSED
                ),
            ),
            (
                elsewhere.WithdrawTeleconsultationRefusal,
                s.WithdrawTeleconsultationRefusalRequest(request_id=request_id(), name=name),
            ),
        ):
            answers.append(reason(await call(rpc(message, metadata=staff))))
    assert answers == [(grpc.StatusCode.PERMISSION_DENIED, "APPOINTMENT_NOT_VISIBLE")] * 4
    assert not (await get(stack, case)).HasField("consent_refusal")


# --- §7.16: the arrêt de travail, not the consultation ---------------------------------------------------


def sick_leave(days: int, *, ongoing: int = 0, justified: bool = False) -> s.Prescription:
    return s.Prescription(
        kind=s.Prescription.KIND_SICK_LEAVE,
        description="Arrêt de travail",
        sick_leave_days=days,
        ongoing_sick_leave_days=ongoing,
        in_person_impossible_justified=justified,
    )


@pytest.mark.parametrize(
    ("prescription", "refused"),
    [
        (sick_leave(4), ["SICK_LEAVE_OVER_LIMIT"]),  # 4 days by a doctor who is not the MT
        (sick_leave(1, ongoing=3), ["SICK_LEAVE_OVER_LIMIT"]),  # extends one beyond 3 days
        (sick_leave(3), []),  # the limit itself
        (sick_leave(5, justified=True), []),  # the impossibility to consult in person recorded
    ],
    ids=["4-days", "extension-beyond-3", "3-days", "justified-impossibility"],
)
async def test_an_arret_over_three_days_is_refused_on_the_prescription_and_the_tlc_billed(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    prescription: s.Prescription,
    refused: list[str],
) -> None:
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    await skip_to_join_window(stack, case)
    await start(stack, case)
    completed = await complete(stack, case, record(case.rpps, prescriptions=[prescription]))
    assert completed.record.prescriptions[0].in_person_impossible_justified == (
        prescription.in_person_impossible_justified
    )
    result = await outcome(stack, case)
    assert result.state == "BILLED" and result.charges
    final = await get(stack, case)
    assert (
        final.billing.state == s.BillingOutcome.STATE_RECORDED
        and list(final.billing.charges) == result.charges
    )
    assert [f.reason for f in final.billing.prescription_refusals] == refused
    for finding in final.billing.prescription_refusals:
        assert finding.reference == "§7.16" and "3 days" in finding.message


# --- §7.18: assisted teleconsultation --------------------------------------------------------------------


async def start_assisted(stack: Stack, case: Case, assistant: str, setting: int) -> s.Appointment:
    reply = await stack.stub.StartTeleconsultation(
        s.StartTeleconsultationRequest(
            request_id=request_id(), name=case.name, assistant=assistant, assistance_setting=setting
        ),
        metadata=case.doctor,
    )
    return reply.appointment


@pytest.mark.parametrize(
    ("assistant", "setting", "code"),
    [
        (NURSE, billing_pb2.ASSISTANCE_SETTING_ORGANISED_AT_HOME, "TLD"),
        (NURSE, billing_pb2.ASSISTANCE_SETTING_PLANNED_NURSING_VISIT, "TLS"),
        (PHARMACIST, billing_pb2.ASSISTANCE_SETTING_PHARMACY, "TLM"),
    ],
    ids=["nurse-at-home-TLD", "nurse-visit-TLS", "pharmacist-TLM"],
)
async def test_the_assistant_named_at_the_start_bills_their_line_with_the_teleconsultant_as_prescriber(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    billing: billing_pb2_grpc.BillingServiceStub,
    assistant: str,
    setting: int,
    code: str,
) -> None:
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    await skip_to_join_window(stack, case)
    started = await start_assisted(stack, case, f"practitioners/{assistant}", setting)
    assert (started.assistant, started.assistance_setting) == (f"practitioners/{assistant}", setting)
    given = record(case.rpps)
    given.participants.append(
        s.RecordParticipant(
            practitioner=f"practitioners/{assistant}", role=s.RecordParticipant.ROLE_ASSISTANT
        )
    )
    await complete(stack, case, given)
    result = await outcome(stack, case)
    assert result.state == "BILLED"
    charges = [
        (await billing.GetCharge(billing_pb2.GetChargeRequest(name=name))).charge for name in result.charges
    ]
    by_code = {c.code: c for c in charges}
    assert set(by_code) == {"TCG", code}
    line = by_code[code]
    assert line.biller_role == billing_pb2.BILLER_ROLE_ASSISTANT
    assert (line.practitioner, line.prescriber) == (
        f"practitioners/{assistant}",
        f"practitioners/{case.rpps}",
    )
    # The TLC's date (its civil date where it took place) as prescription and execution date.
    assert line.prescription_date == line.act_date == by_code["TCG"].act_date
    assert line.act_time == by_code["TCG"].act_time == given.act_start_time
    assert not by_code["TCG"].prescriber


async def test_the_assistant_must_be_a_nurse_or_a_pharmacist_with_a_setting(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    await skip_to_join_window(stack, case)
    physician = await new_practitioner(directory, operator, LOIRE)
    for assistant, setting, field in (
        (f"practitioners/{physician}", billing_pb2.ASSISTANCE_SETTING_ORGANISED_AT_HOME, "assistant"),
        ("practitioners/19999999999", billing_pb2.ASSISTANCE_SETTING_ORGANISED_AT_HOME, "assistant"),
        (f"practitioners/{NURSE}", billing_pb2.ASSISTANCE_SETTING_UNSPECIFIED, "(request)"),
    ):
        error = await call(start_assisted(stack, case, assistant, setting))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [f for f, _ in details(error)[1]]
        assert fields == [field], fields
    # Nothing was started by the refused attempts.
    assert (await get(stack, case)).state == A.STATE_BOOKED


# --- §7.12: the hub's téléconsultations feed the remote-activity cap ----------------------------------------


async def test_the_hubs_teleconsultations_are_counted_by_the_remote_cap(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    billing: billing_pb2_grpc.BillingServiceStub,
) -> None:
    """A teleconsultant's TLC through the hub is a line counted by the cap (not their own patient); billing
    then counts it in the teleconsultant's remote activity of the year, as a quote of their next act shows."""
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    await skip_to_join_window(stack, case)
    await start(stack, case)
    given = record(case.rpps)
    await complete(
        stack,
        case,
        given,
        performer_activity=billing_pb2.ActivityToDate(conventioned_acts=3, teleconsultations=0),
    )
    result = await outcome(stack, case)
    assert result.state == "BILLED"
    [tcg] = [
        (await billing.GetCharge(billing_pb2.GetChargeRequest(name=name))).charge for name in result.charges
    ]
    assert tcg.counts_toward_remote_cap
    quote = (await billing.QuoteAct(billing_pb2.QuoteActRequest(act=_next_act(case, given)))).quote
    # The hub recorded one TLC, so the next is the 2nd remote act of 5 (4 conventioned so far + this one):
    # 40 %, above the 20 % cap — a warning, never a block (§7.12).
    assert "REMOTE_CAP_EXCEEDED" in {w.reason for w in quote.warnings}
    [cap] = [a for a in quote.applied_rules if a.rule == "REMOTE_CAP"]
    assert "2 remote of 5 acts" in cap.reason


def _next_act(case: Case, given: s.TeleconsultationRecord) -> billing_pb2.Act:
    return billing_pb2.Act(
        type=billing_pb2.ACT_TYPE_TELECONSULTATION,
        act_time=given.act_end_time,
        establishment=case.appointment.establishment,
        region=case.appointment.region,
        performer=billing_pb2.Participant(
            practitioner=f"practitioners/{case.rpps}",
            profession=p.PROFESSION_PHYSICIAN,
            specialty=p.SPECIALTY_GENERAL_MEDICINE,
            sector=p.CONVENTION_SECTOR_1,
        ),
        patient_age=60,
        circumstances=billing_pb2.Circumstances(oriented_by_treating_physician=True),
        performer_activity=billing_pb2.ActivityToDate(conventioned_acts=4, teleconsultations=0),
    )


# --- the reminder due after the join window opens -------------------------------------------------------


@pytest.fixture(scope="module")
async def early_join_stack(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
) -> AsyncIterator[Stack]:
    """The join window opens 2 hours before the start, before the 1-hour reminder is due."""
    settings = {"join_window_before": timedelta(hours=2)}
    async with workflow_stack(
        pki, postgres, pool, directory_address, billing_address, settings=settings
    ) as found:
        yield found


async def test_an_early_completion_is_billed_without_waiting_for_a_later_reminder(
    early_join_stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
) -> None:
    stack = early_join_stack
    case = await booked_case(stack, directory, operator, mint, consent=ORAL)
    reminder_due = when(case.appointment.start_time) - timedelta(hours=1)
    assert when(case.appointment.join_open_time) < reminder_due
    # The join window opens (and its link goes) at its own time, not at the later reminder's.
    await skip_to_join_window(stack, case)
    await start(stack, case)
    await complete(stack, case, record(case.rpps))
    # Billed while the clock is still before the reminder's time (the test server's time does not move).
    await state_reaches(stack, case, "BILLED")
    assert await stack.env.get_current_time() < reminder_due
    final = await get(stack, case)
    assert final.billing.state == s.BillingOutcome.STATE_RECORDED
    # The reminder due after the window opened is skipped, as before; the day-before one went.
    reminders = {n.label for n in final.notifications if n.kind == s.Notification.KIND_REMINDER}
    assert reminders == {"P1D"}
    assert PATIENT_LOIRE in {
        n.recipient for n in final.notifications if n.kind == s.Notification.KIND_JOIN_LINK
    }
    assert (await outcome(stack, case)).state == "BILLED"
    await keep(
        "teleconsultation-reminder-after-join-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )
