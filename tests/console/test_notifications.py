"""Case notifications as an officer receives them: a step a supervisor gives them in the console reaches them
in the console and, if they chose it, by e-mail (a real SMTP sink), once however many passes run; nothing
when they turned it off; nothing of region 84 for region 93's officer; the daily digest by e-mail too.

Each pass is `CaseNotificationPoller.run_once`, run by the test (the suite's console runs none by itself).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from html import unescape

import asyncpg
import httpx
import pytest

from services.console.french import PARIS
from services.console.notifications import CaseNotificationPoller, Deliveries, send_digests
from services.console.store import EVENTS
from services.devstack.mailsink import MailSink
from services.kit.notify import NotifySettings, SmtpTransport
from services.kit.pki import DevPki
from tests.console.cases import contract_84
from tests.console.conftest import RunningConsole
from tests.console.support import csrf_of, sign_in
from tests.console.test_casework import notice, post

TITLE = "Télésurveillance en EHPAD, Roanne"  # contract_84's title: never in a notification


def deliveries(console: RunningConsole, sink: MailSink) -> Deliveries:
    smtp = SmtpTransport(NotifySettings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none"))
    return Deliveries(console.console.deps.store, smtp, console.url)


def poller(console: RunningConsole, sink: MailSink) -> CaseNotificationPoller:
    deps = console.console.deps
    return CaseNotificationPoller(deps.store, deps.hub, deliveries(console, sink))


async def choose(client: httpx.AsyncClient, url: str, chosen: dict[str, tuple[bool, bool]]) -> None:
    """Save the preferences page as the officer would: `chosen` (in-app, e-mail) per event, defaults else."""
    page = await client.get(f"{url}/preferences")
    data = {"csrf_token": csrf_of(page.text)}
    for event in EVENTS:
        in_app, email = chosen.get(event, (True, False))
        if in_app:
            data[f"{event}-app"] = "1"
        if email:
            data[f"{event}-email"] = "1"
    saved = await client.post(f"{url}/preferences", data=data, follow_redirects=True)
    assert "Préférences enregistrées." in saved.text


@pytest.fixture
async def officers(console: RunningConsole) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """agent84, cheffe84 and agent93 signed in; agent84's preferences back to the defaults afterwards."""
    async with (
        httpx.AsyncClient() as agent84,
        httpx.AsyncClient() as cheffe84,
        httpx.AsyncClient() as agent93,
    ):
        for client, login in ((agent84, "agent84"), (cheffe84, "cheffe84"), (agent93, "agent93")):
            await sign_in(client, console.url, login)
        try:
            yield {"agent84": agent84, "cheffe84": cheffe84, "agent93": agent93}
        finally:
            await choose(agent84, console.url, {})


async def reassign_to_agent84(console: RunningConsole, cheffe84: httpx.AsyncClient, case: str) -> None:
    inbox = f"{console.url}/dossiers"
    moved = await post(
        cheffe84, f"{inbox}/lot", inbox, bulk_action="reassign", assignee="agent84", case=[case]
    )
    assert notice(moved.text) == "1 dossier(s) traité(s)."


async def told_in_app(console: RunningConsole, login: str, case: str) -> list[str]:
    items = await console.console.deps.store.notifications(f"staff:{login}", limit=1000)
    return [n.text for n in items if n.link == f"/dossiers/{case}"]


def mails_about(sink: MailSink, case: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if case in str(m.get_content())]


async def test_a_step_given_to_an_officer_reaches_them_once_in_the_console_and_by_e_mail(
    console: RunningConsole, pki: DevPki, mail_sink: MailSink, officers: dict[str, httpx.AsyncClient]
) -> None:
    case = await contract_84(pki, console.settings.contracts_address)
    passes = poller(console, mail_sink)
    await passes.run_once()  # what happened before: the review step opening, told in the console only
    await choose(officers["agent84"], console.url, {"case_assigned": (True, True)})

    await reassign_to_agent84(console, officers["cheffe84"], case)
    assert await passes.run_once() >= 1
    await passes.run_once()  # a second pass (another replica, a restart) tells nobody twice

    sentence = f"Réattribué : contrat avec l'ars {case}."
    assert (await told_in_app(console, "agent84", case)).count(sentence) == 1
    page = await officers["agent84"].get(f"{console.url}/notifications")
    assert f'<a href="/dossiers/{case}">{sentence}</a>' in unescape(page.text)
    [mail] = mails_about(mail_sink, case)
    assert mail["To"] == "agent84@ars.parcours.invalid"
    body = str(mail.get_content())
    assert sentence in body and f"{console.url}/dossiers/{case}" in body
    # Nothing of the case but its name; nothing of anyone.
    for personal in (TITLE, "Camille", "Roche", "Hélène", "Marchand", "agent84", "cheffe84"):
        assert personal not in body and personal not in str(mail["Subject"])
    # Region 93's officer holds the same role and heard nothing of region 84's case.
    assert await told_in_app(console, "agent93", case) == []
    assert "agent93@ars.parcours.invalid" not in [m["To"] for m in mail_sink.messages()]


async def test_with_in_app_off_nothing_is_written(
    console: RunningConsole, pki: DevPki, mail_sink: MailSink, officers: dict[str, httpx.AsyncClient]
) -> None:
    case = await contract_84(pki, console.settings.contracts_address)
    passes = poller(console, mail_sink)
    await passes.run_once()
    before = await told_in_app(console, "agent84", case)
    await choose(officers["agent84"], console.url, {"case_assigned": (False, False)})

    await reassign_to_agent84(console, officers["cheffe84"], case)
    await passes.run_once()

    assert await told_in_app(console, "agent84", case) == before
    assert not [t for t in before if t.startswith("Réattribué")]
    assert mails_about(mail_sink, case) == []


async def test_the_daily_digest_goes_by_e_mail_when_the_officer_chose_it(
    console: RunningConsole, pool: asyncpg.Pool, mail_sink: MailSink, officers: dict[str, httpx.AsyncClient]
) -> None:
    await choose(officers["agent84"], console.url, {"daily_digest": (False, True)})
    day = datetime.now(UTC) + timedelta(days=3000 + secrets.randbelow(1000))  # a day of its own
    deps = console.console.deps
    await send_digests(pool, deps.store, deps.hub, now=day, deliveries=deliveries(console, mail_sink))

    mine = [m for m in mail_sink.messages() if m["To"] == "agent84@ars.parcours.invalid"]
    assert len(mine) == 1
    body = str(mine[0].get_content())
    assert body.startswith("Synthèse du jour : ")
    assert f"{console.url}/dossiers?onglet=a-echeance" in body
    # In-app was off for the digest: no row for that day.
    key = f"digest-{day.astimezone(PARIS).date().isoformat()}"
    assert not await pool.fetchval(
        "SELECT count(*) FROM console.notifications WHERE owner = 'staff:agent84' AND dedup_key = $1", key
    )
    # A second run that day sends nothing more.
    await send_digests(pool, deps.store, deps.hub, now=day, deliveries=deliveries(console, mail_sink))
    assert len([m for m in mail_sink.messages() if m["To"] == "agent84@ars.parcours.invalid"]) == 1
