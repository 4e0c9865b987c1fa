"""Signing in to the console as a browser does, without one: the OIDC redirects followed by an HTTP client."""

from __future__ import annotations

import re

import httpx

from services.devstack.oidc import DEMO_PASSWORD

_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, console_url: str, login: str, password: str = DEMO_PASSWORD) -> httpx.Response:
    """Follow the whole authorization-code flow through the provider's login page; the last response."""
    page = await client.get(f"{console_url}/connexion/demarrer", follow_redirects=True)
    assert page.status_code == 200, page.text
    action = _FORM_ACTION.search(page.text)
    assert action is not None, "the provider's login form"
    login_url = httpx.URL(str(page.url)).join(action.group(1))
    return await client.post(login_url, data={"login": login, "password": password}, follow_redirects=True)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "a form with its CSRF token"
    return found.group(1)
