"""The vocabulary of the contracts domain and the dataclasses that cross its Temporal boundary.

Direction rule: payload models, names and reasons live here, with the service; `workflows/contracts` imports
this module and never the reverse. Everything is a `@dataclass(kw_only=True)` with typed fields (no proto
JSON): a field added later gets a default so recorded histories still replay.

States, steps, event kinds and reasons are spelled as the suffixes of the `parcours.contracts.v1` enum names
(`AWAITING_VISA` ↔ `ArsContract.STATE_AWAITING_VISA`), so the projection stores them as the API spells them.
Nothing here is patient data; free texts (motivations, messages, notes) travel in payloads, which the kit's
codec encrypts, and never reach search attributes, workflow ids or logs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.kit import cases as kit_cases
from services.kit.cases import CaseAttributes
from services.kit.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.kit.idempotency import Call

# The task queue the service starts cases on and the worker polls.
TASK_QUEUE = "contracts"


class CaseKind:
    """The four kinds of case, with their Temporal workflow type and workflow id prefix."""

    ARS_CONTRACT = "ARS_CONTRACT"
    OPERATOR_DECLARATION = "OPERATOR_DECLARATION"
    INTERMEDIARY_CONTRACT_REVIEW = "INTERMEDIARY_CONTRACT_REVIEW"
    AGREMENT_APPLICATION = "AGREMENT_APPLICATION"

    ALL = (ARS_CONTRACT, OPERATOR_DECLARATION, INTERMEDIARY_CONTRACT_REVIEW, AGREMENT_APPLICATION)
    # `@workflow.defn(name=...)`: renaming a class never renames a workflow type.
    WORKFLOW_TYPE: Mapping[str, str] = {
        ARS_CONTRACT: "ArsContract",
        OPERATOR_DECLARATION: "OperatorDeclaration",
        INTERMEDIARY_CONTRACT_REVIEW: "IntermediaryContractReview",
        AGREMENT_APPLICATION: "AgrementApplication",
    }
    # Workflow ids are `{prefix}-{case uuid}`: opaque, never built from personal data.
    ID_PREFIX: Mapping[str, str] = {
        ARS_CONTRACT: "ars-contract",
        OPERATOR_DECLARATION: "operator-declaration",
        INTERMEDIARY_CONTRACT_REVIEW: "intermediary-review",
        AGREMENT_APPLICATION: "agrement-application",
    }
    # AIP collection of each kind's resource names (`arsContracts/{uuid}`).
    COLLECTION: Mapping[str, str] = {
        ARS_CONTRACT: "arsContracts",
        OPERATOR_DECLARATION: "operatorDeclarations",
        INTERMEDIARY_CONTRACT_REVIEW: "intermediaryContractReviews",
        AGREMENT_APPLICATION: "agrementApplications",
    }


def workflow_id(kind: str, case_id: str) -> str:
    return f"{CaseKind.ID_PREFIX[kind]}-{case_id}"


def case_name(kind: str, case_id: str) -> str:
    return f"{CaseKind.COLLECTION[kind]}/{case_id}"


class Role:
    """Roles as `parcours.options.v1.Role` spells them without the prefix."""

    PRACTITIONER = "PRACTITIONER"
    HUB_OPERATOR = "HUB_OPERATOR"
    HUB_SERVICE = "HUB_SERVICE"
    BILLING = "BILLING"
    # Instructing officer of an ARS (region-scoped).
    ARS_OFFICER = "ARS_OFFICER"
    # Conseil de l'Ordre des médecins, reviewer scoped to a territory (a département, or national).
    ORDRE_REVIEWER = "ORDRE_REVIEWER"
    # Head of an ARS department: receives escalations, reassigns (region-scoped).
    ARS_SUPERVISOR = "ARS_SUPERVISOR"
    # The ARS director general or a named delegate: the only one who signs (region-scoped).
    ARS_SIGNATORY = "ARS_SIGNATORY"
    # Staff acting for a promoter organisation (establishment, GHT, company, télésurveillance operator).
    PROMOTER = "PROMOTER"


# --------------------------------------------------------------------------------------------------------
# Lifecycles


class ArsContractState:
    DRAFT = "DRAFT"
    # Submitted: the completeness check is open.
    SUBMITTED = "SUBMITTED"
    # The ARS asked for missing documents: the promoter completes the file.
    AWAITING_DOCUMENTS = "AWAITING_DOCUMENTS"
    AWAITING_VISA = "AWAITING_VISA"
    UNDER_REVIEW = "UNDER_REVIEW"
    CHANGES_REQUESTED = "CHANGES_REQUESTED"
    AWAITING_SIGNATURE = "AWAITING_SIGNATURE"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    VISA_REFUSED = "VISA_REFUSED"
    WITHDRAWN = "WITHDRAWN"
    EXPIRED = "EXPIRED"
    TERMINATED = "TERMINATED"

    CLOSED = frozenset({REJECTED, VISA_REFUSED, WITHDRAWN, EXPIRED, TERMINATED})
    # The promoter may still edit the file (documents, withdraw).
    PROMOTER_EDITABLE = frozenset({DRAFT, AWAITING_DOCUMENTS, CHANGES_REQUESTED})
    BEFORE_DECISION = frozenset(
        {
            DRAFT,
            SUBMITTED,
            AWAITING_DOCUMENTS,
            AWAITING_VISA,
            UNDER_REVIEW,
            CHANGES_REQUESTED,
            AWAITING_SIGNATURE,
        }
    )


class DeclarationState:
    DECLARED = "DECLARED"
    AWAITING_DOCUMENTS = "AWAITING_DOCUMENTS"
    # Acknowledged, effective from a later date.
    ACKNOWLEDGED = "ACKNOWLEDGED"
    EFFECTIVE = "EFFECTIVE"
    REJECTED = "REJECTED"
    WITHDRAWN = "WITHDRAWN"
    # The operator's conditions changed (DMN delisted, no doctor left...): no longer conditions the forfaits.
    LAPSED = "LAPSED"

    CLOSED = frozenset({REJECTED, WITHDRAWN, LAPSED})
    PROMOTER_EDITABLE = frozenset({DECLARED, AWAITING_DOCUMENTS})


class ReviewState:
    """IntermediaryContractReview: a doctor ↔ company contract before the Ordre."""

    UNDER_REVIEW = "UNDER_REVIEW"
    CHANGES_REQUESTED = "CHANGES_REQUESTED"
    VISA_GIVEN = "VISA_GIVEN"
    VISA_REFUSED = "VISA_REFUSED"
    WITHDRAWN = "WITHDRAWN"

    CLOSED = frozenset({VISA_GIVEN, VISA_REFUSED, WITHDRAWN})
    PROMOTER_EDITABLE = frozenset({UNDER_REVIEW, CHANGES_REQUESTED})


class AgrementState:
    """The agrément of a téléconsultation company (L.4081-1 CSP, décret 2024-164)."""

    FILED = "FILED"
    AWAITING_DOCUMENTS = "AWAITING_DOCUMENTS"
    GRANTED = "GRANTED"
    # The ministers did not answer in time: silence means acceptance.
    GRANTED_BY_SILENCE = "GRANTED_BY_SILENCE"
    REFUSED = "REFUSED"
    # Withdrawn by the ministers (fraud: definitive) or by the company.
    WITHDRAWN = "WITHDRAWN"
    EXPIRED = "EXPIRED"

    CLOSED = frozenset({REFUSED, WITHDRAWN, EXPIRED})
    IN_FORCE = frozenset({GRANTED, GRANTED_BY_SILENCE})
    PROMOTER_EDITABLE = frozenset({FILED, AWAITING_DOCUMENTS})


CLOSED_STATES: Mapping[str, frozenset[str]] = {
    CaseKind.ARS_CONTRACT: ArsContractState.CLOSED,
    CaseKind.OPERATOR_DECLARATION: DeclarationState.CLOSED,
    CaseKind.INTERMEDIARY_CONTRACT_REVIEW: ReviewState.CLOSED,
    CaseKind.AGREMENT_APPLICATION: AgrementState.CLOSED,
}


class Step:
    """A piece of human work on a case: it has a candidate group (a role), a due date and a claimant."""

    COMPLETENESS_CHECK = "COMPLETENESS_CHECK"
    DOCUMENTS = "DOCUMENTS"
    ORDINAL_VISA = "ORDINAL_VISA"
    ARS_REVIEW = "ARS_REVIEW"
    REVISION = "REVISION"
    SIGNATURE = "SIGNATURE"
    CHANGE_REVIEW = "CHANGE_REVIEW"
    CHANGE_SIGNATURE = "CHANGE_SIGNATURE"
    ACKNOWLEDGEMENT = "ACKNOWLEDGEMENT"
    ORDRE_REVIEW = "ORDRE_REVIEW"
    AGREMENT_DECISION = "AGREMENT_DECISION"

    # Who may claim and act on each step (its candidate group).
    ROLE: Mapping[str, str] = {
        COMPLETENESS_CHECK: Role.ARS_OFFICER,
        DOCUMENTS: Role.PROMOTER,
        ORDINAL_VISA: Role.ORDRE_REVIEWER,
        ARS_REVIEW: Role.ARS_OFFICER,
        REVISION: Role.PROMOTER,
        SIGNATURE: Role.ARS_SIGNATORY,
        CHANGE_REVIEW: Role.ARS_OFFICER,
        CHANGE_SIGNATURE: Role.ARS_SIGNATORY,
        ACKNOWLEDGEMENT: Role.ARS_OFFICER,
        ORDRE_REVIEW: Role.ORDRE_REVIEWER,
        AGREMENT_DECISION: Role.HUB_OPERATOR,
    }
    # Who is told when the step is late ('' : nobody above; the step is only marked overdue).
    ESCALATES_TO: Mapping[str, str] = {
        COMPLETENESS_CHECK: Role.ARS_SUPERVISOR,
        DOCUMENTS: Role.ARS_OFFICER,
        ORDINAL_VISA: "",
        ARS_REVIEW: Role.ARS_SUPERVISOR,
        REVISION: Role.ARS_OFFICER,
        SIGNATURE: Role.ARS_SUPERVISOR,
        CHANGE_REVIEW: Role.ARS_SUPERVISOR,
        CHANGE_SIGNATURE: Role.ARS_SUPERVISOR,
        ACKNOWLEDGEMENT: Role.ARS_SUPERVISOR,
        ORDRE_REVIEW: "",
        AGREMENT_DECISION: "",
    }
    # Steps a promoter works on: claimed by nobody (the promoter organisation holds them).
    PROMOTER_STEPS = frozenset({DOCUMENTS, REVISION})


class EventKind:
    """What a case's timeline records (the console's history; also what notifications say)."""

    CREATED = "CREATED"
    SUBMITTED = "SUBMITTED"
    DOCUMENTS_REQUESTED = "DOCUMENTS_REQUESTED"
    DOCUMENTS_COMPLETED = "DOCUMENTS_COMPLETED"
    MARKED_COMPLETE = "MARKED_COMPLETE"
    STEP_OPENED = "STEP_OPENED"
    CLAIMED = "CLAIMED"
    RELEASED = "RELEASED"
    REASSIGNED = "REASSIGNED"
    REMINDED = "REMINDED"
    ESCALATED = "ESCALATED"
    OVERDUE = "OVERDUE"
    VISA_GIVEN = "VISA_GIVEN"
    VISA_REFUSED = "VISA_REFUSED"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CHANGES_REQUESTED = "CHANGES_REQUESTED"
    RESUBMITTED = "RESUBMITTED"
    SIGNED = "SIGNED"
    ACTIVATED = "ACTIVATED"
    RENEWAL_REMINDER = "RENEWAL_REMINDER"
    CHANGE_PROPOSED = "CHANGE_PROPOSED"
    CHANGE_APPROVED = "CHANGE_APPROVED"
    CHANGE_REJECTED = "CHANGE_REJECTED"
    AMENDED = "AMENDED"
    RENEWED = "RENEWED"
    EXPIRED = "EXPIRED"
    TERMINATED = "TERMINATED"
    WITHDRAWN = "WITHDRAWN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    EFFECTIVE = "EFFECTIVE"
    LAPSED = "LAPSED"
    CLAUSE_MARKED = "CLAUSE_MARKED"
    OPINION_REQUESTED = "OPINION_REQUESTED"
    OPINION_REMINDED = "OPINION_REMINDED"
    OPINION_GIVEN = "OPINION_GIVEN"
    OPINION_REVOKED = "OPINION_REVOKED"
    MESSAGE_POSTED = "MESSAGE_POSTED"
    COMMENT_ADDED = "COMMENT_ADDED"
    DOCUMENT_ADDED = "DOCUMENT_ADDED"
    GRANTED = "GRANTED"
    GRANTED_BY_SILENCE = "GRANTED_BY_SILENCE"
    REFUSED = "REFUSED"
    # Written by the service, not the workflow: who consulted the case (issue 10 §6).
    VIEWED = "VIEWED"


class Clause:
    """The CNOM's essential clauses of a doctor ↔ intermediary company contract."""

    PROFESSIONAL_INDEPENDENCE = "PROFESSIONAL_INDEPENDENCE"
    # Remuneration "avec tact et mesure", no fee-splitting.
    REMUNERATION = "REMUNERATION"
    # The doctor is qualified for what the offer asks of them.
    QUALIFICATION = "QUALIFICATION"
    ROLL_REGISTRATION = "ROLL_REGISTRATION"
    # No canvassing, no direct or indirect advertising.
    NO_CANVASSING = "NO_CANVASSING"
    # Protection of health data, hosted by an HDS-certified host.
    HEALTH_DATA_PROTECTION = "HEALTH_DATA_PROTECTION"
    CIVIL_LIABILITY_INSURANCE = "CIVIL_LIABILITY_INSURANCE"

    ALL = (
        PROFESSIONAL_INDEPENDENCE,
        REMUNERATION,
        QUALIFICATION,
        ROLL_REGISTRATION,
        NO_CANVASSING,
        HEALTH_DATA_PROTECTION,
        CIVIL_LIABILITY_INSURANCE,
    )


class ClauseStatus:
    UNREVIEWED = "UNREVIEWED"
    SATISFIED = "SATISFIED"
    NOT_SATISFIED = "NOT_SATISFIED"
    NOT_APPLICABLE = "NOT_APPLICABLE"

    MARKS = frozenset({SATISFIED, NOT_SATISFIED, NOT_APPLICABLE})


class OpinionState:
    REQUESTED = "REQUESTED"
    GIVEN = "GIVEN"
    REVOKED = "REVOKED"


class Verdict:
    FAVOURABLE = "FAVOURABLE"
    FAVOURABLE_WITH_RESERVATIONS = "FAVOURABLE_WITH_RESERVATIONS"
    UNFAVOURABLE = "UNFAVOURABLE"

    ALL = frozenset({FAVOURABLE, FAVOURABLE_WITH_RESERVATIONS, UNFAVOURABLE})


class ChangeKind:
    """A change to an active contract: its own reviewed and signed step."""

    AMENDMENT = "AMENDMENT"
    RENEWAL = "RENEWAL"


class CorrectionReason:
    """Why the ARS asks the promoter for a correction (démarches-simplifiées' three reasons)."""

    # Missing documents: the legal clock restarts from zero once the file is complete.
    INCOMPLETE = "INCOMPLETE"
    INCORRECT = "INCORRECT"
    OUTDATED = "OUTDATED"

    ALL = frozenset({INCOMPLETE, INCORRECT, OUTDATED})


# --------------------------------------------------------------------------------------------------------
# Refusals: stable reasons and the gRPC status each becomes


class StatusKind(enum.StrEnum):
    """The canonical gRPC code a refusal maps to (the kit's Update bridge reads `REASON_STATUS`)."""

    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ABORTED = "ABORTED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"


class Reason:
    """Stable reasons (google.rpc.ErrorInfo.reason) of the refusals of the contracts domain."""

    # --- state of the case (FAILED_PRECONDITION) ---
    CASE_CLOSED = "CASE_CLOSED"
    # The action belongs to another step than the one open now (e.g. sign while under review).
    STEP_NOT_OPEN = "STEP_NOT_OPEN"
    # The ARS review cannot conclude before the Ordre's visa the policy requires.
    VISA_REQUIRED = "VISA_REQUIRED"
    # A visa needs every applicable CNOM clause satisfied (the refusal lists those that are not).
    CLAUSES_NOT_SATISFIED = "CLAUSES_NOT_SATISFIED"
    # Another officer holds the step.
    CASE_CLAIMED_BY_OTHER = "CASE_CLAIMED_BY_OTHER"
    # Release of a step nobody holds.
    NOT_CLAIMED = "NOT_CLAIMED"
    # No human step is open (the case waits for a date or is closed).
    NO_OPEN_STEP = "NO_OPEN_STEP"
    OPINION_ALREADY_GIVEN = "OPINION_ALREADY_GIVEN"
    OPINION_REVOKED = "OPINION_REVOKED"
    OPINION_ALREADY_REQUESTED = "OPINION_ALREADY_REQUESTED"
    # An amendment or renewal is already under review.
    CHANGE_PENDING = "CHANGE_PENDING"
    NO_PENDING_CHANGE = "NO_PENDING_CHANGE"
    # Signing needs the signed decision document.
    DECISION_DOCUMENT_REQUIRED = "DECISION_DOCUMENT_REQUIRED"
    # Contract-requirement policy: no regime covers the date asked.
    NO_POLICY_IN_FORCE = "NO_POLICY_IN_FORCE"
    # A policy version may only start after every published one, and not in the past (never edit the past).
    POLICY_VERSION_NOT_LATEST = "POLICY_VERSION_NOT_LATEST"
    POLICY_EFFECTIVE_DATE_IN_PAST = "POLICY_EFFECTIVE_DATE_IN_PAST"

    # --- who the caller is (PERMISSION_DENIED; identical for hidden and missing cases) ---
    CASE_NOT_VISIBLE = "CASE_NOT_VISIBLE"
    # The caller's roles are not the step's candidate group (e.g. an Ordre reviewer on an ARS step).
    NOT_A_CANDIDATE = "NOT_A_CANDIDATE"
    NOT_PROMOTER = "NOT_PROMOTER"
    # Only the person an opinion was asked of gives it.
    NOT_OPINION_EXPERT = "NOT_OPINION_EXPERT"
    # Reassigning another officer's step is a supervisor's act.
    SUPERVISOR_REQUIRED = "SUPERVISOR_REQUIRED"

    # The caller acts for no promoter organisation the case could belong to (no establishment certificate, no
    # practitioner token).
    PROMOTER_REQUIRED = "PROMOTER_REQUIRED"
    # An agrément is filed for a company of the register only.
    COMPANY_NOT_REGISTERED = "COMPANY_NOT_REGISTERED"
    # Staff act on their own region's policy and templates only.
    REGION_NOT_CALLERS = "REGION_NOT_CALLERS"

    # --- missing things (NOT_FOUND) ---
    OPINION_NOT_FOUND = "OPINION_NOT_FOUND"
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    DECISION_NOT_FOUND = "DECISION_NOT_FOUND"
    POLICY_VERSION_NOT_FOUND = "POLICY_VERSION_NOT_FOUND"
    COMPANY_NOT_FOUND = "COMPANY_NOT_FOUND"

    # --- concurrency (ABORTED): the caller decided on a version of the case that is no longer current ---
    CASE_CHANGED = "CASE_CHANGED"

    # --- bad input the rules catch (INVALID_ARGUMENT naming the field) ---
    MOTIVATION_REQUIRED = "MOTIVATION_REQUIRED"
    CHANGE_ITEMS_REQUIRED = "CHANGE_ITEMS_REQUIRED"
    NOTE_REQUIRED = "NOTE_REQUIRED"
    PERIOD_INVALID = "PERIOD_INVALID"
    DUE_TIME_INVALID = "DUE_TIME_INVALID"
    REASSIGNEE_NOT_CANDIDATE = "REASSIGNEE_NOT_CANDIDATE"
    # A document whose bytes are not of the media type it claims, or too large for the hub.
    DOCUMENT_INVALID = "DOCUMENT_INVALID"
    # A decision the case's current step cannot take (or a refusal's template without its motivation).
    DECISION_INVALID = "DECISION_INVALID"


@dataclass(frozen=True, kw_only=True)
class ReasonStatus:
    """How a refusal reaches a client: the status kind, and the request field for INVALID_ARGUMENT."""

    kind: StatusKind
    field: str = ""


_FP = ReasonStatus(kind=StatusKind.FAILED_PRECONDITION)
_PD = ReasonStatus(kind=StatusKind.PERMISSION_DENIED)

# reason → status: the kit's Update bridge maps a workflow's ApplicationError.type through this table; a type
# missing from it is a bug (the bridge answers INTERNAL and logs the type).
REASON_STATUS: Mapping[str, ReasonStatus] = {
    Reason.CASE_CLOSED: _FP,
    Reason.STEP_NOT_OPEN: _FP,
    Reason.VISA_REQUIRED: _FP,
    Reason.CLAUSES_NOT_SATISFIED: _FP,
    Reason.CASE_CLAIMED_BY_OTHER: _FP,
    Reason.NOT_CLAIMED: _FP,
    Reason.NO_OPEN_STEP: _FP,
    Reason.OPINION_ALREADY_GIVEN: _FP,
    Reason.OPINION_REVOKED: _FP,
    Reason.OPINION_ALREADY_REQUESTED: _FP,
    Reason.CHANGE_PENDING: _FP,
    Reason.NO_PENDING_CHANGE: _FP,
    Reason.DECISION_DOCUMENT_REQUIRED: _FP,
    Reason.NO_POLICY_IN_FORCE: _FP,
    Reason.POLICY_VERSION_NOT_LATEST: _FP,
    Reason.POLICY_EFFECTIVE_DATE_IN_PAST: _FP,
    Reason.CASE_NOT_VISIBLE: _PD,
    Reason.NOT_A_CANDIDATE: _PD,
    Reason.NOT_PROMOTER: _PD,
    Reason.NOT_OPINION_EXPERT: _PD,
    Reason.SUPERVISOR_REQUIRED: _PD,
    Reason.PROMOTER_REQUIRED: _PD,
    Reason.COMPANY_NOT_REGISTERED: _FP,
    Reason.REGION_NOT_CALLERS: _PD,
    Reason.OPINION_NOT_FOUND: ReasonStatus(kind=StatusKind.NOT_FOUND),
    Reason.DOCUMENT_NOT_FOUND: ReasonStatus(kind=StatusKind.NOT_FOUND),
    Reason.DECISION_NOT_FOUND: ReasonStatus(kind=StatusKind.NOT_FOUND),
    Reason.POLICY_VERSION_NOT_FOUND: ReasonStatus(kind=StatusKind.NOT_FOUND),
    Reason.COMPANY_NOT_FOUND: ReasonStatus(kind=StatusKind.NOT_FOUND),
    Reason.CASE_CHANGED: ReasonStatus(kind=StatusKind.ABORTED),
    Reason.MOTIVATION_REQUIRED: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="motivation"),
    Reason.CHANGE_ITEMS_REQUIRED: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="items"),
    Reason.NOTE_REQUIRED: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="note"),
    # Signing and renewing name the period by its end date.
    Reason.PERIOD_INVALID: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="end_date"),
    Reason.DUE_TIME_INVALID: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="due_time"),
    Reason.REASSIGNEE_NOT_CANDIDATE: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="assignee"),
    Reason.DOCUMENT_INVALID: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="content"),
    Reason.DECISION_INVALID: ReasonStatus(kind=StatusKind.INVALID_ARGUMENT, field="kind"),
}


def _invalid(field_path: str) -> type[DomainError]:
    """An INVALID_ARGUMENT refusal naming `field_path`, built from (reason, message) like the others."""

    class _Invalid(InvalidArgument):
        def __init__(self, reason: str, message: str) -> None:
            super().__init__([FieldViolation(field_path, message)], reason)

    return _Invalid


_ERRORS: Mapping[StatusKind, type[DomainError]] = {
    StatusKind.FAILED_PRECONDITION: FailedPrecondition,
    StatusKind.PERMISSION_DENIED: PermissionDenied,
    StatusKind.NOT_FOUND: NotFound,
    StatusKind.ABORTED: Aborted,
}


def error_class(reason: str) -> type[DomainError]:
    """The domain error a refusal reason becomes at the gRPC edge (FAILED_PRECONDITION when unlisted)."""
    status = REASON_STATUS.get(reason)
    if status is None:
        return FailedPrecondition
    if status.kind is StatusKind.INVALID_ARGUMENT:
        return _invalid(status.field)
    return _ERRORS[status.kind]


def refusal_error(reason: str, message: str) -> DomainError:
    return error_class(reason)(reason, message)


# The kit's view of each kind: workflow type, task queue, id prefix (`ars-contract-{uuid}`, also the
# ParcoursKind value), and the gRPC status of every refusal its workflow raises.
KINDS: Mapping[str, kit_cases.CaseKind] = {
    kind: kit_cases.CaseKind(
        kind=CaseKind.ID_PREFIX[kind],
        workflow_type=CaseKind.WORKFLOW_TYPE[kind],
        task_queue=TASK_QUEUE,
        refusals={reason: error_class(reason) for reason in REASON_STATUS},
        unavailable_reason="CASE_UNAVAILABLE",
        busy_reason="CASE_BUSY",
    )
    for kind in CaseKind.ALL
}


class CoverageReason:
    """Why an act is not covered (CheckCoverage; billing keeps these on a refused or flagged line)."""

    REQUIRES_CONTRACT = "REQUIRES_CONTRACT"
    REQUIRES_ORDINAL_VISA = "REQUIRES_ORDINAL_VISA"
    REQUIRES_OPERATOR_DECLARATION = "REQUIRES_OPERATOR_DECLARATION"
    REQUIRES_AGREMENT = "REQUIRES_AGREMENT"


# --------------------------------------------------------------------------------------------------------
# Who acts, and how time runs


@dataclass(kw_only=True)
class Actor:
    """The caller of an update, as the service authenticated it (ids only, no names)."""

    # `practitioners/{rpps}` or `staff/{id}`; `hub` for the case's own timers.
    id: str
    # The organisation the caller acts for: `establishments/{finess}` from the client certificate ('' none).
    organisation: str = ""
    # Role names (Role.*).
    roles: list[str] = field(default_factory=list)


HUB = Actor(id="hub")


DAY = 86400.0


def _default_step_due() -> dict[str, float]:
    return {
        Step.COMPLETENESS_CHECK: 15 * DAY,
        Step.DOCUMENTS: 30 * DAY,
        Step.ORDINAL_VISA: 30 * DAY,
        Step.ARS_REVIEW: 30 * DAY,
        Step.REVISION: 30 * DAY,
        Step.SIGNATURE: 15 * DAY,
        Step.CHANGE_REVIEW: 30 * DAY,
        Step.CHANGE_SIGNATURE: 15 * DAY,
        Step.ACKNOWLEDGEMENT: 30 * DAY,
        Step.ORDRE_REVIEW: 30 * DAY,
        Step.AGREMENT_DECISION: 120 * DAY,
    }


@dataclass(kw_only=True)
class Timeline:
    """Durations that matter to people, from settings (tests shrink them). Seconds, to stay JSON-friendly.

    A step is due `step_due_seconds[step]` after it opens (the agrément decision's due time is its legal
    clock instead); its candidates are reminded `reminder_before_seconds` before that; at the due time it is
    overdue, and `escalate_after_seconds` later it escalates to the step's escalation role. Opinions are
    reminded `opinion_reminder_before_seconds` before their own due time. An active contract reminds its
    promoter and officers at each of `renewal_reminder_offsets_seconds` before its end (90 and 30 days).
    """

    step_due_seconds: dict[str, float] = field(default_factory=_default_step_due)
    reminder_before_seconds: float = 3 * DAY
    escalate_after_seconds: float = 0.0
    opinion_reminder_before_seconds: float = 2 * DAY
    renewal_reminder_offsets_seconds: list[float] = field(default_factory=lambda: [90 * DAY, 30 * DAY])
    # Start-to-close timeout of the activities (how soon a crashed worker's activity is retried elsewhere).
    activity_timeout_seconds: float = 15.0
    # A run continues as new (its state compacted and carried over) once its history holds this many events,
    # so a contract living for years keeps a bounded history (Temporal suggests it near 10k events anyway).
    continue_as_new_after_events: int = 2000


# --------------------------------------------------------------------------------------------------------
# The state of a case: one dataclass per kind, carried whole through continue-as-new


@dataclass(kw_only=True)
class StepState:
    name: str
    role: str
    opened_at: datetime
    due_at: datetime
    claimant: str = ""
    claimed_at: datetime | None = None
    reminded: bool = False
    overdue: bool = False
    escalated: bool = False


@dataclass(kw_only=True)
class OpinionRecord:
    """An opinion (avis) asked of another officer or an outside expert. The texts live in the projection."""

    opinion_id: str
    requested_by: str
    # Who gives it: `staff/{id}` or `practitioners/{rpps}`.
    expert: str
    requested_at: datetime
    due_at: datetime
    state: str = OpinionState.REQUESTED
    reminded: bool = False
    verdict: str = ""
    answered_at: datetime | None = None


@dataclass(kw_only=True)
class ClauseMark:
    clause: str
    status: str = ClauseStatus.UNREVIEWED
    note: str = ""
    marked_by: str = ""
    marked_at: datetime | None = None


@dataclass(kw_only=True)
class CorrectionRecord:
    """A request for corrections by the ARS (or the ministers) and when the promoter resolved it."""

    reason: str  # CorrectionReason.*
    requested_at: datetime
    resolved_at: datetime | None = None


@dataclass(kw_only=True)
class ClockRule:
    """A legal deadline: silence means acceptance (SVA) or rejection (SVR) after a period.

    `resume`: after a correction that is not about missing documents, `CONTINUE` adds the days it was pending
    to the deadline (suspension) and `RESET` restarts the period from its resolution; a request for missing
    documents (INCOMPLETE) always restarts it. The rule comes from dated policy data (clock.py).
    """

    name: str
    decision: str  # "ACCEPTANCE" | "REJECTION" at expiry
    period_months: int = 0
    period_days: int = 0
    resume: str = "CONTINUE"  # "CONTINUE" | "RESET"
    source: str = ""
    confirmed: bool = True


@dataclass(kw_only=True)
class LegalClock:
    rule: ClockRule
    filed_at: datetime
    # The zone whose civil dates the law counts in (the region's: Europe/Paris, America/Cayenne...).
    time_zone: str = "Europe/Paris"
    corrections: list[CorrectionRecord] = field(default_factory=list)


@dataclass(kw_only=True)
class CaseCore:
    """What every case kind has: its identity, scope, step, opinions and counters."""

    case_id: str
    kind: str
    # INSEE region code (`84`), the département (`42`, `2A`, `971`) and GHT where it applies ('' none).
    region: str
    departement: str = ""
    ght: str = ""
    # Who filed it: `establishments/{finess}`, `practitioners/{rpps}` or `teleconsultationCompanies/{siren}`.
    promoter: str
    created_at: datetime
    created_by: str
    state: str
    version: int = 0
    step: StepState | None = None
    opinions: list[OpinionRecord] = field(default_factory=list)
    # Sequences of what the case appended (events, messages, comments, documents) — never the items.
    event_seq: int = 0
    message_seq: int = 0
    comment_seq: int = 0
    document_seq: int = 0
    closed_at: datetime | None = None
    # The last decision: its motivation lives in the timeline.
    decided_by: str = ""
    decided_at: datetime | None = None
    timeline: Timeline = field(default_factory=Timeline)
    # A legal deadline (silence vaut acceptation / rejet) when a regime sets one for this kind of case.
    clock: LegalClock | None = None
    # How many continue-as-new generations the case went through (history stays bounded).
    generation: int = 0
    # The zone of the case's civil dates (the region's: Europe/Paris, America/Cayenne...).
    time_zone: str = "Europe/Paris"
    # The latest version of each document of the case (a new version of an id takes the next number).
    document_versions: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class PendingChange:
    change_id: str
    kind: str  # ChangeKind.*
    proposed_by: str
    proposed_at: datetime
    # RENEWAL: the new end of the contract.
    new_valid_until: datetime | None = None
    # AMENDMENT or RENEWAL approved by the ARS, waiting for the signature.
    approved: bool = False


@dataclass(kw_only=True)
class ContractActivity:
    """What the contract is about, as the requirement policy evaluated it (no patient data)."""

    act_type: str  # ActType suffix: TELECONSULTATION, TELESURVEILLANCE...
    offerer: str  # Offerer suffix
    in_parcours: bool
    experimental: bool


@dataclass(kw_only=True)
class ArsContractCase:
    core: CaseCore
    activity: ContractActivity
    # Requirement.* as evaluated at submission; decides whether the Ordre's visa is a step.
    requirement: str = ""
    visa_required: bool = False
    visa_given_by: str = ""
    requested_valid_from: datetime | None = None
    requested_valid_until: datetime | None = None
    valid_from: datetime | None = None
    # The contract ends at this instant (exclusive).
    valid_until: datetime | None = None
    # The signed decision (a case document), `.../documents/{id}` with its version.
    decision_document: str = ""
    signed_by: str = ""
    signed_at: datetime | None = None
    pending_change: PendingChange | None = None
    amendments: int = 0
    renewals: int = 0
    # Renewal reminders already sent for the current end date (offsets in seconds).
    renewal_reminders_sent: list[float] = field(default_factory=list)


@dataclass(kw_only=True)
class OperatorDeclarationCase:
    core: CaseCore
    # The declared activity: indications (LATM list), the digital medical device and the operator's level.
    indications: list[str] = field(default_factory=list)
    dmn: str = ""
    latm_registered: bool = True
    operator_level: str = ""  # OperatorLevel suffix: LEVEL_1 / LEVEL_2
    acknowledged_by: str = ""
    effective_from: datetime | None = None


@dataclass(kw_only=True)
class IntermediaryReviewCase:
    core: CaseCore
    # The company the doctor contracts with (`teleconsultationCompanies/{siren}` or `companies/{siren}`).
    company: str
    # The Ordre territory the review is routed to (the doctor's département, or `FR` for the CNOM).
    territory: str
    clauses: list[ClauseMark] = field(default_factory=lambda: [ClauseMark(clause=c) for c in Clause.ALL])
    failed_clauses: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class AgrementCase:
    """The core's clock is the ministers' legal deadline (4 months, silence means acceptance)."""

    core: CaseCore
    company: str
    validity_months: int = 24
    valid_from: datetime | None = None
    # Validity ends at this instant (exclusive): 00:00 after the last valid day, in the case's zone.
    valid_until: datetime | None = None


# --------------------------------------------------------------------------------------------------------
# Update inputs (one dataclass in per update; `expected_version` 0 means "whatever is current")


@dataclass(kw_only=True)
class ActionInput:
    """A transition that only needs who, and why when it is a refusal or a request for changes."""

    request_id: str
    actor: Actor
    expected_version: int = 0
    motivation: str = ""
    # A request for changes / missing documents lists the items to fix.
    items: list[str] = field(default_factory=list)
    # Request for corrections: CorrectionReason.*.
    correction_reason: str = CorrectionReason.INCOMPLETE
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class ReassignInput:
    request_id: str
    actor: Actor
    # The officer who gets the step, and the roles they hold (the service looked them up).
    assignee: str
    assignee_roles: list[str] = field(default_factory=list)
    expected_version: int = 0
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class DocumentRef:
    """A version of a case document, stored by the service before the update attaches it."""

    document: str  # `{case name}/documents/{document_id}`
    version: int
    document_type: str
    media_type: str
    size_bytes: int
    sha256: str
    title: str = ""
    # Who added it, and the request that did (a retried creation finds its version by it).
    uploader: str = ""
    request_id: str = ""


@dataclass(kw_only=True)
class AttachDocumentInput:
    request_id: str
    actor: Actor
    document: DocumentRef
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class SignInput:
    request_id: str
    actor: Actor
    # The previewed decision to sign (the workflow signs exactly its bytes, then records the signed one).
    decision_document: DocumentRef | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    expected_version: int = 0
    # What the PAdES signature says: why (the decision's title) and where (the issuing authority's place).
    reason: str = ""
    location: str = ""
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class OpinionRequestInput:
    request_id: str
    actor: Actor
    opinion_id: str
    expert: str
    question: str
    due_at: datetime
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class OpinionInput:
    """Give (verdict + text) or revoke (text = why) an opinion."""

    request_id: str
    actor: Actor
    opinion_id: str
    verdict: str = ""
    text: str = ""
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class MessageInput:
    request_id: str
    actor: Actor
    text: str
    items: list[str] = field(default_factory=list)
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class CommentInput:
    request_id: str
    actor: Actor
    text: str
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class ChangeInput:
    request_id: str
    actor: Actor
    change_id: str
    kind: str
    summary: str
    new_valid_until: datetime | None = None
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class AcknowledgeInput:
    request_id: str
    actor: Actor
    effective_from: datetime
    expected_version: int = 0
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class ClauseInput:
    request_id: str
    actor: Actor
    clause: str
    status: str
    note: str = ""
    # The RPC that asked for it: recorded in the service's idempotency ledger with the change.
    call: Call | None = None


@dataclass(kw_only=True)
class UpdateOutcome:
    """What every update returns: the projection version it persisted and the state."""

    version: int
    state: str


# --------------------------------------------------------------------------------------------------------
# What a change appends (persisted by the projection activity in one transaction)


@dataclass(kw_only=True)
class CaseEvent:
    sequence: int
    kind: str
    actor: str
    time: datetime
    step: str = ""
    # Why (motivation), or what (the clause, the opinion, the document...).
    detail: str = ""
    items: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class CaseMessage:
    """A message between the ARS and the promoter (a request for changes lists its items)."""

    sequence: int
    author: str
    text: str
    time: datetime
    items: list[str] = field(default_factory=list)
    # The request that posted it ('' for a message a decision wrote).
    request_id: str = ""
    # Written by the promoter's side (else by the instructing staff).
    from_promoter: bool = False


@dataclass(kw_only=True)
class CaseComment:
    """An internal comment of the instructing staff (never shown to the promoter)."""

    sequence: int
    author: str
    text: str
    time: datetime
    request_id: str = ""


@dataclass(kw_only=True)
class OpinionText:
    """The texts of an opinion as they were written (question at request, answer or revocation reason)."""

    opinion_id: str
    question: str = ""
    answer: str = ""
    revocation_reason: str = ""


@dataclass(kw_only=True)
class Notice:
    """Someone to tell about an event: a person (`staff/...`, `practitioners/...`), or a role of the scope."""

    recipient: str = ""
    role: str = ""
    event_sequence: int
    kind: str


@dataclass(kw_only=True)
class AppliedRequest:
    request_id: str
    method: str
    actor: str
    # The request's digest (services.kit.idempotency.digest_of): the same id with another payload is refused.
    digest: str = ""


@dataclass(kw_only=True)
class CaseSummary:
    """The columns an inbox filters and sorts on; built from the state by one function (cases.summary)."""

    case_id: str
    kind: str
    version: int
    state: str
    region: str
    departement: str
    ght: str
    promoter: str
    step: str
    step_role: str
    claimant: str
    due_at: datetime | None
    overdue: bool
    escalated: bool
    # The legal deadline (silence vaut acceptation/rejet) when a clock runs, and whether it is suspended.
    legal_deadline_at: datetime | None = None
    legal_clock_suspended: bool = False
    # End of validity of an active contract or agrément.
    expires_at: datetime | None = None
    closed: bool = False
    # Ordre territory of the case's visa or review ('' none).
    ordre_territory: str = ""


@dataclass(kw_only=True)
class CaseWrite:
    """One change of a case: its state (the kind's field), its summary and what it appends."""

    summary: CaseSummary
    ars_contract: ArsContractCase | None = None
    operator_declaration: OperatorDeclarationCase | None = None
    intermediary_review: IntermediaryReviewCase | None = None
    agrement: AgrementCase | None = None
    events: list[CaseEvent] = field(default_factory=list)
    messages: list[CaseMessage] = field(default_factory=list)
    comments: list[CaseComment] = field(default_factory=list)
    opinion_texts: list[OpinionText] = field(default_factory=list)
    documents: list[DocumentRef] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    applied: AppliedRequest | None = None
    # When the change was made (the workflow's clock).
    time: datetime | None = None


def search_attributes(summary: CaseSummary) -> CaseAttributes:
    """The one function that builds a case's search attributes (at start and at every upsert), as the kit's
    `CaseAttributes`: ParcoursKind (the workflow id prefix, `ars-contract`), ParcoursState, ParcoursRegion,
    ParcoursDueTime (the step's, or the legal deadline when sooner), ParcoursOverdue and ParcoursExpireTime
    (end of validity). No promoter, no name, no free text.
    """
    dues = [t for t in (summary.due_at, summary.legal_deadline_at) if t is not None]
    return CaseAttributes(
        kind=CaseKind.ID_PREFIX[summary.kind],
        state=summary.state,
        region=summary.region,
        ght=summary.ght.removeprefix("ghts/"),
        due_time=None if summary.closed or not dues else min(dues),
        overdue=summary.overdue and not summary.closed,
        expire_time=summary.expires_at,
    )


@dataclass(kw_only=True)
class CaseResult:
    """What a case's workflow returns when it closes."""

    kind: str
    state: str
    closed_at: datetime | None = None


@dataclass(kw_only=True)
class CreatedQuery:
    """Input of the `created` update: wait until the new case's first change is persisted."""

    request_id: str = ""


@dataclass(kw_only=True)
class SignDecisionInput:
    """Sign a previewed decision (the signing activity): exactly the preview's bytes, once."""

    case_name: str
    decision_id: str
    preview_sha256: str
    reason: str
    location: str
