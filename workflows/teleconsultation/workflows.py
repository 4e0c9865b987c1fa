"""The `Teleconsultation` workflow: the life of one booked appointment after its booking.

    BOOKED ─ reminders ─▶ REMINDED ─ join window opens ─▶ JOIN_OPEN ─ Update `start` ─▶ IN_PROGRESS
      │                                                      │ grace elapsed, not started
      │ signal `cancel`                                      ▼
      ▼                                                    NOSHOW
    CANCELLED / ENTERED_IN_ERROR        IN_PROGRESS ─ Update `complete` (R.6316-4 items) ─▶ FULFILLED
                                        FULFILLED ─ billing ─▶ BILLED | BILLING_REFUSED ─ report ─▶ (done)

Notifications are recorded by their step's activity, then delivered beside the case, each in its own task
(`deliver_notifications`, retried with the input's backoff, then recorded as failed): a slow or failing mail
relay or webhook never holds the case back, and the case ends only once each delivery has settled. After the
report, the R.6316-4 record is kept as a FHIR document and handed to the DMP adapter (`publish_record`). Both
came with the patch `notify-and-record`: histories recorded before it replay without them.

Since the patch `local-projection-writes`, the steps that only write our own database (reminders and join
link recorded, arrival, completion, no-show, the billing outcome and the report's notifications — those two
in one write) are local activities, as the téléexpertise workflow writes its projection: run by this worker
inside the workflow task, so a step costs one workflow task and no activity task through the server, and an
Update answers in one round trip. They stay idempotent (conditional on the appointment's status,
notifications keyed), so a worker killed mid-write only makes the next one write again. Billing, the record
document and deliveries call other services or send mail with long retries: they stay regular activities.

Every instant comes from the input (computed by the scheduling service from its settings, so tests shrink
them); every wait is a durable timer or condition. The appointment's row in the scheduling database is the
projection: each step is persisted by an activity, conditional on the appointment's current status, before the
workflow moves on (or, for Updates, before the Update answers); the rules of those steps are the service's
(`services/scheduling/appointments.py`). The join window follows the clock: the teleconsultant may start from
its opening to the no-show deadline, whether or not the join-link notification has gone yet. The workflow ends
only once no Update handler is still running. Its search attributes come from one function of the service
(`models.case_attributes`), the same the relay starts it with; no patient data in any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Plain data, constants and pure rules; passed through so the sandbox does not re-import them per run.
    from services.kit.errors import DomainError
    from services.kit.temporal import HEARTBEAT_TIMEOUT
    from services.scheduling import appointments
    from services.scheduling.models import (
        WORKFLOW_TYPE,
        ArrivalInput,
        BillingInput,
        BillingOutcomeInput,
        BillingResult,
        CancelNotice,
        CaseState,
        CaseStatus,
        CompletionInput,
        CompletionRequest,
        CompletionResult,
        DeliveryInput,
        NotificationInput,
        NotificationResult,
        OutcomeAndReportInput,
        RecordInput,
        RecordResult,
        StartRequest,
        StartResult,
        TeleconsultationInput,
        TeleconsultationOutcome,
        case_attributes,
    )
    from workflows.teleconsultation.activities import TeleconsultationActivities

# Database writes of the projection: quick, retried until the database answers. Every activity heartbeats
# (services.kit.temporal.heartbeating): one lost with a dead worker runs again within HEARTBEAT_TIMEOUT.
PROJECTION_TIMEOUT = timedelta(seconds=30)
PROJECTION_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
# Deliveries and the record document came with this patch (older histories replay without them).
NOTIFY_AND_RECORD_PATCH = "notify-and-record"
# The projection writes run as local activities, the billing outcome and the report's notifications as one
# (older histories replay with their regular activities).
LOCAL_WRITES_PATCH = "local-projection-writes"
# Reminders due after the join window opens are no longer waited for (histories before it waited, and replay
# so: the patch is asked only where the timer differs).
REMINDERS_UNTIL_JOIN_PATCH = "reminders-until-join"
# Billing: a refusal is a non-retryable ApplicationError; anything else (billing down) is retried, slower.
BILLING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["BILLING_INVALID_ACT"],
)


RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


def _refusal(reason: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=reason, non_retryable=True)


def _refused(error: DomainError) -> ApplicationError:
    """A rule's refusal as the Update's failure (its reason travels as the error's type)."""
    return _refusal(error.reason, error.message)


@workflow.defn(name=WORKFLOW_TYPE)
class TeleconsultationWorkflow:
    @workflow.init
    def __init__(self, case: TeleconsultationInput) -> None:
        # From the input before any handler runs: an Update delivered with the start already sees the case.
        self._case = case
        self._state = CaseState.BOOKED
        self._cancel: CancelNotice | None = None
        self._join_open = False
        self._deadline_passed = False
        self._arriving = False
        self._arrived = False
        self._completing = False
        self._completed = False
        self._delivers = False
        self._deliveries: list[asyncio.Task[None]] = []

    # --- run -------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, case: TeleconsultationInput) -> TeleconsultationOutcome:
        self._delivers = workflow.patched(NOTIFY_AND_RECORD_PATCH)
        # Asked here first, so that a case's marker is in its first workflow task (`_local_writes`).
        self._local_writes()
        outcome = await self._run(case)
        # Every notification's delivery settles (delivered, or recorded as failed) before the case ends.
        await asyncio.gather(*self._deliveries)
        # An Update still being handled (a start racing the no-show deadline) finishes before the case ends.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return outcome

    async def _run(self, case: TeleconsultationInput) -> TeleconsultationOutcome:
        for reminder in sorted(case.reminders, key=lambda r: r.send_time):
            due = reminder.send_time
            if due > case.join_open_time and workflow.patched(REMINDERS_UNTIL_JOIN_PATCH):
                # A reminder due after the join window opens is skipped below anyway; waiting for it held
                # the case back (an early start and completion were billed only once it was due).
                due = case.join_open_time
            if await self._cancelled_before(due):
                return self._ended()
            if workflow.now() < case.join_open_time:
                # A reminder whose moment passed while nothing could send it (a late start) is skipped.
                recorded = await self._write(
                    TeleconsultationActivities.send_reminder, self._notification(label=reminder.label)
                )
                self._deliver("KIND_REMINDER", reminder.label, recorded)
                self._set_state(CaseState.REMINDED)
        if await self._cancelled_before(case.join_open_time):
            return self._ended()
        join_sent = await self._write(TeleconsultationActivities.send_join_link, self._notification())
        self._deliver("KIND_JOIN_LINK", "join", join_sent)
        self._join_open = True
        self._set_state(CaseState.JOIN_OPEN)

        if not await self._wait(lambda: self._arrived or self._cancel is not None, case.no_show_time):
            self._deadline_passed = True
            # A start already being persisted wins over the deadline it raced with.
            await workflow.wait_condition(lambda: not self._arriving)
        if self._cancel is not None:
            return self._ended()
        if not self._arrived:
            found = await self._write(TeleconsultationActivities.mark_no_show, self._notification())
            if found.status == "noshow":
                self._set_state(CaseState.NOSHOW)
                return TeleconsultationOutcome(state=self._state)
            # Cancelled in the meantime: its signal is on its way.
            await workflow.wait_condition(lambda: self._cancel is not None)
            return self._ended()

        await workflow.wait_condition(lambda: self._completed or self._cancel is not None)
        if not self._completed:
            return self._ended()
        return await self._bill_and_report()

    async def _bill_and_report(self) -> TeleconsultationOutcome:
        case = self._case
        outcome = TeleconsultationOutcome(state=CaseState.FULFILLED)
        try:
            billed: BillingResult = await workflow.execute_activity_method(
                TeleconsultationActivities.record_billable_act,
                BillingInput(appointment_id=case.appointment_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BILLING_RETRY,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
            )
            recorded = BillingOutcomeInput(
                appointment_id=case.appointment_id,
                state="STATE_RECORDED",
                charges=billed.charges,
                prescription_refusals=billed.prescription_refusals,
            )
            outcome = TeleconsultationOutcome(
                state=CaseState.BILLED, billing_state="STATE_RECORDED", charges=billed.charges
            )
        except ActivityError as error:
            refusal = error.cause
            if not isinstance(refusal, ApplicationError) or not refusal.non_retryable:
                raise
            # A business refusal is kept on the appointment with its reason; the case goes on.
            recorded = BillingOutcomeInput(
                appointment_id=case.appointment_id,
                state="STATE_REFUSED",
                reason=refusal.type or "BILLING_REFUSED",
                message=refusal.message,
            )
            outcome = TeleconsultationOutcome(
                state=CaseState.BILLING_REFUSED, billing_state="STATE_REFUSED", billing_reason=recorded.reason
            )
        if self._local_writes():
            report_sent = await self._write(
                TeleconsultationActivities.record_outcome_and_report,
                OutcomeAndReportInput(outcome=recorded, report=self._notification()),
            )
            self._set_state(outcome.state)
        else:
            await self._write(TeleconsultationActivities.record_billing_outcome, recorded)
            self._set_state(outcome.state)
            report_sent = await self._write(TeleconsultationActivities.deliver_report, self._notification())
        self._deliver("KIND_REPORT", "compte-rendu", report_sent)
        if self._delivers:
            outcome.record_document = await self._publish_record()
        return outcome

    async def _publish_record(self) -> str:
        """Keep the record as a FHIR document and hand it to the DMP adapter; its id ('' if it could not be
        written: the directory no longer knows a party — the case still ends, the reason logged)."""
        try:
            published: RecordResult = await workflow.execute_activity_method(
                TeleconsultationActivities.publish_record,
                RecordInput(appointment_id=self._case.appointment_id),
                start_to_close_timeout=PROJECTION_TIMEOUT,
                retry_policy=PROJECTION_RETRY,
            )
        except ActivityError as error:
            cause = error.cause
            if not isinstance(cause, ApplicationError) or not cause.non_retryable:
                raise
            workflow.logger.warning("record document not written: %s", cause.type)
            return ""
        return published.document_id

    # --- notifications ---------------------------------------------------------------------------------

    def _notification(self, label: str = "") -> NotificationInput:
        return NotificationInput(
            appointment_id=self._case.appointment_id, label=label, deliver=self._delivers
        )

    def _deliver(self, kind: str, label: str, recorded: NotificationResult) -> None:
        """Deliver what a step recorded, in a task of its own (the case does not wait for it)."""
        if self._delivers and recorded.recipients:
            request = DeliveryInput(
                appointment_id=self._case.appointment_id,
                kind=kind,
                label=label,
                recipients=recorded.recipients,
            )
            self._deliveries.append(asyncio.create_task(self._delivery(request)))

    async def _delivery(self, request: DeliveryInput) -> None:
        try:
            await workflow.execute_activity_method(
                TeleconsultationActivities.deliver_notifications,
                request,
                start_to_close_timeout=self._case.delivery.attempt_timeout,
                retry_policy=self._case.delivery.retry_policy(),
            )
        except ActivityError:
            # The retries are spent: recorded as failed; the case goes on.
            await self._write(TeleconsultationActivities.record_delivery_failure, request, heartbeat=False)

    # --- the projection ----------------------------------------------------------------------------------

    @staticmethod
    def _local_writes() -> bool:
        """Whether the projection writes are local activities. Asked where a write is about to be made, not
        only once in `run`: an Update delivered with the case's first workflow task (a start sent right after
        the booking) is handled before `run` begins. The SDK keeps the answer for the rest of the run."""
        return workflow.patched(LOCAL_WRITES_PATCH)

    async def _write(
        self,
        activity: Callable[[TeleconsultationActivities, RequestT], Awaitable[ResultT]],
        request: RequestT,
        *,
        heartbeat: bool = True,
    ) -> ResultT:
        """A write of the appointment's projection (our own database only, idempotent, a few ms): a local
        activity since `LOCAL_WRITES_PATCH`, retried until the database answers; a regular one before."""
        if self._local_writes():
            return await workflow.execute_local_activity_method(
                activity, request, start_to_close_timeout=PROJECTION_TIMEOUT, retry_policy=PROJECTION_RETRY
            )
        return await workflow.execute_activity_method(
            activity,
            request,
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
            heartbeat_timeout=HEARTBEAT_TIMEOUT if heartbeat else None,
        )

    # --- waiting ---------------------------------------------------------------------------------------

    async def _wait(self, condition: Callable[[], bool], until: datetime) -> bool:
        """Wait for `condition` until the instant `until`; False on timeout."""
        remaining = until - workflow.now()
        if remaining <= timedelta(0):
            return condition()
        try:
            await workflow.wait_condition(condition, timeout=remaining)
        except TimeoutError:
            return False
        return True

    async def _cancelled_before(self, instant: datetime) -> bool:
        return await self._wait(lambda: self._cancel is not None, instant)

    def _ended(self) -> TeleconsultationOutcome:
        assert self._cancel is not None
        state = (
            CaseState.ENTERED_IN_ERROR if self._cancel.status == "entered-in-error" else CaseState.CANCELLED
        )
        self._set_state(state)
        return TeleconsultationOutcome(state=state)

    def _set_state(self, state: str) -> None:
        before = case_attributes(self._case, self._state)
        self._state = state
        workflow.upsert_search_attributes(case_attributes(self._case, state).updates(before))

    # --- signals, updates, queries ---------------------------------------------------------------------

    @workflow.signal(name="cancel")
    def cancel(self, notice: CancelNotice) -> None:
        # Once the act is completed there is nothing to cancel (the scheduling service refuses it anyway).
        if not self._completed:
            self._cancel = notice

    @workflow.update(name="start")
    async def start(self, request: StartRequest) -> StartResult:
        self._arriving = True
        try:
            found = await self._write(
                TeleconsultationActivities.mark_arrived,
                ArrivalInput(
                    appointment_id=self._case.appointment_id,
                    practitioner=request.practitioner,
                    call=request.call,
                    assistant=request.assistant,
                    assistance_setting=request.assistance_setting,
                ),
            )
        except ActivityError as error:
            if isinstance(error.cause, ApplicationError):
                raise _refusal(error.cause.type or "INVALID_TRANSITION", error.cause.message) from None
            raise
        finally:
            self._arriving = False
        self._arrived = True
        self._set_state(CaseState.IN_PROGRESS)
        return StartResult(state=found.status)

    @start.validator
    def _validate_start(self, request: StartRequest) -> None:
        if self._cancel is not None:
            raise _refusal("INVALID_TRANSITION", "the appointment was cancelled")
        if self._arrived or self._arriving:
            raise _refusal("INVALID_TRANSITION", "the teleconsultation has already started")
        if self._deadline_passed:
            raise _refusal("JOIN_WINDOW_CLOSED", "the no-show grace period has passed")
        try:
            appointments.check_join_window(
                workflow.now(),
                join_open_time=self._case.join_open_time,
                no_show_time=self._case.no_show_time,
            )
        except DomainError as error:
            raise _refused(error) from None

    @workflow.update(name="complete")
    async def complete(self, request: CompletionRequest) -> CompletionResult:
        self._completing = True
        try:
            await self._write(
                TeleconsultationActivities.record_completion,
                CompletionInput(
                    appointment_id=self._case.appointment_id,
                    practitioner=request.practitioner,
                    record=request.record,
                    circumstances=request.circumstances,
                    call=request.call,
                    performer_activity=request.performer_activity,
                ),
            )
        except ActivityError as error:
            if isinstance(error.cause, ApplicationError):
                raise _refusal(error.cause.type or "INVALID_TRANSITION", error.cause.message) from None
            raise
        finally:
            self._completing = False
        self._completed = True
        self._set_state(CaseState.FULFILLED)
        return CompletionResult(state=appointments.FULFILLED)

    @complete.validator
    def _validate_complete(self, request: CompletionRequest) -> None:
        if self._cancel is not None:
            raise _refusal("INVALID_TRANSITION", "the appointment was cancelled")
        if not self._arrived:
            raise _refusal("NOT_IN_PROGRESS", "the teleconsultation has not started")
        if self._completed or self._completing:
            raise _refusal("INVALID_TRANSITION", "the teleconsultation is already completed")
        missing = request.record.missing_items()
        if missing:
            raise _refusal("RECORD_INCOMPLETE", "the R.6316-4 record lacks: " + ", ".join(missing))

    @workflow.query(name="status")
    def status(self) -> CaseStatus:
        return CaseStatus(
            state=self._state, join_open=self._join_open, arrived=self._arrived, completed=self._completed
        )
