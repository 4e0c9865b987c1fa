"""Scope, as the console shows it over the real contracts service: an officer sees their region's cases only,
the Ordre reviewer only the cases routed to its territory, and a direct URL to a case out of scope answers
exactly like a missing case's (same status, same page), for reading and for posting."""

from __future__ import annotations

import re
import uuid

import httpx

from services.kit.pki import DevPki
from tests.console.cases import contract_84, region_93_contract, review_for_ordre_42
from tests.console.conftest import RunningConsole
from tests.console.support import csrf_of, sign_in
from tests.contracts.conftest import rid

# What differs between two renderings of the same page: the form's one-time request ids.
_REQUEST_ID = re.compile(r'name="request_id" value="[^"]+"')


def same_page(html: str) -> str:
    return _REQUEST_ID.sub("", html)


def path_of(name: str) -> str:
    return f"/dossiers/{name}"


async def listed(client: httpx.AsyncClient, console: RunningConsole) -> set[str]:
    """The case URLs of the officer's "tous" tab (open cases, every kind)."""
    page = await client.get(f"{console.url}/dossiers?onglet=tous")
    assert page.status_code == 200, page.text
    return set(re.findall(r'href="(/dossiers/[A-Za-z]+/[0-9a-f-]{36})"', page.text))


async def test_each_region_s_officer_sees_only_their_region_and_another_s_case_is_missing(
    console: RunningConsole, pki: DevPki, paca_follows_cnom: object
) -> None:
    address = console.settings.contracts_address
    ours, theirs = await contract_84(pki, address), await region_93_contract(pki, address)
    missing = f"arsContracts/{uuid.uuid4()}"

    async with httpx.AsyncClient() as agent84, httpx.AsyncClient() as agent93:
        await sign_in(agent84, console.url, "agent84")
        await sign_in(agent93, console.url, "agent93")
        seen_84, seen_93 = await listed(agent84, console), await listed(agent93, console)
        assert path_of(ours) in seen_84 and path_of(theirs) not in seen_84
        assert path_of(theirs) in seen_93 and path_of(ours) not in seen_93
        assert (await agent84.get(f"{console.url}{path_of(ours)}")).status_code == 200

        # Region 93's officer on region 84's case: the page of a case that does not exist.
        hidden = await agent93.get(f"{console.url}{path_of(ours)}")
        absent = await agent93.get(f"{console.url}{path_of(missing)}")
        assert hidden.status_code == absent.status_code == 404
        assert "Dossier introuvable" in hidden.text
        assert same_page(hidden.text) == same_page(absent.text)

        # Posting to it (a comment, a claim) answers the same, and writes nothing.
        csrf = csrf_of((await agent93.get(f"{console.url}/dossiers")).text)
        for action, form in (("commentaires", {"text": "Vu"}), ("etape/prendre", {})):
            answers = [
                await agent93.post(
                    f"{console.url}{path_of(name)}/{action}",
                    data={"csrf_token": csrf, "request_id": rid(), **form},
                )
                for name in (ours, missing)
            ]
            assert [a.status_code for a in answers] == [404, 404], action
            assert same_page(answers[0].text) == same_page(answers[1].text), action
        page = await agent84.get(f"{console.url}{path_of(ours)}")
        assert "Aucun commentaire." in page.text
        assert "Prendre en charge" in page.text  # still unclaimed


async def test_the_ordre_reviewer_sees_only_the_cases_routed_to_its_territory(
    console: RunningConsole, pki: DevPki, paca_follows_cnom: object
) -> None:
    address = console.settings.contracts_address
    review = await review_for_ordre_42(pki, address)
    other_ordre = await region_93_contract(pki, address)  # the visa is the Ordre of the Bouches-du-Rhône's
    no_visa = await contract_84(pki, address)  # region 84 needs no visa: never the Ordre's

    async with httpx.AsyncClient() as ordre42:
        await sign_in(ordre42, console.url, "ordre42")
        seen = await listed(ordre42, console)
        assert path_of(review) in seen
        assert not {path_of(other_ordre), path_of(no_visa)} & seen
        page = await ordre42.get(f"{console.url}{path_of(review)}")
        assert page.status_code == 200 and "MédiConsult SAS" in page.text
        absent = await ordre42.get(f"{console.url}/dossiers/arsContracts/{uuid.uuid4()}")
        for name in (other_ordre, no_visa):
            hidden = await ordre42.get(f"{console.url}{path_of(name)}")
            assert hidden.status_code == 404
            assert same_page(hidden.text) == same_page(absent.text)
