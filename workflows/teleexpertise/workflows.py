"""The `Teleexpertise` workflow: one per request, owner of its lifecycle.

requested → awaiting an expert (routed to a tier of candidates; reminded, then escalated to the next tier
as acceptance windows pass) → accepted → (question ↔ answer)* → completed → billed; or cancelled by the
requester; or expired when nobody ever accepts. A missed answer deadline is recorded once as a breach (and in
the `ParcoursBreached` search attribute), the case going on. The rules are in `case.Case`; this class is
their Temporal shell: clock, timers, updates, persistence, billing.

Every state change is an Update. Its validator refuses an illegal transition with an `ApplicationError` whose
type is a stable reason (`models.Reason`). Its handler takes the case lock and re-checks before changing
anything — two updates validated in the same workflow task both see the state before either ran, which is
how the second of two concurrent accepts learns ALREADY_ASSIGNED — then persists the projection through a
(local) activity before returning, so a Get right after the call sees the change. Timers (reminders,
escalations, breach, expiry) run in the main loop under the same lock: the projection is written by one change
at a time, in order.

The notifications a change records are delivered beside the case, each batch in its own task
(`deliver_teleexpertise_notifications`, retried with the timeline's backoff, then recorded as failed), so a
slow mail relay or webhook never holds an update back; after the report and billing the R.6316-4 record is
kept as a FHIR document and handed to the DMP adapter. Both came with the patch `notify-and-record`:
histories recorded before it replay without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Loaded once per worker, not re-executed for every case: the activities (only their names and types are
    # used here), the models, and the case's rules (deterministic: no clock, no I/O).
    from services.expertise.models import (
        AcceptInput,
        AnswerInput,
        AskInput,
        BillingOutcome,
        BillingRefusal,
        BillingState,
        CancelInput,
        CaseInput,
        CaseResult,
        DeclineInput,
        DeliveryInput,
        HandBackInput,
        RecordInput,
        ReportInput,
        RoutedQuery,
        State,
        UpdateOutcome,
    )
    from services.kit.idempotency import Call
    from services.kit.temporal import HEARTBEAT_TIMEOUT
    from workflows.teleexpertise.activities import TeleexpertiseActivities
    from workflows.teleexpertise.case import Case

# Deliveries and the record document came with this patch (older histories replay without them).
NOTIFY_AND_RECORD_PATCH = "notify-and-record"
# Writing the projection must eventually succeed (the database may be away for a while): retried without
# limit, backing off to a minute.
PERSIST_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# Billing is idempotent on the act id, so retrying is safe; its business refusals come back as outcomes and
# a request billing rejects as malformed is not retried.
BILLING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["BILLING_REJECTED", "BILLING_DATA_MISSING"],
)


@workflow.defn(name="Teleexpertise")
class TeleexpertiseWorkflow:
    @workflow.init
    def __init__(self, case: CaseInput) -> None:
        # Built from the input before any handler runs: an update delivered with the start (update-with-start)
        # already sees the case.
        self._case = Case(case)
        # The search attributes as they stand (the relay started the workflow with these).
        self._attributes = self._case.attributes()
        self._lock = asyncio.Lock()
        self._routed = False
        self._changed = False
        self._deliveries: list[asyncio.Task[None]] = []

    @workflow.run
    async def run(self, case: CaseInput) -> CaseResult:
        async with self._lock:
            self._case.route(workflow.now())
            await self._persist(None)
        self._routed = True

        while not self._case.closed:
            wake = self._case.next_wake()
            self._changed = False
            timeout = None if wake is None else (wake - workflow.now()).total_seconds()
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._changed, timeout=timeout)
            async with self._lock:
                if self._case.on_time(workflow.now()):
                    await self._persist(None)

        if self._case.state == State.COMPLETED:
            await self._bill()
            if workflow.patched(NOTIFY_AND_RECORD_PATCH):
                await self._publish_record()
        await workflow.wait_condition(workflow.all_handlers_finished)
        # Every notification's delivery settles (delivered, or recorded as failed) before the case ends.
        await asyncio.gather(*self._deliveries)
        return self._case.result()

    async def _persist(self, applied: Call | None) -> None:
        """Write the case's new view with what it appends; callers hold the lock."""
        write = self._case.take_write(applied)
        write.deliver = workflow.patched(NOTIFY_AND_RECORD_PATCH)
        attributes = self._case.attributes()
        changed = attributes.updates(self._attributes)
        if changed:
            workflow.upsert_search_attributes(changed)
        self._attributes = attributes
        # A local activity: a short database write run by this worker inside the workflow task, so a change is
        # one workflow task (an update, one round trip) instead of an activity task and a second workflow task
        # through the server. Retried like any activity; idempotent (versions, sequences).
        await workflow.execute_local_activity_method(
            TeleexpertiseActivities.persist_case,
            write,
            start_to_close_timeout=timedelta(seconds=self._case.input.timeline.activity_timeout_seconds),
            retry_policy=PERSIST_RETRY,
        )
        if write.deliver and write.notices:
            batch = DeliveryInput(case_id=self._case.input.case_id, notices=list(write.notices))
            self._deliveries.append(asyncio.create_task(self._delivery(batch)))

    async def _delivery(self, batch: DeliveryInput) -> None:
        """Deliver what a change recorded; once the retries are spent, record it as failed."""
        try:
            await workflow.execute_activity_method(
                TeleexpertiseActivities.deliver_notifications,
                batch,
                start_to_close_timeout=self._case.input.timeline.delivery.attempt_timeout,
                retry_policy=self._case.input.timeline.delivery.retry_policy(),
            )
        except ActivityError:
            await workflow.execute_activity_method(
                TeleexpertiseActivities.record_delivery_failure,
                batch,
                start_to_close_timeout=timedelta(seconds=self._case.input.timeline.activity_timeout_seconds),
                retry_policy=PERSIST_RETRY,
            )

    async def _publish_record(self) -> None:
        """Keep the record as a FHIR document and hand it to the DMP adapter (a party the directory no longer
        knows leaves it unwritten, the reason logged; the case still ends)."""
        try:
            await workflow.execute_activity_method(
                TeleexpertiseActivities.publish_record,
                RecordInput(case_id=self._case.input.case_id),
                start_to_close_timeout=timedelta(seconds=self._case.input.timeline.activity_timeout_seconds),
                retry_policy=PERSIST_RETRY,
            )
        except ActivityError as error:
            cause = error.cause
            if not isinstance(cause, ApplicationError) or not cause.non_retryable:
                raise
            workflow.logger.warning("record document not written: %s", cause.type)

    async def _change(self, call: Call | None, apply: Callable[[datetime], None]) -> UpdateOutcome:
        """One state change: checked and applied under the lock, persisted (with the RPC that asked for it,
        in the service's idempotency ledger) before the update returns."""
        async with self._lock:
            apply(workflow.now())
            await self._persist(call)
            self._changed = True
            return self._case.outcome()

    # --- routed: the creation waits for the first routing --------------------------------------------------

    @workflow.update(name="routed")
    async def routed(self, query: RoutedQuery) -> UpdateOutcome:
        await workflow.wait_condition(lambda: self._routed)
        return self._case.outcome()

    # --- state changes -------------------------------------------------------------------------------------

    @workflow.update(name="accept")
    async def accept(self, request: AcceptInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.accept(now, request))

    @accept.validator
    def _validate_accept(self, request: AcceptInput) -> None:
        self._case.check_candidate(request.actor)

    @workflow.update(name="decline")
    async def decline(self, request: DeclineInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.decline(now, request))

    @decline.validator
    def _validate_decline(self, request: DeclineInput) -> None:
        self._case.check_candidate(request.actor)

    @workflow.update(name="hand_back")
    async def hand_back(self, request: HandBackInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.hand_back(now, request))

    @hand_back.validator
    def _validate_hand_back(self, request: HandBackInput) -> None:
        self._case.check_expert(request.actor)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.cancel(now, request))

    @cancel.validator
    def _validate_cancel(self, request: CancelInput) -> None:
        self._case.check_cancel(request.actor)

    @workflow.update(name="ask")
    async def ask(self, request: AskInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.ask(now, request))

    @ask.validator
    def _validate_ask(self, request: AskInput) -> None:
        self._case.check_ask(request.actor)

    @workflow.update(name="answer")
    async def answer(self, request: AnswerInput) -> UpdateOutcome:
        return await self._change(request.call, lambda now: self._case.answer(now, request))

    @answer.validator
    def _validate_answer(self, request: AnswerInput) -> None:
        self._case.check_answer(request.actor)

    @workflow.update(name="submit_report")
    async def submit_report(self, request: ReportInput) -> UpdateOutcome:
        return await self._change(
            request.call,
            lambda now: self._case.submit_report(now, request),
        )

    @submit_report.validator
    def _validate_submit_report(self, request: ReportInput) -> None:
        self._case.check_expert(request.actor)

    # --- billing -------------------------------------------------------------------------------------------

    async def _bill(self) -> None:
        billing_input = self._case.billing_input()
        try:
            outcome = await workflow.execute_activity_method(
                TeleexpertiseActivities.record_acts,
                billing_input,
                start_to_close_timeout=timedelta(seconds=self._case.input.timeline.activity_timeout_seconds),
                # It heartbeats: lost with a dead worker, it runs again within HEARTBEAT_TIMEOUT.
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=BILLING_RETRY,
            )
        except ActivityError as error:
            cause = error.cause
            reason = cause.type if isinstance(cause, ApplicationError) and cause.type else "BILLING_FAILED"
            message = cause.message if isinstance(cause, ApplicationError) else "billing failed"
            outcome = BillingOutcome(
                state=BillingState.FAILED,
                act_id=billing_input.act_id,
                refusals=[BillingRefusal(reason=reason, code="", message=message)],
                record_time=workflow.now(),
            )
        async with self._lock:
            self._case.billed(workflow.now(), outcome)
            await self._persist(None)
