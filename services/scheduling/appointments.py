"""The rules of an appointment's life, written once. Pure: no clock (`now` is passed in), no database.

Statuses are FHIR R4 Appointment.status codes (domain §6, §7 rule 22): a hold is `pending`, a proposal
`proposed`, then `booked` → `arrived` (the teleconsultation started) → `fulfilled`; or `cancelled` (a lapsed
hold or proposal reads as cancelled), `noshow`, `entered-in-error`. The servicer asks these rules on the row
it has locked; the Teleconsultation workflow's activities ask them on the row they persist; so the consent and
transition rules cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.kit.errors import FailedPrecondition, PermissionDenied
from services.scheduling.models import Reason

PROPOSED = "proposed"
PENDING = "pending"
BOOKED = "booked"
ARRIVED = "arrived"
FULFILLED = "fulfilled"
CANCELLED = "cancelled"
NOSHOW = "noshow"
ENTERED_IN_ERROR = "entered-in-error"

HELD = frozenset({PROPOSED, PENDING})


class Change(enum.Enum):
    """A change to an appointment, named by the status (or the word) a refusal says it cannot become."""

    BOOK = BOOKED
    CANCEL = CANCELLED
    RESCHEDULE = "rescheduled"
    CONSENT = "consented"
    REFUSE = "refused"
    WITHDRAW_REFUSAL = "refusal withdrawn"
    ENTER_IN_ERROR = ENTERED_IN_ERROR
    START = ARRIVED
    NO_SHOW = NOSHOW
    COMPLETE = FULFILLED


# From which statuses each change may be made.
ALLOWED: Mapping[Change, frozenset[str]] = {
    Change.BOOK: HELD,
    Change.CANCEL: frozenset({PROPOSED, PENDING, BOOKED}),
    Change.RESCHEDULE: frozenset({BOOKED}),
    Change.CONSENT: frozenset({PROPOSED, PENDING, BOOKED}),
    # A booked teleconsultation not started yet (a hold or proposal the patient does not want is cancelled).
    Change.REFUSE: frozenset({BOOKED}),
    Change.WITHDRAW_REFUSAL: frozenset({BOOKED}),
    # A fulfilled act has been billed: correcting it is a billing reversal, not this.
    Change.ENTER_IN_ERROR: frozenset({PROPOSED, PENDING, BOOKED, ARRIVED, CANCELLED, NOSHOW}),
    Change.START: frozenset({BOOKED}),
    Change.NO_SHOW: frozenset({BOOKED}),
    Change.COMPLETE: frozenset({ARRIVED}),
}


class Party(enum.Enum):
    """Who a cancellation or a move is made for (parcours.scheduling.v1.Party)."""

    PATIENT = "PARTY_PATIENT"
    PRACTITIONER = "PARTY_PRACTITIONER"


@dataclass(frozen=True, kw_only=True)
class Appointment:
    """What the rules read of an appointment."""

    status: str  # effective status: a lapsed hold or proposal reads `cancelled`
    start_time: datetime
    consented: bool = False
    lapsed: bool = False
    # The patient refused telemedicine or asked to be seen in person, and has not withdrawn it.
    refused: bool = False


def invalid_transition(current: str, change: Change) -> FailedPrecondition:
    return FailedPrecondition(
        Reason.INVALID_TRANSITION,
        f"an appointment that is {current} cannot become {change.value}",
        {"state": current},
    )


def check(change: Change, appointment: Appointment) -> None:
    """INVALID_TRANSITION unless `change` may be made from the appointment's status."""
    if appointment.status not in ALLOWED[change]:
        raise invalid_transition(appointment.status, change)


def check_book_held(appointment: Appointment) -> None:
    """Booking a hold or proposal: it must not have lapsed."""
    if appointment.lapsed:
        raise FailedPrecondition("HOLD_EXPIRED", "the hold or proposal has lapsed; book the slot again")
    check(Change.BOOK, appointment)


def check_initiator(
    appointment: Appointment, party: Party, *, acts_for_practitioner: bool, cutoff: timedelta, now: datetime
) -> None:
    """Who may cancel or move an appointment: the practitioner's side at any time; the patient's side until
    the schedule's cancellation cut-off before a booked start."""
    if party is Party.PRACTITIONER:
        if not acts_for_practitioner:
            raise PermissionDenied(
                "PRACTITIONER_ONLY", "only the teleconsultant's side may cancel or move as the practitioner"
            )
        return
    if appointment.status == BOOKED and now >= appointment.start_time - cutoff:
        raise FailedPrecondition(
            "CANCELLATION_CUTOFF_PASSED",
            "the patient side can no longer cancel or move this appointment (the schedule's cut-off)",
            {"cutoff_seconds": str(int(cutoff.total_seconds()))},
        )


def check_consent(appointment: Appointment) -> None:
    """Consent may be recorded unless a refusal stands (withdrawn first: the patient's choice, seed 004)."""
    check(Change.CONSENT, appointment)
    if appointment.refused:
        raise _refusal_stands()


def check_refuse(appointment: Appointment) -> None:
    """The patient may refuse a booked teleconsultation until it starts (L.1111-4 CSP: free consent)."""
    check(Change.REFUSE, appointment)
    if appointment.refused:
        raise FailedPrecondition(Reason.CONSENT_REFUSED, "the patient's refusal is already recorded")


def check_withdraw_refusal(appointment: Appointment) -> None:
    check(Change.WITHDRAW_REFUSAL, appointment)
    if not appointment.refused:
        raise FailedPrecondition("NO_REFUSAL", "the patient has not refused this teleconsultation")


def _refusal_stands() -> FailedPrecondition:
    return FailedPrecondition(
        Reason.CONSENT_REFUSED,
        "the patient refused the teleconsultation (or asked to be seen in person); the refusal must be "
        "withdrawn first",
    )


def check_start(appointment: Appointment) -> None:
    """The teleconsultation may start: the appointment is booked, the patient has not refused it, and their
    consent was recorded (R.6316-3; HAS: consent before the act; §7 rule 7)."""
    check(Change.START, appointment)
    if appointment.refused:
        raise _refusal_stands()
    if not appointment.consented:
        raise FailedPrecondition(
            Reason.CONSENT_REQUIRED,
            "the patient's consent must be recorded before the teleconsultation starts",
        )


def check_join_window(now: datetime, *, join_open_time: datetime, no_show_time: datetime) -> None:
    """The teleconsultant joins between the join window's opening and the no-show deadline, by the clock."""
    if now < join_open_time:
        raise FailedPrecondition(Reason.JOIN_WINDOW_NOT_OPEN, "the join window is not open yet")
    if now >= no_show_time:
        raise FailedPrecondition(Reason.JOIN_WINDOW_CLOSED, "the no-show grace period has passed")
