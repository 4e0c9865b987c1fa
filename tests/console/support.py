"""Signing in to the console as a browser does, without one: the OIDC redirects followed by an HTTP client."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import asyncpg
import httpx

from services.console.french import PARIS
from services.devstack.oidc import DEMO_PASSWORD
from tests.expertise.test_activity_report import request as expertise_request
from tests.support import LOIRE

_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(
    client: httpx.AsyncClient, console_url: str, login: str, password: str = DEMO_PASSWORD
) -> httpx.Response:
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


class _Tables(HTMLParser):
    """The dashboards' data tables: key → {row label: {column: value}} (values from `data-value`)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, dict[str, float]]] = {}
        self._key: str | None = None
        self._section = ""
        self._columns: list[str] = []
        self._row = ""
        self._cells: list[float] = []
        self._text: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "donnees-graphique" in (a.get("class") or ""):
            self._key, self._columns = a.get("data-key") or "", []
            self.tables[self._key] = {}
        elif self._key is None:
            return
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr":
            self._row, self._cells = "", []
        elif tag == "th":
            self._text = ""
        elif tag == "td":
            self._cells.append(float(a.get("data-value") or 0))

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._key is None:
            return
        if tag == "th" and self._text is not None:
            if self._section == "thead":
                self._columns.append(self._text.strip())
            else:
                self._row = self._text.strip()
            self._text = None
        elif tag == "tr" and self._section == "tbody" and self._row:
            self.tables[self._key][self._row] = dict(zip(self._columns[1:], self._cells, strict=False))
        elif tag == "table":
            self._key = None


def chart_tables(html: str) -> dict[str, dict[str, dict[str, float]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


async def seed_activity(pool: asyncpg.Pool) -> str:
    """Activity of a GHT of region 84 that only these rows name (the directory does not know it: the charts
    show its id), written where the workflows and the daily pruning write it: two dermatology téléexpertises
    requested from it three hours ago, one answered in 2 h, one expired past its deadline; ten
    teleconsultation slots offered there this month, four of them taken. The GHT's id."""
    ght = f"ght-essai-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    hours = timedelta(hours=1)
    await expertise_request(pool, now - 3 * hours, "COMPLETED", answer=2 * hours, ght=ght)
    await expertise_request(pool, now - 3 * hours, "EXPIRED", breached=True, ght=ght)
    await pool.execute(
        "INSERT INTO scheduling.slot_supply (schedule_id, month, region_code, ght_id, finess, specialty,"
        " offered, used) VALUES ($1, $2, '84', $3, $4, 'SPECIALTY_GENERAL_MEDICINE', 10, 4)",
        uuid.uuid4(),
        now.astimezone(PARIS).date().replace(day=1),
        ght,
        LOIRE,
    )
    return ght
