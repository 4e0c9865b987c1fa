"""Headless Chromium (Debian's `chromium`) driven by Playwright, and axe-core injected into pages.

Never `playwright install` (it downloads a browser): the tests use /usr/bin/chromium, which `make test`
installs with apt (`make browser-deps`). Where it is missing they skip, saying so loudly.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from services.devstack.oidc import DEMO_PASSWORD, NODE_MODULES_PARENT

AXE = NODE_MODULES_PARENT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "console-tests" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "BROWSER TESTS SKIPPED: Debian's chromium is not installed (run `make browser-deps` as root; "
            "make test does)"
        )
    return found


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser) -> Page:
    # bypass_csp: axe-core is injected as an inline script, which the console's own CSP rightly forbids.
    context = await browser.new_context(
        locale="fr-FR", timezone_id="Europe/Paris", viewport={"width": 1280, "height": 900}, bypass_csp=True
    )
    page = await context.new_page()
    page.set_default_timeout(15000)
    return page


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in_browser(page: Page, console_url: str, login: str, *, shot: str = "") -> None:
    """Through the console's login page and the provider's, as an officer does."""
    await page.goto(f"{console_url}/connexion")
    if shot:
        await screenshot(page, f"{shot}-1-console-login")
    await page.click("#se-connecter")
    await page.fill("#login", login)
    await page.fill("#password", DEMO_PASSWORD)
    if shot:
        await screenshot(page, f"{shot}-2-provider-login")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{console_url}/**")


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
