"""The console's SQL: sessions, saved views, notification preferences and notifications, export files.

Everything here belongs to the console alone (schema `console`); case data is never stored, only read from the
services on each request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.kit.db import constraint_errors
from services.kit.errors import AlreadyExists

EVENTS = (
    "case_assigned",
    "step_overdue",
    "step_due_soon",
    "opinion_given",
    "message_received",
    "export_ready",
    "daily_digest",
    "case_changed",
)


@dataclass(frozen=True)
class SessionRow:
    subject: str | None
    data: dict[str, Any]
    last_seen: datetime
    expire_time: datetime


@dataclass(frozen=True)
class SavedView:
    view_id: str
    owner: str
    team: str
    title: str
    query: str


@dataclass(frozen=True)
class Notification:
    notification_id: str
    event: str
    text: str
    link: str
    create_time: datetime
    read: bool


@dataclass(frozen=True)
class NotificationCursor:
    """Where an officer's reading of the contracts notifications stands."""

    last_notification_id: int
    # What happened before this is not told (the officer's first sign-in the console remembers).
    since: datetime


@dataclass(frozen=True)
class ExportRow:
    export_id: str
    owner: str
    officer: dict[str, Any]
    format: str
    query: str
    state: str
    row_count: int | None
    filename: str | None
    error: str | None
    create_time: datetime
    finish_time: datetime | None


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- sessions -------------------------------------------------------------------------------------------
    async def create_session(self, id_hash: bytes, data: Mapping[str, Any], expire_time: datetime) -> None:
        await self._pool.execute(
            "INSERT INTO console.sessions (id_hash, data, expire_time) VALUES ($1, $2::jsonb, $3)",
            id_hash,
            json.dumps(data),
            expire_time,
        )

    async def load_session(self, id_hash: bytes) -> SessionRow | None:
        row = await self._pool.fetchrow(
            "SELECT subject, data, last_seen, expire_time FROM console.sessions WHERE id_hash = $1", id_hash
        )
        if row is None:
            return None
        return SessionRow(row["subject"], json.loads(row["data"]), row["last_seen"], row["expire_time"])

    async def save_session(
        self, id_hash: bytes, subject: str | None, data: Mapping[str, Any], expire_time: datetime
    ) -> None:
        await self._pool.execute(
            "UPDATE console.sessions SET subject = $2, data = $3::jsonb, expire_time = $4, last_seen = now() "
            "WHERE id_hash = $1",
            id_hash,
            subject,
            json.dumps(data),
            expire_time,
        )

    async def touch_session(self, id_hash: bytes) -> None:
        await self._pool.execute("UPDATE console.sessions SET last_seen = now() WHERE id_hash = $1", id_hash)

    async def delete_session(self, id_hash: bytes) -> None:
        await self._pool.execute("DELETE FROM console.sessions WHERE id_hash = $1", id_hash)

    async def purge(self, idle: timedelta) -> int:
        """Drop expired or idle sessions and expired exports; how many sessions went."""
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "DELETE FROM console.sessions "
                "WHERE expire_time <= now() OR last_seen <= now() - $1::interval",
                idle,
            )
            await conn.execute("DELETE FROM console.exports WHERE expire_time <= now()")
        return int(status.rsplit(" ", 1)[-1])

    # -- saved views ----------------------------------------------------------------------------------------
    async def list_views(self, owner: str, team: str) -> list[SavedView]:
        rows = await self._pool.fetch(
            "SELECT view_id, owner, team, title, query FROM console.saved_views "
            "WHERE owner = $1 OR (team <> '' AND team = $2) ORDER BY team <> '', lower(title)",
            owner,
            team,
        )
        return [SavedView(str(r["view_id"]), r["owner"], r["team"], r["title"], r["query"]) for r in rows]

    async def create_view(self, owner: str, team: str, title: str, query: str) -> SavedView:
        view_id = uuid.uuid4()
        taken = {
            "saved_views_owner_title_key": lambda: AlreadyExists("VIEW_TITLE_TAKEN", "a view has this title")
        }
        async with constraint_errors(taken):
            await self._pool.execute(
                "INSERT INTO console.saved_views (view_id, owner, team, title, query) "
                "VALUES ($1, $2, $3, $4, $5)",
                view_id,
                owner,
                team,
                title,
                query,
            )
        return SavedView(str(view_id), owner, team, title, query)

    async def delete_view(self, owner: str, view_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "DELETE FROM console.saved_views WHERE view_id = $1 AND owner = $2", view_id, owner
        )
        return bool(status.endswith(" 1"))

    # -- notification preferences and notifications --------------------------------------------------------
    async def preferences(self, owner: str) -> dict[str, tuple[bool, bool]]:
        rows = await self._pool.fetch(
            "SELECT event, in_app, email FROM console.notification_preferences WHERE owner = $1", owner
        )
        chosen = {r["event"]: (r["in_app"], r["email"]) for r in rows}
        return {event: chosen.get(event, (True, False)) for event in EVENTS}

    async def set_preferences(self, owner: str, preferences: Mapping[str, tuple[bool, bool]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO console.notification_preferences (owner, event, in_app, email) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (owner, event) "
                "DO UPDATE SET in_app = EXCLUDED.in_app, email = EXCLUDED.email",
                [(owner, event, in_app, email) for event, (in_app, email) in preferences.items()],
            )

    async def notify(
        self, owner: str, event: str, text: str, link: str = "", dedup_key: str | None = None
    ) -> bool:
        """Add an in-app notification if the owner wants this event in-app; whether one was written."""
        wanted = await self._pool.fetchval(
            "SELECT in_app FROM console.notification_preferences WHERE owner = $1 AND event = $2",
            owner,
            event,
        )
        if wanted is False:
            return False
        status = await self._pool.execute(
            "INSERT INTO console.notifications (notification_id, owner, event, text, link, dedup_key) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, dedup_key) DO NOTHING",
            uuid.uuid4(),
            owner,
            event,
            text,
            link,
            dedup_key,
        )
        return bool(status.endswith(" 1"))

    async def notifications(self, owner: str, limit: int = 50) -> list[Notification]:
        rows = await self._pool.fetch(
            "SELECT notification_id, event, text, link, create_time, read_time FROM console.notifications "
            "WHERE owner = $1 ORDER BY create_time DESC LIMIT $2",
            owner,
            limit,
        )
        return [
            Notification(
                str(r["notification_id"]),
                r["event"],
                r["text"],
                r["link"],
                r["create_time"],
                r["read_time"] is not None,
            )
            for r in rows
        ]

    async def unread_count(self, owner: str) -> int:
        count = await self._pool.fetchval(
            "SELECT count(*) FROM console.notifications WHERE owner = $1 AND read_time IS NULL", owner
        )
        return int(count)

    async def mark_read(self, owner: str) -> None:
        await self._pool.execute(
            "UPDATE console.notifications SET read_time = now() WHERE owner = $1 AND read_time IS NULL", owner
        )

    async def digest_owners(self) -> list[str]:
        """Officers who signed in within the last week and did not turn the daily digest off."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT s.subject FROM console.sessions s WHERE s.subject IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM console.notification_preferences p WHERE p.owner = s.subject "
            "AND p.event = 'daily_digest' AND NOT p.in_app)"
        )
        return [r["subject"] for r in rows]

    async def officers_seen(self, within: timedelta) -> list[dict[str, Any]]:
        """The signed-in officers of sessions used within `within`: each one's latest officer data."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (subject) data -> 'officer' AS officer FROM console.sessions "
            "WHERE subject IS NOT NULL AND last_seen > now() - $1::interval AND data ? 'officer' "
            "ORDER BY subject, last_seen DESC",
            within,
        )
        return [json.loads(r["officer"]) for r in rows]

    async def notification_cursor(self, owner: str) -> NotificationCursor:
        """The officer's cursor; on first sight, from the start of their oldest session the console keeps."""
        await self._pool.execute(
            "INSERT INTO console.notification_cursors (owner, since) "
            "SELECT $1, coalesce(min(create_time), now()) FROM console.sessions WHERE subject = $1 "
            "ON CONFLICT (owner) DO NOTHING",
            owner,
        )
        row = await self._pool.fetchrow(
            "SELECT last_notification_id, since FROM console.notification_cursors WHERE owner = $1", owner
        )
        assert row is not None
        return NotificationCursor(row["last_notification_id"], row["since"])

    async def advance_cursor(self, owner: str, last_notification_id: int) -> None:
        """Never moves back: two replicas reading the same officer both end at the further point."""
        await self._pool.execute(
            "UPDATE console.notification_cursors SET update_time = now(), "
            "last_notification_id = greatest(last_notification_id, $2) WHERE owner = $1",
            owner,
            last_notification_id,
        )

    async def claim_mail(self, owner: str, dedup_key: str) -> bool:
        """Whether this process is the one to send this e-mail (one per officer and key, across replicas)."""
        status = await self._pool.execute(
            "INSERT INTO console.notification_mails (owner, dedup_key) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            owner,
            dedup_key,
        )
        return bool(status.endswith(" 1"))

    async def release_mail(self, owner: str, dedup_key: str) -> None:
        """An e-mail that could not be sent: a later pass may send it."""
        await self._pool.execute(
            "DELETE FROM console.notification_mails WHERE owner = $1 AND dedup_key = $2", owner, dedup_key
        )

    # -- exports --------------------------------------------------------------------------------------------
    async def create_export(
        self, owner: str, officer: Mapping[str, Any], fmt: str, query: str, retention: timedelta
    ) -> str:
        export_id = uuid.uuid4()
        await self._pool.execute(
            "INSERT INTO console.exports (export_id, owner, officer, format, query, expire_time) "
            "VALUES ($1, $2, $3::jsonb, $4, $5, now() + $6::interval)",
            export_id,
            owner,
            json.dumps(officer),
            fmt,
            query,
            retention,
        )
        return str(export_id)

    async def claim_export(self) -> ExportRow | None:
        """The oldest pending export, marked RUNNING (several console replicas never take the same one)."""
        row = await self._pool.fetchrow(
            "UPDATE console.exports SET state = 'RUNNING' WHERE export_id = ("
            "  SELECT export_id FROM console.exports WHERE state = 'PENDING' ORDER BY create_time "
            "  FOR UPDATE SKIP LOCKED LIMIT 1) "
            "RETURNING export_id, owner, officer, format, query, state, row_count, filename, error, "
            "create_time, finish_time"
        )
        return None if row is None else _export(row)

    async def finish_export(self, export_id: str, content: bytes, filename: str, rows: int) -> None:
        await self._pool.execute(
            "UPDATE console.exports SET state = 'DONE', content = $2, filename = $3, row_count = $4, "
            "finish_time = now() WHERE export_id = $1",
            uuid.UUID(export_id),
            content,
            filename,
            rows,
        )

    async def fail_export(self, export_id: str, error: str) -> None:
        await self._pool.execute(
            "UPDATE console.exports SET state = 'FAILED', error = $2, finish_time = now() "
            "WHERE export_id = $1",
            uuid.UUID(export_id),
            error[:500],
        )

    async def requeue_running_exports(self) -> None:
        """At start: exports a stopped process was producing are produced again."""
        await self._pool.execute("UPDATE console.exports SET state = 'PENDING' WHERE state = 'RUNNING'")

    async def exports(self, owner: str, limit: int = 20) -> list[ExportRow]:
        rows = await self._pool.fetch(
            "SELECT export_id, owner, officer, format, query, state, row_count, filename, error, "
            "create_time, finish_time FROM console.exports WHERE owner = $1 "
            "ORDER BY create_time DESC LIMIT $2",
            owner,
            limit,
        )
        return [_export(r) for r in rows]

    async def export_file(self, owner: str, export_id: uuid.UUID) -> tuple[str, str, bytes] | None:
        row = await self._pool.fetchrow(
            "SELECT format, filename, content FROM console.exports "
            "WHERE export_id = $1 AND owner = $2 AND state = 'DONE'",
            export_id,
            owner,
        )
        return None if row is None else (row["format"], row["filename"], bytes(row["content"]))


def _export(row: Any) -> ExportRow:
    return ExportRow(
        str(row["export_id"]),
        row["owner"],
        json.loads(row["officer"]),
        row["format"],
        row["query"],
        row["state"],
        row["row_count"],
        row["filename"],
        row["error"],
        row["create_time"],
        row["finish_time"],
    )
