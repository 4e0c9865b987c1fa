"""One asyncpg pool per process, opened at start and closed at stop."""

from __future__ import annotations

import logging

import asyncpg

from services.kit.settings import KitSettings

log = logging.getLogger(__name__)


async def open_pool(settings: KitSettings) -> asyncpg.Pool:
    """Open the process's pool; fails fast (and clearly) when the database is unreachable."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        # Every instant is stored as UTC timestamptz; sessions speak UTC so SQL date arithmetic agrees.
        server_settings={"timezone": "UTC", "application_name": f"parcours-{settings.component}"},
        command_timeout=30,
    )
    assert pool is not None
    log.info("database pool open (min=%s max=%s)", settings.db_pool_min_size, settings.db_pool_max_size)
    return pool
