"""Login through the OpenID provider, sessions, CSRF, logout and the idle timeout, over real sockets."""

from __future__ import annotations

import httpx
import pytest

from services.console.security import hash_session_id
from services.console.store import EVENTS
from tests.console.conftest import RunningConsole
from tests.console.support import csrf_of, sign_in


async def test_an_officer_signs_in_through_the_provider_and_lands_on_their_console(
    console: RunningConsole,
) -> None:
    async with httpx.AsyncClient() as client:
        page = await sign_in(client, console.url, "agent84")
        preferences = await client.get(f"{console.url}/preferences")
    assert str(page.url).startswith(console.url)
    assert preferences.status_code == 200
    assert "Camille Roche" in preferences.text
    assert "région 84" in preferences.text


async def test_the_session_cookie_is_httponly_samesite_and_the_id_changes_at_login(
    console: RunningConsole,
) -> None:
    async with httpx.AsyncClient() as client:
        start = await client.get(f"{console.url}/connexion/demarrer")
        before = start.cookies.get("parcours-session")
        assert "HttpOnly" in start.headers["set-cookie"]
        assert "SameSite=Lax" in start.headers["set-cookie"]
        await sign_in(client, console.url, "agent84")
        after = client.cookies.get("parcours-session", domain="127.0.0.1")
    assert before and after and before != after


async def test_a_wrong_password_is_refused_by_the_provider(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        page = await sign_in(client, console.url, "agent84", password="nope")
        assert page.status_code == 401
        assert "Identifiant ou mot de passe incorrect" in page.text
        back = await client.get(f"{console.url}/preferences")
    assert back.status_code == 303
    assert back.headers["location"].startswith("/connexion")


async def test_pages_need_a_session(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/dossiers", "/pilotage", "/preferences", "/exports", "/notifications"):
            response = await client.get(console.url + path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/connexion"


async def test_a_form_posted_without_its_csrf_token_is_refused(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "agent84")
        page = await client.get(f"{console.url}/preferences")
        token = csrf_of(page.text)
        without = await client.post(f"{console.url}/preferences", data={"export_ready-app": "1"})
        wrong = await client.post(f"{console.url}/preferences", data={"csrf_token": "x" * 43})
        kept = await client.get(f"{console.url}/preferences")
        right = await client.post(
            f"{console.url}/preferences", data={"csrf_token": token, "export_ready-app": "1"}
        )
    assert without.status_code == 403
    assert "Formulaire refusé" in without.text
    assert wrong.status_code == 403
    # The refused posts changed nothing: every event is still on in the console (and off by e-mail).
    assert kept.text.count("checked") == len(EVENTS)
    assert right.status_code == 303


async def test_logout_ends_the_session_here_and_at_the_provider(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "agent84")
        page = await client.get(f"{console.url}/preferences")
        out = await client.post(f"{console.url}/deconnexion", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
        assert out.headers["location"].startswith(console.issuer + "/session/end")
        assert "id_token_hint=" in out.headers["location"]
        after = await client.get(f"{console.url}/preferences")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/connexion")


async def test_an_idle_session_expires_and_the_login_page_says_so(console: RunningConsole, pool) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, "agent93")
        assert (await client.get(f"{console.url}/preferences")).status_code == 200
        mine = hash_session_id(client.cookies.get("parcours-session", domain="127.0.0.1") or "")
        # Thirty-one minutes without a request (the idle timeout is thirty).
        await pool.execute(
            "UPDATE console.sessions SET last_seen = now() - interval '31 minutes' WHERE id_hash = $1", mine
        )
        expired = await client.get(f"{console.url}/preferences")
        assert expired.status_code == 303
        login = await client.get(console.url + expired.headers["location"])
    assert "Votre session a expiré" in login.text
    assert await pool.fetchval("SELECT count(*) FROM console.sessions WHERE id_hash = $1", mine) == 0


@pytest.mark.parametrize("login", ["agent84", "agent93", "cheffe84", "ordre42", "dg84"])
async def test_every_demo_account_signs_in_with_its_scope(console: RunningConsole, login: str) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, console.url, login)
        page = await client.get(f"{console.url}/preferences")
    assert page.status_code == 200
    expected = {
        "agent84": "région 84",
        "agent93": "région 93",
        "cheffe84": "région 84",
        "ordre42": "Ordre 42",
        "dg84": "région 84",
    }
    assert expected[login] in page.text


async def test_health_and_readiness_say_each_channel_is_connected(console: RunningConsole) -> None:
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{console.url}/healthz")
        ready = await client.get(f"{console.url}/readyz")
    assert health.status_code == 200
    # The suite's contracts, directory, billing, expertise and scheduling services answer.
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "channels": {
            "contracts": True,
            "directory": True,
            "billing": True,
            "expertise": True,
            "scheduling": True,
        },
    }
