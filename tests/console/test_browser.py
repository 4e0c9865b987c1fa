"""In a real browser: signing in through the provider's page, the dashboards' charts drawn with the table's
numbers, CSRF refusal of a forged form, logout, and axe-core on the other pages (test_e2e.py runs it on the
inbox, a case page and the dashboards). Screenshots of each step go to build/console-tests/screenshots/."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from playwright.async_api import Browser

from services.kit.pki import DevPki
from tests.billing.builders import teleexpertise
from tests.console.browser import axe_violations, browser, new_page, screenshot, sign_in_browser  # noqa: F401
from tests.console.conftest import RunningConsole
from tests.console.support import chart_tables, seed_activity
from tests.support import component_channel, request_id


async def test_an_officer_signs_in_in_the_browser_and_the_pages_pass_axe(
    browser: Browser,  # noqa: F811
    console: RunningConsole,
) -> None:
    page = await new_page(browser)
    await page.goto(f"{console.url}/connexion")
    assert await axe_violations(page) == [], "the login page"
    await sign_in_browser(page, console.url, "agent84", shot="login")
    await page.goto(f"{console.url}/preferences")
    assert "Camille Roche" in await page.inner_text("#qui")
    assert await axe_violations(page) == [], "the preferences page"
    await screenshot(page, "preferences")
    await page.goto(f"{console.url}/exports")
    assert await axe_violations(page) == [], "the exports page"
    await page.goto(f"{console.url}/notifications")
    assert await axe_violations(page) == [], "the notifications page"
    await page.context.close()


async def test_the_dashboards_draw_each_available_chart_with_the_tables_numbers(
    browser: Browser,  # noqa: F811
    console: RunningConsole,
    pki: DevPki,
    billing_address: str,
    seeded_pool: asyncpg.Pool,
) -> None:
    # Something billed this month in region 84, téléexpertises and teleconsultation slots, so that every
    # activity chart has data to draw.
    await seed_activity(seeded_pool)
    billing = billing_pb2_grpc.BillingServiceStub(component_channel(pki, billing_address, "workflows"))
    await billing.RecordAct(
        billing_pb2.RecordActRequest(
            request_id=request_id(),
            act_id=f"act-{uuid.uuid4()}",
            patient=f"patients/{uuid.uuid4()}",
            act=teleexpertise(datetime.now(UTC) - timedelta(hours=1)),
        )
    )
    page = await new_page(browser)
    await sign_in_browser(page, console.url, "agent84")
    await page.goto(f"{console.url}/pilotage")
    await page.wait_for_function("() => window.parcoursCharts !== undefined")
    drawn = await page.evaluate(
        "() => Object.fromEntries(Object.entries(window.parcoursCharts).map(([id, c]) => "
        "[id, {labels: c.data.labels, series: c.data.datasets.map(d => [d.label, d.data])}]))"
    )
    tables = chart_tables(await page.content())
    assert set(drawn) == {f"c-{key}" for key in tables}
    assert drawn, "at least one chart is drawn"
    for key in ("teleexpertise", "reponses-teleexpertise", "teleconsultation", "facturation"):
        assert any(v for _, values in drawn[f"c-{key}"]["series"] for v in values), f"{key} has data"
    for key, table in tables.items():
        chart = drawn[f"c-{key}"]
        assert chart["labels"] == list(table)
        for name, values in chart["series"]:
            assert [table[row][name] for row in table] == values
    # Each canvas was really painted by Chart.js (a non-blank bitmap).
    painted = await page.evaluate(
        "() => [...document.querySelectorAll('canvas[data-chart]')].every(c => c.toDataURL().length > 2000)"
    )
    assert painted
    await screenshot(page, "dashboards")
    assert await axe_violations(page) == [], "the dashboards"
    await page.context.close()


async def test_a_forged_form_without_its_token_is_refused_in_the_browser(
    browser: Browser,  # noqa: F811
    console: RunningConsole,
) -> None:
    page = await new_page(browser)
    await sign_in_browser(page, console.url, "agent93")
    await page.goto(f"{console.url}/preferences")
    # What another site's page would do: submit the form without the session's token.
    await page.evaluate(
        "() => document.querySelector(\"form[action='/preferences'] input[name=csrf_token]\").remove()"
    )
    await page.click("form[action='/preferences'] button[type=submit]")
    await page.wait_for_load_state()
    assert "Formulaire refusé" in await page.inner_text("main")
    await screenshot(page, "csrf-refused")
    # Logging out (with its token) ends the session at the console and at the provider.
    await page.goto(f"{console.url}/preferences")
    await page.click("text=Se déconnecter")
    await page.wait_for_load_state()
    if await page.locator("button[name=logout]").count():
        await page.click("button[name=logout]")
        await page.wait_for_url(f"{console.url}/connexion**")
    assert "Vous êtes déconnecté" in await page.inner_text("main")
    await page.goto(f"{console.url}/preferences")
    assert page.url.startswith(f"{console.url}/connexion")
    await page.context.close()
