"""The scheduling service running in-process over real mTLS, on the suite's PostgreSQL (every migration
applied, the demo region seeded), with the directory service and the suite's Temporal dev server; the billing
service in-process for the workflow's completion."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import temporalio.client
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle
from services.kit.migrate import apply_all
from services.kit.pki import DevPki
from services.kit.server import Runtime, open_channel
from services.scheduling.server import build
from services.scheduling.settings import SchedulingSettings
from tests.conftest import Minter, RolePool
from tests.scheduling.helpers import Metadata
from tests.support import LOIRE, PAYLOAD_KEYS, bearer, component_channel, establishment_channel, kit_settings


def scheduling_settings(
    pki: DevPki, database_url: str, directory_address: str, temporal_address: str, **overrides: Any
) -> SchedulingSettings:
    values: dict[str, Any] = {
        **kit_settings(pki, database_url, "scheduling"),
        "temporal_address": temporal_address,
        "payload_keys": PAYLOAD_KEYS,
        "directory_address": directory_address,
        "hold_duration": timedelta(minutes=10),
        "relay_poll_seconds": 0.5,
        # The demo region changes under the tests (new practitioners): answers are not reused.
        "directory_cache_seconds": 0.0,
    }
    values.update(overrides)
    return SchedulingSettings(**values)


async def start_scheduling(
    settings: SchedulingSettings, pool: asyncpg.Pool, client: temporalio.client.Client
) -> Runtime:
    runtime = await build(
        settings, pool, temporal=client, directory=open_channel(settings, settings.directory_address)
    )
    await runtime.start()
    return runtime


@pytest.fixture(scope="session")
async def scheduling(
    pki: DevPki,
    database_url: str,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    temporal: TemporalHandle,
    temporal_client: temporalio.client.Client,
    role_pool: RolePool,
) -> AsyncIterator[Runtime]:
    """A running scheduling service (mTLS, tokens, audit, outbox relay to the suite's Temporal), as its own
    database role."""
    settings = scheduling_settings(pki, database_url, directory_address, temporal.address)
    runtime = await start_scheduling(settings, await role_pool("scheduling"), temporal_client)
    try:
        yield runtime
    finally:
        await runtime.stop(0.5)


@pytest.fixture(scope="session")
def scheduling_address(scheduling: Runtime) -> str:
    return f"127.0.0.1:{scheduling.port}"


@pytest.fixture(scope="session")
async def loire(pki: DevPki, scheduling_address: str) -> scheduling_pb2_grpc.SchedulingServiceStub:
    """The scheduling service as GHT Loire's hospital system (CH des Monts du Forez) calls it."""
    return scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, scheduling_address, LOIRE))


@pytest.fixture(scope="session")
async def directory(pki: DevPki, directory_address: str) -> directory_pb2_grpc.DirectoryServiceStub:
    """The directory as GHT Loire's system calls it (with an operator token: to create practitioners)."""
    return directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))


@pytest.fixture(scope="session")
def operator(mint: Minter) -> Metadata:
    return bearer(mint(staff="ops-scheduling", roles=["hub_operator"]))


@pytest.fixture(scope="session")
async def hub(pki: DevPki, scheduling_address: str) -> scheduling_pb2_grpc.SchedulingServiceStub:
    """The scheduling service as a Parcours component calls it (hub certificate, no token)."""
    return scheduling_pb2_grpc.SchedulingServiceStub(component_channel(pki, scheduling_address, "workflows"))


async def create_database(postgres: PostgresHandle, pool: asyncpg.Pool, prefix: str) -> tuple[str, str]:
    """A database of its own with the kit's and scheduling's schemas: (name, url). Its outbox is seen by no
    other relay than the one a test starts on it (the suite's in-process scheduling service would otherwise
    start its workflows in its place)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await pool.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url_for(name)
    await asyncio.to_thread(apply_all, url, ["kit", "scheduling"])
    return name, url
