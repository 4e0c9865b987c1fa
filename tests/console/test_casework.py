"""What an officer sees and does in the console over the real contracts service: the tab counters the service
counts, a claim shown with its holder, a decision refused with its reason in French, bulk acknowledgement of
declarations, reassignment by a supervisor, saved views shared with the team, the filtered list exported in
the background, and the daily digest counting the officer's real cases."""

from __future__ import annotations

import csv
import io
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape

import asyncpg
import httpx
from parcours.contracts.v1 import contracts_pb2 as c

from services.console.notifications import send_digests
from services.kit.pki import DevPki
from tests.console.cases import AGENT84, caller, contract_84, declaration
from tests.console.conftest import RunningConsole
from tests.console.support import csrf_of, sign_in
from tests.contracts.conftest import PROMOTER, Hub, eventually, rid

_TAB = re.compile(r'onglet=([a-z-]+)[^"]*"[^>]*>[^<]*&nbsp;<span class="compteur">\(([0-9\u202f ]+)\)</span>')
_NOTICE = re.compile(r'<div class="fr-alert fr-alert--info[^"]*" role="status"><p>([^<]*)</p>')


def tab_counts(html: str) -> dict[str, int]:
    return {tab: int(re.sub(r"\D", "", n)) for tab, n in _TAB.findall(html)}


def notice(html: str) -> str:
    found = _NOTICE.search(html)
    assert found is not None, "a notice on the page"
    return unescape(found.group(1))


def holder(html: str) -> str:
    found = re.search(r'<p id="detenteur">(.*?)</p>', html, re.S)
    assert found is not None
    return re.sub(r"<[^>]+>", "", found.group(1))


async def post(client: httpx.AsyncClient, url: str, form_page: str, **data: object) -> httpx.Response:
    """A form of the console, posted with the session's CSRF token; the page it leads to."""
    page = await client.get(form_page)
    return await client.post(
        url, data={"csrf_token": csrf_of(page.text), "request_id": rid(), **data}, follow_redirects=True
    )


def contracts(pki: DevPki, console: RunningConsole) -> Hub:
    return caller(pki, console.settings.contracts_address, AGENT84)


async def test_the_tabs_count_what_the_service_counts_and_a_claim_shows_its_holder(
    console: RunningConsole, pki: DevPki
) -> None:
    api = contracts(pki, console)
    try:
        async with httpx.AsyncClient() as agent84, httpx.AsyncClient() as cheffe84:
            await sign_in(agent84, console.url, "agent84")
            await sign_in(cheffe84, console.url, "cheffe84")
            before = tab_counts((await agent84.get(f"{console.url}/dossiers")).text)
            name = await contract_84(pki, console.settings.contracts_address)
            page = await agent84.get(f"{console.url}/dossiers")
            after = tab_counts(page.text)
            # A new unclaimed case of the officer's group: one more to process, and in "all".
            assert after["a-traiter"] == before["a-traiter"] + 1
            assert after["tous"] == before["tous"] + 1
            counts = (await api.stub(AGENT84).CountCases(c.CountCasesRequest())).counts
            assert (after["a-traiter"], after["tous"]) == (counts.to_process, counts.all)

            case_url = f"{console.url}/dossiers/{name}"
            assert holder((await agent84.get(case_url)).text) == "Personne n'a pris cette étape en charge."
            claimed = await post(agent84, f"{case_url}/etape/prendre", case_url)
            assert claimed.status_code == 200
            assert holder(claimed.text).startswith("Pris en charge par agent84 depuis le ")
            step = (
                await api.stub(AGENT84).GetArsContract(c.GetArsContractRequest(name=name))
            ).ars_contract.progress.current_step
            assert step.claimant == "staff/agent84"
            # The holder shows in the inbox row too, under "claimed by me".
            inbox = await agent84.get(f"{console.url}/dossiers?onglet=a-traiter&attribution=moi")
            row = re.search(
                rf'<tr[^>]*>(?:(?!</tr>).)*href="/dossiers/{name}"(?:(?!</tr>).)*</tr>', inbox.text, re.S
            )
            assert row is not None and ">agent84</td>" in row.group(0)

            # A colleague sees who holds it, is offered no decision, and the service's refusal of a decision
            # posted anyway is shown in French.
            theirs = await cheffe84.get(case_url)
            assert holder(theirs.text).startswith("Pris en charge par agent84")
            assert 'id="action-approve"' not in theirs.text
            refused = await post(
                cheffe84, f"{case_url}/actions/approve", case_url, motivation="Avis favorable"
            )
            assert "Une autre personne a pris ce dossier en charge." in refused.text
            assert (
                await api.stub(AGENT84).GetArsContract(c.GetArsContractRequest(name=name))
            ).ars_contract.state == c.ArsContract.STATE_UNDER_REVIEW
    finally:
        await api.close()


async def test_declarations_are_acknowledged_in_bulk_and_a_supervisor_reassigns(
    console: RunningConsole, pki: DevPki
) -> None:
    address = console.settings.contracts_address
    filer = caller(pki, address, PROMOTER)
    api = contracts(pki, console)
    try:
        first, second = await declaration(filer), await declaration(filer)
        contract = await contract_84(pki, address)
        inbox = f"{console.url}/dossiers"
        async with httpx.AsyncClient() as agent84, httpx.AsyncClient() as cheffe84:
            await sign_in(agent84, console.url, "agent84")
            await sign_in(cheffe84, console.url, "cheffe84")
            # Both declarations acknowledged in one go, effective today.
            done = await post(agent84, f"{inbox}/lot", inbox, bulk_action="acknowledge", case=[first, second])
            assert notice(done.text) == "2 dossier(s) traité(s)."
            for name in (first, second):
                got = await api.stub(AGENT84).GetOperatorDeclaration(
                    c.GetOperatorDeclarationRequest(name=name)
                )
                assert got.operator_declaration.state in (
                    c.OperatorDeclaration.STATE_ACKNOWLEDGED,
                    c.OperatorDeclaration.STATE_EFFECTIVE,
                )
            # An officer is not offered reassignment; the supervisor is, and reassigns the contract's step.
            assert 'value="reassign"' not in (await agent84.get(inbox)).text
            assert 'value="reassign"' in (await cheffe84.get(inbox)).text
            refused = await post(
                cheffe84,
                f"{inbox}/lot",
                inbox,
                bulk_action="reassign",
                assignee="personne-inconnue",
                case=[contract],
            )
            assert notice(refused.text) == (
                f"0 dossier(s) traité(s). Refusés : {contract} : "
                "Cette personne ne fait pas partie du groupe de l'étape."
            )
            moved = await post(
                cheffe84, f"{inbox}/lot", inbox, bulk_action="reassign", assignee="agent84", case=[contract]
            )
            assert notice(moved.text) == "1 dossier(s) traité(s)."
            page = await agent84.get(f"{console.url}/dossiers/{contract}")
            assert holder(page.text).startswith("Pris en charge par agent84")
    finally:
        await filer.close()
        await api.close()


async def test_a_shared_view_and_an_export_of_the_filtered_list(console: RunningConsole, pki: DevPki) -> None:
    filer = caller(pki, console.settings.contracts_address, PROMOTER)
    api = contracts(pki, console)
    try:
        await declaration(filer)
        query = "onglet=tous&type=CASE_KIND_OPERATOR_DECLARATION"
        title = f"Déclarations {uuid.uuid4().hex[:6]}"
        async with (
            httpx.AsyncClient() as agent84,
            httpx.AsyncClient() as cheffe84,
            httpx.AsyncClient() as agent93,
        ):
            for client, login in ((agent84, "agent84"), (cheffe84, "cheffe84"), (agent93, "agent93")):
                await sign_in(client, console.url, login)
            inbox = f"{console.url}/dossiers"
            saved = await post(agent84, f"{inbox}/vues", inbox, title=title, query=query, shared="1")
            assert saved.status_code == 200
            # The region's team sees the shared view; another region's officer does not.
            view = f'<a class="fr-link" href="/dossiers?{query.replace("&", "&amp;")}">{title}</a>'
            assert view in (await cheffe84.get(inbox)).text
            assert title not in (await agent93.get(inbox)).text

            # The filtered list, exported in the background: a notice, then a CSV of exactly those cases.
            links = re.compile(r'href="(/exports/[0-9a-f-]{36})"')
            earlier = set(links.findall((await agent84.get(f"{console.url}/exports")).text))
            started = await post(agent84, f"{inbox}/export", inbox, query=query, format="csv")
            assert "Export lancé" in notice(started.text)

            async def ready() -> str:
                done = set(links.findall((await agent84.get(f"{console.url}/exports")).text)) - earlier
                return done.pop() if done else ""

            link = await eventually(ready, bool)
            content = (await agent84.get(f"{console.url}{link}")).content.decode("utf-8-sig")
            rows = list(csv.reader(io.StringIO(content), delimiter=";"))
            listed: list[str] = []
            request = c.ListCasesRequest(
                tab=c.TAB_ALL, kinds=[c.CASE_KIND_OPERATOR_DECLARATION], page_size=500
            )
            while True:
                reply = await api.stub(AGENT84).ListCases(request)
                listed += [x.name for x in reply.cases]
                if not reply.next_page_token:
                    break
                request.page_token = reply.next_page_token
            exported = {cell for row in rows[1:] for cell in row if cell.startswith("operatorDeclarations/")}
            assert len(rows) - 1 == len(listed)
            assert exported == set(listed)
    finally:
        await filer.close()
        await api.close()


async def test_the_daily_digest_counts_the_officer_s_real_cases(
    console: RunningConsole, pki: DevPki, pool: asyncpg.Pool
) -> None:
    api = contracts(pki, console)
    try:
        await contract_84(pki, console.settings.contracts_address)
        async with httpx.AsyncClient() as agent84:
            await sign_in(agent84, console.url, "agent84")  # the digest goes to officers seen this week
            # A day of its own (the digest is one per officer and day, and the console's task may have sent
            # today's already).
            day = datetime.now(UTC) + timedelta(days=1000 + secrets.randbelow(1000))
            deps = console.console.deps
            assert await send_digests(pool, deps.store, deps.hub, now=day) >= 1
            counts = (await api.stub(AGENT84).CountCases(c.CountCasesRequest())).counts
            page = await agent84.get(f"{console.url}/notifications")
        assert (
            f"Synthèse du jour : {counts.due_soon} dossier(s) à échéance, {counts.overdue} en retard, "
            f"{counts.to_process} à traiter."
        ) in unescape(page.text).replace("\u202f", "")
        assert counts.to_process >= 1
    finally:
        await api.close()
