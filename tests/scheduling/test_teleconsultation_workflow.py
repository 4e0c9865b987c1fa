"""The Teleconsultation workflow end to end: bookings made over gRPC, the workflow started by the outbox relay
on a time-skipping Temporal test server, the real worker with its activities on PostgreSQL, the real billing
and directory services. Reminders, the join window, no-show, the consent rule, completion with the R.6316-4
items, billing (recorded or refused, the reason kept), the report, cancellation; and a recorded history
replayed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest
import temporalio.client
import temporalio.common
from parcours.billing.v1 import billing_pb2
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s

from services.devstack.postgres import PostgresHandle
from services.kit import search_attributes
from services.kit.cases import Relay
from services.kit.pki import DevPki
from services.scheduling.models import (
    TASK_QUEUE,
    RecordedAct,
    RecordParticipant,
    StartRequest,
    TeleconsultationInput,
    TeleconsultationRecord,
)
from tests.conftest import Minter
from tests.scheduling.helpers import (
    PATIENT_LOIRE,
    Metadata,
    when,
)
from tests.scheduling.workflow import (
    TREATING_GP,
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
    workflow_stack,
)
from tests.support import bearer, request_id
from tests.support.calls import call, details
from tests.support.golden import keep
from workflows.teleconsultation.workflows import TeleconsultationWorkflow

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


# --- the whole case --------------------------------------------------------------------------------------


async def test_reminders_join_window_start_completion_billing_and_report(
    stack: Stack,
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pool: asyncpg.Pool,
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC)
    )
    # Too early: the workflow's validator refuses, the appointment is untouched.
    error = await call(start(stack, case))
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "JOIN_WINDOW_NOT_OPEN",
    )  # type: ignore[union-attr]

    await skip_to_join_window(stack, case)
    arrived = await start(stack, case)
    assert arrived.state == A.STATE_ARRIVED
    # Only the teleconsultant, with their own token, completes it; the record names them.
    error = await call(
        stack.stub.CompleteTeleconsultation(
            s.CompleteTeleconsultationRequest(
                request_id=request_id(), name=case.name, record=record(case.rpps)
            ),
            metadata=bearer(mint(rpps=TREATING_GP)),
        )
    )
    assert details(error)[0].reason == "TELECONSULTANT_ONLY"  # type: ignore[union-attr]
    error = await call(complete(stack, case, record(TREATING_GP)))
    assert details(error)[1] == [("record.participants", "must name the teleconsultant (R.6316-4 3°)")]

    fulfilled = await complete(
        stack,
        case,
        record(case.rpps),
        circumstances=billing_pb2.Circumstances(performer_in_patient_territory=True),
    )
    assert fulfilled.state == A.STATE_FULFILLED
    assert fulfilled.record.report.startswith("Patiente vue") and fulfilled.record.no_technical_incident
    assert fulfilled.billing.state == s.BillingOutcome.STATE_PENDING

    result = await outcome(stack, case)
    assert result.state == "BILLED" and len(result.charges) >= 1
    final = await get(stack, case)
    assert final.billing.state == s.BillingOutcome.STATE_RECORDED
    assert list(final.billing.charges) == result.charges
    assert final.billing.act_id == f"teleconsultation-{appointment_id(final)}"
    assert [h.state for h in final.history] == [A.STATE_BOOKED, A.STATE_ARRIVED, A.STATE_FULFILLED]
    assert final.history[1].actor == f"practitioners/{case.rpps}"
    sent = [(n.kind, n.label, n.recipient) for n in final.notifications]
    N = s.Notification
    assert sorted(sent) == sorted(
        [
            (N.KIND_REMINDER, "P1D", PATIENT_LOIRE),
            (N.KIND_REMINDER, "PT1H", PATIENT_LOIRE),
            (N.KIND_JOIN_LINK, "join", PATIENT_LOIRE),
            (N.KIND_JOIN_LINK, "join", f"practitioners/{case.rpps}"),
            # The report goes to the médecin traitant, who is also the requester here: once.
            (N.KIND_REPORT, "compte-rendu", f"practitioners/{TREATING_GP}"),
        ]
    )
    # Billing holds the act under the appointment's id, with the practitioner's lines.
    billed = await pool.fetchval("SELECT count(*) FROM billing.acts WHERE act_id = $1", final.billing.act_id)
    assert billed == 1
    described = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).describe()
    assert described.typed_search_attributes.get(search_attributes.CASE_STATE) == "BILLED"

    # The scenario's golden history (replayed by tests/replay on every run).
    await keep(
        "teleconsultation-billed-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )


async def test_a_billing_refusal_is_kept_on_the_appointment_with_its_reason(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    await start(stack, case)
    # A téléconsultation dated before TLC was reimbursed (15 Sept 2018): nothing to bill. (An arrêt de
    # travail over 3 days no longer refuses the act, only the arrêt: §7.16, tests/scheduling/
    # test_consent_and_billing_rules.py.)
    old = record(case.rpps)
    old.act_start_time.FromJsonString("2017-03-01T09:00:00Z")
    old.act_end_time.FromJsonString("2017-03-01T09:20:00Z")
    await complete(stack, case, old)
    result = await outcome(stack, case)
    assert result.state == "BILLING_REFUSED"
    final = await get(stack, case)
    assert final.state == A.STATE_FULFILLED
    assert final.billing.state == s.BillingOutcome.STATE_REFUSED
    assert final.billing.refusal_reason == result.billing_reason == "NO_TARIFF_AT_DATE"
    assert "2017-03-01" in final.billing.refusal_message
    assert not final.billing.charges
    assert [n.kind for n in final.notifications].count(s.Notification.KIND_REPORT) == 1
    await keep(
        "teleconsultation-billing-refused-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )


async def test_no_consent_no_start(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    await skip_to_join_window(stack, case)
    error = await call(start(stack, case))
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
    )  # type: ignore[union-attr]
    await stack.stub.RecordConsent(
        s.RecordConsentRequest(
            request_id=request_id(), name=case.name, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
        ),
        metadata=case.doctor,
    )
    assert (await start(stack, case)).state == A.STATE_ARRIVED


async def test_not_started_within_the_grace_period_is_a_no_show(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    assert (await get(stack, case)).state == A.STATE_BOOKED
    await skip_to(stack, when(case.appointment.no_show_time) + timedelta(seconds=1))
    result = await outcome(stack, case)
    assert result.state == "NOSHOW"
    final = await get(stack, case)
    assert final.state == A.STATE_NOSHOW and final.fhir_status == "noshow"
    assert (final.history[-1].reason, final.history[-1].actor) == (
        "NO_SHOW_GRACE_ELAPSED",
        "component/workflows-teleconsultation",
    )
    assert {n.label for n in final.notifications if n.kind == s.Notification.KIND_REMINDER} == {"P1D", "PT1H"}
    error = await call(start(stack, case))
    assert details(error)[0].reason == "INVALID_TRANSITION"  # type: ignore[union-attr]
    await keep(
        "teleconsultation-no-show-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )


async def test_a_cancellation_ends_the_workflow(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(stack, directory, operator, mint)
    await stack.stub.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=case.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=case.doctor,
    )
    await stack.scheduling.task(Relay).relay_now(appointment_id(case.appointment))
    assert (await outcome(stack, case)).state == "CANCELLED"
    described = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).describe()
    assert described.status == temporalio.client.WorkflowExecutionStatus.COMPLETED
    assert described.typed_search_attributes.get(search_attributes.CASE_STATE) == "CANCELLED"
    final = await get(stack, case)
    assert final.state == A.STATE_CANCELLED and not final.notifications
    await keep(
        "teleconsultation-cancelled-local-writes",
        stack.env.client.get_workflow_handle(case.appointment.workflow_id),
    )


async def test_an_incomplete_record_is_refused_naming_what_is_missing(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    await start(stack, case)
    error = await call(complete(stack, case, s.TeleconsultationRecord(report="")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in details(error)[1]}
    assert {
        "record.report",
        "record.acts",
        "record.participants",
        "record.act_start_time",
        "record",
    } <= fields
    # The workflow's own validator says the same of a record that reached it without the edge's checks.
    record = TeleconsultationRecord(
        report="x",
        acts=[RecordedAct(description="consultation")],
        participants=[
            RecordParticipant(practitioner="practitioners/10000000101", role="ROLE_TELECONSULTANT")
        ],
    )
    assert record.missing_items() == [
        "actStartTime",
        "actEndTime",
        "technicalIncidents",
    ]


async def test_a_start_handled_in_the_first_workflow_task_writes_through_a_local_activity(
    stack: Stack, directory: directory_pb2_grpc.DirectoryServiceStub, operator: Metadata, mint: Minter
) -> None:
    """A StartTeleconsultation sent while its case's start is still in the outbox reaches the workflow with
    its start (update-with-start): the Update is handled before `run` begins, and its write is still a
    local activity (the patch is asked where the write is made, not only at the top of `run`)."""
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    client = stack.env.client
    relayed = client.get_workflow_handle(case.appointment.workflow_id)
    started = (await relayed.fetch_history()).events[0].workflow_execution_started_event_attributes
    [case_input] = await client.data_converter.decode(started.input.payloads, [TeleconsultationInput])
    # The case again, as if its start had not been relayed yet: started with the Update, in one call.
    await relayed.terminate("the case is started again with its first Update")
    result = await client.execute_update_with_start_workflow(
        TeleconsultationWorkflow.start,
        StartRequest(request_id=request_id(), practitioner=f"practitioners/{case.rpps}"),
        start_workflow_operation=temporalio.client.WithStartWorkflowOperation(
            TeleconsultationWorkflow.run,
            case_input,
            id=case.appointment.workflow_id,
            task_queue=TASK_QUEUE,
            id_conflict_policy=temporalio.common.WorkflowIDConflictPolicy.FAIL,
        ),
    )
    assert result.state == "arrived"
    assert (await get(stack, case)).state == A.STATE_ARRIVED
    handle = client.get_workflow_handle(case.appointment.workflow_id)
    history = (await handle.fetch_history()).events
    events = [e.WhichOneof("attributes") for e in history]
    first_task_end = events.index("workflow_task_completed_event_attributes")
    accepted = events.index("workflow_execution_update_accepted_event_attributes")
    later = [
        i
        for i, e in enumerate(events)
        if i > first_task_end and e == "workflow_task_scheduled_event_attributes"
    ]
    second_task = later[0] if later else len(events)
    assert first_task_end < accepted < second_task  # the Update came with the start's workflow task
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # The arrival written by a local activity in that task (its marker beside the two patches'), not as an
    # activity task.
    assert "mark_arrived" not in scheduled
    assert events[:second_task].count("marker_recorded_event_attributes") >= 3
    await handle.terminate("the scenario ends here")
