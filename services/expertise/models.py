"""The Teleexpertise case as the expertise service owns it: its kind, the dataclasses that cross the Temporal
boundary, its vocabulary, its refusal reasons (with the gRPC status each maps to) and its search attributes.

The service starts and changes `Teleexpertise` workflows through these; `workflows/teleexpertise` implements
them and depends on this module, never the reverse. One dataclass in and one out for the workflow, every
update and every activity, keyword-only; new fields get defaults so that histories recorded before them still
replay. States, event kinds and refusal reasons are the suffixes of
the `parcours.expertise.v1` enum names (`AWAITING_EXPERT` ↔ `TeleexpertiseRequest.STATE_AWAITING_EXPERT`), so
the projection stores them as the API spells them. Nothing here is patient data except what the payload codec
encrypts: ids are opaque (`patients/{uuid}`, `practitioners/{rpps}`), texts never reach search attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.kit.cases import CaseAttributes, CaseKind
from services.kit.errors import PermissionDenied
from services.kit.idempotency import Call
from services.kit.notify import DeliveryPolicy

# The task queue the service starts cases on and the worker polls (overridable in both settings).
TASK_QUEUE = "teleexpertise"
# Workflow ids are `teleexpertise-{case uuid}` (services.kit.temporal.workflow_id).
WORKFLOW_KIND = "teleexpertise"


class State:
    """Lifecycle states (TeleexpertiseRequest.State without the prefix)."""

    REQUESTED = "REQUESTED"
    AWAITING_EXPERT = "AWAITING_EXPERT"
    ACCEPTED = "ACCEPTED"
    AWAITING_INFORMATION = "AWAITING_INFORMATION"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    ALL = (
        REQUESTED,
        AWAITING_EXPERT,
        ACCEPTED,
        AWAITING_INFORMATION,
        IN_PROGRESS,
        COMPLETED,
        CANCELLED,
        EXPIRED,
    )
    CLOSED = frozenset({COMPLETED, CANCELLED, EXPIRED})
    # An expert holds the case.
    ASSIGNED = frozenset({ACCEPTED, AWAITING_INFORMATION, IN_PROGRESS})


# FHIR R4 Task.status, ServiceRequest.status and the Confluences IG's SplitActiveStatus of each state
# (domain reference §4.3, §6, §7 rule 23).
FHIR_STATUS: dict[str, tuple[str, str, str]] = {
    State.REQUESTED: ("requested", "draft", ""),
    State.AWAITING_EXPERT: ("requested", "active", "ready"),
    State.ACCEPTED: ("accepted", "active", "in_progress"),
    State.AWAITING_INFORMATION: ("on-hold", "active", "in_progress"),
    State.IN_PROGRESS: ("in-progress", "active", "in_progress"),
    State.COMPLETED: ("completed", "completed", ""),
    State.CANCELLED: ("cancelled", "revoked", ""),
    State.EXPIRED: ("failed", "revoked", ""),
}


class EventKind:
    """What happened to a case (EventKind without the prefix); also the kind of the notifications sent."""

    CREATED = "CREATED"
    ROUTED = "ROUTED"
    REMINDED = "REMINDED"
    ESCALATED = "ESCALATED"
    DECLINED = "DECLINED"
    ACCEPTED = "ACCEPTED"
    HANDED_BACK = "HANDED_BACK"
    QUESTION_ASKED = "QUESTION_ASKED"
    QUESTION_ANSWERED = "QUESTION_ANSWERED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    DEADLINE_BREACHED = "DEADLINE_BREACHED"
    EXPIRED = "EXPIRED"
    BILLED = "BILLED"
    BILLING_REFUSED = "BILLING_REFUSED"


class MessageKind:
    QUESTION = "QUESTION"
    ANSWER = "ANSWER"


class BillingState:
    PENDING = "PENDING"
    BILLED = "BILLED"
    PARTIALLY_BILLED = "PARTIALLY_BILLED"
    REFUSED = "REFUSED"
    FAILED = "FAILED"


class Reason:
    """Stable reasons of the refusals of the workflow's update validators (google.rpc.ErrorInfo.reason)."""

    # The caller is not one of the experts the request is routed to (or declined it).
    NOT_A_CANDIDATE = "NOT_A_CANDIDATE"
    # Only the assigned expert may do this.
    NOT_ASSIGNED_EXPERT = "NOT_ASSIGNED_EXPERT"
    # Only the requester may do this.
    NOT_REQUESTER = "NOT_REQUESTER"
    # Another expert accepted first (or the caller already holds it).
    ALREADY_ASSIGNED = "ALREADY_ASSIGNED"
    # Not assigned yet: accept it first.
    NOT_ASSIGNED = "NOT_ASSIGNED"
    # The expert already waits for an answer.
    QUESTION_ALREADY_OPEN = "QUESTION_ALREADY_OPEN"
    # No question waits for an answer.
    NO_OPEN_QUESTION = "NO_OPEN_QUESTION"
    # Closed requests accept no change.
    REQUEST_COMPLETED = "REQUEST_COMPLETED"
    REQUEST_CANCELLED = "REQUEST_CANCELLED"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"
    # Not routed yet (a call racing the creation).
    NOT_ROUTED = "NOT_ROUTED"

    # Refusals about who the caller is (PERMISSION_DENIED at the gRPC edge); the others are about the
    # request's state (FAILED_PRECONDITION).
    PERMISSION = frozenset({NOT_A_CANDIDATE, NOT_ASSIGNED_EXPERT, NOT_REQUESTER})
    ALL = frozenset(
        {
            NOT_A_CANDIDATE,
            NOT_ASSIGNED_EXPERT,
            NOT_REQUESTER,
            ALREADY_ASSIGNED,
            NOT_ASSIGNED,
            QUESTION_ALREADY_OPEN,
            NO_OPEN_QUESTION,
            REQUEST_COMPLETED,
            REQUEST_CANCELLED,
            REQUEST_EXPIRED,
            NOT_ROUTED,
        }
    )


TELEEXPERTISE = CaseKind(
    kind=WORKFLOW_KIND,
    workflow_type="Teleexpertise",
    task_queue=TASK_QUEUE,
    refusals=dict.fromkeys(Reason.PERMISSION, PermissionDenied),
    unavailable_reason="REQUEST_UNAVAILABLE",
    busy_reason="REQUEST_BUSY",
)


# --- workflow input ----------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Tier:
    """Experts a request is routed to together: the named expert, a specialty pool, or the backup experts."""

    # What the tier is: `practitioners/{rpps}` (named expert), `expertiseOffers/{id}` (pool) or `backup`.
    source: str
    # `practitioners/{rpps}`, in the order the directory lists them.
    members: list[str]


@dataclass(kw_only=True)
class Timeline:
    """How acceptance windows, reminders, escalations and expiry follow from the answer deadline.

    With D the time from creation to the requested deadline: the first tier has `first_window_fraction` × D
    to accept, each later tier `next_window_fraction` × D; candidates are reminded once
    `reminder_fraction` of a window has passed with nobody accepting, and the window's end routes the
    request to the next tier. A request still unassigned `expire_after_seconds` after its (breached)
    deadline expires.
    """

    first_window_fraction: float = 0.5
    next_window_fraction: float = 0.125
    reminder_fraction: float = 0.5
    # The answer deadline stops while the expert waits for the requester's answer (and moves by that time).
    pause_deadline_while_awaiting_information: bool = True
    expire_after_seconds: float = 14 * 86400.0
    # Start-to-close timeout of the activities: how soon a crashed worker's activity is retried elsewhere.
    activity_timeout_seconds: float = 15.0
    # How the deliveries of its notifications are retried before being recorded as failed.
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Timeline:
        """From its JSON as the request row keeps it (rows written before `delivery` get the default)."""
        delivery = data.get("delivery")
        values = {k: v for k, v in data.items() if k != "delivery"}
        return cls(**values, delivery=DeliveryPolicy(**delivery) if delivery else DeliveryPolicy())


@dataclass(kw_only=True)
class CaseInput:
    """The workflow's input: what routing and deadlines need, no free text."""

    case_id: str
    requester: str  # practitioners/{rpps}
    requester_establishment: str  # establishments/{finess}
    patient: str  # patients/{uuid}
    specialty: str  # Specialty name without prefix, e.g. DERMATOLOGY
    ght: str  # ght id, '' outside any GHT
    region: str  # INSEE region code
    tiers: list[Tier]
    created_at: datetime
    answer_due: datetime
    timeline: Timeline = field(default_factory=Timeline)


def case_attributes(case: CaseInput, *, state: str, due: datetime, breached: bool) -> CaseAttributes:
    """The case's search attributes: at the start (by the relay) and at every change (by the workflow)."""
    return CaseAttributes(
        kind=WORKFLOW_KIND,
        state=state,
        region=case.region,
        ght=case.ght,
        specialty=f"SPECIALTY_{case.specialty}",
        due_time=due,
        start_time=case.created_at,
        breached=breached,
    )


@dataclass(kw_only=True)
class CaseResult:
    state: str
    breached: bool
    billing_state: str = ""


# --- updates -----------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RoutedQuery:
    """Input of the `routed` update: wait until the first routing is persisted."""

    request_id: str = ""


@dataclass(kw_only=True)
class AcceptInput:
    request_id: str
    actor: str  # practitioners/{rpps}
    establishment: str  # establishments/{finess} the expert accepts from (where TE2 is billed)
    call: Call | None = None


@dataclass(kw_only=True)
class DeclineInput:
    request_id: str
    actor: str
    reason: str
    call: Call | None = None


@dataclass(kw_only=True)
class HandBackInput:
    request_id: str
    actor: str
    reason: str
    call: Call | None = None


@dataclass(kw_only=True)
class CancelInput:
    request_id: str
    actor: str
    reason: str
    call: Call | None = None


@dataclass(kw_only=True)
class AskInput:
    request_id: str
    actor: str
    text: str
    call: Call | None = None


@dataclass(kw_only=True)
class AnswerInput:
    request_id: str
    actor: str
    text: str
    call: Call | None = None


@dataclass(kw_only=True)
class ReportInput:
    request_id: str
    actor: str
    summary: str
    acts_and_prescriptions: list[str]
    technical_incidents: str
    other_participants: list[str] = field(default_factory=list)
    call: Call | None = None


@dataclass(kw_only=True)
class UpdateOutcome:
    """What an update returns: the projection version it persisted and the state."""

    version: int
    state: str


# --- projection (written by the persist activity) -----------------------------------------------------------


@dataclass(kw_only=True)
class ReportRecord:
    summary: str
    acts_and_prescriptions: list[str]
    participants: list[str]
    act_time: datetime
    technical_incidents: str
    author: str


@dataclass(kw_only=True)
class BilledLine:
    charge: str  # charges/{id}
    code: str  # RQD | TE2
    practitioner: str


@dataclass(kw_only=True)
class BillingRefusal:
    reason: str
    code: str
    message: str


@dataclass(kw_only=True)
class BillingOutcome:
    state: str
    act_id: str
    lines: list[BilledLine] = field(default_factory=list)
    refusals: list[BillingRefusal] = field(default_factory=list)
    record_time: datetime | None = None


@dataclass(kw_only=True)
class CaseView:
    """The mutable part of the case as the service's tables show it."""

    case_id: str
    version: int
    state: str
    answer_due: datetime
    deadline_paused: bool
    breached: bool
    breach_time: datetime | None
    escalation_level: int
    reminders_sent: int
    # Experts who may accept now (empty once assigned).
    candidates: list[str]
    # Every expert the request was ever routed to (they may still be told ALREADY_ASSIGNED).
    offered: list[str]
    assigned_expert: str
    expert_establishment: str
    accept_time: datetime | None
    close_time: datetime | None
    close_reason: str
    report: ReportRecord | None = None
    billing: BillingOutcome | None = None


@dataclass(kw_only=True)
class CaseEvent:
    sequence: int
    kind: str
    actor: str  # practitioners/{rpps}, '' for the hub
    detail: str
    time: datetime


@dataclass(kw_only=True)
class ThreadMessage:
    sequence: int
    author: str
    kind: str
    text: str
    time: datetime


@dataclass(kw_only=True)
class Notice:
    """A notification for one practitioner about one event of the case."""

    recipient: str  # practitioners/{rpps}
    event_sequence: int
    kind: str


@dataclass(kw_only=True)
class ProjectionWrite:
    """One change of a case: its new view and what it appends, written in one transaction."""

    view: CaseView
    events: list[CaseEvent] = field(default_factory=list)
    messages: list[ThreadMessage] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    # The RPC the change applied, recorded in the service's idempotency ledger with it (None for timers).
    applied: Call | None = None
    # The workflow delivers the notices (False in histories from before deliveries: recorded only).
    deliver: bool = False


# --- billing ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class BillingInput:
    """What the billing activity needs to record the téléexpertise's acts (RQD + TE2)."""

    case_id: str
    act_id: str
    patient: str
    requester: str
    requester_establishment: str
    expert: str
    expert_establishment: str
    act_time: datetime


# --- notifications that leave the hub, the record document -----------------------------------------------


@dataclass(kw_only=True)
class DeliveryInput:
    """Deliver these notifications of a case (as its persist activity recorded them)."""

    case_id: str
    notices: list[Notice] = field(default_factory=list)


@dataclass(kw_only=True)
class DeliveryResult:
    delivered: int = 0
    failed: int = 0


@dataclass(kw_only=True)
class RecordInput:
    case_id: str


@dataclass(kw_only=True)
class RecordResult:
    """The record document kept, and what the DMP adapter made of it."""

    document_id: str
    dmp_state: str
    dmp_reason: str = ""
