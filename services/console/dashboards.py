""" "Pilotage": the dashboards' numbers, read from the services as the officer, each chart with its table.

Every chart is a `Chart`: its series are what Chart.js draws (services/console/static/console.js) and what the
table under it and its CSV download show, so the three never disagree. A source that is not there or that
refuses the officer is shown as unavailable with its reason, never as zeros.

The casework charts (cases by state, decision lead times, expirations) come from the contracts service's
GetCaseActivityReport: one call, aggregated by the service over the officer's scope, however many cases.
Activity (téléexpertise, teleconsultation, billing) comes from the services' activity reports, one call per
page of report (500 rows), scoped by the services to the officer's region: counts, durations and amounts per
region, GHT, month and specialty or code, never a patient. The charts add the rows of the last twelve months
up per GHT (and specialty) or per month and code; rates are recomputed from the added counts. Medians and
90th percentiles of different months do not add up: the answer-time chart shows their average over the
months, weighted by the answers of each month, and says so.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2
from parcours.type.v1 import practice_pb2

from services.console.french import KINDS, SPECIALTIES, STATES, label, zone_of
from services.console.hub import Hub, ServiceError
from services.console.security import Officer

MONTHS = ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."]


@dataclass
class Chart:
    key: str
    title: str
    description: str
    kind: str  # bar | line
    labels: list[str] = field(default_factory=list)
    # (name, values) per series.
    series: list[tuple[str, list[float]]] = field(default_factory=list)
    unit: str = ""
    unavailable: str = ""
    note: str = ""
    # Series drawn as lines against a second axis, in `unit_right` (e.g. rates beside counts).
    right: list[str] = field(default_factory=list)
    unit_right: str = ""

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["", *[name for name, _ in self.series]])
        for i, row_label in enumerate(self.labels):
            writer.writerow([row_label, *[_csv_number(values[i]) for _, values in self.series]])
        return out.getvalue()

    def rows(self) -> list[tuple[str, list[float]]]:
        return [
            (row_label, [values[i] for _, values in self.series]) for i, row_label in enumerate(self.labels)
        ]

    def chart_json(self) -> dict[str, object]:
        return {
            "type": self.kind,
            "labels": self.labels,
            "series": [
                {"name": name, "values": values, "right": name in self.right} for name, values in self.series
            ],
            "unit": self.unit,
            "unitRight": self.unit_right,
        }


def _csv_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".replace(".", ",")


def _month_label(year: int, month: int) -> str:
    return f"{MONTHS[month - 1]} {year}"


def last_months(today: date, count: int = 12) -> list[tuple[int, int]]:
    months = []
    year, month = today.year, today.month
    for _ in range(count):
        months.append((year, month))
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return list(reversed(months))


CHARTS = (
    "etats",
    "delais",
    "expirations",
    "teleexpertise",
    "reponses-teleexpertise",
    "teleconsultation",
    "facturation",
)
NO_REGION = "Les rapports d'activité sont suivis par région : votre compte n'est rattaché à aucune région."
REPORT_PAGE_SIZE = 500
OUTSIDE_GHT = "Hors GHT"


async def build(hub: Hub, officer: Officer, now: datetime | None = None) -> list[Chart]:
    now = now or datetime.now(UTC)
    months = last_months(now.astimezone(zone_of(officer.region)).date())
    ghts = await _ght_names(hub, officer)
    casework, teleexpertise, teleconsultation, billing = await asyncio.gather(
        casework_charts(hub, officer, months, now),
        teleexpertise_activity(hub, officer, months, ghts),
        teleconsultation_activity(hub, officer, months, ghts),
        billing_totals(hub, officer, months),
    )
    return [*casework, *teleexpertise, teleconsultation, billing]


def _casework_frames() -> tuple[Chart, Chart, Chart]:
    return (
        Chart(
            "etats",
            "Dossiers par état et par type",
            "Nombre de dossiers de votre périmètre, ouverts et clos, selon leur état",
            "bar",
            unit="dossiers",
        ),
        Chart(
            "delais",
            "Délais de décision par mois",
            "Médiane et 90e centile, en jours, du dépôt à la décision, selon le mois de la décision",
            "line",
            unit="jours",
        ),
        Chart(
            "expirations",
            "Contrats et agréments arrivant à échéance dans les 90 jours",
            "Nombre de contrats et d'agréments en vigueur dont la validité prend fin, par semaine",
            "bar",
            unit="dossiers",
        ),
    )


async def casework_charts(
    hub: Hub, officer: Officer, months: Sequence[tuple[int, int]], now: datetime
) -> list[Chart]:
    """The three contracts charts from one GetCaseActivityReport (the service aggregates: no paging through
    the cases, however many there are)."""
    by_state, delays, expirations = _casework_frames()
    charts = [by_state, delays, expirations]
    try:
        hub.require("contracts")
        assert hub.contracts is not None
        report = await hub.call(
            officer,
            "contracts",
            hub.contracts.GetCaseActivityReport,
            contracts_pb2.GetCaseActivityReportRequest(**_report_window(months), expiring_within_days=90),
        )
    except ServiceError as error:
        for chart in charts:
            chart.unavailable = _why(error)
        return charts

    counts = {(contracts_pb2.CaseKind.Name(r.kind), r.state): r.count for r in report.state_counts}
    states = sorted(
        {state for _, state in counts}, key=lambda s: list(STATES).index(s) if s in STATES else 99
    )
    kinds = [k for k in KINDS if any(kind == k for kind, _ in counts)]
    by_state.labels = [label(STATES, s) for s in states]
    by_state.series = [(KINDS[k], [float(counts.get((k, s), 0)) for s in states]) for k in kinds]

    lead = {(m.month.year, m.month.month): m for m in report.lead_times}

    def days(month: tuple[int, int], field_name: str) -> float:
        found = lead.get(month)
        if found is None:
            return 0.0
        duration: Duration = getattr(found, field_name)
        return round(duration.ToTimedelta().total_seconds() / 86400, 1)

    delays.labels = [_month_label(y, m) for y, m in months]
    delays.series = [
        ("Médiane", [days(m, "median_lead_time") for m in months]),
        ("90e centile", [days(m, "p90_lead_time") for m in months]),
        ("Décisions", [float(lead[m].decisions) if m in lead else 0.0 for m in months]),
    ]

    start = now.astimezone(zone_of(officer.region)).date()
    weeks = [start + timedelta(days=7 * i) for i in range(13)]
    ending: Counter[tuple[int, str]] = Counter()
    for e in report.expirations:
        end = date(e.expire_date.year, e.expire_date.month, e.expire_date.day)
        index = min(max((end - start).days // 7, 0), 12)
        ending[(index, contracts_pb2.CaseKind.Name(e.kind))] += e.count
    expirations.labels = [f"semaine du {w.day:02d}/{w.month:02d}" for w in weeks]
    expiring_kinds = sorted({k for _, k in ending}) or ["CASE_KIND_ARS_CONTRACT"]
    expirations.series = [(KINDS[k], [float(ending[(i, k)]) for i in range(13)]) for k in expiring_kinds]
    return charts


def _report_window(months: Sequence[tuple[int, int]]) -> dict[str, date_pb2.Date]:
    """The report's months (day 0), first and last of the chart's."""
    (first_year, first_month), (last_year, last_month) = months[0], months[-1]
    return {
        "start_month": date_pb2.Date(year=first_year, month=first_month, day=0),
        "end_month": date_pb2.Date(year=last_year, month=last_month, day=0),
    }


async def _report_rows(
    hub: Hub, officer: Officer, service: str, method: Callable[..., Awaitable[Any]], request: Any
) -> list[Any]:
    """Every row of an activity report: one call per page."""
    request.page_size = REPORT_PAGE_SIZE
    found: list[Any] = []
    while True:
        response = await hub.call(officer, service, method, request)
        found += response.rows
        if not response.next_page_token:
            return found
        request.page_token = response.next_page_token


async def _ght_names(hub: Hub, officer: Officer) -> dict[str, str]:
    """`ghts/{id}` → display name of the officer's region's GHTs (none when the directory cannot say)."""
    if hub.directory is None or not officer.region:
        return {}
    try:
        response = await hub.call(
            officer,
            "directory",
            hub.directory.ListGhts,
            directory_pb2.ListGhtsRequest(region=f"regions/{officer.region}", page_size=500),
        )
    except ServiceError:
        return {}
    return {g.name: g.display_name for g in response.ghts}


def _ght_label(ghts: dict[str, str], ght: str) -> str:
    if not ght:
        return OUTSIDE_GHT
    return ghts.get(ght, ght.removeprefix("ghts/"))


def _percent(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


@dataclass
class _Expertise:
    requests: int = 0
    completed: int = 0
    breached: int = 0
    due: int = 0
    timed: int = 0  # answered requests of the months with answer times
    median_seconds: float = 0.0  # sums weighted by `completed`
    p90_seconds: float = 0.0


async def teleexpertise_activity(
    hub: Hub, officer: Officer, months: Sequence[tuple[int, int]], ghts: dict[str, str]
) -> list[Chart]:
    volumes = Chart(
        "teleexpertise",
        "Téléexpertises par GHT et spécialité",
        "Demandes des douze derniers mois, réponses et dépassements du délai de réponse (GHT du requérant), "
        "avec le taux de dépassement",
        "bar",
        unit="demandes",
        right=["Taux de dépassement (%)"],
        unit_right="%",
    )
    times = Chart(
        "reponses-teleexpertise",
        "Délais de réponse en téléexpertise par GHT et spécialité",
        "Délai de la demande au compte rendu, en heures, sur les demandes ayant reçu une réponse",
        "bar",
        unit="heures",
        note="Médiane et 90e centile de chaque mois du rapport d'activité, en moyenne sur les douze mois "
        "pondérée par le nombre de réponses du mois (les médianes de mois différents ne s'additionnent pas).",
    )
    if not officer.region:
        volumes.unavailable = times.unavailable = NO_REGION
        return [volumes, times]
    try:
        hub.require("expertise")
        assert hub.expertise is not None
        found = await _report_rows(
            hub,
            officer,
            "expertise",
            hub.expertise.GetTeleexpertiseActivityReport,
            expertise_pb2.GetTeleexpertiseActivityReportRequest(
                region=f"regions/{officer.region}", **_report_window(months)
            ),
        )
    except ServiceError as error:
        volumes.unavailable = times.unavailable = _why(error)
        return [volumes, times]
    groups: dict[tuple[str, str], _Expertise] = defaultdict(_Expertise)
    for row in found:
        specialty = label(SPECIALTIES, practice_pb2.Specialty.Name(row.specialty))
        group = groups[(_ght_label(ghts, row.ght), specialty)]
        group.requests += row.requests
        group.completed += row.completed
        group.breached += row.breached
        group.due += row.due
        if row.completed and row.HasField("median_answer_time"):
            group.timed += row.completed
            group.median_seconds += row.completed * row.median_answer_time.ToTimedelta().total_seconds()
            group.p90_seconds += row.completed * row.p90_answer_time.ToTimedelta().total_seconds()
    keys = sorted(groups)
    volumes.labels = [f"{ght} · {specialty}" for ght, specialty in keys]
    volumes.series = [
        ("Demandes", [float(groups[k].requests) for k in keys]),
        ("Réponses", [float(groups[k].completed) for k in keys]),
        ("Dépassements", [float(groups[k].breached) for k in keys]),
        ("Taux de dépassement (%)", [_percent(groups[k].breached, groups[k].due) for k in keys]),
    ]
    if not keys:
        volumes.note = "Aucune demande de téléexpertise sur la période."
    answered = [k for k in keys if groups[k].timed]
    times.labels = [f"{ght} · {specialty}" for ght, specialty in answered]
    times.series = [
        ("Délai médian", [round(groups[k].median_seconds / groups[k].timed / 3600, 1) for k in answered]),
        ("90e centile", [round(groups[k].p90_seconds / groups[k].timed / 3600, 1) for k in answered]),
    ]
    return [volumes, times]


@dataclass
class _Consultations:
    appointments: int = 0
    fulfilled: int = 0
    no_shows: int = 0
    cancelled: int = 0
    offered: int = 0
    used: int = 0


async def teleconsultation_activity(
    hub: Hub, officer: Officer, months: Sequence[tuple[int, int]], ghts: dict[str, str]
) -> Chart:
    chart = Chart(
        "teleconsultation",
        "Téléconsultations par GHT",
        "Rendez-vous des douze derniers mois (lieu d'exercice du téléconsultant), rendez-vous non honorés et "
        "occupation des créneaux",
        "bar",
        unit="rendez-vous",
        right=["Taux de rendez-vous non honorés (%)", "Taux d'occupation des créneaux (%)"],
        unit_right="%",
    )
    if not officer.region:
        chart.unavailable = NO_REGION
        return chart
    try:
        hub.require("scheduling")
        assert hub.scheduling is not None
        found = await _report_rows(
            hub,
            officer,
            "scheduling",
            hub.scheduling.GetTeleconsultationActivityReport,
            scheduling_pb2.GetTeleconsultationActivityReportRequest(
                region=f"regions/{officer.region}", **_report_window(months)
            ),
        )
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    groups: dict[str, _Consultations] = defaultdict(_Consultations)
    for row in found:
        group = groups[_ght_label(ghts, row.ght)]
        group.appointments += row.appointments
        group.fulfilled += row.fulfilled
        group.no_shows += row.no_shows
        group.cancelled += row.cancelled
        group.offered += row.slots_offered
        group.used += row.slots_used
    keys = sorted(groups)
    chart.labels = keys
    chart.series = [
        ("Rendez-vous", [float(groups[k].appointments) for k in keys]),
        ("Honorés", [float(groups[k].fulfilled) for k in keys]),
        ("Non honorés", [float(groups[k].no_shows) for k in keys]),
        ("Annulés", [float(groups[k].cancelled) for k in keys]),
        (
            "Taux de rendez-vous non honorés (%)",
            [_percent(groups[k].no_shows, groups[k].fulfilled + groups[k].no_shows) for k in keys],
        ),
        ("Taux d'occupation des créneaux (%)", [_percent(groups[k].used, groups[k].offered) for k in keys]),
    ]
    if not keys:
        chart.note = "Aucune téléconsultation sur la période."
    return chart


async def billing_totals(hub: Hub, officer: Officer, months: Sequence[tuple[int, int]]) -> Chart:
    chart = Chart(
        "facturation",
        "Facturation par code d'acte et par mois",
        "Montants facturés (tarif conventionnel, annulations déduites) par les établissements de la région",
        "bar",
        unit="€",
    )
    if not officer.region:
        chart.unavailable = NO_REGION
        return chart
    try:
        hub.require("billing")
        assert hub.billing is not None
        found = await _report_rows(
            hub,
            officer,
            "billing",
            hub.billing.GetBillingActivityReport,
            billing_pb2.GetBillingActivityReportRequest(
                region=f"regions/{officer.region}", **_report_window(months)
            ),
        )
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    totals: dict[tuple[str, tuple[int, int]], Decimal] = defaultdict(Decimal)
    for row in found:
        amount = Decimal(row.amount.units) + Decimal(row.amount.nanos) / Decimal(10**9)
        totals[(row.code, (row.month.year, row.month.month))] += amount
    codes = sorted({code for code, _ in totals})
    chart.labels = [_month_label(y, m) for y, m in months]
    chart.series = [(code, [float(totals[(code, m)]) for m in months]) for code in codes]
    if not codes:
        chart.note = "Aucun acte facturé sur la période."
    return chart


def _why(error: ServiceError) -> str:
    from services.console.french import refusal

    return f"Données indisponibles : {refusal(error.reason, error.code.name, error.violations)}"
