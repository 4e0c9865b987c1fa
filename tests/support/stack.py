"""`case_stack`: a case service and its worker, in process, on a fresh task queue, for one test.

Every case service on the kit is built the same way, `build(settings, pool, *, temporal, directory) ->
Runtime`, and so is every worker, `build(settings, client, pool, channels) -> Worker` with
`settings.channels()` naming the services it calls. A `CaseService` says which ones; the `case_stack`
fixture (tests/conftest.py) starts them against the suite's PostgreSQL, Temporal, directory and billing, and
stops them after the test:

    EXPERTISE = CaseService(component="expertise", settings=ExpertiseSettings, build=build,
                            task_queue_setting="teleexpertise_task_queue",
                            worker_settings=TeleexpertiseWorkerSettings, worker_build=build_worker)
    stack = await case_stack(EXPERTISE, settings={...}, worker_settings={...})
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import temporalio.client
import temporalio.worker

from services.kit.pki import DevPki
from services.kit.server import Runtime, open_channel
from tests.support import PAYLOAD_KEYS, establishment_channel, kit_settings


@dataclass(frozen=True, kw_only=True)
class CaseService:
    """How to build one case service and its worker."""

    component: str
    settings: type[Any]
    build: Callable[..., Awaitable[Runtime]]
    task_queue_setting: str
    worker_settings: type[Any] | None = None
    worker_build: Callable[..., temporalio.worker.Worker] | None = None


@dataclass(kw_only=True)
class CaseStack:
    """A running case service (and maybe its worker) for one test."""

    pki: DevPki
    address: str
    task_queue: str
    settings: Any
    client: temporalio.client.Client
    pool: asyncpg.Pool
    directory_address: str
    billing_address: str
    runtime: Runtime
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, finess: str) -> grpc.aio.Channel:
        """A channel to the service presenting establishment `finess`'s certificate (kept for the test)."""
        if finess not in self._channels:
            self._channels[finess] = establishment_channel(self.pki, self.address, finess)
        return self._channels[finess]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@dataclass(kw_only=True)
class SuiteServices:
    """What the suite already runs, that a case stack plugs into."""

    pki: DevPki
    database_url: str
    pool: asyncpg.Pool
    # A component's pool as its own database role (tests/conftest.py `role_pool`): what services run on.
    role_pool: Callable[[str], Awaitable[asyncpg.Pool]]
    client: temporalio.client.Client
    directory_address: str
    billing_address: str


class CaseStackFactory:
    def __init__(self, suite: SuiteServices, exits: AsyncExitStack) -> None:
        self._suite = suite
        self._exits = exits

    def _values(self, component: str, temporal_address: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        suite = self._suite
        return {
            **kit_settings(suite.pki, suite.database_url, component),
            "temporal_address": temporal_address,
            "payload_keys": PAYLOAD_KEYS,
            "directory_address": suite.directory_address,
            **overrides,
        }

    async def __call__(
        self,
        service: CaseService,
        *,
        worker: bool = True,
        settings: Mapping[str, Any] | None = None,
        worker_settings: Mapping[str, Any] | None = None,
        client: temporalio.client.Client | None = None,
    ) -> CaseStack:
        """`client`: another Temporal than the suite's (a time-skipping test server), for both."""
        suite, exits = self._suite, self._exits
        client = client or suite.client
        temporal_address = client.service_client.config.target_host
        task_queue = f"{service.component}-test-{uuid.uuid4()}"
        values = self._values(
            service.component, temporal_address, {service.task_queue_setting: task_queue, **(settings or {})}
        )
        built = service.settings(**values)
        directory = open_channel(built, suite.directory_address)
        exits.push_async_callback(directory.close)
        service_pool = await suite.role_pool(service.component)
        runtime = await service.build(built, service_pool, temporal=client, directory=directory)
        await runtime.start()
        exits.push_async_callback(runtime.stop, 0.5)
        stack = CaseStack(
            pki=suite.pki,
            address=f"127.0.0.1:{runtime.port}",
            task_queue=task_queue,
            settings=built,
            client=client,
            pool=suite.pool,
            directory_address=suite.directory_address,
            billing_address=suite.billing_address,
            runtime=runtime,
        )
        exits.push_async_callback(stack.close)
        if worker and service.worker_settings is not None and service.worker_build is not None:
            worker_values = self._values(
                "workflows",
                temporal_address,
                {
                    "billing_address": suite.billing_address,
                    service.task_queue_setting: task_queue,
                    **(worker_settings or {}),
                },
            )
            built_worker = service.worker_settings(**worker_values)
            channels = {
                name: open_channel(built_worker, address) for name, address in built_worker.channels().items()
            }
            for channel in channels.values():
                exits.push_async_callback(channel.close)
            await exits.enter_async_context(
                # The worker writes its domain's projections: its service's role.
                service.worker_build(built_worker, client, service_pool, channels)
            )
        return stack
