"""The rules of the contracts cases, as deterministic state machines (no clock, no I/O).

Four kinds share one machinery (`CaseMachine`): a current step with its candidate group (a role), a due
date, a claimant and its reminder → overdue → escalation sequence; opinions; messages with the promoter;
internal comments; versioned documents; an optional legal clock. Each kind adds its transitions:

- `ArsContract`: draft → submitted → completeness (→ missing documents ↔) → Ordre visa when the policy asks
  for it → ARS review (approve / reject / request changes ↔ revision) → director-general signature → active
  → renewal reminders → amendments and renewals (each reviewed and signed) → expired or terminated.
- `OperatorDeclaration`: declared (→ missing documents ↔) → acknowledged → effective from its date;
  rejected, withdrawn, lapsed.
- `IntermediaryContractReview`: under the Ordre's review, every CNOM clause marked satisfied / not satisfied /
  not applicable with a note → visa (only when every applicable clause is satisfied) or refusal (listing the
  failed clauses); request for changes ↔ revision; withdrawn.
- `AgrementApplication`: a téléconsultation company's agrément under the ministers' legal clock (4 months,
  silence means acceptance, suspended by corrections and restarted once the file is complete) → granted,
  granted by silence or refused → valid for its period → expired; withdrawn.

Conventions (as `workflows/teleexpertise/case.py`): every method that depends on time takes `now`; each
change starts with its `check_*`, which refuses with an `ApplicationError` whose type is a stable reason
(`models.Reason`, mapped to a gRPC status by `models.REASON_STATUS`) and changes nothing, so an Update's
validator and its handler apply the same rule. What a change appends (events, messages, comments, opinion
texts, documents, notices) accumulates until the workflow takes it with `take_write` and persists it; the
machine's state is one dataclass per kind (`models.*Case`), free of history, so a workflow can continue as new
with it at any time (`compact` first drops what no rule needs any more).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from temporalio.exceptions import ApplicationError

from services.contracts import clock as legal_clock
from services.contracts.models import (
    HUB,
    AcknowledgeInput,
    ActionInput,
    Actor,
    AgrementCase,
    AgrementState,
    AppliedRequest,
    ArsContractCase,
    ArsContractState,
    AttachDocumentInput,
    CaseComment,
    CaseCore,
    CaseEvent,
    CaseKind,
    CaseMessage,
    CaseSummary,
    CaseWrite,
    ChangeInput,
    ChangeKind,
    ClauseInput,
    ClauseStatus,
    CommentInput,
    CorrectionReason,
    CorrectionRecord,
    DeclarationState,
    DocumentRef,
    EventKind,
    IntermediaryReviewCase,
    MessageInput,
    Notice,
    OperatorDeclarationCase,
    OpinionInput,
    OpinionRecord,
    OpinionRequestInput,
    OpinionState,
    OpinionText,
    PendingChange,
    Reason,
    ReassignInput,
    ReviewState,
    Role,
    SignInput,
    Step,
    StepState,
    UpdateOutcome,
    Verdict,
    search_attributes,
)

__all__ = [
    "AgrementApplication",
    "ArsContract",
    "CaseMachine",
    "IntermediaryContractReview",
    "OperatorDeclaration",
    "search_attributes",
]

# Roles that instruct cases (everyone but the promoter and the hub's own services).
STAFF_ROLES = frozenset(
    {Role.ARS_OFFICER, Role.ARS_SUPERVISOR, Role.ARS_SIGNATORY, Role.ORDRE_REVIEWER, Role.HUB_OPERATOR}
)
ARS_ROLES = frozenset({Role.ARS_OFFICER, Role.ARS_SUPERVISOR, Role.ARS_SIGNATORY})


def refusal(reason: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=reason, non_retryable=True)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class CaseMachine(ABC):
    """What every case kind shares. Subclasses set `kind`, `closed_states`, `promoter_editable`."""

    kind: str = ""
    closed_states: frozenset[str] = frozenset()
    promoter_editable: frozenset[str] = frozenset()

    def __init__(self, core: CaseCore) -> None:
        self.core = core
        self._events: list[CaseEvent] = []
        self._messages: list[CaseMessage] = []
        self._comments: list[CaseComment] = []
        self._opinion_texts: list[OpinionText] = []
        self._documents: list[DocumentRef] = []
        self._notices: list[Notice] = []

    # --- what the workflow reads ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self.core.state

    @property
    def closed(self) -> bool:
        return self.core.state in self.closed_states

    def outcome(self) -> UpdateOutcome:
        return UpdateOutcome(version=self.core.version, state=self.core.state)

    def take_write(self, now: datetime, applied: AppliedRequest | None) -> CaseWrite:
        """The change to persist: the new state (next version), its summary and what was appended."""
        self.core.version += 1
        write = CaseWrite(
            summary=self.summary(now),
            events=self._events,
            messages=self._messages,
            comments=self._comments,
            opinion_texts=self._opinion_texts,
            documents=self._documents,
            notices=self._notices,
            applied=applied,
            time=now,
        )
        self._attach_state(write)
        self._events, self._messages, self._comments = [], [], []
        self._opinion_texts, self._documents, self._notices = [], [], []
        return write

    @abstractmethod
    def _attach_state(self, write: CaseWrite) -> None:
        """Put the kind's state dataclass in its field of the write."""

    def expires_at(self) -> datetime | None:
        """End of validity of what the case granted (contract, agrément), if any."""
        return None

    def summary(self, now: datetime) -> CaseSummary:
        core, step = self.core, self.core.step
        deadline, suspended = None, False
        if core.clock is not None and self._clock_running():
            reading = legal_clock.read_case_clock(core.clock, now)
            deadline = legal_clock.start_of_day(reading.decision_on, core.clock.time_zone)
            suspended = reading.suspended
        return CaseSummary(
            case_id=core.case_id,
            kind=self.kind,
            version=core.version,
            state=core.state,
            region=core.region,
            departement=core.departement,
            ght=core.ght,
            promoter=core.promoter,
            step=step.name if step else "",
            step_role=step.role if step else "",
            claimant=step.claimant if step else "",
            due_at=step.due_at if step else None,
            overdue=bool(step and step.overdue),
            escalated=bool(step and step.escalated),
            legal_deadline_at=deadline,
            legal_clock_suspended=suspended,
            expires_at=self.expires_at(),
            closed=self.closed,
            ordre_territory=self.ordre_territory(),
        )

    def ordre_territory(self) -> str:
        return ""

    def compact(self) -> None:
        """Drop what no rule needs any more, before a continue-as-new (the projection keeps it all)."""
        self.core.opinions = [o for o in self.core.opinions if o.state == OpinionState.REQUESTED]
        self.core.generation += 1

    # --- events and notices --------------------------------------------------------------------------------

    def _record(
        self,
        now: datetime,
        kind: str,
        actor: Actor,
        *,
        detail: str = "",
        items: Sequence[str] = (),
        people: Iterable[str] = (),
        roles: Iterable[str] = (),
    ) -> None:
        """Append an event; notify each person once (never its actor) and each role of the case's scope."""
        self.core.event_seq += 1
        seq = self.core.event_seq
        step = self.core.step.name if self.core.step else ""
        self._events.append(
            CaseEvent(
                sequence=seq, kind=kind, actor=actor.id, time=now, step=step, detail=detail, items=list(items)
            )
        )
        seen: set[str] = set()
        for person in people:
            if person and person != actor.id and person != actor.organisation and person not in seen:
                seen.add(person)
                self._notices.append(Notice(recipient=person, event_sequence=seq, kind=kind))
        for role in dict.fromkeys(roles):
            if role:
                self._notices.append(Notice(role=role, event_sequence=seq, kind=kind))

    def _post_message(
        self, now: datetime, author: Actor, text: str, items: Sequence[str] = (), request_id: str = ""
    ) -> None:
        self.core.message_seq += 1
        self._messages.append(
            CaseMessage(
                sequence=self.core.message_seq,
                author=author.id,
                text=text,
                time=now,
                items=list(items),
                request_id=request_id,
                from_promoter=self.is_promoter(author),
            )
        )

    # --- who is who ----------------------------------------------------------------------------------------

    def is_promoter(self, actor: Actor) -> bool:
        return self.core.promoter in (actor.id, actor.organisation)

    @staticmethod
    def is_staff(actor: Actor) -> bool:
        return bool(STAFF_ROLES.intersection(actor.roles))

    def _check_open(self) -> None:
        if self.closed:
            raise refusal(Reason.CASE_CLOSED, f"the case is closed ({self.core.state})")

    def _check_version(self, expected: int) -> None:
        if expected and expected != self.core.version:
            raise refusal(
                Reason.CASE_CHANGED,
                f"the case changed since version {expected} (now {self.core.version}): reload, decide again",
            )

    def _check_promoter(self, actor: Actor) -> None:
        if not self.is_promoter(actor):
            raise refusal(Reason.NOT_PROMOTER, "only the promoter of the case may do this")

    def _check_role(self, actor: Actor, role: str) -> None:
        if role not in actor.roles:
            raise refusal(
                Reason.NOT_A_CANDIDATE, f"this belongs to the {role} of the case, not to the caller"
            )

    def _check_step(self, actor: Actor, steps: Iterable[str], *, expected_version: int = 0) -> StepState:
        """An action on the current step: the case is open, the caller is of the step's candidate group, the
        step is one of `steps`, and nobody else holds it."""
        self._check_open()
        wanted = list(steps)
        role = Step.ROLE[wanted[0]]
        if role == Role.PROMOTER:
            self._check_promoter(actor)
        else:
            self._check_role(actor, role)
        step = self.core.step
        if step is None or step.name not in wanted:
            self._refuse_wrong_step(wanted)
        assert step is not None
        if step.claimant and step.claimant != actor.id:
            raise refusal(Reason.CASE_CLAIMED_BY_OTHER, "another officer holds this step of the case")
        self._check_version(expected_version)
        return step

    def _refuse_wrong_step(self, wanted: Sequence[str]) -> None:
        current = self.core.step.name if self.core.step else "none"
        raise refusal(Reason.STEP_NOT_OPEN, f"the case is at step {current}, not {' or '.join(wanted)}")

    @staticmethod
    def _check_motivation(motivation: str, items: Sequence[str] | None = None) -> None:
        if not motivation.strip():
            raise refusal(
                Reason.MOTIVATION_REQUIRED, "a refusal or a request for changes states its motivation"
            )
        if items is not None and not [i for i in items if i.strip()]:
            raise refusal(Reason.CHANGE_ITEMS_REQUIRED, "a request for changes lists the items to change")

    # --- steps ---------------------------------------------------------------------------------------------

    def _step_due(self, name: str, now: datetime) -> datetime:
        return now + _seconds(self.core.timeline.step_due_seconds[name])

    def _open_step(self, now: datetime, name: str) -> None:
        self.core.step = StepState(
            name=name, role=Step.ROLE[name], opened_at=now, due_at=self._step_due(name, now)
        )
        people = [self.core.promoter] if name in Step.PROMOTER_STEPS else []
        roles = [] if name in Step.PROMOTER_STEPS else [Step.ROLE[name]]
        self._record(now, EventKind.STEP_OPENED, HUB, detail=name, people=people, roles=roles)

    def _close_step(self) -> None:
        self.core.step = None

    def _decided(self, now: datetime, actor: Actor) -> None:
        self.core.decided_by = actor.id
        self.core.decided_at = now

    def _close(self, now: datetime, state: str) -> None:
        self.core.state = state
        self.core.closed_at = now
        self._close_step()

    def _step_people(self) -> list[str]:
        step = self.core.step
        if step is None:
            return []
        if step.name in Step.PROMOTER_STEPS:
            return [self.core.promoter]
        return [step.claimant] if step.claimant else []

    def _step_roles(self) -> list[str]:
        step = self.core.step
        if step is None or step.name in Step.PROMOTER_STEPS or step.claimant:
            return []
        return [step.role]

    # --- claims ------------------------------------------------------------------------------------------

    def check_claim(self, actor: Actor) -> None:
        self._check_open()
        step = self.core.step
        if step is None or step.name in Step.PROMOTER_STEPS:
            raise refusal(Reason.NO_OPEN_STEP, "no step of the instructing staff is open on this case")
        self._check_role(actor, step.role)
        if step.claimant and step.claimant != actor.id:
            raise refusal(Reason.CASE_CLAIMED_BY_OTHER, "another officer holds this step of the case")

    def claim(self, now: datetime, request: ActionInput) -> None:
        self.check_claim(request.actor)
        step = self.core.step
        assert step is not None
        if step.claimant == request.actor.id:
            return  # already theirs: nothing changes, nothing is recorded
        step.claimant, step.claimed_at = request.actor.id, now
        self._record(now, EventKind.CLAIMED, request.actor, detail=step.name)

    def check_release(self, actor: Actor) -> None:
        self._check_open()
        step = self.core.step
        if step is None or not step.claimant:
            raise refusal(Reason.NOT_CLAIMED, "nobody holds the current step")
        if step.claimant != actor.id and not self._may_supervise(actor, step):
            raise refusal(Reason.CASE_CLAIMED_BY_OTHER, "another officer holds this step of the case")

    def release(self, now: datetime, request: ActionInput) -> None:
        self.check_release(request.actor)
        step = self.core.step
        assert step is not None
        previous = step.claimant
        step.claimant, step.claimed_at = "", None
        self._record(
            now, EventKind.RELEASED, request.actor, detail=step.name, people=[previous], roles=[step.role]
        )

    @staticmethod
    def _may_supervise(actor: Actor, step: StepState) -> bool:
        supervisor = Role.ARS_SUPERVISOR if step.role in ARS_ROLES else step.role
        return supervisor in actor.roles

    def check_reassign(self, request: ReassignInput) -> None:
        self._check_open()
        step = self.core.step
        if step is None or step.name in Step.PROMOTER_STEPS:
            raise refusal(Reason.NO_OPEN_STEP, "no step of the instructing staff is open on this case")
        if not self._may_supervise(request.actor, step):
            raise refusal(Reason.SUPERVISOR_REQUIRED, "reassigning a step is a supervisor's act")
        if step.role not in request.assignee_roles:
            raise refusal(Reason.REASSIGNEE_NOT_CANDIDATE, f"the assignee does not hold the {step.role} role")
        self._check_version(request.expected_version)

    def reassign(self, now: datetime, request: ReassignInput) -> None:
        self.check_reassign(request)
        step = self.core.step
        assert step is not None
        previous = step.claimant
        step.claimant, step.claimed_at = request.assignee, now
        self._record(
            now,
            EventKind.REASSIGNED,
            request.actor,
            detail=request.assignee,
            people=[previous, request.assignee],
        )

    def _take(self, now: datetime, actor: Actor) -> None:
        """Acting on an unclaimed step claims it (as DS's "passer en instruction" follows the dossier)."""
        step = self.core.step
        if step is not None and not step.claimant and step.name not in Step.PROMOTER_STEPS:
            step.claimant, step.claimed_at = actor.id, now

    # --- opinions ------------------------------------------------------------------------------------------

    def _opinion(self, opinion_id: str) -> OpinionRecord:
        for opinion in self.core.opinions:
            if opinion.opinion_id == opinion_id:
                return opinion
        raise refusal(Reason.OPINION_NOT_FOUND, "no such opinion on this case")

    def check_request_opinion(self, now: datetime, request: OpinionRequestInput) -> None:
        self._check_open()
        if not self.is_staff(request.actor):
            raise refusal(Reason.NOT_A_CANDIDATE, "only the instructing staff asks for opinions")
        if any(o.opinion_id == request.opinion_id for o in self.core.opinions):
            raise refusal(Reason.OPINION_ALREADY_REQUESTED, "this opinion was already requested")
        if request.due_at <= now:
            raise refusal(Reason.DUE_TIME_INVALID, "an opinion is due in the future")

    def request_opinion(self, now: datetime, request: OpinionRequestInput) -> None:
        self.check_request_opinion(now, request)
        self.core.opinions.append(
            OpinionRecord(
                opinion_id=request.opinion_id,
                requested_by=request.actor.id,
                expert=request.expert,
                requested_at=now,
                due_at=request.due_at,
            )
        )
        self._opinion_texts.append(OpinionText(opinion_id=request.opinion_id, question=request.question))
        self._record(
            now,
            EventKind.OPINION_REQUESTED,
            request.actor,
            detail=request.opinion_id,
            people=[request.expert],
        )

    def check_give_opinion(self, request: OpinionInput) -> None:
        opinion = self._opinion(request.opinion_id)
        if opinion.expert != request.actor.id:
            raise refusal(Reason.NOT_OPINION_EXPERT, "only the person the opinion was asked of gives it")
        self._check_opinion_open(opinion)
        if request.verdict not in Verdict.ALL or not request.text.strip():
            raise refusal(Reason.MOTIVATION_REQUIRED, "an opinion gives a verdict and its reasons")

    @staticmethod
    def _check_opinion_open(opinion: OpinionRecord) -> None:
        if opinion.state == OpinionState.GIVEN:
            raise refusal(Reason.OPINION_ALREADY_GIVEN, "an opinion once given cannot change")
        if opinion.state == OpinionState.REVOKED:
            raise refusal(Reason.OPINION_REVOKED, "this opinion request was revoked")

    def give_opinion(self, now: datetime, request: OpinionInput) -> None:
        self.check_give_opinion(request)
        opinion = self._opinion(request.opinion_id)
        opinion.state, opinion.verdict, opinion.answered_at = OpinionState.GIVEN, request.verdict, now
        self._opinion_texts.append(OpinionText(opinion_id=opinion.opinion_id, answer=request.text))
        self._record(
            now,
            EventKind.OPINION_GIVEN,
            request.actor,
            detail=f"{opinion.opinion_id} {opinion.verdict}",
            people=[opinion.requested_by],
        )

    def check_revoke_opinion(self, request: OpinionInput) -> None:
        opinion = self._opinion(request.opinion_id)
        if not self.is_staff(request.actor) or opinion.expert == request.actor.id:
            raise refusal(Reason.NOT_A_CANDIDATE, "only the instructing staff revokes an opinion request")
        self._check_opinion_open(opinion)
        self._check_motivation(request.text)

    def revoke_opinion(self, now: datetime, request: OpinionInput) -> None:
        self.check_revoke_opinion(request)
        opinion = self._opinion(request.opinion_id)
        opinion.state, opinion.answered_at = OpinionState.REVOKED, now
        self._opinion_texts.append(OpinionText(opinion_id=opinion.opinion_id, revocation_reason=request.text))
        self._record(
            now, EventKind.OPINION_REVOKED, request.actor, detail=opinion.opinion_id, people=[opinion.expert]
        )

    # --- messages, comments, documents ---------------------------------------------------------------------

    def check_message(self, actor: Actor) -> None:
        self._check_open()
        if not (self.is_promoter(actor) or self.is_staff(actor)):
            raise refusal(
                Reason.NOT_A_CANDIDATE, "messages are between the promoter and the instructing staff"
            )

    def post_message(self, now: datetime, request: MessageInput) -> None:
        self.check_message(request.actor)
        self._post_message(now, request.actor, request.text, request.items, request.request_id)
        if self.is_promoter(request.actor):
            self._record(
                now,
                EventKind.MESSAGE_POSTED,
                request.actor,
                people=self._step_people(),
                roles=self._step_roles(),
            )
        else:
            self._record(now, EventKind.MESSAGE_POSTED, request.actor, people=[self.core.promoter])

    def check_comment(self, actor: Actor) -> None:
        if not self.is_staff(actor):
            raise refusal(Reason.NOT_A_CANDIDATE, "comments are internal to the instructing staff")

    def add_comment(self, now: datetime, request: CommentInput) -> None:
        self.check_comment(request.actor)
        self.core.comment_seq += 1
        self._comments.append(
            CaseComment(
                sequence=self.core.comment_seq,
                author=request.actor.id,
                text=request.text,
                time=now,
                request_id=request.request_id,
            )
        )
        self._record(now, EventKind.COMMENT_ADDED, request.actor)

    def check_attach_document(self, actor: Actor) -> None:
        self._check_open()
        if self.is_promoter(actor):
            if self.core.state not in self.promoter_editable:
                raise refusal(
                    Reason.STEP_NOT_OPEN, "the promoter adds documents only while the file is open to them"
                )
        elif not self.is_staff(actor):
            raise refusal(Reason.NOT_A_CANDIDATE, "only the promoter and the instructing staff add documents")

    def attach_document(self, now: datetime, request: AttachDocumentInput) -> None:
        """Add a document, or a new version of one: versions are numbered here, one change at a time."""
        self.check_attach_document(request.actor)
        self.core.document_seq += 1
        document = request.document
        document.version = self.core.document_versions.get(document.document, 0) + 1
        self.core.document_versions[document.document] = document.version
        self._documents.append(document)
        detail = f"{document.document} v{document.version}"
        people = [] if self.is_promoter(request.actor) else [self.core.promoter]
        self._record(now, EventKind.DOCUMENT_ADDED, request.actor, detail=detail, people=people)

    # --- corrections and the legal clock -------------------------------------------------------------------

    def _clock_running(self) -> bool:
        """Whether the case's legal clock still matters (before the decision)."""
        return False

    def _on_clock_expiry(self, now: datetime) -> None:
        """What silence does when the clock runs out (only called while `_clock_running`): by default the
        clock is shown to people and nothing else happens; the agrément is decided by it."""
        return None

    def _request_correction(self, now: datetime, request: ActionInput, state: str, step: str) -> None:
        self._check_motivation(request.motivation, request.items)
        if self.core.clock is not None:
            reason = (
                request.correction_reason
                if request.correction_reason in CorrectionReason.ALL
                else "INCOMPLETE"
            )
            self.core.clock.corrections.append(CorrectionRecord(reason=reason, requested_at=now))
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation, request.items)
        kind = EventKind.DOCUMENTS_REQUESTED if step == Step.DOCUMENTS else EventKind.CHANGES_REQUESTED
        self._record(
            now,
            kind,
            request.actor,
            detail=request.motivation,
            items=request.items,
            people=[self.core.promoter],
        )
        self.core.state = state
        self._open_step(now, step)

    def _resolve_correction(self, now: datetime) -> None:
        if self.core.clock is not None:
            for correction in self.core.clock.corrections:
                if correction.resolved_at is None:
                    correction.resolved_at = now

    # --- timers ------------------------------------------------------------------------------------------

    def _step_times(self, step: StepState) -> tuple[datetime | None, datetime, datetime | None]:
        """(reminder, overdue, escalation) instants of a step; None when there is none."""
        timeline = self.core.timeline
        remind: datetime | None = step.due_at - _seconds(timeline.reminder_before_seconds)
        if remind is not None and remind <= step.opened_at:
            remind = None
        escalate = (
            step.due_at + _seconds(timeline.escalate_after_seconds) if Step.ESCALATES_TO[step.name] else None
        )
        return remind, step.due_at, escalate

    def _wake_times(self, now: datetime) -> list[datetime]:
        """Kind-specific instants (expiry, effective date, renewal reminders...)."""
        return []

    def next_wake(self, now: datetime) -> datetime | None:
        """The next instant a timer may change the case, or None (only an update can)."""
        if self.closed:
            return None
        times = list(self._wake_times(now))
        step = self.core.step
        if step is not None:
            remind, overdue, escalate = self._step_times(step)
            if remind is not None and not step.reminded:
                times.append(remind)
            if not step.overdue:
                times.append(overdue)
            if escalate is not None and not step.escalated:
                times.append(escalate)
        for opinion in self.core.opinions:
            if opinion.state == OpinionState.REQUESTED and not opinion.reminded:
                times.append(self._opinion_reminder(opinion))
        if self.core.clock is not None and self._clock_running():
            expiry = legal_clock.expiry_instant(self.core.clock, now)
            if expiry is not None:
                times.append(expiry)
        return min(times) if times else None

    def _opinion_reminder(self, opinion: OpinionRecord) -> datetime:
        before = _seconds(self.core.timeline.opinion_reminder_before_seconds)
        return max(opinion.requested_at, opinion.due_at - before)

    def on_time(self, now: datetime) -> bool:
        """Apply what is due at `now`; True when something changed (the workflow then persists)."""
        if self.closed:
            return False
        changed = False
        # The legal clock first: silence decides, and the step it closes is then neither late nor reminded.
        if self.core.clock is not None and self._clock_running():
            expiry = legal_clock.expiry_instant(self.core.clock, now)
            if expiry is not None and now >= expiry:
                self._on_clock_expiry(now)
                changed = True
        step = self.core.step
        if step is not None:
            remind, overdue, escalate = self._step_times(step)
            if remind is not None and not step.reminded and now >= remind:
                step.reminded = True
                self._record(
                    now,
                    EventKind.REMINDED,
                    HUB,
                    detail=step.name,
                    people=self._step_people(),
                    roles=self._step_roles(),
                )
                changed = True
            if not step.overdue and now >= overdue:
                step.overdue = step.reminded = True
                self._record(
                    now,
                    EventKind.OVERDUE,
                    HUB,
                    detail=step.name,
                    people=self._step_people(),
                    roles=self._step_roles(),
                )
                changed = True
            if escalate is not None and not step.escalated and now >= escalate:
                step.escalated = True
                self._record(
                    now, EventKind.ESCALATED, HUB, detail=step.name, roles=[Step.ESCALATES_TO[step.name]]
                )
                changed = True
        for opinion in self.core.opinions:
            if (
                opinion.state == OpinionState.REQUESTED
                and not opinion.reminded
                and now >= self._opinion_reminder(opinion)
            ):
                opinion.reminded = True
                self._record(
                    now, EventKind.OPINION_REMINDED, HUB, detail=opinion.opinion_id, people=[opinion.expert]
                )
                changed = True
        return self._on_time(now) or changed

    def _on_time(self, now: datetime) -> bool:
        """Kind-specific timers; True when something changed."""
        return False


# ============================================================================================================
# ArsContract


class ArsContract(CaseMachine):
    kind = CaseKind.ARS_CONTRACT
    closed_states = ArsContractState.CLOSED
    promoter_editable = ArsContractState.PROMOTER_EDITABLE

    def __init__(self, case: ArsContractCase) -> None:
        super().__init__(case.core)
        self.case = case

    def _attach_state(self, write: CaseWrite) -> None:
        write.ars_contract = self.case

    def expires_at(self) -> datetime | None:
        return self.case.valid_until

    def ordre_territory(self) -> str:
        return self.core.departement if self.case.visa_required else ""

    def _clock_running(self) -> bool:
        return (
            self.core.state in ArsContractState.BEFORE_DECISION and self.core.state != ArsContractState.DRAFT
        )

    def created(self, now: datetime) -> None:
        """The first event of a new case (a draft)."""
        self._record(now, EventKind.CREATED, Actor(id=self.core.created_by))

    # --- submission and completeness ---

    def check_submit(self, actor: Actor) -> None:
        self._check_open()
        self._check_promoter(actor)
        if self.core.state != ArsContractState.DRAFT:
            raise refusal(Reason.STEP_NOT_OPEN, "only a draft is submitted")

    def submit(self, now: datetime, request: ActionInput) -> None:
        self.check_submit(request.actor)
        if self.core.clock is not None:
            self.core.clock.filed_at = now
        self.core.state = ArsContractState.SUBMITTED
        self._record(now, EventKind.SUBMITTED, request.actor)
        self._open_step(now, Step.COMPLETENESS_CHECK)

    def check_request_documents(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.COMPLETENESS_CHECK], expected_version=expected_version)

    def request_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_request_documents(request.actor, request.expected_version)
        self._request_correction(now, request, ArsContractState.AWAITING_DOCUMENTS, Step.DOCUMENTS)

    def check_complete_documents(self, actor: Actor) -> None:
        self._check_step(actor, [Step.DOCUMENTS])

    def complete_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_complete_documents(request.actor)
        self._resolve_correction(now)
        self.core.state = ArsContractState.SUBMITTED
        self._record(now, EventKind.DOCUMENTS_COMPLETED, request.actor)
        self._open_step(now, Step.COMPLETENESS_CHECK)

    def check_mark_complete(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.COMPLETENESS_CHECK], expected_version=expected_version)

    def mark_complete(self, now: datetime, request: ActionInput) -> None:
        self.check_mark_complete(request.actor, request.expected_version)
        self._record(now, EventKind.MARKED_COMPLETE, request.actor)
        if self.case.visa_required:
            self.core.state = ArsContractState.AWAITING_VISA
            self._open_step(now, Step.ORDINAL_VISA)
        else:
            self.core.state = ArsContractState.UNDER_REVIEW
            self._open_step(now, Step.ARS_REVIEW)

    # --- the Ordre's visa ---

    def check_visa(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ORDINAL_VISA], expected_version=expected_version)

    def give_visa(self, now: datetime, request: ActionInput) -> None:
        self.check_visa(request.actor, request.expected_version)
        self.case.visa_given_by = request.actor.id
        self._record(
            now, EventKind.VISA_GIVEN, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self.core.state = ArsContractState.UNDER_REVIEW
        self._open_step(now, Step.ARS_REVIEW)

    def refuse_visa(self, now: datetime, request: ActionInput) -> None:
        self.check_visa(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        self._decided(now, request.actor)
        self._record(
            now,
            EventKind.VISA_REFUSED,
            request.actor,
            detail=request.motivation,
            people=[self.core.promoter],
            roles=[Role.ARS_OFFICER],
        )
        self._close(now, ArsContractState.VISA_REFUSED)

    # --- the ARS review ---

    def _refuse_wrong_step(self, wanted: Sequence[str]) -> None:
        if Step.ARS_REVIEW in wanted and self.core.state == ArsContractState.AWAITING_VISA:
            raise refusal(
                Reason.VISA_REQUIRED, "the policy requires the Ordre's visa before the ARS review concludes"
            )
        super()._refuse_wrong_step(wanted)

    def check_review(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ARS_REVIEW], expected_version=expected_version)

    def approve(self, now: datetime, request: ActionInput) -> None:
        self.check_review(request.actor, request.expected_version)
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._record(
            now, EventKind.APPROVED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self.core.state = ArsContractState.AWAITING_SIGNATURE
        self._open_step(now, Step.SIGNATURE)

    def check_reject(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ARS_REVIEW, Step.COMPLETENESS_CHECK], expected_version=expected_version)

    def reject(self, now: datetime, request: ActionInput) -> None:
        self.check_reject(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation)
        self._record(
            now, EventKind.REJECTED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, ArsContractState.REJECTED)

    def request_changes(self, now: datetime, request: ActionInput) -> None:
        self.check_review(request.actor, request.expected_version)
        request.correction_reason = CorrectionReason.INCORRECT
        self._request_correction(now, request, ArsContractState.CHANGES_REQUESTED, Step.REVISION)

    def check_resubmit(self, actor: Actor) -> None:
        self._check_step(actor, [Step.REVISION])

    def resubmit(self, now: datetime, request: ActionInput) -> None:
        self.check_resubmit(request.actor)
        self._resolve_correction(now)
        self.core.state = ArsContractState.UNDER_REVIEW
        self._record(now, EventKind.RESUBMITTED, request.actor)
        self._open_step(now, Step.ARS_REVIEW)

    # --- the director general's signature ---

    def check_sign(self, now: datetime, request: SignInput) -> None:
        self._check_step(request.actor, [Step.SIGNATURE], expected_version=request.expected_version)
        self._check_signed(request)
        if (
            request.valid_from is None
            or request.valid_until is None
            or request.valid_until <= request.valid_from
        ):
            raise refusal(Reason.PERIOD_INVALID, "a contract's period ends after it starts")
        if request.valid_until <= now:
            raise refusal(Reason.PERIOD_INVALID, "a contract's period ends in the future")

    @staticmethod
    def _check_signed(request: SignInput) -> None:
        if request.decision_document is None:
            raise refusal(Reason.DECISION_DOCUMENT_REQUIRED, "signing needs the signed decision document")

    def sign(self, now: datetime, request: SignInput) -> None:
        self.check_sign(now, request)
        assert request.decision_document is not None
        assert request.valid_until is not None
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self.case.decision_document = request.decision_document.document
        self._documents.append(request.decision_document)
        self.case.signed_by, self.case.signed_at = request.actor.id, now
        self.case.valid_from, self.case.valid_until = request.valid_from, request.valid_until
        self._reset_renewal_reminders(now)
        self._record(now, EventKind.SIGNED, request.actor, detail=request.decision_document.document)
        self._close_step()
        self.core.state = ArsContractState.ACTIVE
        self._record(now, EventKind.ACTIVATED, HUB, people=[self.core.promoter], roles=[Role.ARS_OFFICER])

    # --- the active contract: amendments, renewals, termination, expiry ---

    def check_propose_change(self, now: datetime, request: ChangeInput) -> None:
        self._check_open()
        self._check_promoter(request.actor)
        if self.core.state != ArsContractState.ACTIVE:
            raise refusal(Reason.STEP_NOT_OPEN, "amendments and renewals are proposed on an active contract")
        if self.case.pending_change is not None:
            raise refusal(Reason.CHANGE_PENDING, "an amendment or a renewal is already under review")
        if request.kind == ChangeKind.RENEWAL:
            current = self.case.valid_until
            if request.new_valid_until is None or (
                current is not None and request.new_valid_until <= current
            ):
                raise refusal(Reason.PERIOD_INVALID, "a renewal ends after the current end of the contract")
        elif request.kind != ChangeKind.AMENDMENT:
            raise refusal(Reason.STEP_NOT_OPEN, f"unknown change {request.kind!r}")

    def propose_change(self, now: datetime, request: ChangeInput) -> None:
        self.check_propose_change(now, request)
        self.case.pending_change = PendingChange(
            change_id=request.change_id,
            kind=request.kind,
            proposed_by=request.actor.id,
            proposed_at=now,
            new_valid_until=request.new_valid_until if request.kind == ChangeKind.RENEWAL else None,
        )
        self._post_message(now, request.actor, request.summary)
        self._record(
            now, EventKind.CHANGE_PROPOSED, request.actor, detail=f"{request.kind} {request.change_id}"
        )
        self._open_step(now, Step.CHANGE_REVIEW)

    def check_review_change(self, actor: Actor, expected_version: int = 0) -> None:
        if self.core.state == ArsContractState.ACTIVE and self.case.pending_change is None:
            raise refusal(Reason.NO_PENDING_CHANGE, "no amendment or renewal is under review")
        self._check_step(actor, [Step.CHANGE_REVIEW], expected_version=expected_version)

    def approve_change(self, now: datetime, request: ActionInput) -> None:
        self.check_review_change(request.actor, request.expected_version)
        change = self.case.pending_change
        assert change is not None
        change.approved = True
        self._take(now, request.actor)
        self._record(
            now,
            EventKind.CHANGE_APPROVED,
            request.actor,
            detail=change.change_id,
            people=[self.core.promoter],
        )
        self._open_step(now, Step.CHANGE_SIGNATURE)

    def reject_change(self, now: datetime, request: ActionInput) -> None:
        self.check_review_change(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        change = self.case.pending_change
        assert change is not None
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation)
        self._record(
            now,
            EventKind.CHANGE_REJECTED,
            request.actor,
            detail=request.motivation,
            people=[self.core.promoter],
        )
        self.case.pending_change = None
        self._close_step()

    def check_sign_change(self, request: SignInput) -> None:
        if self.core.state == ArsContractState.ACTIVE and self.case.pending_change is None:
            raise refusal(Reason.NO_PENDING_CHANGE, "no amendment or renewal waits for its signature")
        self._check_step(request.actor, [Step.CHANGE_SIGNATURE], expected_version=request.expected_version)
        self._check_signed(request)

    def sign_change(self, now: datetime, request: SignInput) -> None:
        self.check_sign_change(request)
        change = self.case.pending_change
        assert change is not None
        assert request.decision_document is not None
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._documents.append(request.decision_document)
        self._record(now, EventKind.SIGNED, request.actor, detail=request.decision_document.document)
        if change.kind == ChangeKind.RENEWAL:
            self.case.renewals += 1
            self.case.valid_until = change.new_valid_until
            self._reset_renewal_reminders(now)
            kind = EventKind.RENEWED
        else:
            self.case.amendments += 1
            kind = EventKind.AMENDED
        self._record(
            now, kind, HUB, detail=change.change_id, people=[self.core.promoter], roles=[Role.ARS_OFFICER]
        )
        self.case.pending_change = None
        self._close_step()

    def check_terminate(self, actor: Actor, motivation: str) -> None:
        self._check_open()
        if not (self.is_promoter(actor) or ARS_ROLES.intersection(actor.roles) - {Role.ARS_SUPERVISOR}):
            raise refusal(Reason.NOT_A_CANDIDATE, "the promoter or the ARS terminates a contract")
        if self.core.state != ArsContractState.ACTIVE:
            raise refusal(Reason.STEP_NOT_OPEN, "only an active contract is terminated")
        self._check_motivation(motivation)

    def terminate(self, now: datetime, request: ActionInput) -> None:
        self.check_terminate(request.actor, request.motivation)
        self._decided(now, request.actor)
        self._record(
            now,
            EventKind.TERMINATED,
            request.actor,
            detail=request.motivation,
            people=[self.core.promoter],
            roles=[Role.ARS_OFFICER],
        )
        self.case.pending_change = None
        self._close(now, ArsContractState.TERMINATED)

    def check_withdraw(self, actor: Actor) -> None:
        self._check_open()
        self._check_promoter(actor)
        if self.core.state not in ArsContractState.BEFORE_DECISION:
            raise refusal(
                Reason.STEP_NOT_OPEN, "a contract is withdrawn before its signature; terminate it after"
            )

    def withdraw(self, now: datetime, request: ActionInput) -> None:
        self.check_withdraw(request.actor)
        self._record(
            now, EventKind.WITHDRAWN, request.actor, detail=request.motivation, roles=self._step_roles()
        )
        self._close(now, ArsContractState.WITHDRAWN)

    def _renewal_reminder_times(self) -> list[tuple[float, datetime]]:
        until = self.case.valid_until
        if until is None or self.core.state != ArsContractState.ACTIVE:
            return []
        return [
            (offset, until - _seconds(offset))
            for offset in self.core.timeline.renewal_reminder_offsets_seconds
            if offset not in self.case.renewal_reminders_sent
        ]

    def _reset_renewal_reminders(self, now: datetime) -> None:
        """A new end date: reminders start over, except those whose time has already passed."""
        until = self.case.valid_until
        assert until is not None
        self.case.renewal_reminders_sent = [
            offset
            for offset in self.core.timeline.renewal_reminder_offsets_seconds
            if until - _seconds(offset) <= now
        ]

    def _wake_times(self, now: datetime) -> list[datetime]:
        times = [at for _, at in self._renewal_reminder_times()]
        if self.core.state == ArsContractState.ACTIVE and self.case.valid_until is not None:
            times.append(self.case.valid_until)
        return times

    def _on_time(self, now: datetime) -> bool:
        changed = False
        for offset, at in self._renewal_reminder_times():
            if now >= at:
                self.case.renewal_reminders_sent.append(offset)
                days = round(offset / 86400)
                self._record(
                    now,
                    EventKind.RENEWAL_REMINDER,
                    HUB,
                    detail=f"{days} days before the end",
                    people=[self.core.promoter],
                    roles=[Role.ARS_OFFICER],
                )
                changed = True
        until = self.case.valid_until
        if self.core.state == ArsContractState.ACTIVE and until is not None and now >= until:
            self.case.pending_change = None
            self._record(now, EventKind.EXPIRED, HUB, people=[self.core.promoter], roles=[Role.ARS_OFFICER])
            self._close(now, ArsContractState.EXPIRED)
            changed = True
        return changed


# ============================================================================================================
# OperatorDeclaration


class OperatorDeclaration(CaseMachine):
    kind = CaseKind.OPERATOR_DECLARATION
    closed_states = DeclarationState.CLOSED
    promoter_editable = DeclarationState.PROMOTER_EDITABLE

    def __init__(self, case: OperatorDeclarationCase) -> None:
        super().__init__(case.core)
        self.case = case

    def _attach_state(self, write: CaseWrite) -> None:
        write.operator_declaration = self.case

    def created(self, now: datetime) -> None:
        """A declaration is filed when created: the ARS acknowledges it."""
        self._record(now, EventKind.CREATED, Actor(id=self.core.created_by))
        if self.core.clock is not None:
            self.core.clock.filed_at = now
        self._open_step(now, Step.ACKNOWLEDGEMENT)

    def _clock_running(self) -> bool:
        return self.core.state in DeclarationState.PROMOTER_EDITABLE

    def check_acknowledgement_step(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ACKNOWLEDGEMENT], expected_version=expected_version)

    def request_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_acknowledgement_step(request.actor, request.expected_version)
        self._request_correction(now, request, DeclarationState.AWAITING_DOCUMENTS, Step.DOCUMENTS)

    def check_complete_documents(self, actor: Actor) -> None:
        self._check_step(actor, [Step.DOCUMENTS])

    def complete_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_complete_documents(request.actor)
        self._resolve_correction(now)
        self.core.state = DeclarationState.DECLARED
        self._record(now, EventKind.DOCUMENTS_COMPLETED, request.actor)
        self._open_step(now, Step.ACKNOWLEDGEMENT)

    def check_acknowledge(self, request: AcknowledgeInput) -> None:
        self.check_acknowledgement_step(request.actor, request.expected_version)
        # Civil dates of the case's zone: a declaration acknowledged effective on the day it was filed is
        # effective from that day's start.
        zone = self.core.time_zone
        filed_on = legal_clock.local_date(self.core.created_at, zone)
        if legal_clock.local_date(request.effective_from, zone) < filed_on:
            raise refusal(Reason.PERIOD_INVALID, "a declaration takes effect on or after it was filed")

    def acknowledge(self, now: datetime, request: AcknowledgeInput) -> None:
        self.check_acknowledge(request)
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self.case.acknowledged_by = request.actor.id
        self.case.effective_from = request.effective_from
        self._record(
            now,
            EventKind.ACKNOWLEDGED,
            request.actor,
            detail=request.effective_from.isoformat(),
            people=[self.core.promoter],
        )
        self._close_step()
        self.core.state = DeclarationState.ACKNOWLEDGED
        self._on_time(now)

    def reject(self, now: datetime, request: ActionInput) -> None:
        self.check_acknowledgement_step(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation)
        self._record(
            now, EventKind.REJECTED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, DeclarationState.REJECTED)

    def check_withdraw(self, actor: Actor) -> None:
        self._check_open()
        self._check_promoter(actor)

    def withdraw(self, now: datetime, request: ActionInput) -> None:
        self.check_withdraw(request.actor)
        self._record(
            now, EventKind.WITHDRAWN, request.actor, detail=request.motivation, roles=[Role.ARS_OFFICER]
        )
        self._close(now, DeclarationState.WITHDRAWN)

    def check_lapse(self, actor: Actor, motivation: str) -> None:
        self._check_open()
        if not {Role.ARS_OFFICER, Role.HUB_SERVICE}.intersection(actor.roles):
            raise refusal(Reason.NOT_A_CANDIDATE, "the ARS records that a declaration lapsed")
        if self.core.state not in (DeclarationState.ACKNOWLEDGED, DeclarationState.EFFECTIVE):
            raise refusal(Reason.STEP_NOT_OPEN, "only an acknowledged declaration lapses")
        self._check_motivation(motivation)

    def lapse(self, now: datetime, request: ActionInput) -> None:
        """The operator's conditions changed (DMN delisted, no doctor left...): no more forfaits on it."""
        self.check_lapse(request.actor, request.motivation)
        self._decided(now, request.actor)
        self._record(
            now, EventKind.LAPSED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, DeclarationState.LAPSED)

    def expires_at(self) -> datetime | None:
        return None

    def _wake_times(self, now: datetime) -> list[datetime]:
        if self.core.state == DeclarationState.ACKNOWLEDGED and self.case.effective_from is not None:
            return [self.case.effective_from]
        return []

    def _on_time(self, now: datetime) -> bool:
        start = self.case.effective_from
        if self.core.state == DeclarationState.ACKNOWLEDGED and start is not None and now >= start:
            self.core.state = DeclarationState.EFFECTIVE
            self._record(now, EventKind.EFFECTIVE, HUB, people=[self.core.promoter])
            return True
        return False


# ============================================================================================================
# IntermediaryContractReview


class IntermediaryContractReview(CaseMachine):
    kind = CaseKind.INTERMEDIARY_CONTRACT_REVIEW
    closed_states = ReviewState.CLOSED
    promoter_editable = ReviewState.PROMOTER_EDITABLE

    def __init__(self, case: IntermediaryReviewCase) -> None:
        super().__init__(case.core)
        self.case = case

    def _attach_state(self, write: CaseWrite) -> None:
        write.intermediary_review = self.case

    def ordre_territory(self) -> str:
        return self.case.territory

    def created(self, now: datetime) -> None:
        self._record(now, EventKind.CREATED, Actor(id=self.core.created_by))
        self._open_step(now, Step.ORDRE_REVIEW)

    def check_mark_clause(self, request: ClauseInput) -> None:
        self._check_step(request.actor, [Step.ORDRE_REVIEW])
        if not any(mark.clause == request.clause for mark in self.case.clauses):
            raise refusal(Reason.STEP_NOT_OPEN, f"{request.clause!r} is not a clause of the checklist")
        if request.status not in ClauseStatus.MARKS:
            raise refusal(
                Reason.STEP_NOT_OPEN, "a clause is marked satisfied, not satisfied or not applicable"
            )
        if request.status != ClauseStatus.SATISFIED and not request.note.strip():
            raise refusal(Reason.NOTE_REQUIRED, "a clause not satisfied or not applicable says why in a note")

    def mark_clause(self, now: datetime, request: ClauseInput) -> None:
        self.check_mark_clause(request)
        self._take(now, request.actor)
        mark = next(m for m in self.case.clauses if m.clause == request.clause)
        mark.status, mark.note, mark.marked_by, mark.marked_at = (
            request.status,
            request.note,
            request.actor.id,
            now,
        )
        self._record(now, EventKind.CLAUSE_MARKED, request.actor, detail=f"{request.clause} {request.status}")

    def unsatisfied(self) -> list[str]:
        """Clauses that stand in the way of a visa: not satisfied, or not reviewed yet."""
        return [
            m.clause
            for m in self.case.clauses
            if m.status not in (ClauseStatus.SATISFIED, ClauseStatus.NOT_APPLICABLE)
        ]

    def check_give_visa(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ORDRE_REVIEW], expected_version=expected_version)
        missing = self.unsatisfied()
        if missing:
            raise refusal(
                Reason.CLAUSES_NOT_SATISFIED,
                "a visa needs every applicable clause satisfied; not satisfied or not reviewed: "
                + ", ".join(missing),
            )

    def give_visa(self, now: datetime, request: ActionInput) -> None:
        self.check_give_visa(request.actor, request.expected_version)
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._record(
            now, EventKind.VISA_GIVEN, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, ReviewState.VISA_GIVEN)

    def check_review(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.ORDRE_REVIEW], expected_version=expected_version)

    def refuse_visa(self, now: datetime, request: ActionInput) -> None:
        self.check_review(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        failed = [m.clause for m in self.case.clauses if m.status == ClauseStatus.NOT_SATISFIED]
        self.case.failed_clauses = failed
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation, failed)
        self._record(
            now,
            EventKind.VISA_REFUSED,
            request.actor,
            detail=request.motivation,
            items=failed,
            people=[self.core.promoter],
        )
        self._close(now, ReviewState.VISA_REFUSED)

    def request_changes(self, now: datetime, request: ActionInput) -> None:
        self.check_review(request.actor, request.expected_version)
        request.correction_reason = CorrectionReason.INCORRECT
        self._request_correction(now, request, ReviewState.CHANGES_REQUESTED, Step.REVISION)

    def check_resubmit(self, actor: Actor) -> None:
        self._check_step(actor, [Step.REVISION])

    def resubmit(self, now: datetime, request: ActionInput) -> None:
        self.check_resubmit(request.actor)
        self._resolve_correction(now)
        self.core.state = ReviewState.UNDER_REVIEW
        self._record(now, EventKind.RESUBMITTED, request.actor)
        self._open_step(now, Step.ORDRE_REVIEW)

    def check_withdraw(self, actor: Actor) -> None:
        self._check_open()
        self._check_promoter(actor)

    def withdraw(self, now: datetime, request: ActionInput) -> None:
        self.check_withdraw(request.actor)
        self._record(
            now, EventKind.WITHDRAWN, request.actor, detail=request.motivation, roles=self._step_roles()
        )
        self._close(now, ReviewState.WITHDRAWN)


# ============================================================================================================
# AgrementApplication


class AgrementApplication(CaseMachine):
    """The core's clock must be set (the ministers' legal deadline from policy data)."""

    kind = CaseKind.AGREMENT_APPLICATION
    closed_states = AgrementState.CLOSED
    promoter_editable = AgrementState.PROMOTER_EDITABLE

    def __init__(self, case: AgrementCase) -> None:
        if case.core.clock is None:
            raise ValueError("an agrément application runs under its legal clock")
        super().__init__(case.core)
        self.case = case

    def _attach_state(self, write: CaseWrite) -> None:
        write.agrement = self.case

    def expires_at(self) -> datetime | None:
        return self.case.valid_until

    def _clock_running(self) -> bool:
        return self.core.state in AgrementState.PROMOTER_EDITABLE

    def _step_due(self, name: str, now: datetime) -> datetime:
        if name == Step.AGREMENT_DECISION:
            assert self.core.clock is not None
            return legal_clock.projected_deadline(self.core.clock, now)
        return super()._step_due(name, now)

    def created(self, now: datetime) -> None:
        self._record(now, EventKind.CREATED, Actor(id=self.core.created_by))
        self._open_step(now, Step.AGREMENT_DECISION)

    def check_decision(self, actor: Actor, expected_version: int = 0) -> None:
        self._check_step(actor, [Step.AGREMENT_DECISION], expected_version=expected_version)

    def request_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_decision(request.actor, request.expected_version)
        self._request_correction(now, request, AgrementState.AWAITING_DOCUMENTS, Step.DOCUMENTS)

    def check_complete_documents(self, actor: Actor) -> None:
        self._check_step(actor, [Step.DOCUMENTS])

    def complete_documents(self, now: datetime, request: ActionInput) -> None:
        self.check_complete_documents(request.actor)
        self._resolve_correction(now)
        self.core.state = AgrementState.FILED
        self._record(now, EventKind.DOCUMENTS_COMPLETED, request.actor)
        self._open_step(now, Step.AGREMENT_DECISION)

    def _grant(self, now: datetime, state: str) -> None:
        assert self.core.clock is not None
        zone = self.core.clock.time_zone
        start, last = legal_clock.validity_period(
            legal_clock.local_date(now, zone), self.case.validity_months
        )
        self.case.valid_from = legal_clock.start_of_day(start, zone)
        self.case.valid_until = legal_clock.start_of_day(last + timedelta(days=1), zone)
        self.core.state = state
        self._close_step()

    def grant(self, now: datetime, request: ActionInput) -> None:
        self.check_decision(request.actor, request.expected_version)
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._grant(now, AgrementState.GRANTED)
        self._record(
            now, EventKind.GRANTED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )

    def refuse(self, now: datetime, request: ActionInput) -> None:
        self.check_decision(request.actor, request.expected_version)
        self._check_motivation(request.motivation)
        self._take(now, request.actor)
        self._decided(now, request.actor)
        self._post_message(now, request.actor, request.motivation)
        self._record(
            now, EventKind.REFUSED, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, AgrementState.REFUSED)

    def _on_clock_expiry(self, now: datetime) -> None:
        assert self.core.clock is not None
        if self.core.clock.rule.decision == legal_clock.ACCEPTANCE:
            self._grant(now, AgrementState.GRANTED_BY_SILENCE)
            detail = "silence of the administration: acceptance at the end of the legal period"
            self._record(now, EventKind.GRANTED_BY_SILENCE, HUB, detail=detail, people=[self.core.promoter])
        else:
            detail = "silence of the administration: rejection at the end of the legal period"
            self._record(now, EventKind.REFUSED, HUB, detail=detail, people=[self.core.promoter])
            self._close(now, AgrementState.REFUSED)

    def check_withdraw(self, actor: Actor, motivation: str) -> None:
        self._check_open()
        if not self.is_promoter(actor):
            self._check_role(actor, Role.HUB_OPERATOR)
            self._check_motivation(motivation)

    def withdraw(self, now: datetime, request: ActionInput) -> None:
        self.check_withdraw(request.actor, request.motivation)
        self._decided(now, request.actor)
        self._record(
            now, EventKind.WITHDRAWN, request.actor, detail=request.motivation, people=[self.core.promoter]
        )
        self._close(now, AgrementState.WITHDRAWN)

    def _wake_times(self, now: datetime) -> list[datetime]:
        if self.core.state in AgrementState.IN_FORCE and self.case.valid_until is not None:
            return [self.case.valid_until]
        return []

    def _on_time(self, now: datetime) -> bool:
        until = self.case.valid_until
        if self.core.state in AgrementState.IN_FORCE and until is not None and now >= until:
            self._record(now, EventKind.EXPIRED, HUB, people=[self.core.promoter])
            self._close(now, AgrementState.EXPIRED)
            return True
        return False


# ============================================================================================================
