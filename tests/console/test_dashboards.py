"""The dashboards ("Pilotage") over the real services' activity reports: what billing recorded, téléexpertise
requests and teleconsultation slots show in their region's charts and not in another region's, each chart's
table and CSV say the same; the contracts charts come from the contracts service."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.console.dashboards import MONTHS
from services.console.french import PARIS
from services.kit.pki import DevPki
from tests.billing.builders import teleexpertise
from tests.console.conftest import RunningConsole
from tests.console.support import chart_tables, seed_activity, sign_in
from tests.support import component_channel, request_id


def _this_month() -> str:
    now = datetime.now(UTC).astimezone(PARIS)
    return f"{MONTHS[now.month - 1]} {now.year}"


async def _billing_table(client: httpx.AsyncClient, url: str) -> dict[str, dict[str, float]]:
    page = await client.get(f"{url}/pilotage")
    assert page.status_code == 200
    return chart_tables(page.text).get("facturation", {})


async def test_a_recorded_teleexpertise_shows_in_its_regions_billing_chart_only(
    console: RunningConsole, pki: DevPki, billing_address: str
) -> None:
    month = _this_month()
    async with httpx.AsyncClient() as officer84, httpx.AsyncClient() as officer93:
        await sign_in(officer84, console.url, "agent84")
        await sign_in(officer93, console.url, "agent93")
        before84 = (await _billing_table(officer84, console.url)).get(month, {})
        before93 = (await _billing_table(officer93, console.url)).get(month, {})

        # A téléexpertise at an establishment of the GHT Loire (region 84), recorded as the workflows do.
        billing = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))
        when = datetime.now(UTC) - timedelta(hours=1)
        recorded = await billing.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(),
                act_id=f"act-{uuid.uuid4()}",
                patient=f"patients/{uuid.uuid4()}",
                act=teleexpertise(when),
            )
        )

        after84 = (await _billing_table(officer84, console.url)).get(month, {})
        after93 = (await _billing_table(officer93, console.url)).get(month, {})
        # TE2 for the expert, RQD for the requester, at this year's tariffs.
        billed = {c.code: c.amount.units + c.amount.nanos / 1e9 for c in recorded.charges}
        assert set(billed) == {"TE2", "RQD"}
        for code, amount in billed.items():
            assert after84.get(code, 0) - before84.get(code, 0) == amount
        assert after93 == before93

        # The CSV download holds the table's numbers.
        download = await officer84.get(f"{console.url}/pilotage/facturation.csv")
        assert download.headers["content-disposition"] == 'attachment; filename="pilotage-facturation.csv"'
        rows = list(csv.reader(io.StringIO(download.text.lstrip("\ufeff")), delimiter=";"))
        header, body = rows[0], {r[0]: r[1:] for r in rows[1:]}
        assert float(body[month][header.index("TE2") - 1].replace(",", ".")) == after84["TE2"]


async def _tables(client: httpx.AsyncClient, url: str) -> dict[str, dict[str, dict[str, float]]]:
    page = await client.get(f"{url}/pilotage")
    assert page.status_code == 200
    return chart_tables(page.text)


async def test_teleexpertise_and_teleconsultation_activity_shows_in_its_regions_charts_only(
    console: RunningConsole, seeded_pool: asyncpg.Pool
) -> None:
    ght = await seed_activity(seeded_pool)
    async with httpx.AsyncClient() as officer84, httpx.AsyncClient() as officer93:
        await sign_in(officer84, console.url, "agent84")
        await sign_in(officer93, console.url, "agent93")
        tables84 = await _tables(officer84, console.url)
        tables93 = await _tables(officer93, console.url)
        csv84 = await officer84.get(f"{console.url}/pilotage/teleexpertise.csv")

    row = f"{ght} · Dermatologie"
    assert tables84["teleexpertise"][row] == {
        "Demandes": 2,
        "Réponses": 1,
        "Dépassements": 1,
        "Taux de dépassement (%)": 50.0,
    }
    assert tables84["reponses-teleexpertise"][row] == {"Délai médian": 2.0, "90e centile": 2.0}
    assert tables84["teleconsultation"][ght] == {
        "Rendez-vous": 0,
        "Honorés": 0,
        "Non honorés": 0,
        "Annulés": 0,
        "Taux de rendez-vous non honorés (%)": 0.0,
        "Taux d'occupation des créneaux (%)": 40.0,
    }
    # Region 93's officer reads the same reports, scoped by the services to region 93.
    assert row not in tables93.get("teleexpertise", {})
    assert row not in tables93.get("reponses-teleexpertise", {})
    assert ght not in tables93.get("teleconsultation", {})
    # The CSV download holds the table's numbers (French decimals).
    rows = list(csv.reader(io.StringIO(csv84.text.lstrip("\ufeff")), delimiter=";"))
    assert dict(zip(rows[0][1:], {r[0]: r[1:] for r in rows[1:]}[row], strict=True)) == {
        "Demandes": "2",
        "Réponses": "1",
        "Dépassements": "1",
        "Taux de dépassement (%)": "50",
    }


async def test_contracts_charts_come_from_the_contracts_service_and_activity_charts_are_drawn(
    console: RunningConsole,
) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "agent84")
        page = await client.get(f"{console.url}/pilotage")
    tables = chart_tables(page.text)
    # The console is connected to the contracts service: its three charts have their table, none says
    # its source is missing (tests/console/test_e2e.py checks their numbers against the API's).
    assert {"etats", "delais", "expirations"} <= set(tables)
    assert "pas raccordé" not in page.text
    # The activity charts are drawn: a canvas with its data and an accessible name each.
    for key in (
        "etats",
        "delais",
        "expirations",
        "teleexpertise",
        "reponses-teleexpertise",
        "teleconsultation",
    ):
        assert f'id="c-{key}" role="img"' in page.text


async def test_an_ordre_reviewer_has_no_regional_activity(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "ordre42")
        page = await client.get(f"{console.url}/pilotage")
    assert page.text.count("votre compte n&#39;est rattaché à aucune région") == 4
    tables = chart_tables(page.text)
    for key in ("teleexpertise", "reponses-teleexpertise", "teleconsultation", "facturation"):
        assert key not in tables
