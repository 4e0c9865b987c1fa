"""What a database failure means to a client (services/kit/db.py): the one mapping of the failures a client
can retry, the bounded retry of transactions PostgreSQL aborted for a conflict — a real deadlock, provoked on
the suite's PostgreSQL — and a pool that says plainly when the database cannot be reached."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from services.devstack import free_port
from services.kit.db import (
    DATABASE_CONFLICT,
    DATABASE_UNAVAILABLE,
    DatabaseUnavailable,
    open_pool,
    retry_conflicts,
    retryable_error,
)
from services.kit.settings import KitSettings

E = asyncpg.exceptions


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (E.DeadlockDetectedError("deadlock detected"), grpc.StatusCode.ABORTED, DATABASE_CONFLICT),
        (E.SerializationError("could not serialize"), grpc.StatusCode.ABORTED, DATABASE_CONFLICT),
        (E.LockNotAvailableError("lock timeout"), grpc.StatusCode.ABORTED, DATABASE_CONFLICT),
        (
            E.CannotConnectNowError("the database system is starting up"),
            grpc.StatusCode.UNAVAILABLE,
            DATABASE_UNAVAILABLE,
        ),
        (E.AdminShutdownError("terminating connection"), grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE),
        (
            E.ConnectionDoesNotExistError("connection was closed"),
            grpc.StatusCode.UNAVAILABLE,
            DATABASE_UNAVAILABLE,
        ),
        (E.TooManyConnectionsError("too many clients"), grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE),
        (E.QueryCanceledError("statement timeout"), grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE),
        (
            E.InterfaceError("cannot call Connection.fetch(): connection is closed"),
            grpc.StatusCode.UNAVAILABLE,
            DATABASE_UNAVAILABLE,
        ),
    ],
)
def test_a_failure_the_client_can_retry_is_unavailable_or_aborted_with_its_reason(
    error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    found = retryable_error(error)
    assert found is not None and (found.code, found.reason) == (code, reason)
    # The same when the failure surfaces wrapped in another exception.
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("while booking") from inner
    except RuntimeError as outer:
        wrapped = retryable_error(outer)
    assert wrapped is not None and wrapped.reason == reason


@pytest.mark.parametrize(
    "error",
    [
        E.UniqueViolationError("duplicate key"),
        E.UndefinedColumnError("column does not exist"),
        E.InterfaceError("cannot perform operation: another operation is in progress"),
        ValueError("a bug"),
    ],
)
def test_a_definite_answer_or_a_bug_is_not_softened(error: Exception) -> None:
    assert retryable_error(error) is None


async def test_a_deadlocked_transaction_runs_again_and_both_commit(pool: asyncpg.Pool) -> None:
    table = f"kit_deadlock_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
    await pool.execute(f"INSERT INTO {table} (id) VALUES (1), (2)")  # noqa: S608
    first_locked, second_locked = asyncio.Event(), asyncio.Event()
    attempts = {"a": 0, "b": 0}

    async def both(name: str, mine: int, theirs: int, locked: asyncio.Event, other: asyncio.Event) -> None:
        async def transaction() -> None:
            attempts[name] += 1
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = $1", mine)  # noqa: S608
                locked.set()
                if attempts[name] == 1:
                    await other.wait()  # each holds its row and wants the other's: a deadlock
                await conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = $1", theirs)  # noqa: S608

        await retry_conflicts(transaction)

    try:
        await asyncio.wait_for(
            asyncio.gather(
                both("a", 1, 2, first_locked, second_locked), both("b", 2, 1, second_locked, first_locked)
            ),
            30,
        )
        # PostgreSQL aborted one of them; it ran again; each added one to both rows.
        assert sorted(attempts.values()) == [1, 2]
        assert [r["n"] for r in await pool.fetch(f"SELECT n FROM {table} ORDER BY id")] == [2, 2]  # noqa: S608
    finally:
        await pool.execute(f"DROP TABLE {table}")


async def test_retries_are_bounded_and_the_last_conflict_propagates() -> None:
    calls = 0

    async def always_deadlocked() -> None:
        nonlocal calls
        calls += 1
        raise E.DeadlockDetectedError("deadlock detected")

    with pytest.raises(E.DeadlockDetectedError):
        await retry_conflicts(always_deadlocked, attempts=3)
    assert calls == 3


async def test_an_unreachable_database_is_said_plainly() -> None:
    settings = KitSettings(
        database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none", insecure_dev_mode=True
    )
    with pytest.raises(DatabaseUnavailable) as caught:
        await open_pool(settings)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.reason == DATABASE_UNAVAILABLE
