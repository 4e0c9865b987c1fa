"""The legal clock: silence means acceptance (SVA) or rejection (SVR) once a period has run.

Computed as démarches-simplifiées computes it (`SvaSvrDecisionDateCalculatorService`, ars-casework.md §1),
in civil dates of the case's time zone:

    decision date = start + period + correction delay

- `start` is the day after the file was filed; after a request for missing documents (INCOMPLETE) it is the
  day after the file was completed (the period restarts from zero: the CRPA's deadline runs from the receipt
  of a complete file); with the RESET rule any resolved correction restarts it the same way.
- `correction delay` is, for each correction resolved on or after `start`, the days it was pending, both ends
  included: the clock is suspended while the promoter corrects.
- While a correction is pending the clock is suspended: the reading says so and shows the date it would have
  if the correction were resolved today ("N days after the correction", as DS shows it).

Silence takes effect at the start of the decision date (00:00 in the case's zone); the workflow acts on it
then, unless a decision came first or a correction is pending. Everything here is pure: `today` and `now`
are arguments.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.contracts.models import ClockRule, CorrectionReason, CorrectionRecord, LegalClock

ACCEPTANCE = "ACCEPTANCE"
REJECTION = "REJECTION"
CONTINUE = "CONTINUE"
RESET = "RESET"


@dataclass(frozen=True, kw_only=True)
class Correction:
    """A request for corrections, in civil dates."""

    reason: str  # CorrectionReason.*
    requested_on: date
    resolved_on: date | None = None


@dataclass(frozen=True, kw_only=True)
class ClockReading:
    # The day the period runs from.
    start_on: date
    # The day silence takes effect (moves on while `suspended`).
    decision_on: date
    # A correction is pending: nothing happens until it is resolved.
    suspended: bool
    # Days added by corrections (a pending one counted as if resolved today).
    correction_days: int
    # What silence means at `decision_on`.
    outcome: str

    def days_left(self, today: date) -> int:
        """Days until silence takes effect (0: today; negative: past)."""
        return (self.decision_on - today).days


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the last day of that month (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_period(day: date, rule: ClockRule) -> date:
    return add_months(day, rule.period_months) + timedelta(days=rule.period_days)


def read(rule: ClockRule, *, filed_on: date, corrections: Sequence[Correction], today: date) -> ClockReading:
    """Where the legal clock of a file filed on `filed_on` stands on `today`."""
    if rule.decision not in (ACCEPTANCE, REJECTION) or rule.resume not in (CONTINUE, RESET):
        raise ValueError("a clock rule decides ACCEPTANCE or REJECTION and resumes by CONTINUE or RESET")
    for correction in corrections:
        if correction.requested_on < filed_on:
            raise ValueError("a correction cannot be requested before the file was filed")
        if correction.resolved_on is not None and correction.resolved_on < correction.requested_on:
            raise ValueError("a correction cannot be resolved before it was requested")

    def restarts(correction: Correction) -> bool:
        return correction.reason == CorrectionReason.INCOMPLETE or rule.resume == RESET

    # A pending correction is counted as if resolved today ("N days after the correction").
    resolutions = [(c, c.resolved_on or max(today, c.requested_on)) for c in corrections]
    start = max(
        [filed_on, *(resolved for c, resolved in resolutions if restarts(c))],
    ) + timedelta(days=1)
    delay = sum(
        (resolved - c.requested_on).days + 1
        for c, resolved in resolutions
        if not restarts(c) and resolved >= start
    )
    suspended = any(c.resolved_on is None for c in corrections)
    return ClockReading(
        start_on=start,
        decision_on=add_period(start, rule) + timedelta(days=delay),
        suspended=suspended,
        correction_days=delay,
        outcome=rule.decision,
    )


def local_date(instant: datetime, time_zone: str) -> date:
    if instant.tzinfo is None:
        raise ValueError("instants are timezone-aware")
    return instant.astimezone(ZoneInfo(time_zone)).date()


def start_of_day(day: date, time_zone: str) -> datetime:
    """00:00 of `day` in `time_zone`, as a UTC instant."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(time_zone)).astimezone(UTC)


def read_case_clock(clock: LegalClock, now: datetime) -> ClockReading:
    """The reading of a case's clock (instants converted to civil dates of its zone)."""
    zone = clock.time_zone
    return read(
        clock.rule,
        filed_on=local_date(clock.filed_at, zone),
        corrections=[_civil(c, zone) for c in clock.corrections],
        today=local_date(now, zone),
    )


def expiry_instant(clock: LegalClock, now: datetime) -> datetime | None:
    """When silence takes effect, or None while a correction suspends the clock."""
    reading = read_case_clock(clock, now)
    return None if reading.suspended else start_of_day(reading.decision_on, clock.time_zone)


def projected_deadline(clock: LegalClock, now: datetime) -> datetime:
    """The deadline to show (while suspended: as if the correction were resolved now)."""
    return start_of_day(read_case_clock(clock, now).decision_on, clock.time_zone)


def _civil(correction: CorrectionRecord, zone: str) -> Correction:
    return Correction(
        reason=correction.reason,
        requested_on=local_date(correction.requested_at, zone),
        resolved_on=None if correction.resolved_at is None else local_date(correction.resolved_at, zone),
    )


def validity_period(granted_on: date, validity_months: int) -> tuple[date, date]:
    """An agrément granted on `granted_on` is valid from that day for `validity_months`, last day included."""
    return granted_on, add_months(granted_on, validity_months) - timedelta(days=1)


def renewal_window_opens(valid_until: date, window_months: int) -> date:
    """The first day a renewal may be filed (at most `window_months` before the end)."""
    return add_months(valid_until, -window_months)
