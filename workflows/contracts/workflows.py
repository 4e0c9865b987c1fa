"""The four contracts workflows: `ArsContract`, `OperatorDeclaration`, `IntermediaryContractReview` and
`AgrementApplication`, one per case, each the owner of its case's lifecycle.

They are thin Temporal shells over the pure machines of `cases.py`:
- every state change is an Update; its validator runs the change on a copy of the case (so it refuses exactly
  what the change would refuse, with the machine's stable reason) and its handler applies it under the case's
  lock, persists the projection through a local activity (with the RPC's idempotency entry) and returns the
  outcome, so a Get right after the call sees the change;
- the timers (reminders, overdue, escalation, legal clocks, effective dates, renewal reminders, expiry) run
  in the main loop, one timer at a time from `next_wake(now)`, under the same lock;
- a case that lives for years (an active contract, an effective declaration) continues as new with its state
  compacted once its history reaches `Timeline.continue_as_new_after_events` (or when Temporal suggests it),
  after every handler has finished: the history stays bounded and the sequences carry over;
- signing (a contract, an amendment or a renewal) signs the previewed decision in an activity, in the update
  that records the signature, so the signed PDF and the ACTIVE state are one change.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    # Loaded once per worker, not re-executed for every case: the activities (only their names and types are
    # used here), the models, and the cases' rules (deterministic: no clock, no I/O; the legal clock's
    # zoneinfo reads run in the sandbox and are checked by the tests).
    from services.contracts.models import (
        AcknowledgeInput,
        ActionInput,
        AgrementCase,
        AppliedRequest,
        ArsContractCase,
        AttachDocumentInput,
        CaseResult,
        ChangeInput,
        ClauseInput,
        CommentInput,
        CreatedQuery,
        IntermediaryReviewCase,
        MessageInput,
        OperatorDeclarationCase,
        OpinionInput,
        OpinionRequestInput,
        ReassignInput,
        SignDecisionInput,
        SignInput,
        UpdateOutcome,
        case_name,
        search_attributes,
    )
    from services.kit import search_attributes as sa
    from services.kit.cases import CaseAttributes
    from services.kit.idempotency import Call
    from workflows.contracts.activities import ContractsActivities
    from workflows.contracts.cases import (
        AgrementApplication,
        ArsContract,
        CaseMachine,
        IntermediaryContractReview,
        OperatorDeclaration,
    )

# Writing the projection must eventually succeed (the database may be away for a while): retried without
# limit, backing off to a minute.
PERSIST_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
# Signing is retried a few times (the database or a worker lost); a missing preview or signing identity is
# not: the update fails with the reason and the case is unchanged.
SIGN_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_attempts=5,
    non_retryable_error_types=["DECISION_NOT_FOUND", "SIGNING_IDENTITY_MISSING"],
)

M = TypeVar("M", bound=CaseMachine)
R = TypeVar("R")


def _applied(call: Call | None) -> AppliedRequest | None:
    if call is None:
        return None
    return AppliedRequest(
        request_id=call.request_id, method=call.method, actor=call.actor, digest=call.digest
    )


class CaseWorkflow(Generic[M]):
    """What the four workflows share: the loop, the lock, persistence, and the updates of every case."""

    _machine: M

    def _setup(self, machine: M) -> None:
        self._machine = machine
        self._lock = asyncio.Lock()
        self._started = False
        self._changed = False
        # The attributes as they stand; None: not upserted by this run yet.
        self._attributes: CaseAttributes | None = None

    # --- the loop -------------------------------------------------------------------------------------------

    def _history_full(self) -> bool:
        info = workflow.info()
        limit = self._machine.core.timeline.continue_as_new_after_events
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit

    async def _run(self) -> CaseResult:
        machine = self._machine
        async with self._lock:
            if machine.core.version == 0:
                self._created(workflow.now())
                await self._persist(None)
            else:
                # A new run (continue-as-new): it started with the attributes the last one passed on.
                self._adopt_attributes()
        self._started = True

        while not machine.closed and not self._history_full():
            now = workflow.now()
            wake = machine.next_wake(now)
            self._changed = False
            timeout = None if wake is None else (wake - now).total_seconds()
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._changed or self._history_full(), timeout=timeout
                    )
            async with self._lock:
                if machine.on_time(workflow.now()):
                    await self._persist(None)

        await workflow.wait_condition(workflow.all_handlers_finished)
        if not machine.closed:
            machine.compact()
            attributes = search_attributes(machine.summary(workflow.now()))
            workflow.continue_as_new(self._state(), search_attributes=attributes.at_start())
        core = machine.core
        return CaseResult(kind=core.kind, state=core.state, closed_at=core.closed_at)

    def _created(self, now: datetime) -> None:
        created: Callable[[datetime], None] = getattr(self._machine, "created")  # noqa: B009 (every kind has one)
        created(now)

    def _state(self) -> Any:
        return getattr(self._machine, "case")  # noqa: B009 (the kind's state dataclass)

    def _adopt_attributes(self) -> None:
        """Bring the attributes this run started with to what the state says (set, or unset when gone)."""
        wanted = search_attributes(self._machine.summary(workflow.now())).at_start()
        have = workflow.info().typed_search_attributes
        changes: list[SearchAttributeUpdate[Any]] = []
        keys: tuple[SearchAttributeKey[Any], ...] = sa.ALL
        for key in keys:
            value, current = wanted.get(key), have.get(key)
            if value is not None and value != current:
                changes.append(key.value_set(value))
            elif value is None and current is not None:
                changes.append(key.value_unset())
        if changes:
            workflow.upsert_search_attributes(changes)
        self._attributes = search_attributes(self._machine.summary(workflow.now()))

    def _upsert_attributes(self) -> None:
        attributes = search_attributes(self._machine.summary(workflow.now()))
        changed = attributes.updates(self._attributes)
        if changed:
            workflow.upsert_search_attributes(changed)
        self._attributes = attributes

    async def _persist(self, applied: AppliedRequest | None) -> None:
        """Write the case's change (callers hold the lock)."""
        write = self._machine.take_write(workflow.now(), applied)
        self._upsert_attributes()
        # A local activity: a short database write run by this worker inside the workflow task, so a change is
        # one workflow task (an update, one round trip), not an activity task and a second workflow task.
        await workflow.execute_local_activity_method(
            ContractsActivities.persist_case,
            write,
            start_to_close_timeout=timedelta(seconds=self._machine.core.timeline.activity_timeout_seconds),
            retry_policy=PERSIST_RETRY,
        )

    # --- one change -----------------------------------------------------------------------------------------

    def _dry_run(self, request: R, apply: Callable[[M, R, datetime], None]) -> None:
        """The validator: the change on a copy of the case refuses exactly what the change would refuse."""
        apply(copy.deepcopy(self._machine), copy.deepcopy(request), workflow.now())

    async def _change(
        self, call: Call | None, request: R, apply: Callable[[M, R, datetime], None]
    ) -> UpdateOutcome:
        """Checked and applied under the lock, persisted with the RPC that asked for it before returning."""
        await workflow.wait_condition(lambda: self._started)
        async with self._lock:
            apply(self._machine, request, workflow.now())
            await self._persist(_applied(call))
            self._changed = True
            return self._machine.outcome()

    # --- every kind's updates -------------------------------------------------------------------------------

    @workflow.update(name="created")
    async def created(self, query: CreatedQuery) -> UpdateOutcome:
        await workflow.wait_condition(lambda: self._started)
        return self._machine.outcome()

    @workflow.update(name="claim")
    async def claim(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.claim(now, r))

    @claim.validator
    def _validate_claim(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.claim(now, r))

    @workflow.update(name="release")
    async def release(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.release(now, r))

    @release.validator
    def _validate_release(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.release(now, r))

    @workflow.update(name="reassign")
    async def reassign(self, request: ReassignInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.reassign(now, r))

    @reassign.validator
    def _validate_reassign(self, request: ReassignInput) -> None:
        self._dry_run(request, lambda m, r, now: m.reassign(now, r))

    @workflow.update(name="request_opinion")
    async def request_opinion(self, request: OpinionRequestInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_opinion(now, r))

    @request_opinion.validator
    def _validate_request_opinion(self, request: OpinionRequestInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_opinion(now, r))

    @workflow.update(name="give_opinion")
    async def give_opinion(self, request: OpinionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.give_opinion(now, r))

    @give_opinion.validator
    def _validate_give_opinion(self, request: OpinionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.give_opinion(now, r))

    @workflow.update(name="revoke_opinion")
    async def revoke_opinion(self, request: OpinionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.revoke_opinion(now, r))

    @revoke_opinion.validator
    def _validate_revoke_opinion(self, request: OpinionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.revoke_opinion(now, r))

    @workflow.update(name="post_message")
    async def post_message(self, request: MessageInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.post_message(now, r))

    @post_message.validator
    def _validate_post_message(self, request: MessageInput) -> None:
        self._dry_run(request, lambda m, r, now: m.post_message(now, r))

    @workflow.update(name="add_comment")
    async def add_comment(self, request: CommentInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.add_comment(now, r))

    @add_comment.validator
    def _validate_add_comment(self, request: CommentInput) -> None:
        self._dry_run(request, lambda m, r, now: m.add_comment(now, r))

    @workflow.update(name="attach_document")
    async def attach_document(self, request: AttachDocumentInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.attach_document(now, r))

    @attach_document.validator
    def _validate_attach_document(self, request: AttachDocumentInput) -> None:
        self._dry_run(request, lambda m, r, now: m.attach_document(now, r))


# ============================================================================================================


@workflow.defn(name="ArsContract")
class ArsContractWorkflow(CaseWorkflow[ArsContract]):
    @workflow.init
    def __init__(self, case: ArsContractCase) -> None:
        # Built from the input before any handler runs: an update delivered with the start already sees it.
        self._setup(ArsContract(case))

    @workflow.run
    async def run(self, case: ArsContractCase) -> CaseResult:
        return await self._run()

    async def _sign(
        self, request: SignInput, apply: Callable[[ArsContract, SignInput, datetime], None]
    ) -> UpdateOutcome:
        """Sign the previewed decision (an activity), then record the signature with it, as one change."""
        await workflow.wait_condition(lambda: self._started)
        async with self._lock:
            apply(copy.deepcopy(self._machine), copy.deepcopy(request), workflow.now())
            preview = request.decision_document
            assert preview is not None
            signed = await workflow.execute_activity_method(
                ContractsActivities.sign_decision,
                SignDecisionInput(
                    case_name=case_name(self._machine.core.kind, self._machine.core.case_id),
                    decision_id=preview.document.rsplit("/", 1)[-1],
                    preview_sha256=preview.sha256,
                    reason=request.reason,
                    location=request.location,
                ),
                start_to_close_timeout=timedelta(
                    seconds=self._machine.core.timeline.activity_timeout_seconds
                ),
                retry_policy=SIGN_RETRY,
            )
            request.decision_document = signed
            apply(self._machine, request, workflow.now())
            await self._persist(_applied(request.call))
            self._changed = True
            return self._machine.outcome()

    @workflow.update(name="submit")
    async def submit(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.submit(now, r))

    @submit.validator
    def _validate_submit(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.submit(now, r))

    @workflow.update(name="request_documents")
    async def request_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_documents(now, r))

    @request_documents.validator
    def _validate_request_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_documents(now, r))

    @workflow.update(name="complete_documents")
    async def complete_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.complete_documents(now, r))

    @complete_documents.validator
    def _validate_complete_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.complete_documents(now, r))

    @workflow.update(name="mark_complete")
    async def mark_complete(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.mark_complete(now, r))

    @mark_complete.validator
    def _validate_mark_complete(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.mark_complete(now, r))

    @workflow.update(name="give_visa")
    async def give_visa(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.give_visa(now, r))

    @give_visa.validator
    def _validate_give_visa(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.give_visa(now, r))

    @workflow.update(name="refuse_visa")
    async def refuse_visa(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.refuse_visa(now, r))

    @refuse_visa.validator
    def _validate_refuse_visa(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.refuse_visa(now, r))

    @workflow.update(name="approve")
    async def approve(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.approve(now, r))

    @approve.validator
    def _validate_approve(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.approve(now, r))

    @workflow.update(name="reject")
    async def reject(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.reject(now, r))

    @reject.validator
    def _validate_reject(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.reject(now, r))

    @workflow.update(name="request_changes")
    async def request_changes(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_changes(now, r))

    @request_changes.validator
    def _validate_request_changes(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_changes(now, r))

    @workflow.update(name="resubmit")
    async def resubmit(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.resubmit(now, r))

    @resubmit.validator
    def _validate_resubmit(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.resubmit(now, r))

    @workflow.update(name="sign")
    async def sign(self, request: SignInput) -> UpdateOutcome:
        return await self._sign(request, lambda m, r, now: m.sign(now, r))

    @sign.validator
    def _validate_sign(self, request: SignInput) -> None:
        self._dry_run(request, lambda m, r, now: m.sign(now, r))

    @workflow.update(name="propose_change")
    async def propose_change(self, request: ChangeInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.propose_change(now, r))

    @propose_change.validator
    def _validate_propose_change(self, request: ChangeInput) -> None:
        self._dry_run(request, lambda m, r, now: m.propose_change(now, r))

    @workflow.update(name="approve_change")
    async def approve_change(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.approve_change(now, r))

    @approve_change.validator
    def _validate_approve_change(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.approve_change(now, r))

    @workflow.update(name="reject_change")
    async def reject_change(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.reject_change(now, r))

    @reject_change.validator
    def _validate_reject_change(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.reject_change(now, r))

    @workflow.update(name="sign_change")
    async def sign_change(self, request: SignInput) -> UpdateOutcome:
        return await self._sign(request, lambda m, r, now: m.sign_change(now, r))

    @sign_change.validator
    def _validate_sign_change(self, request: SignInput) -> None:
        self._dry_run(request, lambda m, r, now: m.sign_change(now, r))

    @workflow.update(name="terminate")
    async def terminate(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.terminate(now, r))

    @terminate.validator
    def _validate_terminate(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.terminate(now, r))

    @workflow.update(name="withdraw")
    async def withdraw(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.withdraw(now, r))

    @withdraw.validator
    def _validate_withdraw(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.withdraw(now, r))


@workflow.defn(name="OperatorDeclaration")
class OperatorDeclarationWorkflow(CaseWorkflow[OperatorDeclaration]):
    @workflow.init
    def __init__(self, case: OperatorDeclarationCase) -> None:
        self._setup(OperatorDeclaration(case))

    @workflow.run
    async def run(self, case: OperatorDeclarationCase) -> CaseResult:
        return await self._run()

    @workflow.update(name="request_documents")
    async def request_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_documents(now, r))

    @request_documents.validator
    def _validate_request_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_documents(now, r))

    @workflow.update(name="complete_documents")
    async def complete_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.complete_documents(now, r))

    @complete_documents.validator
    def _validate_complete_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.complete_documents(now, r))

    @workflow.update(name="acknowledge")
    async def acknowledge(self, request: AcknowledgeInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.acknowledge(now, r))

    @acknowledge.validator
    def _validate_acknowledge(self, request: AcknowledgeInput) -> None:
        self._dry_run(request, lambda m, r, now: m.acknowledge(now, r))

    @workflow.update(name="reject")
    async def reject(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.reject(now, r))

    @reject.validator
    def _validate_reject(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.reject(now, r))

    @workflow.update(name="withdraw")
    async def withdraw(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.withdraw(now, r))

    @withdraw.validator
    def _validate_withdraw(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.withdraw(now, r))

    @workflow.update(name="lapse")
    async def lapse(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.lapse(now, r))

    @lapse.validator
    def _validate_lapse(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.lapse(now, r))


@workflow.defn(name="IntermediaryContractReview")
class IntermediaryContractReviewWorkflow(CaseWorkflow[IntermediaryContractReview]):
    @workflow.init
    def __init__(self, case: IntermediaryReviewCase) -> None:
        self._setup(IntermediaryContractReview(case))

    @workflow.run
    async def run(self, case: IntermediaryReviewCase) -> CaseResult:
        return await self._run()

    @workflow.update(name="mark_clause")
    async def mark_clause(self, request: ClauseInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.mark_clause(now, r))

    @mark_clause.validator
    def _validate_mark_clause(self, request: ClauseInput) -> None:
        self._dry_run(request, lambda m, r, now: m.mark_clause(now, r))

    @workflow.update(name="give_visa")
    async def give_visa(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.give_visa(now, r))

    @give_visa.validator
    def _validate_give_visa(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.give_visa(now, r))

    @workflow.update(name="refuse_visa")
    async def refuse_visa(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.refuse_visa(now, r))

    @refuse_visa.validator
    def _validate_refuse_visa(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.refuse_visa(now, r))

    @workflow.update(name="request_changes")
    async def request_changes(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_changes(now, r))

    @request_changes.validator
    def _validate_request_changes(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_changes(now, r))

    @workflow.update(name="resubmit")
    async def resubmit(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.resubmit(now, r))

    @resubmit.validator
    def _validate_resubmit(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.resubmit(now, r))

    @workflow.update(name="withdraw")
    async def withdraw(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.withdraw(now, r))

    @withdraw.validator
    def _validate_withdraw(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.withdraw(now, r))


@workflow.defn(name="AgrementApplication")
class AgrementApplicationWorkflow(CaseWorkflow[AgrementApplication]):
    @workflow.init
    def __init__(self, case: AgrementCase) -> None:
        self._setup(AgrementApplication(case))

    @workflow.run
    async def run(self, case: AgrementCase) -> CaseResult:
        return await self._run()

    @workflow.update(name="request_documents")
    async def request_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.request_documents(now, r))

    @request_documents.validator
    def _validate_request_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.request_documents(now, r))

    @workflow.update(name="complete_documents")
    async def complete_documents(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.complete_documents(now, r))

    @complete_documents.validator
    def _validate_complete_documents(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.complete_documents(now, r))

    @workflow.update(name="grant")
    async def grant(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.grant(now, r))

    @grant.validator
    def _validate_grant(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.grant(now, r))

    @workflow.update(name="refuse")
    async def refuse(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.refuse(now, r))

    @refuse.validator
    def _validate_refuse(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.refuse(now, r))

    @workflow.update(name="withdraw")
    async def withdraw(self, request: ActionInput) -> UpdateOutcome:
        return await self._change(request.call, request, lambda m, r, now: m.withdraw(now, r))

    @withdraw.validator
    def _validate_withdraw(self, request: ActionInput) -> None:
        self._dry_run(request, lambda m, r, now: m.withdraw(now, r))


WORKFLOWS = [
    ArsContractWorkflow,
    OperatorDeclarationWorkflow,
    IntermediaryContractReviewWorkflow,
    AgrementApplicationWorkflow,
]
