"""Join links: an expiring, unguessable token per (appointment, participant), kept only as its hash.

The Teleconsultation worker makes each link when the join window opens: the token is HMAC-SHA256 of the
appointment, the participant and the expiry under the worker's key (`PARCOURS_JOIN_TOKEN_KEY`), 43 base64url
characters, so a retried delivery sends the same link. The scheduling database keeps only SHA-256 of the
token: a copy of the database opens no consultation. `CheckJoinToken` hashes what it is given and says
whether it admits its participant now: known, not past its expiry (the end of the consultation plus the
no-show grace) and the appointment still booked or in progress.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger(__name__)

UNKNOWN = "JOIN_TOKEN_UNKNOWN"
EXPIRED = "JOIN_TOKEN_EXPIRED"
NOT_BOOKED = "APPOINTMENT_NOT_BOOKED"
ADMITTING = frozenset({"booked", "arrived"})


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


@dataclass(frozen=True)
class JoinLinks:
    base_url: str
    key: bytes = field(repr=False)

    @classmethod
    def with_key(cls, base_url: str, key: bytes | None) -> JoinLinks:
        if key is None:
            log.warning(
                "no PARCOURS_JOIN_TOKEN_KEY: join links are signed with a per-process key "
                "(set it so that every worker builds the same link)"
            )
            key = secrets.token_bytes(32)
        return cls(base_url.rstrip("/"), key)

    def token(self, appointment_id: uuid.UUID, participant: str, expire_time: datetime) -> str:
        message = f"{appointment_id}|{participant}|{int(expire_time.timestamp())}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def url(self, token: str) -> str:
        return f"{self.base_url}/{token}"


def check(row: object | None, now: datetime) -> str:
    """'' when the token's row admits now, else the reason."""
    if row is None:
        return UNKNOWN
    found: dict[str, object] = dict(row)  # type: ignore[call-overload]
    expire_time = found["expire_time"]
    assert isinstance(expire_time, datetime)
    if now >= expire_time:
        return EXPIRED
    if found["status"] not in ADMITTING:
        return NOT_BOOKED
    return ""
