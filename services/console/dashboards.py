""" "Pilotage": the dashboards' numbers, read from the services as the officer, each chart with its table.

Every chart is a `Chart`: its series are what Chart.js draws (services/console/static/console.js) and what the
table under it and its CSV download show, so the three never disagree. A source that is not there yet (the
activity reports of expertise and scheduling) or that refuses the officer is shown as unavailable with its
reason, never as zeros.
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2
from parcours.directory.v1 import directory_pb2

from services.console.french import KINDS, STATES, label, zone_of
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
            "series": [{"name": name, "values": values} for name, values in self.series],
            "unit": self.unit,
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


CHARTS = ("etats", "delais", "expirations", "teleexpertise", "teleconsultation", "facturation")


async def build(hub: Hub, officer: Officer, now: datetime | None = None) -> list[Chart]:
    now = now or datetime.now(UTC)
    charts = await asyncio.gather(
        cases_by_state(hub, officer),
        lead_times(hub, officer, now),
        expiring(hub, officer, now),
        billing_totals(hub, officer, now),
    )
    by_state, delays, expirations, billing = charts
    teleexpertise = Chart(
        "teleexpertise",
        "Téléexpertises par GHT et spécialité",
        "Volumes, délais de réponse et taux de dépassement des délais",
        "bar",
        unavailable="Le rapport d'activité de téléexpertise n'est pas encore proposé par le service "
        "d'expertise.",
    )
    teleconsultation = Chart(
        "teleconsultation",
        "Téléconsultations par GHT",
        "Volumes et taux de rendez-vous non honorés",
        "bar",
        unavailable="Le rapport d'activité de téléconsultation n'est pas encore proposé par le service de "
        "programmation.",
    )
    return [by_state, delays, expirations, teleexpertise, teleconsultation, billing]


async def cases_by_state(hub: Hub, officer: Officer) -> Chart:
    chart = Chart(
        "etats",
        "Dossiers par état et par type",
        "Nombre de dossiers de votre périmètre, ouverts et clos, selon leur état",
        "bar",
        unit="dossiers",
    )
    try:
        summaries = await _all_cases(
            hub, officer, contracts_pb2.ListCasesRequest(tab=contracts_pb2.TAB_ALL, include_closed=True)
        )
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    counts: Counter[tuple[str, str]] = Counter(
        (contracts_pb2.CaseKind.Name(s.kind), s.state) for s in summaries
    )
    states = sorted(
        {state for _, state in counts}, key=lambda s: list(STATES).index(s) if s in STATES else 99
    )
    kinds = [k for k in KINDS if any(kind == k for kind, _ in counts)]
    chart.labels = [label(STATES, s) for s in states]
    chart.series = [(KINDS[k], [float(counts[(k, s)]) for s in states]) for k in kinds]
    return chart


async def lead_times(hub: Hub, officer: Officer, now: datetime) -> Chart:
    chart = Chart(
        "delais",
        "Délais de décision par mois",
        "Médiane et 90e centile, en jours, du dépôt à la décision, selon le mois de la décision",
        "line",
        unit="jours",
    )
    try:
        summaries = await _all_cases(
            hub, officer, contracts_pb2.ListCasesRequest(tab=contracts_pb2.TAB_PROCESSED, include_closed=True)
        )
        decided = await _decisions(hub, officer, summaries)
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    zone = zone_of(officer.region)
    months = last_months(now.astimezone(zone).date())
    by_month: dict[tuple[int, int], list[float]] = defaultdict(list)
    for created, decided_at in decided:
        local = decided_at.astimezone(zone)
        by_month[(local.year, local.month)].append((decided_at - created).total_seconds() / 86400)
    chart.labels = [_month_label(y, m) for y, m in months]
    chart.series = [
        ("Médiane", [round(statistics.median(by_month[m]), 1) if by_month[m] else 0.0 for m in months]),
        ("90e centile", [round(_p90(by_month[m]), 1) if by_month[m] else 0.0 for m in months]),
        ("Décisions", [float(len(by_month[m])) for m in months]),
    ]
    return chart


async def expiring(hub: Hub, officer: Officer, now: datetime) -> Chart:
    chart = Chart(
        "expirations",
        "Contrats et agréments arrivant à échéance dans les 90 jours",
        "Nombre de contrats et d'agréments en vigueur dont la validité prend fin, par semaine",
        "bar",
        unit="dossiers",
    )
    try:
        summaries = await _all_cases(
            hub,
            officer,
            contracts_pb2.ListCasesRequest(
                tab=contracts_pb2.TAB_ALL,
                expiring_within_days=90,
                order_by=contracts_pb2.CASE_ORDER_EXPIRE_TIME,
            ),
        )
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    zone = zone_of(officer.region)
    start = now.astimezone(zone).date()
    weeks = [start + timedelta(days=7 * i) for i in range(13)]
    counts: Counter[tuple[int, str]] = Counter()
    for s in summaries:
        if not s.HasField("expire_time"):
            continue
        end = s.expire_time.ToDatetime(tzinfo=UTC).astimezone(zone).date()
        index = min(max((end - start).days // 7, 0), 12)
        counts[(index, contracts_pb2.CaseKind.Name(s.kind))] += 1
    chart.labels = [f"semaine du {w.day:02d}/{w.month:02d}" for w in weeks]
    kinds = sorted({k for _, k in counts}) or ["CASE_KIND_ARS_CONTRACT"]
    chart.series = [(KINDS[k], [float(counts[(i, k)]) for i in range(13)]) for k in kinds]
    return chart


async def billing_totals(hub: Hub, officer: Officer, now: datetime) -> Chart:
    chart = Chart(
        "facturation",
        "Facturation par code d'acte et par mois",
        "Montants facturés (tarif conventionnel, annulations déduites) par les établissements de la région",
        "bar",
        unit="€",
    )
    if not officer.region:
        chart.unavailable = (
            "La facturation est suivie par région : votre compte n'est rattaché à aucune région."
        )
        return chart
    try:
        hub.require("billing")
        hub.require("directory")
        assert hub.billing is not None
        assert hub.directory is not None
        establishments = await _establishments(hub, officer, officer.region)
        zone = zone_of(officer.region)
        months = last_months(now.astimezone(zone).date())
        first = date(months[0][0], months[0][1], 1)
        last = now.astimezone(zone).date()
        totals: dict[tuple[str, tuple[int, int]], Decimal] = defaultdict(Decimal)
        for establishment in establishments:
            token = ""
            while True:
                response = await hub.call(
                    officer,
                    "billing",
                    hub.billing.ListCharges,
                    billing_pb2.ListChargesRequest(
                        establishment=establishment,
                        start_date=_pdate(first),
                        end_date=_pdate(last),
                        page_size=500,
                        page_token=token,
                    ),
                )
                for charge in response.charges:
                    amount = Decimal(charge.amount.units) + Decimal(charge.amount.nanos) / Decimal(10**9)
                    totals[(charge.code, (charge.act_date.year, charge.act_date.month))] += amount
                token = response.next_page_token
                if not token:
                    break
    except ServiceError as error:
        chart.unavailable = _why(error)
        return chart
    codes = sorted({code for code, _ in totals})
    chart.labels = [_month_label(y, m) for y, m in months]
    chart.series = [(code, [float(totals[(code, m)]) for m in months]) for code in codes]
    if not codes:
        chart.note = "Aucun acte facturé sur la période."
    return chart


async def _establishments(hub: Hub, officer: Officer, region: str) -> list[str]:
    assert hub.directory is not None
    names: list[str] = []
    token = ""
    while True:
        response = await hub.call(
            officer,
            "directory",
            hub.directory.ListEstablishments,
            directory_pb2.ListEstablishmentsRequest(
                region=f"regions/{region}", page_size=500, page_token=token
            ),
        )
        names += [e.name for e in response.establishments]
        token = response.next_page_token
        if not token:
            return names


async def _all_cases(
    hub: Hub, officer: Officer, request: contracts_pb2.ListCasesRequest
) -> list[contracts_pb2.CaseSummary]:
    hub.require("contracts")
    assert hub.contracts is not None
    request.page_size = 500
    found: list[contracts_pb2.CaseSummary] = []
    while True:
        response = await hub.call(officer, "contracts", hub.contracts.ListCases, request)
        found += response.cases
        if not response.next_page_token:
            return found
        request.page_token = response.next_page_token


async def _decisions(
    hub: Hub, officer: Officer, summaries: Sequence[contracts_pb2.CaseSummary]
) -> list[tuple[datetime, datetime]]:
    """(filed, decided) of the closed contracts and declarations, from their full records (List RPCs carry
    the progress with its decision time; the inbox rows do not)."""
    assert hub.contracts is not None
    wanted = {s.name for s in summaries}
    pairs: list[tuple[datetime, datetime]] = []
    for rpc, field_name, request_class in (
        ("ListArsContracts", "ars_contracts", contracts_pb2.ListArsContractsRequest),
        ("ListOperatorDeclarations", "operator_declarations", contracts_pb2.ListOperatorDeclarationsRequest),
        (
            "ListIntermediaryContractReviews",
            "intermediary_contract_reviews",
            contracts_pb2.ListIntermediaryContractReviewsRequest,
        ),
    ):
        token = ""
        while True:
            response = await hub.call(
                officer,
                "contracts",
                getattr(hub.contracts, rpc),
                request_class(page_size=500, page_token=token),
            )
            for case in getattr(response, field_name):
                if (
                    case.name in wanted
                    and case.progress.HasField("decide_time")
                    and case.HasField("create_time")
                ):
                    pairs.append(
                        (
                            case.create_time.ToDatetime(tzinfo=UTC),
                            case.progress.decide_time.ToDatetime(tzinfo=UTC),
                        )
                    )
            token = response.next_page_token
            if not token:
                break
    return pairs


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def _pdate(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _why(error: ServiceError) -> str:
    from services.console.french import refusal

    return f"Données indisponibles : {refusal(error.reason, error.code.name, error.violations)}"
