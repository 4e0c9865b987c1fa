"""The end-to-end scenario of issue 11, in Debian's chromium against the real console, contracts service,
OpenID provider, PostgreSQL and Temporal. It WAITS FOR THE CONTRACTS SERVICE: `overdue_contract` (a region-84
contract whose review step is overdue, created through the contracts API as its promoter) skips until
services/contracts has a server; every browser step below is the console's and runs as written once it does.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.console.browser import axe_violations, browser, new_page, screenshot, sign_in_browser  # noqa: F401
from tests.console.conftest import WAITING, RunningConsole


@pytest.fixture
def overdue_contract(contracts_address: str) -> str:
    """`arsContracts/{id}`: submitted, complete, under ARS review, past its due time (region 84)."""
    pytest.skip(WAITING)


async def test_an_officer_finds_an_overdue_contract_approves_it_and_another_region_cannot_see_it(
    browser: Browser,  # noqa: F811
    console: RunningConsole,
    overdue_contract: str,
) -> None:
    case_url = f"{console.url}/dossiers/{overdue_contract}"
    page = await new_page(browser)
    await sign_in_browser(page, console.url, "agent84", shot="e2e")

    # The inbox filtered to overdue contracts lists it, flagged as late.
    await page.goto(f"{console.url}/dossiers?onglet=a-traiter&type=CASE_KIND_ARS_CONTRACT&en-retard=1")
    row = page.locator(f"#liste tr:has(a[href='/dossiers/{overdue_contract}'])")
    assert await row.count() == 1
    assert "en retard" in await row.inner_text()
    await screenshot(page, "e2e-3-inbox-overdue")
    assert await axe_violations(page) == [], "the inbox"

    # Its page; approve with a comment.
    await row.locator("a").first.click()
    await page.wait_for_url(case_url)
    assert await axe_violations(page) == [], "the case page"
    await page.fill("#m-approve", "Dossier complet, avis favorable du service.")
    await screenshot(page, "e2e-4-case-before")
    await page.click("#action-approve button[type=submit]")
    await page.wait_for_url(f"{case_url}?**")
    assert "Approuver" in await page.inner_text("[role=status]")
    timeline = await page.inner_text("#chronologie")
    assert "Approuvé" in timeline
    assert "Dossier complet, avis favorable du service." in timeline
    await screenshot(page, "e2e-5-case-approved")

    # It left the officer's "à traiter" (the signature is the director general's step).
    await page.goto(f"{console.url}/dossiers?onglet=a-traiter&type=CASE_KIND_ARS_CONTRACT")
    assert await page.locator(f"a[href='/dossiers/{overdue_contract}']").count() == 0

    # The dashboards draw every chart the contracts service feeds, with data.
    await page.goto(f"{console.url}/pilotage")
    await page.wait_for_function("() => window.parcoursCharts !== undefined")
    drawn = await page.evaluate("() => Object.keys(window.parcoursCharts)")
    assert {"c-etats", "c-delais", "c-expirations", "c-facturation"} <= set(drawn)
    await screenshot(page, "e2e-6-dashboards")
    await page.context.close()

    # Region 93's officer gets "not found" on the region-84 case's URL, as for a missing case.
    other = await new_page(browser)
    await sign_in_browser(other, console.url, "agent93")
    response = await other.goto(case_url)
    assert response is not None
    assert response.status == 404
    assert "Dossier introuvable" in await other.inner_text("main")
    await screenshot(other, "e2e-7-region-93-not-found")
    await other.context.close()
