"""One asyncpg pool per process, opened at start and closed at stop; what a database failure means to a
client, and the one retry of transactions PostgreSQL aborted for a conflict.

- `open_pool`: the process's pool. A connection that cannot be made (the server is down, restarting, or
  unreachable) fails fast with `DatabaseUnavailable`, never with the socket's own error.
- `retryable_error`: the one mapping of database failures a client can retry — UNAVAILABLE
  `DATABASE_UNAVAILABLE` while the database cannot be reached, is shutting down or starting up, or has no
  connection or resource left; ABORTED `DATABASE_CONFLICT` when a transaction lost a conflict with a
  concurrent one (serialization failure, deadlock, lock timeout) even after the service's own retries. The
  kit's error interceptor asks it before answering INTERNAL, so every service answers the same way.
- `retry_conflicts`: runs a whole transaction again, a bounded number of times, when PostgreSQL aborted it
  for a conflict (SQLSTATE 40001, 40P01): such an abort undid everything, so running it again is safe.
- `constraint_errors`: a violated named constraint becomes the domain error its name stands for.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from services.kit.errors import Aborted, DomainError, Unavailable
from services.kit.settings import KitSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
DATABASE_CONFLICT = "DATABASE_CONFLICT"
# How long a new connection may take before the database counts as unreachable (asyncpg's default is 60 s:
# a request would hang that long behind a partition).
CONNECT_TIMEOUT_SECONDS = 5.0
# Attempts of a transaction PostgreSQL aborted for a conflict, and the longest pause between two.
CONFLICT_ATTEMPTS = 4
_CONFLICT_PAUSE_SECONDS = 0.05

# SQLSTATE classes a client may retry (PostgreSQL Appendix A): 08 connection exception, 53 insufficient
# resources, 57 operator intervention (shutdown, crash, starting up, statement cancelled or timed out),
# 58 system error; 40 transaction rollback, 55P03 lock not available.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_CONFLICT_STATES = ("40", "55P03")


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached now (the pool could not open a connection)."""

    def __init__(self) -> None:
        super().__init__(DATABASE_UNAVAILABLE, "the database cannot be reached right now; retry later")


def database_conflict() -> Aborted:
    return Aborted(DATABASE_CONFLICT, "a concurrent change conflicted with this one; retry")


async def connect(dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, with a refused, reset or timed-out connection said as `DatabaseUnavailable`."""
    try:
        return await asyncpg.connect(dsn, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (see open_pool)."""


async def open_pool(settings: KitSettings) -> asyncpg.Pool:
    """Open the process's pool; fails fast (and clearly) when the database is unreachable."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        connect=connect,
        timeout=CONNECT_TIMEOUT_SECONDS,
        # Every instant is stored as UTC timestamptz; sessions speak UTC so SQL date arithmetic agrees.
        server_settings={"timezone": "UTC", "application_name": f"parcours-{settings.component}"},
        command_timeout=30,
        # asyncpg's default reset (RESET ALL, UNLISTEN, advisory unlock...) costs a round trip per release.
        # Our code keeps no session state (SET LOCAL and transaction-scoped advisory locks only); an open
        # transaction is still rolled back by the pool before this hook runs.
        reset=_keep_session,
    )
    assert pool is not None
    log.info("database pool open (min=%s max=%s)", settings.db_pool_min_size, settings.db_pool_max_size)
    return pool


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from (its cause or context), outermost first."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _sqlstate(error: BaseException) -> str:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else ""


def is_conflict(error: BaseException) -> bool:
    """PostgreSQL aborted the transaction for a conflict with a concurrent one: running it again is safe."""
    return isinstance(error, asyncpg.PostgresError) and _sqlstate(error).startswith(_CONFLICT_STATES)


def retryable_error(error: BaseException) -> DomainError | None:
    """The answer for a database failure a client can retry (see the module docstring), or None."""
    for cause in _causes(error):
        if isinstance(cause, asyncpg.PostgresError):
            state = _sqlstate(cause)
            if is_conflict(cause):
                return database_conflict()
            if state.startswith(_UNAVAILABLE_CLASSES):
                return DatabaseUnavailable()
            return None  # a definite answer of the database (a bug, a constraint): not ours to soften
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
            # The connection went away under the call (a killed or restarted server).
            return DatabaseUnavailable()
    return None


async def retry_conflicts(work: Callable[[], Awaitable[T]], *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run `work` — one whole transaction, from BEGIN to COMMIT — again when PostgreSQL aborted it for a
    conflict with a concurrent transaction, at most `attempts` times in all, after a short random pause
    (the conflicting transactions do not meet again in step). The last conflict propagates (ABORTED)."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except asyncpg.PostgresError as error:
            if not is_conflict(error) or attempt == attempts:
                raise
            log.info(
                "transaction aborted by a concurrent one (sqlstate %s): attempt %d of %d",
                _sqlstate(error),
                attempt,
                attempts,
            )
        await asyncio.sleep(random.uniform(0, _CONFLICT_PAUSE_SECONDS * attempt))
    raise AssertionError("unreachable")


@asynccontextmanager
async def constraint_errors(errors: Mapping[str, Callable[[], DomainError]]) -> AsyncIterator[None]:
    """Turn a violated database constraint into the domain error its name stands for.

    The constraints hold the invariants; their names say which refusal a client gets. A violation of a
    constraint not in `errors` is a bug and propagates unchanged.
    """
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        factory = errors.get(exc.constraint_name or "")
        if factory is None:
            raise
        # `from None`: the driver's message quotes the offending key, which may be patient data.
        raise factory() from None
