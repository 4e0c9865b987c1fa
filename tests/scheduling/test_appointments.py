"""The appointment rules on their own (services/scheduling/appointments.py): no database, clock or Temporal.
The servicer and the Teleconsultation workflow's activities both ask these; here is what they answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.kit.errors import FailedPrecondition, PermissionDenied
from services.scheduling import appointments as a

START = datetime(2026, 3, 29, 9, 0, tzinfo=UTC)
STATUSES = (
    a.PROPOSED,
    a.PENDING,
    a.BOOKED,
    a.ARRIVED,
    a.FULFILLED,
    a.CANCELLED,
    a.NOSHOW,
    a.ENTERED_IN_ERROR,
)


def appointment(status: str, *, consented: bool = True, lapsed: bool = False) -> a.Appointment:
    return a.Appointment(status=status, start_time=START, consented=consented, lapsed=lapsed)


# Every (change, status) pair: allowed or INVALID_TRANSITION naming the status and the change.
ALLOWED = {
    a.Change.BOOK: {a.PROPOSED, a.PENDING},
    a.Change.CANCEL: {a.PROPOSED, a.PENDING, a.BOOKED},
    a.Change.RESCHEDULE: {a.BOOKED},
    a.Change.CONSENT: {a.PROPOSED, a.PENDING, a.BOOKED},
    a.Change.ENTER_IN_ERROR: {a.PROPOSED, a.PENDING, a.BOOKED, a.ARRIVED, a.CANCELLED, a.NOSHOW},
    a.Change.START: {a.BOOKED},
    a.Change.NO_SHOW: {a.BOOKED},
    a.Change.COMPLETE: {a.ARRIVED},
    # Seed 004: a booked teleconsultation not started yet.
    a.Change.REFUSE: {a.BOOKED},
    a.Change.WITHDRAW_REFUSAL: {a.BOOKED},
}


@pytest.mark.parametrize("change", list(a.Change))
@pytest.mark.parametrize("status", STATUSES)
def test_each_change_from_each_status(change: a.Change, status: str) -> None:
    if status in ALLOWED[change]:
        a.check(change, appointment(status))
        return
    with pytest.raises(FailedPrecondition) as refused:
        a.check(change, appointment(status))
    assert refused.value.reason == "INVALID_TRANSITION"
    assert refused.value.metadata == {"state": status}
    assert f"is {status} cannot become {change.value}" in refused.value.message


def test_a_fulfilled_act_is_never_entered_in_error() -> None:
    # It has been billed: correcting it is a billing reversal.
    with pytest.raises(FailedPrecondition):
        a.check(a.Change.ENTER_IN_ERROR, appointment(a.FULFILLED))


def test_a_lapsed_hold_cannot_be_booked() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        a.check_book_held(appointment(a.PENDING, lapsed=True))
    assert refused.value.reason == "HOLD_EXPIRED"
    a.check_book_held(appointment(a.PROPOSED))


def test_no_consent_no_start() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        a.check_start(appointment(a.BOOKED, consented=False))
    assert refused.value.reason == "CONSENT_REQUIRED"
    a.check_start(appointment(a.BOOKED))
    # The status rule comes first: a cancelled appointment is an invalid transition whatever the consent.
    with pytest.raises(FailedPrecondition) as cancelled:
        a.check_start(appointment(a.CANCELLED, consented=False))
    assert cancelled.value.reason == "INVALID_TRANSITION"


def test_a_standing_refusal_blocks_consent_and_start_until_withdrawn() -> None:
    """Seed 004 (free choice) and §7 rule 7: the refusal wins over a consent, until withdrawn."""
    refused = a.Appointment(status=a.BOOKED, start_time=START, consented=True, refused=True)
    for check in (a.check_start, a.check_consent, a.check_refuse):
        with pytest.raises(FailedPrecondition) as error:
            check(refused)
        assert error.value.reason == "CONSENT_REFUSED"
    a.check_withdraw_refusal(refused)
    standing = appointment(a.BOOKED)
    a.check_refuse(standing)
    a.check_consent(standing)
    with pytest.raises(FailedPrecondition) as none:
        a.check_withdraw_refusal(standing)
    assert none.value.reason == "NO_REFUSAL"
    # The status rule comes first: a started teleconsultation can no longer be refused.
    with pytest.raises(FailedPrecondition) as started:
        a.check_refuse(appointment(a.ARRIVED))
    assert started.value.reason == "INVALID_TRANSITION"


CUTOFF = timedelta(hours=24)


@pytest.mark.parametrize(
    ("before_start", "allowed"),
    [
        (timedelta(hours=25), True),
        (CUTOFF + timedelta(seconds=1), True),
        (CUTOFF, False),
        (timedelta(0), False),
    ],
)
def test_the_patient_side_cancels_until_the_cut_off(before_start: timedelta, allowed: bool) -> None:
    now = START - before_start
    check = lambda: a.check_initiator(  # noqa: E731
        appointment(a.BOOKED), a.Party.PATIENT, acts_for_practitioner=False, cutoff=CUTOFF, now=now
    )
    if allowed:
        check()
        return
    with pytest.raises(FailedPrecondition) as refused:
        check()
    assert refused.value.reason == "CANCELLATION_CUTOFF_PASSED"
    assert refused.value.metadata == {"cutoff_seconds": "86400"}


def test_the_cut_off_binds_booked_appointments_only() -> None:
    # A hold or a proposal is released at any time by the patient side.
    a.check_initiator(
        appointment(a.PENDING), a.Party.PATIENT, acts_for_practitioner=False, cutoff=CUTOFF, now=START
    )


def test_the_practitioner_side_at_any_time_but_only_for_itself() -> None:
    a.check_initiator(
        appointment(a.BOOKED), a.Party.PRACTITIONER, acts_for_practitioner=True, cutoff=CUTOFF, now=START
    )
    with pytest.raises(PermissionDenied) as refused:
        a.check_initiator(
            appointment(a.BOOKED), a.Party.PRACTITIONER, acts_for_practitioner=False, cutoff=CUTOFF, now=START
        )
    assert refused.value.reason == "PRACTITIONER_ONLY"


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (START - timedelta(minutes=16), "JOIN_WINDOW_NOT_OPEN"),
        (START - timedelta(minutes=15), None),  # the window opens at its instant, by the clock
        (START + timedelta(minutes=29, seconds=59), None),
        (START + timedelta(minutes=30), "JOIN_WINDOW_CLOSED"),
    ],
)
def test_the_join_window_follows_the_clock(now: datetime, reason: str | None) -> None:
    window = {"join_open_time": START - timedelta(minutes=15), "no_show_time": START + timedelta(minutes=30)}
    if reason is None:
        a.check_join_window(now, **window)
        return
    with pytest.raises(FailedPrecondition) as refused:
        a.check_join_window(now, **window)
    assert refused.value.reason == reason
