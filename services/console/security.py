"""Who is signed in, and how the console speaks for them.

* **Sessions** are server-side (table `console.sessions`): the cookie holds 32 random bytes, the database
  their SHA-256. The cookie is HttpOnly, SameSite=Lax, `Secure` (and `__Host-` prefixed) outside development.
  A session ends at logout, after `session_idle_timeout` without a request, and after `session_max_age`.
* **Login** is OpenID Connect, authorization code with PKCE (S256), through Authlib's Starlette client: any
  issuer by configuration. The ID token (signature, issuer, audience, nonce) gives the officer: subject,
  names, and the hub roles, region and Ordre territory from configurable claims. A new session id is issued
  at login.
* **CSRF**: every form carries the session's token (`csrf_token`), checked on every POST.
* **Delegation**: the console calls the gRPC services with its own certificate (CN `parcours-console`) and a
  short-lived token it mints for the officer under the hub's signing key (`staff:<id>`, their roles, region
  and territory, `delegate_token_ttl`). The services authorise and audit the officer, not the console.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console.settings import ConsoleSettings
from services.console.store import Store
from services.kit.pki import kid_for_public_key, load_ec_private_key
from services.kit.tokens import (
    ROLE_ARS_OFFICER,
    ROLE_ARS_SIGNATORY,
    ROLE_ARS_SUPERVISOR,
    ROLE_ORDRE_REVIEWER,
    mint_token,
)

logger = logging.getLogger(__name__)

# The roles the console acts with: ARS staff and the Ordre. Anyone else may not sign in.
CONSOLE_ROLES = (ROLE_ARS_OFFICER, ROLE_ARS_SUPERVISOR, ROLE_ARS_SIGNATORY, ROLE_ORDRE_REVIEWER)
_REGION_ROLES = {ROLE_ARS_OFFICER, ROLE_ARS_SUPERVISOR, ROLE_ARS_SIGNATORY}
_STAFF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_REGION = re.compile(r"^[0-9]{2}$")
# An address the SMTP relay can take (one mailbox, no display name, no header-breaking characters).
_EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
_TERRITORY = re.compile(r"^(?:[0-9]{2}|2A|2B|97[1-6]|FR)$")
# How often a request refreshes `last_seen` (the idle clock) in the database.
_TOUCH_EVERY = timedelta(seconds=30)


class LoginRefused(Exception):
    """The provider authenticated someone the console may not let in; the message is for them (French)."""


@dataclass(frozen=True)
class Officer:
    """The signed-in person, as the console acts for them."""

    subject: str
    name: str
    roles: tuple[str, ...]
    region: str | None
    territory: str | None
    given_name: str = ""
    family_name: str = ""
    # Where the officer's e-mail notifications go (the provider's `email` claim); '' when it gave none.
    email: str = ""

    @property
    def staff_id(self) -> str:
        return self.subject.removeprefix("staff:")

    @property
    def team(self) -> str:
        """Whom shared views are shared with: the region's ARS team, or the Ordre council of the territory."""
        if self.region:
            return f"regions/{self.region}"
        if self.territory:
            return f"territories/{self.territory}"
        return ""

    def has(self, role: str) -> bool:
        return role in self.roles

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "name": self.name,
            "roles": list(self.roles),
            "region": self.region,
            "territory": self.territory,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "email": self.email,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Officer:
        return cls(
            subject=str(data["subject"]),
            name=str(data["name"]),
            roles=tuple(str(r) for r in data["roles"]),
            region=data.get("region"),
            territory=data.get("territory"),
            given_name=str(data.get("given_name", "")),
            family_name=str(data.get("family_name", "")),
            email=str(data.get("email", "")),
        )


def officer_from_claims(claims: Mapping[str, Any], settings: ConsoleSettings) -> Officer:
    """The officer an ID token names; LoginRefused when the console has nothing to offer them."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise LoginRefused("Le fournisseur d'identité n'a pas transmis d'identifiant.")
    # A provider's subject is opaque: kept as is when it fits a staff id, else a stable digest of it.
    staff_id = (
        subject
        if _STAFF_ID.fullmatch(subject)
        else "oidc-" + hashlib.sha256(subject.encode()).hexdigest()[:32]
    )
    raw_roles = claims.get(settings.oidc_roles_claim, [])
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.split()
    roles = tuple(r for r in CONSOLE_ROLES if isinstance(raw_roles, list) and r in raw_roles)
    if not roles:
        raise LoginRefused(
            "Votre compte n'a aucun rôle dans la console (agent ou cadre d'ARS, signataire, rapporteur de "
            "l'Ordre)."
        )
    region = claims.get(settings.oidc_region_claim)
    territory = claims.get(settings.oidc_territory_claim)
    region = region if isinstance(region, str) and _REGION.fullmatch(region) else None
    territory = territory if isinstance(territory, str) and _TERRITORY.fullmatch(territory) else None
    if _REGION_ROLES.intersection(roles) and region is None:
        raise LoginRefused("Votre compte d'agent d'ARS ne précise pas sa région.")
    if ROLE_ORDRE_REVIEWER in roles and territory is None:
        raise LoginRefused("Votre compte de rapporteur de l'Ordre ne précise pas son territoire.")
    given = claims.get("given_name") if isinstance(claims.get("given_name"), str) else ""
    family = claims.get("family_name") if isinstance(claims.get("family_name"), str) else ""
    name = claims.get("name") if isinstance(claims.get("name"), str) else f"{given} {family}".strip()
    email = claims.get("email")
    email = email if isinstance(email, str) and _EMAIL.fullmatch(email) else ""
    return Officer(
        subject=f"staff:{staff_id}",
        name=str(name or staff_id),
        roles=roles,
        region=region,
        territory=territory,
        given_name=str(given),
        family_name=str(family),
        email=email,
    )


class DelegateTokens:
    """Short-lived tokens naming the officer, signed with the hub's token key; one per officer, reused until
    a minute before it expires."""

    def __init__(
        self, settings: ConsoleSettings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._key_file = settings.console_token_signing_key_file or _private_copy(
            settings.console_token_signing_key
        )
        self._kid = kid_for_public_key(load_ec_private_key(self._key_file).public_key())
        self._issuer = settings.token_issuer
        self._audience = settings.token_audience
        self._ttl = settings.delegate_token_ttl
        self._clock = clock
        self._cache: dict[Officer, tuple[str, datetime]] = {}

    def token(self, officer: Officer) -> str:
        now = self._clock()
        cached = self._cache.get(officer)
        if cached is not None and cached[1] - now > min(timedelta(minutes=1), self._ttl / 2):
            return cached[0]
        token = mint_token(
            signing_key_file=self._key_file,
            kid=self._kid,
            issuer=self._issuer,
            audience=self._audience,
            subject=officer.subject,
            profession=None,
            specialty=None,
            roles=officer.roles,
            region=officer.region,
            territory=officer.territory,
            given_name=officer.given_name,
            family_name=officer.family_name,
            ttl=self._ttl,
            now=now,
        )
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[officer] = (token, now + self._ttl)
        return token


def _private_copy(pem: SecretStr | None) -> Path:
    """The key given as PEM (from a Secret), written once to a file only this process's user reads (the kit
    signs from a file; under the chart /tmp is the pod's own emptyDir)."""
    assert pem is not None
    fd, name = tempfile.mkstemp(prefix="parcours-console-key-", suffix=".pem")
    with os.fdopen(fd, "w") as out:
        out.write(pem.get_secret_value())
    path = Path(name)
    load_ec_private_key(path)  # a malformed key stops the start, naming only the file
    return path


# -- sessions ------------------------------------------------------------------------------------------------


@dataclass
class SessionState:
    """The request's session, as the middleware loaded it."""

    id_hash: bytes | None
    cookie_value: str | None
    subject: str | None
    data: dict[str, Any]
    loaded_json: str
    last_seen: datetime | None
    # The session the request came with ended (idle, expired): the page says so.
    expired: bool = False
    # Set at login and logout: a new id (login) or none (logout).
    rotate: bool = False
    destroy: bool = False


def hash_session_id(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class SessionMiddleware:
    """Loads the server-side session into `scope["session"]` (what Authlib's client uses) and saves it back
    before the response starts when it changed."""

    def __init__(self, app: ASGIApp, *, store: Store, settings: ConsoleSettings) -> None:
        self.app = app
        self.store = store
        self.idle = settings.session_idle_timeout
        self.max_age = settings.session_max_age
        self.secure = settings.cookie_secure
        self.cookie = "__Host-parcours-session" if settings.cookie_secure else "parcours-session"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith("/static/")
            or scope["path"] in ("/healthz", "/readyz")
        ):
            await self.app(scope, receive, send)
            return
        state = await self._load(scope)
        scope["session"] = state.data
        scope["parcours.session"] = state

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                set_cookie = await self._save(state)
                if set_cookie is not None:
                    headers = MutableHeaders(scope=message)
                    headers.append("set-cookie", set_cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _load(self, scope: Scope) -> SessionState:
        value = _cookie(scope, self.cookie)
        now = datetime.now(UTC)
        if value is not None:
            id_hash = hash_session_id(value)
            row = await self.store.load_session(id_hash)
            if row is not None:
                if row.expire_time > now and now - row.last_seen <= self.idle:
                    return SessionState(
                        id_hash,
                        value,
                        row.subject,
                        row.data,
                        json.dumps(row.data, sort_keys=True),
                        row.last_seen,
                    )
                await self.store.delete_session(id_hash)
                return SessionState(None, None, None, {}, "{}", None, expired=row.subject is not None)
        return SessionState(None, None, None, {}, "{}", None)

    async def _save(self, state: SessionState) -> str | None:
        """Persist the session if it changed; the Set-Cookie header to send, if any."""
        now = datetime.now(UTC)
        if state.destroy:
            if state.id_hash is not None:
                await self.store.delete_session(state.id_hash)
            return self._cookie_header("", max_age=0)
        current = json.dumps(state.data, sort_keys=True)
        if state.rotate and state.id_hash is not None:
            await self.store.delete_session(state.id_hash)
            state.id_hash = None
        if state.id_hash is None:
            if not state.data:
                return self._cookie_header("", max_age=0) if state.expired else None
            value = secrets.token_urlsafe(32)
            state.id_hash = hash_session_id(value)
            await self.store.create_session(state.id_hash, state.data, now + self.max_age)
            if state.subject is not None:
                await self.store.save_session(state.id_hash, state.subject, state.data, now + self.max_age)
            return self._cookie_header(value, max_age=int(self.max_age.total_seconds()))
        if current != state.loaded_json:
            row = await self.store.load_session(state.id_hash)
            expire = row.expire_time if row is not None else now + self.max_age
            await self.store.save_session(state.id_hash, state.subject, state.data, expire)
        elif state.last_seen is None or now - state.last_seen > _TOUCH_EVERY:
            await self.store.touch_session(state.id_hash)
        return None

    def _cookie_header(self, value: str, *, max_age: int) -> str:
        parts = [f"{self.cookie}={value}", "Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={max_age}"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, raw in scope.get("headers", []):
        if key == b"cookie":
            for part in raw.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name and v:
                    return str(v)
    return None


def session_state(scope: Scope) -> SessionState:
    state = scope.get("parcours.session")
    assert isinstance(state, SessionState), "the session middleware did not run"
    return state


def signed_in(state: SessionState) -> Officer | None:
    data = state.data.get("officer")
    return Officer.from_json(data) if isinstance(data, dict) and state.subject else None


def sign_in(state: SessionState, officer: Officer, id_token: str) -> None:
    """A new session id for the signed-in officer (no fixation), with its CSRF token."""
    state.data.clear()
    state.data.update({"officer": officer.to_json(), "id_token": id_token, "csrf": secrets.token_urlsafe(32)})
    state.subject = officer.subject
    state.rotate = True


def sign_out(state: SessionState) -> None:
    state.destroy = True


def csrf_token(state: SessionState) -> str:
    token = state.data.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        state.data["csrf"] = token
    return token


def csrf_ok(state: SessionState, submitted: object) -> bool:
    expected = state.data.get("csrf")
    return (
        isinstance(expected, str) and isinstance(submitted, str) and hmac.compare_digest(expected, submitted)
    )


Handler = Callable[..., Awaitable[Any]]
