"""The end-to-end scenario of issue 11, in Debian's chromium against the real console, contracts service,
OpenID provider, PostgreSQL and Temporal: a region-84 contract filed by its promoter through the contracts
API, its review step overdue (due two seconds after it opened, on a contracts service of the test's own),
found, opened and approved by the region's officer; hidden from region 93's."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from services.console.french import KINDS, STATES
from services.kit.pki import DevPki
from tests.console.browser import axe_violations, browser, new_page, screenshot, sign_in_browser  # noqa: F401
from tests.console.cases import (  # noqa: F401
    AGENT84,
    SECOND,
    HubFactory,
    cases_by_kind_and_state,
    contract_under_review,
    contracts_hub,
    overdue,
)
from tests.console.conftest import RunningConsole
from tests.console.support import chart_tables


@pytest.fixture
async def overdue_contract(contracts_hub: HubFactory) -> str:  # noqa: F811
    """`arsContracts/{id}`: submitted, complete, under ARS review, past its due time (region 84)."""
    hub = await contracts_hub(step_due_days={"ARS_REVIEW": 2 * SECOND})
    name = await contract_under_review(hub, title="Téléconsultation en EHPAD, bassin stéphanois")
    late = await overdue(hub, name)
    assert late.state == late.STATE_UNDER_REVIEW and not late.progress.current_step.claimant
    return name


async def test_an_officer_finds_an_overdue_contract_approves_it_and_another_region_cannot_see_it(
    browser: Browser,  # noqa: F811
    console: RunningConsole,
    overdue_contract: str,
    pki: DevPki,
) -> None:
    case_url = f"{console.url}/dossiers/{overdue_contract}"
    page = await new_page(browser)
    await sign_in_browser(page, console.url, "agent84", shot="e2e")

    # The inbox filtered to overdue contracts lists it, flagged as late.
    await page.goto(f"{console.url}/dossiers?onglet=a-traiter&type=CASE_KIND_ARS_CONTRACT&en-retard=1")
    row = page.locator(f"#liste tr:has(a[href='/dossiers/{overdue_contract}'])")
    assert await row.count() == 1
    assert "en retard" in (await row.text_content() or "").lower()  # a badge (capitals by its CSS)
    await screenshot(page, "e2e-3-inbox-overdue")
    assert await axe_violations(page) == [], "the inbox"

    # Its page. A comment form posted without its CSRF token (what another site's page would send) is
    # refused, and nothing is written.
    await row.locator("a").first.click()
    await page.wait_for_url(case_url)
    assert await axe_violations(page) == [], "the case page"
    forged = "form[action$='/commentaires']"
    await page.evaluate(f'() => document.querySelector("{forged} input[name=csrf_token]").remove()')
    await page.fill("#com-texte", "Commentaire d'un formulaire forgé")
    await page.click(f"{forged} button[type=submit]")
    await page.wait_for_load_state()
    assert "Formulaire refusé" in await page.inner_text("main")
    await screenshot(page, "e2e-4-csrf-refused")
    await page.goto(case_url)
    assert "formulaire forgé" not in await page.inner_text("#commentaires")

    # Approve with a comment.
    await page.fill("#m-approve", "Dossier complet, avis favorable du service.")
    await screenshot(page, "e2e-5-case-before")
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

    # The dashboards draw every chart the contracts service feeds, and the cases-by-state table says what
    # the contracts API lists for this officer.
    await page.goto(f"{console.url}/pilotage")
    await page.wait_for_function("() => window.parcoursCharts !== undefined")
    drawn = await page.evaluate(
        "() => Object.fromEntries(Object.entries(window.parcoursCharts).map(([id, c]) => "
        "[id, {labels: c.data.labels, series: c.data.datasets.map(d => [d.label, d.data])}]))"
    )
    assert {"c-etats", "c-delais", "c-expirations", "c-facturation"} <= set(drawn)
    tables = chart_tables(await page.content())
    for key, table in tables.items():
        assert drawn[f"c-{key}"]["labels"] == list(table)
        for series, values in drawn[f"c-{key}"]["series"]:
            assert [table[label][series] for label in table] == values, key
    listed = await cases_by_kind_and_state(pki, console.settings.contracts_address, AGENT84)
    assert listed[(KINDS["CASE_KIND_ARS_CONTRACT"], STATES["AWAITING_SIGNATURE"])] >= 1
    shown = {(kind, state): n for state, row in tables["etats"].items() for kind, n in row.items() if n}
    assert shown == listed
    await screenshot(page, "e2e-6-dashboards")
    assert await axe_violations(page) == [], "the dashboards"
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
