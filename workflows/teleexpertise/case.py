"""The rules of one téléexpertise case, as a deterministic state machine.

No clock and no I/O here: every method that depends on time takes `now` (the workflow passes
`workflow.now()`), and what a change appends (events, thread messages, notifications) accumulates until the
workflow takes it with `take_write` and persists it. Refusals are `ApplicationError`s whose type is a stable
reason (`models.Reason`): a `check_*` method refuses without changing anything, and every changing method
starts with its check, so an update's validator and its handler apply the same rule.

The workflow imports this module through the sandbox (like the models): its code is loaded once per worker
rather than re-executed for every case, and it must therefore stay free of anything non-deterministic.

Routing. Candidates are the members of the tiers up to the current escalation level, without the requester
and anyone who declined or handed the case back. A tier's acceptance window is `first_window_fraction` (first
tier) or `next_window_fraction` (later tiers) of the time from creation to the requested deadline; candidates
are reminded once `reminder_fraction` of the window has passed, and at its end the case escalates to the next
tier that brings a new candidate. When every candidate of a tier declines, the case escalates at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio.exceptions import ApplicationError

from services.expertise.models import (
    TELEEXPERTISE,
    AcceptInput,
    AnswerInput,
    AskInput,
    BillingInput,
    BillingOutcome,
    BillingState,
    CancelInput,
    CaseEvent,
    CaseInput,
    CaseResult,
    CaseView,
    DeclineInput,
    EventKind,
    HandBackInput,
    MessageKind,
    Notice,
    ProjectionWrite,
    Reason,
    ReportInput,
    ReportRecord,
    State,
    ThreadMessage,
    UpdateOutcome,
    case_attributes,
)
from services.kit.cases import CaseAttributes
from services.kit.idempotency import Call


def refusal(reason: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=reason, non_retryable=True)


class Case:
    def __init__(self, case: CaseInput) -> None:
        self.input = case
        self.state = State.REQUESTED
        self.version = 0
        self.level = 0
        self.window_start = case.created_at
        self.window_reminded = False
        self.reminders = 0
        self.candidates: list[str] = []
        self.offered: list[str] = []
        self.excluded: list[str] = []
        self.assigned = ""
        self.expert_establishment = ""
        self.due = case.answer_due
        self.paused_since: datetime | None = None
        self.breached = False
        self.breach_time: datetime | None = None
        self.accept_time: datetime | None = None
        self.close_time: datetime | None = None
        self.close_reason = ""
        self.report: ReportRecord | None = None
        self.billing: BillingOutcome | None = None
        self._event_seq = 0
        self._message_seq = 0
        self._events: list[CaseEvent] = []
        self._messages: list[ThreadMessage] = []
        self._notices: list[Notice] = []

    # --- what the workflow reads ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state in State.CLOSED

    def outcome(self) -> UpdateOutcome:
        return UpdateOutcome(version=self.version, state=self.state)

    def result(self) -> CaseResult:
        return CaseResult(
            state=self.state,
            breached=self.breached,
            billing_state=self.billing.state if self.billing is not None else "",
        )

    def view(self) -> CaseView:
        return CaseView(
            case_id=self.input.case_id,
            version=self.version,
            state=self.state,
            answer_due=self.due,
            deadline_paused=self.paused_since is not None,
            breached=self.breached,
            breach_time=self.breach_time,
            escalation_level=self.level,
            reminders_sent=self.reminders,
            candidates=list(self.candidates),
            offered=list(self.offered),
            assigned_expert=self.assigned,
            expert_establishment=self.expert_establishment,
            accept_time=self.accept_time,
            close_time=self.close_time,
            close_reason=self.close_reason,
            report=self.report,
            billing=self.billing,
        )

    def take_write(self, applied: Call | None) -> ProjectionWrite:
        """The change to persist: the new view (next version) and what was appended since the last one."""
        self.version += 1
        write = ProjectionWrite(
            view=self.view(),
            events=self._events,
            messages=self._messages,
            notices=self._notices,
            applied=applied,
        )
        self._events, self._messages, self._notices = [], [], []
        return write

    def attributes(self) -> CaseAttributes:
        """What the Temporal Web UI filters cases on (the service's one function): no patient data."""
        return case_attributes(self.input, state=self.state, due=self.due, breached=self.breached)

    # --- events ------------------------------------------------------------------------------------------

    def _record(self, now: datetime, kind: str, actor: str, detail: str, notify: list[str]) -> None:
        """Append an event and notify each recipient once (never the actor of the event)."""
        self._event_seq += 1
        self._events.append(
            CaseEvent(sequence=self._event_seq, kind=kind, actor=actor, detail=detail, time=now)
        )
        seen: set[str] = set()
        for recipient in notify:
            if recipient and recipient != actor and recipient not in seen:
                seen.add(recipient)
                self._notices.append(Notice(recipient=recipient, event_sequence=self._event_seq, kind=kind))

    def _message(self, now: datetime, author: str, kind: str, text: str) -> None:
        self._message_seq += 1
        self._messages.append(
            ThreadMessage(sequence=self._message_seq, author=author, kind=kind, text=text, time=now)
        )

    # --- routing -----------------------------------------------------------------------------------------

    def route(self, now: datetime) -> None:
        """The first routing: to the first tier's candidates."""
        self._record(self.input.created_at, EventKind.CREATED, self.input.requester, "", [])
        self.state = State.AWAITING_EXPERT
        self.candidates = self._open_candidates(0)
        self._offer(self.candidates)
        self._restart_window(now)
        self._record(now, EventKind.ROUTED, "", self.input.tiers[0].source, self.candidates)
        if not self.candidates:
            self._escalate(now)

    def _open_candidates(self, up_to_level: int) -> list[str]:
        found: list[str] = []
        for tier in self.input.tiers[: up_to_level + 1]:
            for member in tier.members:
                if member not in found and member not in self.excluded and member != self.input.requester:
                    found.append(member)
        return found

    def _offer(self, members: list[str]) -> None:
        for member in members:
            if member not in self.offered:
                self.offered.append(member)

    def _restart_window(self, now: datetime) -> None:
        self.window_start = now
        self.window_reminded = False

    def _has_next_tier(self) -> bool:
        return self.level + 1 < len(self.input.tiers)

    def _escalate(self, now: datetime) -> None:
        """Route to the next tier that brings at least one new candidate; stay put when none does."""
        self._restart_window(now)
        while self._has_next_tier():
            self.level += 1
            before = set(self.candidates)
            self.candidates = self._open_candidates(self.level)
            new = [c for c in self.candidates if c not in before]
            if new:
                self._offer(new)
                source = self.input.tiers[self.level].source
                self._record(now, EventKind.ESCALATED, "", source, [self.input.requester, *new])
                return

    # --- timers --------------------------------------------------------------------------------------------

    def _window(self) -> timedelta:
        timeline = self.input.timeline
        fraction = timeline.first_window_fraction if self.level == 0 else timeline.next_window_fraction
        return (self.input.answer_due - self.input.created_at) * fraction

    def _reminder_time(self) -> datetime:
        return self.window_start + self._window() * self.input.timeline.reminder_fraction

    def _expiry_time(self) -> datetime:
        return self.due + timedelta(seconds=self.input.timeline.expire_after_seconds)

    def _deadline_running(self) -> bool:
        return not self.closed and not self.breached and self.paused_since is None

    def next_wake(self) -> datetime | None:
        """The next instant a timer may change the case, or None (only an update can)."""
        times: list[datetime] = []
        if self.state == State.AWAITING_EXPERT:
            if not self.window_reminded:
                times.append(self._reminder_time())
            if self._has_next_tier():
                times.append(self.window_start + self._window())
            if self.breached:
                times.append(self._expiry_time())
        if self._deadline_running():
            times.append(self.due)
        return min(times) if times else None

    def on_time(self, now: datetime) -> bool:
        """Apply what is due at `now` (reminder, escalation, breach, expiry); True when something changed."""
        changed = False
        if self.state == State.AWAITING_EXPERT:
            if not self.window_reminded and now >= self._reminder_time():
                self.window_reminded = True
                self.reminders += 1
                self._record(now, EventKind.REMINDED, "", "", self.candidates)
                changed = True
            if self._has_next_tier() and now >= self.window_start + self._window():
                self._escalate(now)
                changed = True
        if self._deadline_running() and now >= self.due:
            self.breached = True
            self.breach_time = now
            told = [self.input.requester, *([self.assigned] if self.assigned else self.candidates)]
            self._record(now, EventKind.DEADLINE_BREACHED, "", "", told)
            changed = True
        if self.state == State.AWAITING_EXPERT and self.breached and now >= self._expiry_time():
            told = [self.input.requester, *self.candidates]
            self.state = State.EXPIRED
            self.close_time = now
            self.close_reason = "no expert accepted the request"
            self.candidates = []
            self._record(now, EventKind.EXPIRED, "", self.close_reason, told)
            changed = True
        return changed

    def _resume_deadline(self, now: datetime) -> None:
        """End a pause of the deadline: it moves by the time the expert waited."""
        if self.paused_since is not None:
            self.due += now - self.paused_since
            self.paused_since = None

    # --- checks ----------------------------------------------------------------------------------------

    def _refuse_if_closed(self) -> None:
        if self.state == State.COMPLETED:
            raise refusal(Reason.REQUEST_COMPLETED, "the request is completed: its report was submitted")
        if self.state == State.CANCELLED:
            raise refusal(Reason.REQUEST_CANCELLED, "the requester cancelled the request")
        if self.state == State.EXPIRED:
            raise refusal(Reason.REQUEST_EXPIRED, "the request expired without an expert")
        if self.state == State.REQUESTED:
            raise refusal(Reason.NOT_ROUTED, "the request is not routed yet; retry")

    def check_candidate(self, actor: str) -> None:
        """Accept and decline: an unassigned case, by one of its candidates."""
        self._refuse_if_closed()
        if self.state != State.AWAITING_EXPERT:
            raise refusal(Reason.ALREADY_ASSIGNED, "another expert accepted this request first")
        if actor not in self.candidates:
            raise refusal(Reason.NOT_A_CANDIDATE, "the request is not routed to this practitioner")

    def check_expert(self, actor: str) -> None:
        """Hand back, ask, report: by the assigned expert."""
        self._refuse_if_closed()
        if self.state not in State.ASSIGNED:
            raise refusal(Reason.NOT_ASSIGNED, "no expert holds the request yet: it must be accepted first")
        if actor != self.assigned:
            raise refusal(Reason.NOT_ASSIGNED_EXPERT, "only the assigned expert may do this")

    def _check_requester(self, actor: str) -> None:
        if actor != self.input.requester:
            raise refusal(Reason.NOT_REQUESTER, "only the requester may do this")

    def check_cancel(self, actor: str) -> None:
        self._check_requester(actor)
        self._refuse_if_closed()

    def check_ask(self, actor: str) -> None:
        self.check_expert(actor)
        if self.state == State.AWAITING_INFORMATION:
            raise refusal(Reason.QUESTION_ALREADY_OPEN, "a question already waits for the requester")

    def check_answer(self, actor: str) -> None:
        self._check_requester(actor)
        self._refuse_if_closed()
        if self.state != State.AWAITING_INFORMATION:
            raise refusal(Reason.NO_OPEN_QUESTION, "no question waits for an answer")

    # --- changes -------------------------------------------------------------------------------------------

    def accept(self, now: datetime, request: AcceptInput) -> None:
        self.check_candidate(request.actor)
        others = [c for c in self.candidates if c != request.actor]
        self.state = State.ACCEPTED
        self.assigned = request.actor
        self.expert_establishment = request.establishment
        self.accept_time = now
        self.candidates = []
        self._record(now, EventKind.ACCEPTED, request.actor, "", [self.input.requester, *others])

    def decline(self, now: datetime, request: DeclineInput) -> None:
        self.check_candidate(request.actor)
        self.excluded.append(request.actor)
        self.candidates = [c for c in self.candidates if c != request.actor]
        self._record(now, EventKind.DECLINED, request.actor, request.reason, [self.input.requester])
        if not self.candidates:
            # Nobody left at this tier: the next one now rather than at the end of the window.
            self._escalate(now)

    def hand_back(self, now: datetime, request: HandBackInput) -> None:
        self.check_expert(request.actor)
        self._resume_deadline(now)
        self.excluded.append(request.actor)
        self.assigned = ""
        self.expert_establishment = ""
        self.state = State.AWAITING_EXPERT
        self.candidates = self._open_candidates(self.level)
        self._offer(self.candidates)
        self._restart_window(now)
        told = [self.input.requester, *self.candidates]
        self._record(now, EventKind.HANDED_BACK, request.actor, request.reason, told)
        if not self.candidates:
            self._escalate(now)

    def cancel(self, now: datetime, request: CancelInput) -> None:
        self.check_cancel(request.actor)
        told = [self.assigned] if self.assigned else list(self.candidates)
        self.state = State.CANCELLED
        self.paused_since = None
        self.close_time = now
        self.close_reason = request.reason
        self.candidates = []
        self._record(now, EventKind.CANCELLED, request.actor, request.reason, told)

    def ask(self, now: datetime, request: AskInput) -> None:
        self.check_ask(request.actor)
        self._message(now, request.actor, MessageKind.QUESTION, request.text)
        self.state = State.AWAITING_INFORMATION
        if self.input.timeline.pause_deadline_while_awaiting_information and not self.breached:
            self.paused_since = now
        self._record(now, EventKind.QUESTION_ASKED, request.actor, "", [self.input.requester])

    def answer(self, now: datetime, request: AnswerInput) -> None:
        self.check_answer(request.actor)
        self._message(now, request.actor, MessageKind.ANSWER, request.text)
        self._resume_deadline(now)
        self.state = State.IN_PROGRESS
        self._record(now, EventKind.QUESTION_ANSWERED, request.actor, "", [self.assigned])

    def submit_report(self, now: datetime, request: ReportInput) -> None:
        self.check_expert(request.actor)
        self.paused_since = None
        participants = [self.input.requester, request.actor]
        participants += [p for p in request.other_participants if p not in participants]
        self.report = ReportRecord(
            summary=request.summary,
            acts_and_prescriptions=list(request.acts_and_prescriptions),
            participants=participants,
            act_time=now,
            technical_incidents=request.technical_incidents,
            author=request.actor,
        )
        self.state = State.COMPLETED
        self.close_time = now
        self.billing = BillingOutcome(state=BillingState.PENDING, act_id=self.act_id())
        self._record(now, EventKind.COMPLETED, request.actor, "", [self.input.requester])

    # --- billing -------------------------------------------------------------------------------------------

    def act_id(self) -> str:
        """Billing's idempotency key: one act per case, whatever the retries."""
        return TELEEXPERTISE.workflow_id(self.input.case_id)

    def billing_input(self) -> BillingInput:
        assert self.report is not None
        return BillingInput(
            case_id=self.input.case_id,
            act_id=self.act_id(),
            patient=self.input.patient,
            requester=self.input.requester,
            requester_establishment=self.input.requester_establishment,
            expert=self.assigned,
            expert_establishment=self.expert_establishment,
            act_time=self.report.act_time,
        )

    def billed(self, now: datetime, outcome: BillingOutcome) -> None:
        self.billing = outcome
        if outcome.state == BillingState.BILLED:
            self._record(now, EventKind.BILLED, "", ", ".join(line.code for line in outcome.lines), [])
        else:
            detail = "; ".join(f"{r.code or 'act'}: {r.reason}" for r in outcome.refusals)
            self._record(now, EventKind.BILLING_REFUSED, "", detail, [self.input.requester, self.assigned])
