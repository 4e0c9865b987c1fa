"""Notifications that leave the hub: one adapter, two real transports, used by every case's workflow.

A case's workflow first *records* each notification (a row keyed by case, kind, label and recipient, so a
retried activity records it once), then asks its domain's delivery activity to send it. This module is what
that activity uses:

- **Routing** (`Notifier.route`): a recipient is reached by e-mail when the address book knows their
  address, else through the signed webhook of the establishment that reaches them in this case (the
  patient's booking establishment, the expert's practice place...), else not at all (the notification stays
  recorded, as it always was, and clients read it through the API).
- **E-mail** (`SmtpTransport`): plain SMTP with STARTTLS or implicit TLS, optionally a client certificate.
  MSSanté is SMTP-based: the SMTP transport is the path to it, its relay, TLS and certificate being settings.
  The `Message-ID` is derived from the notification's key, so a message sent again after a lost answer can
  be recognised as the same one.
- **Webhooks** (`WebhookTransport`): a JSON event POSTed to the establishment's endpoint, signed with
  HMAC-SHA256 over `"{timestamp}.{body}"` with the endpoint's key (`Parcours-Signature: t=…,kid=…,v1=…`, see
  `verify_signature`), its `Parcours-Event-Id` stable across retries so the receiver keeps each event once.
  2xx is delivered; 408, 425, 429 and 5xx, timeouts and refused connections are transient (retried); any
  other answer is permanent.
- **Retries** are Temporal's: a delivery activity that meets a transient failure raises, its retry policy
  backs off and tries again; after the last attempt the workflow records the notification as failed and the
  case goes on. Already delivered recipients are skipped on a retry (their row says so).

What a message may carry is decided per kind by the domain that builds it (`Notice`); the rule is the same
everywhere: no patient identity (name, INS/NIR, birth date), no free text of the case (question, report,
diagnosis) — only opaque names (`appointments/…`, `patients/…`), times, the establishment and, for a join
link, its expiring token. A professional reads the case itself through the hub, authenticated and audited.

The address book is a seam (`AddressBook`): today a JSON file named by `PARCOURS_NOTIFY_ADDRESS_BOOK`,
to be replaced by the directory once it carries practitioners' MSSanté addresses and establishments'
endpoints, without touching the transports or the domains.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiosmtplib
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.common import RetryPolicy

from services.kit.settings import ENV_PREFIX

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

# Values of the `channel` and `delivery_state` columns, spelled as the APIs' enums.
EMAIL = "NOTIFICATION_CHANNEL_EMAIL"
WEBHOOK = "NOTIFICATION_CHANNEL_WEBHOOK"
RECORDED = "DELIVERY_STATE_RECORDED"
PENDING = "DELIVERY_STATE_PENDING"
DELIVERED = "DELIVERY_STATE_DELIVERED"
FAILED = "DELIVERY_STATE_FAILED"
SETTLED = frozenset({RECORDED, DELIVERED, FAILED})

SIGNATURE_HEADER = "Parcours-Signature"
EVENT_ID_HEADER = "Parcours-Event-Id"
# Event ids are UUIDv5 of the notification's key in this namespace.
EVENT_NAMESPACE = uuid.UUID("5b0f6f0e-8d0c-4a43-9f3c-1c2b7e4d9a10")
# HTTP answers worth retrying; any other non-2xx is permanent.
_TRANSIENT_STATUS = frozenset({408, 425, 429})


class NotifySettings(BaseSettings):
    """Settings of a process that delivers notifications (the workflow workers)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    # SMTP relay (an MSSanté operator's in production). Unset: no e-mail leaves the hub.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # `starttls` (upgrade a plain connection), `implicit` (TLS from the first byte, port 465) or `none`
    # (development sink only).
    smtp_tls: Literal["starttls", "implicit", "none"] = "starttls"
    # CA bundle the relay's certificate is checked against (unset: the system's).
    smtp_ca_file: Path | None = None
    # Client certificate and key (MSSanté operators authenticate applications by certificate).
    smtp_cert_file: Path | None = None
    smtp_key_file: Path | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Parcours <ne-pas-repondre@parcours.invalid>"
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)
    # Who is reached where: a JSON file (see `FileAddressBook`).
    notify_address_book: Path | None = None
    # The webhooks' signing keys, `key_id:base64url(secret)` comma-separated.
    notify_webhook_keys: SecretStr | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)


@dataclass(kw_only=True)
class DeliveryPolicy:
    """How a workflow retries a delivery activity: part of each case's input (from the service's settings), so
    a deployment tunes it and tests shrink it. The defaults keep trying for about an hour and a half."""

    max_attempts: int = 12
    first_retry_seconds: float = 2.0
    max_retry_seconds: float = 900.0
    # One attempt (every recipient of one notification, an SMTP or HTTP timeout each): also how long a
    # worker lost mid-delivery holds it before another worker retries.
    attempt_timeout_seconds: float = 60.0

    @property
    def attempt_timeout(self) -> timedelta:
        return timedelta(seconds=self.attempt_timeout_seconds)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.first_retry_seconds),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=self.max_retry_seconds),
            maximum_attempts=self.max_attempts,
        )


# --- what is sent -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One notification as it leaves the hub, built by the domain that owns the case (no patient data)."""

    # The idempotency key: case, kind, label and recipient (the row's key).
    key: str
    # The case, `appointments/{id}` or `teleexpertiseRequests/{id}`.
    case: str
    # The event type of the webhook, `parcours.teleconsultation.reminder`.
    event_type: str
    kind: str
    label: str
    # `patients/{id}` or `practitioners/{rpps}`.
    recipient: str
    subject: str
    text: str
    # Extra fields of the webhook event (times, links): no patient data.
    # When it was recorded: the same on every attempt, so a retried event is the same event.
    occur_time: datetime
    data: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        return str(uuid.uuid5(EVENT_NAMESPACE, self.key))

    def event(self) -> dict[str, Any]:
        """The webhook's JSON event."""
        return {
            "id": self.event_id,
            "type": self.event_type,
            "case": self.case,
            "kind": self.kind,
            "label": self.label,
            "recipient": self.recipient,
            "occur_time": self.occur_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": dict(self.data),
        }


def notification_key(case: str, kind: str, label: str, recipient: str) -> str:
    return f"{case}|{kind}|{label}|{recipient}"


# --- who is reached where -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """An establishment's webhook endpoint and the key its events are signed with."""

    url: str
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Route:
    channel: str  # EMAIL | WEBHOOK
    address: str = ""  # the e-mail address
    endpoint: Endpoint | None = None
    # The establishment whose endpoint it is (webhooks).
    establishment: str = ""


class AddressBook(Protocol):
    """Where recipients and establishments are reached (the seam the directory will fill)."""

    def email(self, recipient: str) -> str | None:
        """The e-mail (MSSanté) address of `practitioners/{rpps}` or `patients/{id}`, if known."""

    def webhook(self, establishment: str) -> Endpoint | None:
        """The webhook endpoint of `establishments/{finess}`, if it has one."""


def parse_keys(value: SecretStr | str | None) -> dict[str, bytes]:
    """`key_id:base64url(secret)` comma-separated → {key id: secret}; ValueError without the secrets."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, _, encoded = item.partition(":")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"webhook key {key_id!r} is not base64url") from None
        if not key_id or len(secret) < 32:
            raise ValueError(f"webhook key {key_id!r} must be named and hold at least 32 bytes")
        keys[key_id] = secret
    return keys


class FileAddressBook:
    """The address book as a JSON file (a stand-in until the directory carries these facts):

        {"emails": {"practitioners/10000000101": "jeanne.martin@ch-forez.mssante.fr", ...},
         "webhooks": {"establishments/420000017": {"url": "https://...", "key_id": "forez-1"}, ...}}

    Each webhook's secret is the key of that id in `PARCOURS_NOTIFY_WEBHOOK_KEYS` (secrets stay out of the
    file). A webhook whose key is missing is refused at start.
    """

    def __init__(self, emails: Mapping[str, str], webhooks: Mapping[str, Endpoint]) -> None:
        self._emails = dict(emails)
        self._webhooks = dict(webhooks)

    @classmethod
    def load(cls, path: Path | None, keys: Mapping[str, bytes]) -> FileAddressBook:
        if path is None:
            return cls({}, {})
        data = json.loads(path.read_text(encoding="utf-8"))
        webhooks: dict[str, Endpoint] = {}
        for establishment, given in data.get("webhooks", {}).items():
            key_id = given["key_id"]
            if key_id not in keys:
                raise ValueError(
                    f"webhook of {establishment}: no key {key_id!r} in PARCOURS_NOTIFY_WEBHOOK_KEYS"
                )
            webhooks[establishment] = Endpoint(url=given["url"], key_id=key_id, secret=keys[key_id])
        return cls(data.get("emails", {}), webhooks)

    def email(self, recipient: str) -> str | None:
        return self._emails.get(recipient)

    def webhook(self, establishment: str) -> Endpoint | None:
        return self._webhooks.get(establishment)


# --- signing ------------------------------------------------------------------------------------------------


def sign(secret: bytes, key_id: str, body: bytes, timestamp: int) -> str:
    """The `Parcours-Signature` header of a body sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},kid={key_id},v1={digest}"


def verify_signature(
    keys: Mapping[str, bytes], header: str, body: bytes, *, now: float | None = None, tolerance: float = 300
) -> bool:
    """What a receiver checks: a known key id, a timestamp within `tolerance` seconds, the HMAC."""
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    secret = keys.get(parts.get("kid", ""))
    if secret is None or not parts.get("t", "").isdigit() or "v1" not in parts:
        return False
    timestamp = int(parts["t"])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, parts["kid"], body, timestamp).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, parts["v1"])


# --- transports ---------------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """A delivery attempt failed; `permanent` when retrying cannot help. The reason names no person."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class SmtpTransport:
    def __init__(self, settings: NotifySettings) -> None:
        self._settings = settings
        self._tls: ssl.SSLContext | None = None
        if settings.smtp_tls != "none":
            context = ssl.create_default_context(
                cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
            )
            if settings.smtp_cert_file is not None:
                context.load_cert_chain(
                    str(settings.smtp_cert_file),
                    str(settings.smtp_key_file) if settings.smtp_key_file else None,
                )
            self._tls = context

    @property
    def enabled(self) -> bool:
        return self._settings.smtp_host is not None

    def message(self, address: str, notice: Notice) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = address
        message["Subject"] = notice.subject
        message["Date"] = format_datetime(notice.occur_time.astimezone(UTC))
        message["Message-ID"] = f"<{notice.event_id}@parcours.invalid>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(notice.text)
        return message

    async def send(self, address: str, notice: Notice) -> None:
        settings = self._settings
        assert settings.smtp_host is not None
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                self.message(address, notice),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                use_tls=settings.smtp_tls == "implicit",
                start_tls=settings.smtp_tls == "starttls",
                tls_context=self._tls,
                username=settings.smtp_username,
                password=password,
                timeout=settings.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            codes = [error.code for error in refused.recipients]
            raise DeliveryFailed(
                f"SMTP_RECIPIENT_REFUSED {codes}", permanent=all(c >= 500 for c in codes)
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            raise DeliveryFailed(f"SMTP_{error.code}", permanent=error.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise DeliveryFailed(f"SMTP_UNREACHABLE {type(error).__name__}") from None


class WebhookTransport:
    def __init__(self, timeout_seconds: float = 10.0) -> None:
        # Imported here: the services import this module for its models (DeliveryPolicy, Notice) and never
        # send; only the workers do, and aiohttp is ~9 MB of resident memory in every process importing it.
        import aiohttp

        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, endpoint: Endpoint, notice: Notice) -> None:
        body = json.dumps(notice.event(), ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: notice.event_id,
            SIGNATURE_HEADER: sign(endpoint.secret, endpoint.key_id, body, int(time.time())),
            "User-Agent": "parcours-notify",
        }
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(endpoint.url, data=body, headers=headers) as answer:
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise DeliveryFailed(f"WEBHOOK_UNREACHABLE {type(error).__name__}") from None
        if 200 <= status < 300:
            return
        permanent = status < 500 and status not in _TRANSIENT_STATUS
        raise DeliveryFailed(f"WEBHOOK_HTTP_{status}", permanent=permanent)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- the adapter --------------------------------------------------------------------------------------------


class Notifier:
    """Routes a notice to its recipient's channel and delivers it."""

    def __init__(
        self,
        book: AddressBook,
        smtp: SmtpTransport | None = None,
        webhooks: WebhookTransport | None = None,
    ) -> None:
        self._book = book
        self._smtp = smtp
        self._webhooks = webhooks or WebhookTransport()

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Notifier:
        book = FileAddressBook.load(settings.notify_address_book, parse_keys(settings.notify_webhook_keys))
        smtp = SmtpTransport(settings) if settings.smtp_host else None
        return cls(book, smtp, WebhookTransport(settings.webhook_timeout_seconds))

    @classmethod
    def recording_only(cls) -> Notifier:
        """No channel at all: notifications stay recorded (tests and processes that send nothing)."""
        return cls(FileAddressBook({}, {}))

    def route(self, recipient: str, establishments: tuple[str, ...] = ()) -> Route | None:
        """The recipient's own e-mail, else the webhook of the first establishment (in order) that has one,
        else None (recorded only)."""
        if self._smtp is not None:
            address = self._book.email(recipient)
            if address:
                return Route(EMAIL, address=address)
        for establishment in establishments:
            endpoint = self._book.webhook(establishment) if establishment else None
            if endpoint is not None:
                return Route(WEBHOOK, endpoint=endpoint, establishment=establishment)
        return None

    async def deliver(self, route: Route, notice: Notice) -> None:
        """One attempt; DeliveryFailed when it did not go."""
        if route.channel == EMAIL:
            assert self._smtp is not None
            await self._smtp.send(route.address, notice)
        else:
            assert route.endpoint is not None
            await self._webhooks.send(route.endpoint, notice)
        log.info("notification %s %s delivered by %s", notice.kind, notice.label, route.channel)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._webhooks.close()


# --- wording ------------------------------------------------------------------------------------------------

_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip
# The closing line of every message: what it deliberately does not carry.
FOOTER = (
    "Ce message est envoyé automatiquement par Parcours. Il ne contient aucune donnée médicale ni "
    "d'identité : les informations du dossier se consultent dans votre logiciel, connecté au hub."
)


def french_datetime(instant: datetime, zone_name: str) -> str:
    """`jeudi 12 mars 2026 à 14:20 (heure de Paris)`: a wall-clock time in a practice place's zone."""
    from zoneinfo import ZoneInfo

    local = instant.astimezone(ZoneInfo(zone_name))
    where = zone_name.split("/", 1)[-1].replace("_", " ")
    return (
        f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year} "
        f"à {local:%H:%M} (heure de {where})"
    )
