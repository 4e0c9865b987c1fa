"""The one idempotency ledger: a retry gets the first outcome; the same request id for another call is
refused; entries past the retention are purged. On a real schema created by the kit's own migration text."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from parcours.directory.v1 import directory_pb2

from services.kit.auth import Principal
from services.kit.errors import AlreadyExists
from services.kit.idempotency import Call, Ledger, ledger_migration


def principal(
    practitioner: str = "practitioners/10000000101", establishment: str = "establishments/420000017"
):
    return Principal(
        establishment=establishment,
        component="",
        practitioner=practitioner,
        subject="8" + practitioner.removeprefix("practitioners/"),
        profession="PROFESSION_PHYSICIAN",
        specialty=None,
        roles=frozenset(),
    )


@pytest.fixture
async def ledger(pool: asyncpg.Pool) -> AsyncIterator[Ledger]:
    schema = f"ledger_{uuid.uuid4().hex[:10]}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute(ledger_migration(schema))
    try:
        yield Ledger(schema)
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")


def request(name: str = "ghts/ght-a", request_id: str | None = None) -> directory_pb2.CreateGhtRequest:
    return directory_pb2.CreateGhtRequest(
        request_id=request_id or str(uuid.uuid4()),
        ght_id=name.removeprefix("ghts/"),
        ght=directory_pb2.Ght(display_name="GHT d'essai"),
    )


async def test_a_retry_gets_the_first_outcome_and_a_reuse_is_refused(
    pool: asyncpg.Pool, ledger: Ledger
) -> None:
    first = request()
    call = Call.of(first, "CreateGht", principal())
    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.claim(conn, call) is None
        await ledger.record(conn, call, ["ghts/ght-a"], response=b"the first answer")
    # The same request again (its request_id included): the first outcome.
    again = Call.of(request(request_id=first.request_id), "CreateGht", principal())
    async with pool.acquire() as conn:
        entry = await ledger.find(conn, again)
    assert entry is not None and (entry.resource, entry.response) == ("ghts/ght-a", b"the first answer")
    # The same id with another payload, another method, or from another caller or establishment: refused.
    for other in (
        Call.of(request("ghts/ght-b", first.request_id), "CreateGht", principal()),
        Call.of(request(request_id=first.request_id), "CreateEstablishment", principal()),
        Call.of(request(request_id=first.request_id), "CreateGht", principal("practitioners/10000000201")),
        Call.of(
            request(request_id=first.request_id),
            "CreateGht",
            principal(establishment="establishments/380000024"),
        ),
    ):
        async with pool.acquire() as conn:
            with pytest.raises(AlreadyExists) as reused:
                await ledger.find(conn, other)
        assert reused.value.reason == "REQUEST_ID_REUSED"


WAITING_ON_ADVISORY_LOCK = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
)


async def test_a_concurrent_retry_waits_and_gets_the_first_outcome(
    pool: asyncpg.Pool, ledger: Ledger
) -> None:
    call = Call.of(request(), "CreateGht", principal())

    async def retry() -> str | None:
        async with pool.acquire() as conn, conn.transaction():
            done = await ledger.claim(conn, call)
            return done.resource if done is not None else None

    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.claim(conn, call) is None
        retrying = asyncio.create_task(retry())
        # Only the server knows when the retry waits on the request's lock, and it tells no one: poll its lock
        # table, as PostgreSQL's own isolation tester does.
        async with asyncio.timeout(10):
            while not await pool.fetchval(WAITING_ON_ADVISORY_LOCK):  # noqa: ASYNC110 - nothing to await
                await asyncio.sleep(0.01)
        assert not retrying.done()
        await ledger.record(conn, call, ["ghts/the-only-one"])
    assert await retrying == "ghts/the-only-one"


async def test_entries_past_the_retention_are_purged(pool: asyncpg.Pool, ledger: Ledger) -> None:
    old, new = (Call.of(request(), "CreateGht", principal()) for _ in range(2))
    async with pool.acquire() as conn, conn.transaction():
        await ledger.record(conn, old, ["ghts/old"])
        await ledger.record(conn, new, ["ghts/new"])
        await conn.execute(
            f"UPDATE {ledger.table} SET create_time = now() - interval '31 days' WHERE request_id = $1",  # noqa: S608
            uuid.UUID(old.request_id),
        )
    assert await ledger.purge(pool, timedelta(days=30)) == 1
    async with pool.acquire() as conn:
        assert await ledger.find(conn, old) is None
        assert await ledger.find(conn, new) is not None
