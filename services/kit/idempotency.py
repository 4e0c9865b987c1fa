"""Idempotency: one ledger shape and one check for every mutating RPC (`request_id`, AIP-155).

Each service schema holds a table `<schema>.idempotency` (created by `ledger_migration(schema)` in a
migration of its own). A row records a request id applied, with the method, the actor and a digest of the
request it came with, the names of the resources it wrote and, where the service keeps it, the serialized
response. It is written in the same transaction as the change itself — by the service, or by a workflow's
projection write for a change a workflow applied — so a retried request finds its first outcome and never
writes twice.

The one check: the same `request_id` with another method, another payload or from another actor is refused
`ALREADY_EXISTS` / `REQUEST_ID_REUSED` (a client bug, not a retry). Entries older than the retention
(`PARCOURS_IDEMPOTENCY_RETENTION`, 30 days by default, well past any client's retry horizon) are purged by
the service's background task, so stored responses that hold patient data do not stay forever.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from services.kit.auth import Principal
from services.kit.errors import AlreadyExists

if TYPE_CHECKING:
    from services.kit.server import Periodic

log = logging.getLogger(__name__)

DEFAULT_RETENTION = timedelta(days=30)
# pg_advisory_xact_lock(class, key): the class keeps these locks apart from any other advisory lock.
_LOCK_CLASS = 0x69646D70  # "idmp"
_SCHEMA = re.compile(r"[a-z][a-z0-9_]{0,62}")


def actor_of(principal: Principal) -> str:
    """Who makes a call, as the ledger and histories record it: the practitioner, else the establishment,
    else the component, else the token's subject."""
    if principal.practitioner:
        return principal.practitioner
    if principal.establishment:
        return principal.establishment
    if principal.component:
        return f"component/{principal.component}"
    return principal.subject or "anonymous"


def caller_of(principal: Principal) -> str:
    """Who made a request, as the ledger keys it: the establishment, the component and the person together,
    so a recorded response (which may hold patient data) is never replayed to anyone but its caller."""
    person = principal.practitioner or principal.subject
    return f"{principal.establishment}|{principal.component}|{person}"


def digest_of(request: Message) -> str:
    """A digest of a request without its `request_id` (the same call retried has the same digest)."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Call:
    """A mutating call as the ledger knows it."""

    # The canonical form of the client's UUID (a str: the dataclass crosses the Temporal boundary, whose
    # sandboxed converter does not rebuild uuid.UUID values inside dataclasses).
    request_id: str
    method: str
    actor: str
    digest: str

    @classmethod
    def of(cls, request: Message, method: str, principal: Principal) -> Call:
        request_id: str = getattr(request, "request_id")  # noqa: B009 (every mutating request has one)
        return cls(
            request_id=str(uuid.UUID(request_id)),
            method=method,
            actor=caller_of(principal),
            digest=digest_of(request),
        )


@dataclass(frozen=True)
class Entry:
    """What a request did the first time: the resources it wrote, and its response where one was kept."""

    resources: list[str]
    response: bytes | None

    @property
    def resource(self) -> str:
        return self.resources[0]


def _reused() -> AlreadyExists:
    return AlreadyExists(
        "REQUEST_ID_REUSED",
        "this request_id was used for another call (method, payload or caller); use a new one",
    )


class Ledger:
    """The idempotency ledger of one service schema."""

    def __init__(self, schema: str) -> None:
        if not _SCHEMA.fullmatch(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        self.table = f"{schema}.idempotency"
        self._get = (
            f"SELECT method, actor, digest, resources, response FROM {self.table} WHERE request_id = $1"  # noqa: S608
        )
        self._insert = (
            f"INSERT INTO {self.table} (request_id, method, actor, digest, resources, response) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6)"
        )
        self._purge = f"DELETE FROM {self.table} WHERE create_time < now() - $1::interval"  # noqa: S608

    async def find(self, conn: Any, call: Call) -> Entry | None:
        """The entry of an earlier attempt of `call` (None: never applied); REQUEST_ID_REUSED when the id was
        applied for another call."""
        row = await conn.fetchrow(self._get, uuid.UUID(call.request_id))
        if row is None:
            return None
        return self.check(row, call)

    @staticmethod
    def check(row: Any, call: Call) -> Entry:
        """An existing ledger row against the call retrying it (the one check)."""
        # Rows written before the ledger knew actors and digests hold '' there: the method still counts.
        other = bool(row["digest"]) and (row["actor"], row["digest"]) != (call.actor, call.digest)
        if row["method"] != call.method or other:
            raise _reused()
        return Entry(resources=list(row["resources"]), response=row["response"])

    async def claim(self, tx: Any, call: Call) -> Entry | None:
        """In a transaction: wait for a concurrent attempt of the same request id, then `find`."""
        await tx.execute(
            "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))", _LOCK_CLASS, call.request_id
        )
        return await self.find(tx, call)

    async def record(
        self,
        tx: Any,
        call: Call,
        resources: Sequence[str] = (),
        response: Message | bytes | None = None,
        *,
        if_absent: bool = False,
    ) -> None:
        """Record `call` as applied, in the transaction of the change it made. `if_absent`: a retried writer
        (a workflow's activity) that finds it recorded already leaves it (the check is the reader's)."""
        if isinstance(response, Message):
            response = response.SerializeToString()
        statement = self._insert + (" ON CONFLICT (request_id) DO NOTHING" if if_absent else "")
        await tx.execute(
            statement,
            uuid.UUID(call.request_id),
            call.method,
            call.actor,
            call.digest,
            list(resources),
            response,
        )

    async def purge(self, conn: Any, older_than: timedelta = DEFAULT_RETENTION) -> int:
        """Delete entries past the retention; how many."""
        status: str = await conn.execute(self._purge, older_than)
        count = int(status.rsplit(" ", 1)[-1])
        if count:
            log.info("idempotency: purged %d entries of %s older than %s", count, self.table, older_than)
        return count


def ledger_migration(schema: str) -> str:
    """The SQL creating (or bringing to the one shape) `<schema>.idempotency`; for a service's migration."""
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    table = f"{schema}.idempotency"
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    request_id uuid NOT NULL,
    method text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_pkey PRIMARY KEY (request_id)
);
ALTER TABLE {table}
    ADD COLUMN IF NOT EXISTS actor text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS digest text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS resources text[] NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS response bytea;
ALTER TABLE {table} ALTER COLUMN response DROP NOT NULL;
CREATE INDEX IF NOT EXISTS idempotency_create_time_idx ON {table} (create_time);
COMMENT ON TABLE {table} IS
    'Client request ids of applied mutating calls (services/kit/idempotency.py); purged after the retention.';
"""


PURGE_INTERVAL_SECONDS = 3600.0


def purge_task(ledger: Ledger, pool: Any, retention: timedelta) -> Periodic:
    """The background task every service runs: entries past the retention purged every hour."""
    from services.kit.server import Periodic

    return Periodic(
        f"idempotency-purge:{ledger.table}", lambda: ledger.purge(pool, retention), PURGE_INTERVAL_SECONDS
    )
