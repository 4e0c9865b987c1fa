"""The dashboards ("Pilotage") over the real services: what billing recorded shows in the officer's region's
chart, its table and its CSV say the same, another region does not see it, and sources that are not there
yet say so instead of drawing zeros."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc

from services.console.dashboards import MONTHS
from services.console.french import PARIS
from services.kit.pki import DevPki
from tests.billing.builders import teleexpertise
from tests.console.conftest import RunningConsole
from tests.console.support import chart_tables, sign_in
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


async def test_sources_not_there_yet_are_said_unavailable_not_drawn_as_zeros(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "agent84")
        page = await client.get(f"{console.url}/pilotage")
    tables = chart_tables(page.text)
    # Téléexpertise and teleconsultation reports are not offered by their services yet: no table, a notice.
    assert "teleexpertise" not in tables
    assert "teleconsultation" not in tables
    assert "rapport d&#39;activité de téléexpertise n&#39;est pas encore proposé" in page.text
    # This console is not connected to a contracts service: its charts say so.
    assert "etats" not in tables
    assert page.text.count("Ce service n&#39;est pas raccordé à la console.") == 3
    # The billing chart is drawn: a canvas with its data and an accessible name.
    assert 'id="c-facturation" role="img"' in page.text


async def test_an_ordre_reviewer_has_no_regional_billing(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "ordre42")
        page = await client.get(f"{console.url}/pilotage")
    assert "votre compte n&#39;est rattaché à aucune région" in page.text
    assert "facturation" not in chart_tables(page.text)
