"""The daily digest of cases coming due, as an in-app notification (e-mail once the hub sends mail).

Once a day, at `digest_hour` (Europe/Paris), every officer who signed in recently and did not turn the digest
off gets one notification counting their "à échéance" and overdue cases, read as them from the contracts
service. One per officer and day (a unique key): several replicas or a restart never send two.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import asyncpg
from parcours.contracts.v1 import contracts_pb2

from services.console.french import PARIS, number
from services.console.hub import Hub, ServiceError
from services.console.security import Officer
from services.console.store import Store

logger = logging.getLogger(__name__)


async def officers_to_digest(pool: asyncpg.Pool) -> list[Officer]:
    rows = await pool.fetch(
        "SELECT DISTINCT ON (s.subject) s.subject, s.data -> 'officer' AS officer FROM console.sessions s "
        "WHERE s.subject IS NOT NULL AND s.last_seen > now() - interval '7 days' "
        "AND NOT EXISTS (SELECT 1 FROM console.notification_preferences p WHERE p.owner = s.subject "
        "AND p.event = 'daily_digest' AND NOT p.in_app) ORDER BY s.subject, s.last_seen DESC"
    )
    return [Officer.from_json(json.loads(r["officer"])) for r in rows if r["officer"] is not None]


async def send_digests(pool: asyncpg.Pool, store: Store, hub: Hub, now: datetime | None = None) -> int:
    """One digest per officer for today's date; how many were written."""
    now = now or datetime.now(UTC)
    today = now.astimezone(PARIS).date().isoformat()
    if hub.contracts is None:
        return 0
    written = 0
    for officer in await officers_to_digest(pool):
        try:
            counted = await hub.call(
                officer, "contracts", hub.contracts.CountCases, contracts_pb2.CountCasesRequest()
            )
        except ServiceError as error:
            logger.info("digest skipped for one officer: %s", error.reason or error.code.name)
            continue
        counts = counted.counts
        text = (
            f"Synthèse du jour : {number(counts.due_soon)} dossier(s) à échéance, "
            f"{number(counts.overdue)} en "
            f"retard, {number(counts.to_process)} à traiter."
        )
        if await store.notify(
            officer.subject, "daily_digest", text, "/dossiers?onglet=a-echeance", f"digest-{today}"
        ):
            written += 1
    return written


class DailyDigest:
    """Checks every few minutes whether today's digest is due and not yet sent."""

    name = "daily-digest"

    def __init__(self, pool: asyncpg.Pool, store: Store, hub: Hub, hour: int) -> None:
        self._pool, self._store, self._hub, self._hour = pool, store, hub, hour

    async def run_once(self) -> None:
        if datetime.now(UTC).astimezone(PARIS).hour >= self._hour:
            sent = await send_digests(self._pool, self._store, self._hub)
            if sent:
                logger.info("daily digest: %d officer(s) notified", sent)
