"""A region's working day, from the domain's volumes (domain §5), as a list of timed steps of cases.

Pure and deterministic (a seed): no I/O, no clock. `tests/bench/bench_load.py` replays a slice of the day
against the hub at 1×, 10×, 100× (a speed `s` compresses `s` seconds of the day into one second of the wall
clock, so it offers `s` times a region's load) and `tests/bench/test_load.py` checks the proportions and the
peaks without any server.

Volumes (domain §5, "derived, for sizing only"): about 1.2 M teleconsultations and 60–90 k téléexpertises a
month in France; a region is about 1/13 of that; activity is concentrated on weekdays (95 % on the 21 working
days of a month here) and within a day on two peaks, 9–11 h and 14–16 h (`HOURLY_WEIGHTS`). So a region's
weekday is about 4,200 teleconsultations and 260 téléexpertises; its peak hour a seventh.

A case kind is one generator (`CaseGenerator`): it draws the day's cases of its kind and the steps of each
with their times: teleconsultations, téléexpertises and the ARS's contracts casework (`ContractsGenerator`:
a few télésurveillance declarations and contract files a day, their review by ARS officers).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

HOUR = 3600.0
# France, a month (domain §5): teleconsultations billed (13.9 M in 2024 ≈ 1.2 M a month) and téléexpertises
# (60–90 k a month: the middle).
NATIONAL_TELECONSULTATIONS_PER_MONTH = 1_200_000
NATIONAL_TELEEXPERTISES_PER_MONTH = 75_000
REGION_SHARE = 1 / 13
WORKING_DAYS_PER_MONTH = 21
WEEKDAY_SHARE = 0.95
# Relative activity of each hour of a weekday (local time): two peaks, 9–11 h and 14–16 h, a lunch dip.
HOURLY_WEIGHTS: dict[int, float] = {
    7: 1,
    8: 4,
    9: 10,
    10: 10,
    11: 6,
    12: 2,
    13: 4,
    14: 9,
    15: 9,
    16: 6,
    17: 5,
    18: 3,
    19: 1,
}
PEAK_HOURS = (9, 10, 14, 15)


def per_weekday(monthly: float, share: float = REGION_SHARE) -> float:
    """A region's cases on an ordinary weekday from a national monthly volume."""
    return monthly * share * WEEKDAY_SHARE / WORKING_DAYS_PER_MONTH


def hour_share(hour: int) -> float:
    return HOURLY_WEIGHTS.get(hour, 0.0) / sum(HOURLY_WEIGHTS.values())


def arrival(rng: random.Random) -> float:
    """A second of the day drawn from the hourly profile (uniform within the hour)."""
    hours = list(HOURLY_WEIGHTS)
    hour = rng.choices(hours, weights=[HOURLY_WEIGHTS[h] for h in hours])[0]
    return hour * HOUR + rng.random() * HOUR


def lognormal(rng: random.Random, median_seconds: float, spread: float = 0.6) -> float:
    return median_seconds * math.exp(rng.gauss(0.0, spread))


@dataclass(frozen=True, order=True)
class Step:
    """One call a hospital system makes for a case, at a second of the day."""

    at: float
    case: str = field(compare=False)  # "<kind>-<n>[/chain]": the case (and chain of steps) it belongs to
    kind: str = field(compare=False)  # "teleconsultation", "teleexpertise", ...
    operation: str = field(compare=False)  # the RPC (or "search" for a slot search)
    index: int = field(compare=False)  # its rank among its case's steps


class CaseGenerator(Protocol):
    kind: str

    def cases_per_weekday(self) -> float: ...

    def steps(self, rng: random.Random, number: int) -> list[Step]:
        """The steps of case `number`, in order; steps falling after midnight are not part of the day."""
        ...


@dataclass(frozen=True)
class TeleconsultationGenerator:
    """One teleconsultation: searched and booked (most for another day: 64 % within 48 h on platforms,
    domain §5), sometimes cancelled or moved; on its day, consent, start and completion (the workflow then
    bills it and sends the report). In a steady state a day has as many bookings as consultations held, so a
    case here is both: the booking made today and a consultation held today (of a booking made earlier)."""

    kind: str = "teleconsultation"
    monthly: float = NATIONAL_TELECONSULTATIONS_PER_MONTH
    searches_per_booking: int = 3
    cancelled: float = 0.08
    rescheduled: float = 0.05
    no_show: float = 0.04
    consent_at_booking: float = 0.5

    def cases_per_weekday(self) -> float:
        return per_weekday(self.monthly)

    def steps(self, rng: random.Random, number: int) -> list[Step]:
        # Two chains: the booking made today (`.../booking`) and the consultation held today (`.../held`).
        case = f"{self.kind}-{number}"
        found: list[tuple[float, str]] = []
        booked = arrival(rng)
        for _ in range(self.searches_per_booking):
            found.append((max(0.0, booked - rng.uniform(10, 240)), "SearchSlots"))
        found.sort()
        found.append((booked, "BookAppointment"))
        draw = rng.random()
        if draw < self.cancelled:
            found.append((booked + lognormal(rng, 2 * HOUR), "CancelAppointment"))
        elif draw < self.cancelled + self.rescheduled:
            found.append((booked + lognormal(rng, 2 * HOUR), "RescheduleAppointment"))
        # The consultation held today, at an appointment time of its own (of an earlier booking).
        held = arrival(rng)
        consultation: list[tuple[float, str]] = []
        if rng.random() >= self.no_show:
            if rng.random() >= self.consent_at_booking:
                consultation.append((held - rng.uniform(60, 900), "RecordConsent"))
            consultation.append((held, "StartTeleconsultation"))
            consultation.append((held + lognormal(rng, 15 * 60, 0.3), "CompleteTeleconsultation"))
        return _steps(f"{case}/booking", self.kind, found) + _steps(f"{case}/held", self.kind, consultation)


@dataclass(frozen=True)
class TeleexpertiseGenerator:
    """One téléexpertise: requested by a GP, accepted by an expert of the pool (some handed back to the
    pool and accepted again), a question and its answer for some, the report (the workflow then bills RQD
    and TE2)."""

    kind: str = "teleexpertise"
    monthly: float = NATIONAL_TELEEXPERTISES_PER_MONTH
    handed_back: float = 0.05
    questioned: float = 0.25

    def cases_per_weekday(self) -> float:
        return per_weekday(self.monthly)

    def steps(self, rng: random.Random, number: int) -> list[Step]:
        case = f"{self.kind}-{number}"
        at = arrival(rng)
        found: list[tuple[float, str]] = [(at, "CreateTeleexpertiseRequest")]
        at += lognormal(rng, 45 * 60)
        if rng.random() < self.handed_back:
            found.append((at, "AcceptTeleexpertiseRequest"))
            at += lognormal(rng, 20 * 60)
            found.append((at, "HandBackTeleexpertiseRequest"))
            at += lognormal(rng, 30 * 60)
        found.append((at, "AcceptTeleexpertiseRequest"))
        if rng.random() < self.questioned:
            at += lognormal(rng, 10 * 60)
            found.append((at, "AskTeleexpertiseQuestion"))
            at += lognormal(rng, 60 * 60)
            found.append((at, "AnswerTeleexpertiseQuestion"))
        at += lognormal(rng, 30 * 60)
        found.append((at, "SubmitTeleexpertiseReport"))
        return _steps(case, self.kind, found)


def _steps(case: str, kind: str, timed: Iterable[tuple[float, str]]) -> list[Step]:
    return [
        Step(at=at, case=case, kind=kind, operation=operation, index=index)
        for index, (at, operation) in enumerate(timed)
        if at < 24 * HOUR
    ]


# Télésurveillance operators of a region: the domain (§2.3, décrets 2022-1767/1769) has every operator declare
# to its ARS once (any number of devices) but gives no count. Sized here from the national volumes: about 13 k
# operators in France (one per cardiology, diabetology or nephrology team running a listed device), a region
# 1/13 of them, declared, re-declared on a change of team or level, or lapsed over about two years.
REGION_OPERATORS = 1_000
DECLARATION_TURNOVER_YEARS = 2.0
WORKING_DAYS_PER_YEAR = 12 * WORKING_DAYS_PER_MONTH
# Contracts with the ARS (since 2018 only experiments, activity outside the parcours, insurer or private
# offers: domain §2.3) are rare: about one file every two working days in a region.
ARS_CONTRACTS_PER_WEEKDAY = 0.5


@dataclass(frozen=True)
class ContractsGenerator:
    """The ARS's contracts casework in a region (domain §2.3; the casework of ars-casework.md): a
    télésurveillance operator's declaration, which an ARS officer opens and acknowledges the same day or asks
    documents for; an ARS contract a promoter files and submits, which an officer opens and finds complete
    (its approval and signature come on later days). Each officer's review opens the file first (the Get is
    audited and in the case's timeline), as the console does."""

    kind: str = "contracts"
    declarations_per_weekday: float = REGION_OPERATORS / DECLARATION_TURNOVER_YEARS / WORKING_DAYS_PER_YEAR
    contracts_per_weekday: float = ARS_CONTRACTS_PER_WEEKDAY
    documents_asked: float = 0.2

    def cases_per_weekday(self) -> float:
        return self.declarations_per_weekday + self.contracts_per_weekday

    def steps(self, rng: random.Random, number: int) -> list[Step]:
        case = f"{self.kind}-{number}"
        at = arrival(rng)
        found: list[tuple[float, str]] = []
        if rng.random() < self.declarations_per_weekday / self.cases_per_weekday():
            found.append((at, "CreateOperatorDeclaration"))
            at += lognormal(rng, 2 * HOUR)
            found.append((at, "GetOperatorDeclaration"))
            at += lognormal(rng, 5 * 60)
            if rng.random() < self.documents_asked:
                found.append((at, "RequestOperatorDeclarationDocuments"))
            else:
                found.append((at, "AcknowledgeOperatorDeclaration"))
        else:
            found.append((at, "CreateArsContract"))
            at += lognormal(rng, 30 * 60)
            found.append((at, "SubmitArsContract"))
            at += lognormal(rng, 3 * HOUR)
            found.append((at, "GetArsContract"))
            at += lognormal(rng, 10 * 60)
            found.append((at, "MarkArsContractComplete"))
        return _steps(case, self.kind, found)


GENERATORS: tuple[CaseGenerator, ...] = (
    TeleconsultationGenerator(),
    TeleexpertiseGenerator(),
    ContractsGenerator(),
)


@dataclass(frozen=True)
class Day:
    steps: Sequence[Step]
    cases: dict[str, int]

    def window(self, start: float, seconds: float) -> list[Step]:
        """The steps of [start, start + seconds) of the day, in time order."""
        return [s for s in self.steps if start <= s.at < start + seconds]

    def case_steps(self, case: str) -> list[Step]:
        return sorted((s for s in self.steps if s.case == case), key=lambda s: s.index)

    def operations(self) -> Counter[str]:
        return Counter(s.operation for s in self.steps)

    def per_hour(self, operation: str | None = None) -> dict[int, int]:
        counts: Counter[int] = Counter(
            int(s.at // HOUR) for s in self.steps if operation is None or s.operation == operation
        )
        return {h: counts.get(h, 0) for h in range(24)}


def region_day(
    generators: Sequence[CaseGenerator] = GENERATORS, *, seed: int = 2026, scale: float = 1.0
) -> Day:
    """A region's weekday: the number of cases of each kind drawn around its mean (Poisson), each with its
    steps. `scale` multiplies the volumes (tests use a small day)."""
    rng = random.Random(seed)
    steps: list[Step] = []
    cases: dict[str, int] = {}
    for generator in generators:
        count = _poisson(rng, generator.cases_per_weekday() * scale)
        cases[generator.kind] = count
        for number in range(count):
            steps += generator.steps(rng, number)
    steps.sort()
    return Day(steps=steps, cases=cases)


def _poisson(rng: random.Random, mean: float) -> int:
    # Normal approximation for the large means here; exact enough for sizing.
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    count, threshold, product = 0, math.exp(-mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def peak_hour_rate(day: Day) -> float:
    """Calls per second in the busiest hour of the day."""
    return max(day.per_hour().values()) / HOUR
