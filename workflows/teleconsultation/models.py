"""The dataclasses that cross the Temporal boundary of the Teleconsultation workflow (one in, one out).

New fields get defaults, so that histories recorded before they existed still replay. Nothing here is
searchable: payloads are encrypted by the kit's codec; what the Web UI filters on are the search attributes
(state, GHT, specialty, region, start time), which never carry patient data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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


@dataclass
class Reminder:
    """A reminder to send at `send_time`; `label` is its lead time (`P1D`, `PT1H`)."""

    label: str
    send_time: datetime


@dataclass
class TeleconsultationInput:
    appointment_id: str
    start_time: datetime
    end_time: datetime
    join_open_time: datetime
    no_show_time: datetime
    reminders: list[Reminder] = field(default_factory=list)
    # For the search attributes only (no patient data): `ghts/...`, specialty NAME, `regions/...`.
    ght: str = ""
    specialty: str = ""
    region: str = ""


@dataclass
class TeleconsultationOutcome:
    state: str
    billing_state: str = ""
    billing_reason: str = ""
    charges: list[str] = field(default_factory=list)


@dataclass
class CancelNotice:
    """Sent by the scheduling service when the appointment is cancelled or entered in error."""

    status: str  # FHIR status: cancelled | entered-in-error
    reason: str = ""


@dataclass
class StartRequest:
    """The teleconsultant starts the teleconsultation (Update `start`)."""

    request_id: str
    practitioner: str  # practitioners/{rpps}


@dataclass
class StartResult:
    state: str


@dataclass
class CompletionRequest:
    """The teleconsultant completes it (Update `complete`) with the R.6316-4 record items."""

    request_id: str
    practitioner: str
    # parcours.scheduling.v1.TeleconsultationRecord and parcours.billing.v1.Circumstances as proto JSON.
    record_json: str
    circumstances_json: str = "{}"


@dataclass
class CompletionResult:
    state: str


@dataclass
class CaseStatus:
    """What the `status` query answers."""

    state: str
    join_open: bool = False
    arrived: bool = False
    completed: bool = False


# --- activity arguments and results ------------------------------------------------------------------------


@dataclass
class NotificationInput:
    appointment_id: str
    label: str = ""


@dataclass
class NotificationResult:
    recipients: list[str] = field(default_factory=list)


@dataclass
class ArrivalInput:
    appointment_id: str
    practitioner: str


@dataclass
class AppointmentState:
    """An appointment's FHIR status after an activity's conditional change."""

    status: str
    changed: bool = False


@dataclass
class CompletionInput:
    appointment_id: str
    practitioner: str
    record_json: str
    circumstances_json: str = "{}"


@dataclass
class BillingInput:
    appointment_id: str


@dataclass
class BillingResult:
    charges: list[str] = field(default_factory=list)


@dataclass
class BillingOutcomeInput:
    appointment_id: str
    state: str  # BillingOutcome.State NAME
    charges: list[str] = field(default_factory=list)
    reason: str = ""
    message: str = ""
