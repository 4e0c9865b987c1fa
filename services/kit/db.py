"""One asyncpg pool per process, opened at start and closed at stop."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import asyncpg

from services.kit.errors import DomainError
from services.kit.settings import KitSettings

log = logging.getLogger(__name__)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (see open_pool)."""


async def open_pool(settings: KitSettings) -> asyncpg.Pool:
    """Open the process's pool; fails fast (and clearly) when the database is unreachable."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
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
