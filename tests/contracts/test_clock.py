"""The legal clock, with dates: start, suspension by a correction, restart after missing documents."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.contracts.clock import (
    Correction,
    add_months,
    expiry_instant,
    projected_deadline,
    read,
    read_case_clock,
    renewal_window_opens,
    validity_period,
)
from services.contracts.models import ClockRule, CorrectionRecord, LegalClock
from services.contracts.policy import read_data_file

AGREMENT = read_data_file().clock_on("agrement", date(2026, 1, 1)).rule()
RESETTING = ClockRule(name="test", decision="REJECTION", period_months=2, resume="RESET")
FILED = date(2026, 1, 10)


def incomplete(requested: date, resolved: date | None = None) -> Correction:
    return Correction(reason="INCOMPLETE", requested_on=requested, resolved_on=resolved)


def incorrect(requested: date, resolved: date | None = None) -> Correction:
    return Correction(reason="INCORRECT", requested_on=requested, resolved_on=resolved)


def test_four_months_from_the_day_after_filing_silence_means_acceptance() -> None:
    reading = read(AGREMENT, filed_on=FILED, corrections=[], today=date(2026, 2, 1))
    assert reading.start_on == date(2026, 1, 11)
    assert reading.decision_on == date(2026, 5, 11)
    assert reading.outcome == "ACCEPTANCE" and not reading.suspended
    assert reading.days_left(date(2026, 5, 10)) == 1


@pytest.mark.parametrize(
    ("filed", "decision"),
    [
        (date(2026, 10, 30), date(2027, 2, 28)),  # 31 October + 4 months: the end of February
        (date(2027, 10, 30), date(2028, 2, 29)),  # a leap year
        (date(2026, 12, 31), date(2027, 5, 1)),
    ],
)
def test_months_end_on_the_last_day_of_a_shorter_month(filed: date, decision: date) -> None:
    assert read(AGREMENT, filed_on=filed, corrections=[], today=filed).decision_on == decision


def test_missing_documents_suspend_the_clock_then_restart_it_from_zero_once_complete() -> None:
    asked = date(2026, 1, 20)
    pending = read(AGREMENT, filed_on=FILED, corrections=[incomplete(asked)], today=date(2026, 1, 25))
    # Suspended: the date shown is the one the file would get if completed today.
    assert pending.suspended and pending.decision_on == date(2026, 5, 26)
    done = read(
        AGREMENT, filed_on=FILED, corrections=[incomplete(asked, date(2026, 2, 5))], today=date(2026, 3, 1)
    )
    assert not done.suspended
    assert done.start_on == date(2026, 2, 6) and done.decision_on == date(2026, 6, 6)


def test_another_correction_suspends_the_clock_for_the_days_it_was_pending() -> None:
    asked = date(2026, 2, 1)
    pending = read(AGREMENT, filed_on=FILED, corrections=[incorrect(asked)], today=date(2026, 2, 5))
    assert pending.suspended and pending.correction_days == 5 and pending.decision_on == date(2026, 5, 16)
    done = read(
        AGREMENT, filed_on=FILED, corrections=[incorrect(asked, date(2026, 2, 10))], today=date(2026, 3, 1)
    )
    # 1 to 10 February, both included: ten days later than without the correction.
    assert done.correction_days == 10 and done.decision_on == date(2026, 5, 21)


def test_a_restart_forgets_the_corrections_before_it() -> None:
    corrections = [
        incorrect(date(2026, 1, 15), date(2026, 1, 18)),
        incomplete(date(2026, 2, 1), date(2026, 2, 9)),
        incorrect(date(2026, 3, 2), date(2026, 3, 3)),
    ]
    reading = read(AGREMENT, filed_on=FILED, corrections=corrections, today=date(2026, 4, 1))
    assert reading.start_on == date(2026, 2, 10)
    assert reading.correction_days == 2 and reading.decision_on == date(2026, 6, 12)


def test_under_the_reset_rule_any_correction_restarts_the_period() -> None:
    reading = read(
        RESETTING, filed_on=FILED, corrections=[incorrect(date(2026, 2, 1), date(2026, 2, 10))], today=FILED
    )
    assert reading.start_on == date(2026, 2, 11) and reading.decision_on == date(2026, 4, 11)
    assert reading.outcome == "REJECTION"


def test_impossible_histories_are_refused() -> None:
    with pytest.raises(ValueError, match="before the file was filed"):
        read(AGREMENT, filed_on=FILED, corrections=[incomplete(date(2026, 1, 9))], today=FILED)
    with pytest.raises(ValueError, match="resolved before"):
        read(
            AGREMENT,
            filed_on=FILED,
            corrections=[incomplete(date(2026, 1, 12), date(2026, 1, 11))],
            today=FILED,
        )


def test_a_case_clock_counts_civil_days_in_its_own_time_zone() -> None:
    # 23:30 UTC on 10 January is already 11 January in Paris: the period starts on the 12th.
    paris = LegalClock(rule=AGREMENT, filed_at=datetime(2026, 1, 10, 23, 30, tzinfo=UTC))
    assert read_case_clock(paris, paris.filed_at).decision_on == date(2026, 5, 12)
    # Silence takes effect at 00:00 on the decision date, Paris summer time.
    assert expiry_instant(paris, paris.filed_at) == datetime(2026, 5, 11, 22, 0, tzinfo=UTC)
    # 02:00 UTC on 11 January is still 10 January in French Guiana.
    cayenne = LegalClock(
        rule=AGREMENT, filed_at=datetime(2026, 1, 11, 2, 0, tzinfo=UTC), time_zone="America/Cayenne"
    )
    assert expiry_instant(cayenne, cayenne.filed_at) == datetime(2026, 5, 11, 3, 0, tzinfo=UTC)


def test_a_pending_correction_has_no_expiry_only_a_projected_deadline() -> None:
    filed = datetime(2026, 1, 10, 10, tzinfo=UTC)
    clock = LegalClock(
        rule=AGREMENT,
        filed_at=filed,
        corrections=[
            CorrectionRecord(reason="INCOMPLETE", requested_at=datetime(2026, 1, 20, 10, tzinfo=UTC))
        ],
    )
    now = datetime(2026, 1, 25, 10, tzinfo=UTC)
    assert expiry_instant(clock, now) is None
    assert projected_deadline(clock, now) == datetime(2026, 5, 25, 22, 0, tzinfo=UTC)


def test_agrement_validity_and_renewal_window() -> None:
    assert validity_period(date(2026, 5, 11), 24) == (date(2026, 5, 11), date(2028, 5, 10))
    assert renewal_window_opens(date(2028, 5, 10), 4) == date(2028, 1, 10)
    assert add_months(date(2026, 3, 31), -1) == date(2026, 2, 28)
