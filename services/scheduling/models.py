"""The Teleconsultation case as the scheduling service owns it: its kind, the dataclasses that cross the
Temporal boundary (one in, one out; keyword-only, typed; new fields get defaults so recorded histories still
replay), its refusal reasons and its search attributes.

The service starts and changes `Teleconsultation` workflows through these; `workflows/teleconsultation`
implements them and depends on this module, never the reverse. Payloads are encrypted by the kit's codec;
what the Web UI filters on (state, kind, region, GHT, specialty, start time) never carries patient data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.kit.cases import CaseAttributes, CaseKind
from services.kit.errors import PermissionDenied
from services.kit.idempotency import Call
from services.kit.notify import DeliveryPolicy

TASK_QUEUE = "teleconsultation"
WORKFLOW_TYPE = "Teleconsultation"
WORKFLOW_KIND = "teleconsultation"


class Reason:
    """Refusal reasons of the workflow and its activities (ApplicationError.type)."""

    INVALID_TRANSITION = "INVALID_TRANSITION"
    CONSENT_REQUIRED = "CONSENT_REQUIRED"
    CONSENT_REFUSED = "CONSENT_REFUSED"
    JOIN_WINDOW_NOT_OPEN = "JOIN_WINDOW_NOT_OPEN"
    JOIN_WINDOW_CLOSED = "JOIN_WINDOW_CLOSED"
    NOT_IN_PROGRESS = "NOT_IN_PROGRESS"
    RECORD_INCOMPLETE = "RECORD_INCOMPLETE"
    APPOINTMENT_NOT_FOUND = "APPOINTMENT_NOT_FOUND"
    TELECONSULTANT_ONLY = "TELECONSULTANT_ONLY"


TELECONSULTATION = CaseKind(
    kind=WORKFLOW_KIND,
    workflow_type=WORKFLOW_TYPE,
    task_queue=TASK_QUEUE,
    refusals={Reason.TELECONSULTANT_ONLY: PermissionDenied},
    unavailable_reason="WORKFLOW_UNAVAILABLE",
    busy_reason="WORKFLOW_BUSY",
)


class CaseState:
    """Values of the ParcoursState search attribute for a teleconsultation."""

    BOOKED = "BOOKED"
    REMINDED = "REMINDED"
    JOIN_OPEN = "JOIN_OPEN"
    IN_PROGRESS = "IN_PROGRESS"
    FULFILLED = "FULFILLED"
    BILLED = "BILLED"
    BILLING_REFUSED = "BILLING_REFUSED"
    NOSHOW = "NOSHOW"
    CANCELLED = "CANCELLED"
    ENTERED_IN_ERROR = "ENTERED_IN_ERROR"


@dataclass(kw_only=True)
class Reminder:
    """A reminder to send at `send_time`; `label` is its lead time (`P1D`, `PT1H`)."""

    label: str
    send_time: datetime


@dataclass(kw_only=True)
class TeleconsultationInput:
    appointment_id: str
    start_time: datetime
    end_time: datetime
    join_open_time: datetime
    no_show_time: datetime
    reminders: list[Reminder] = field(default_factory=list)
    # For the search attributes only (no patient data): the GHT's id, the specialty's API enum name, the
    # region's code (services.kit.cases.CaseAttributes).
    ght: str = ""
    specialty: str = ""
    region: str = ""
    # How the deliveries of its notifications are retried before being recorded as failed.
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)


def case_attributes(case: TeleconsultationInput, state: str) -> CaseAttributes:
    """The case's search attributes: at the start (by the relay) and at every change (by the workflow)."""
    return CaseAttributes(
        kind=WORKFLOW_KIND,
        state=state,
        region=case.region,
        ght=case.ght,
        specialty=case.specialty,
        start_time=case.start_time,
    )


@dataclass(kw_only=True)
class TeleconsultationOutcome:
    state: str
    billing_state: str = ""
    billing_reason: str = ""
    charges: list[str] = field(default_factory=list)
    # The id of the record document (FHIR Bundle) written after the report ('' when none was).
    record_document: str = ""


@dataclass(kw_only=True)
class CancelNotice:
    """Sent by the scheduling service when the appointment is cancelled or entered in error."""

    status: str  # FHIR status: cancelled | entered-in-error
    reason: str = ""


@dataclass(kw_only=True)
class StartRequest:
    """The teleconsultant starts the teleconsultation (Update `start`)."""

    request_id: str
    practitioner: str  # practitioners/{rpps}
    # The RPC as the service's idempotency ledger knows it: recorded with the change.
    call: Call | None = None
    # The nurse or pharmacist beside the patient (§7.18), `practitioners/{rpps}`, and where they assist
    # (AssistanceSetting NAME); both empty when none.
    assistant: str = ""
    assistance_setting: str = ""


@dataclass(kw_only=True)
class StartResult:
    state: str


# --- the R.6316-4 record, typed (the API's TeleconsultationRecord) ---------------------------------------


@dataclass(kw_only=True)
class RecordedAct:
    code: str = ""
    description: str = ""


@dataclass(kw_only=True)
class Prescription:
    kind: str  # Prescription.Kind NAME
    description: str = ""
    sick_leave_days: int = 0
    ongoing_sick_leave_days: int = 0
    # An arrêt de travail beyond 3 days is allowed when this is recorded (§7.16).
    in_person_impossible_justified: bool = False


@dataclass(kw_only=True)
class RecordParticipant:
    practitioner: str  # practitioners/{rpps}
    role: str  # RecordParticipant.Role NAME


@dataclass(kw_only=True)
class TechnicalIncident:
    description: str
    occur_time: datetime | None = None


@dataclass(kw_only=True)
class TeleconsultationRecord:
    report: str = ""
    acts: list[RecordedAct] = field(default_factory=list)
    prescriptions: list[Prescription] = field(default_factory=list)
    participants: list[RecordParticipant] = field(default_factory=list)
    act_start_time: datetime | None = None
    act_end_time: datetime | None = None
    technical_incidents: list[TechnicalIncident] = field(default_factory=list)
    no_technical_incident: bool = False

    def missing_items(self) -> list[str]:
        """The R.6316-4 items it lacks: compte rendu, acts, participants, date and time, and technical
        incidents stated (incidents, or explicitly none)."""
        missing = [
            label
            for label, present in (
                ("report", bool(self.report)),
                ("acts", bool(self.acts)),
                ("participants", bool(self.participants)),
                ("actStartTime", self.act_start_time is not None),
                ("actEndTime", self.act_end_time is not None),
            )
            if not present
        ]
        if not self.technical_incidents and not self.no_technical_incident:
            missing.append("technicalIncidents")
        return missing


@dataclass(kw_only=True)
class PerformerActivity:
    """The teleconsultant's activity of the year so far (parcours.billing.v1.ActivityToDate), for §7.12."""

    conventioned_acts: int
    teleconsultations: int = 0
    teleexpertises: int = 0
    own_patient_teleconsultations: int = 0


@dataclass(kw_only=True)
class CompletionRequest:
    """The teleconsultant completes it (Update `complete`) with the R.6316-4 record items."""

    request_id: str
    practitioner: str
    record: TeleconsultationRecord
    # The billing circumstances that hold (parcours.billing.v1.Circumstances field names set to true, or
    # `name=YYYY-MM-DD` for its dates; see resources.circumstances_flags).
    circumstances: list[str] = field(default_factory=list)
    call: Call | None = None
    performer_activity: PerformerActivity | None = None


@dataclass(kw_only=True)
class CompletionResult:
    state: str


@dataclass(kw_only=True)
class CaseStatus:
    """What the `status` query answers."""

    state: str
    join_open: bool = False
    arrived: bool = False
    completed: bool = False


# --- activity arguments and results ------------------------------------------------------------------------


@dataclass(kw_only=True)
class NotificationInput:
    appointment_id: str
    label: str = ""
    # The workflow delivers what it records (False in histories from before deliveries: recorded only).
    deliver: bool = False


@dataclass(kw_only=True)
class NotificationResult:
    recipients: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ArrivalInput:
    appointment_id: str
    practitioner: str
    call: Call | None = None
    assistant: str = ""
    assistance_setting: str = ""


@dataclass(kw_only=True)
class AppointmentState:
    """An appointment's FHIR status after an activity's conditional change."""

    status: str
    changed: bool = False


@dataclass(kw_only=True)
class CompletionInput:
    appointment_id: str
    practitioner: str
    record: TeleconsultationRecord
    circumstances: list[str] = field(default_factory=list)
    call: Call | None = None
    performer_activity: PerformerActivity | None = None


@dataclass(kw_only=True)
class BillingInput:
    appointment_id: str


@dataclass(kw_only=True)
class PrescriptionRefusal:
    """A prescription billing refused while it billed the act (parcours.billing.v1.Finding, §7.16)."""

    reason: str
    message: str = ""
    reference: str = ""
    source: str = ""


@dataclass(kw_only=True)
class BillingResult:
    charges: list[str] = field(default_factory=list)
    prescription_refusals: list[PrescriptionRefusal] = field(default_factory=list)


@dataclass(kw_only=True)
class BillingOutcomeInput:
    appointment_id: str
    state: str  # BillingOutcome.State NAME
    charges: list[str] = field(default_factory=list)
    reason: str = ""
    message: str = ""
    prescription_refusals: list[PrescriptionRefusal] = field(default_factory=list)


@dataclass(kw_only=True)
class OutcomeAndReportInput:
    """Keep the billing outcome, then record the compte rendu's notifications: one write of the workflow."""

    outcome: BillingOutcomeInput
    report: NotificationInput


@dataclass(kw_only=True)
class DeliveryInput:
    """Deliver the notifications recorded for these recipients (kind and label as recorded)."""

    appointment_id: str
    kind: str
    label: str
    recipients: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class DeliveryResult:
    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class RecordInput:
    appointment_id: str


@dataclass(kw_only=True)
class RecordResult:
    """The record document kept, and what the DMP adapter made of it."""

    document_id: str
    dmp_state: str
    dmp_reason: str = ""
