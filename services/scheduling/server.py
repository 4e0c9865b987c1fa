"""Build and serve the scheduling service: its gRPC server, the workflow outbox relay, the horizon refresher.

The process is SERVING once its pool answers, the directory channel is connected and the relay has drained
what earlier processes left in the outbox (the kit's `serve` waits for every downstream dependency before
SERVING and closes them at stop: the background tasks are presented to it as one more dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import grpc
import temporalio.client
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.kit.server import KitServer, ServiceBinding, build_server, open_channel, serve
from services.kit.temporal import connect_client
from services.scheduling import store
from services.scheduling.agenda import materialise_schedule
from services.scheduling.directory import DirectoryLookup
from services.scheduling.relay import WorkflowPlan, WorkflowRelay
from services.scheduling.servicer import SERVICE_NAME, SchedulingServicer
from services.scheduling.settings import SchedulingSettings

log = logging.getLogger(__name__)

REFRESH_BATCH = 200


class HorizonRefresher:
    """Opens each schedule's next days as days pass (and prunes past slots), every `interval` seconds."""

    def __init__(self, pool: asyncpg.Pool, interval: float) -> None:
        self._pool = pool
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        refreshed = 0
        while True:
            schedule_ids = await store.schedules_to_refresh(self._pool, REFRESH_BATCH)
            for schedule_id in schedule_ids:
                async with store.transaction(self._pool) as tx:
                    await materialise_schedule(tx, schedule_id)
                refreshed += 1
            if len(schedule_ids) < REFRESH_BATCH:
                break
        await store.prune_past_slots(self._pool)
        return refreshed

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="slot-horizon-refresher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                count = await self.refresh()
                if count:
                    log.info("slot horizon extended for %d schedules", count)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slot horizon refresh failed; retrying later")
            await asyncio.sleep(self._interval)


@dataclass
class Background:
    """The relay and the refresher, shaped like a downstream channel for the kit's `serve`: ready once the
    relay has re-driven the outbox, closed at stop."""

    relay: WorkflowRelay
    refresher: HorizonRefresher

    async def channel_ready(self) -> None:
        await self.relay.start()
        await self.refresher.start()
        await self.relay.ready()

    async def close(self) -> None:
        await self.refresher.stop()
        await self.relay.stop()


@dataclass
class SchedulingRuntime:
    """An in-process scheduling service (tests and benchmarks): the server and its background tasks."""

    kit: KitServer
    relay: WorkflowRelay
    background: Background
    servicer: SchedulingServicer

    @property
    def port(self) -> int:
        return self.kit.port

    async def start(self) -> None:
        await self.kit.start()
        await self.background.channel_ready()
        await self.kit.set_serving(True)

    async def stop(self, grace: float | None = 0.5) -> None:
        await self.kit.stop(grace)
        await self.background.close()


def _parts(
    settings: SchedulingSettings,
    pool: asyncpg.Pool,
    temporal: temporalio.client.Client,
    directory: grpc.aio.Channel,
) -> tuple[SchedulingServicer, WorkflowRelay, Background]:
    relay = WorkflowRelay(
        pool,
        temporal,
        WorkflowPlan(reminder_offsets=settings.reminder_offsets),
        poll_seconds=settings.relay_poll_seconds,
        batch_size=settings.relay_batch_size,
        concurrency=settings.relay_concurrency,
        max_starts_per_second=settings.relay_max_starts_per_second,
    )
    lookup = DirectoryLookup(
        directory_pb2_grpc.DirectoryServiceStub(directory), settings.directory_cache_seconds
    )
    servicer = SchedulingServicer(pool, lookup, temporal, relay, settings)
    background = Background(relay, HorizonRefresher(pool, settings.horizon_refresh_seconds))
    return servicer, relay, background


def _bindings(servicer: SchedulingServicer) -> list[ServiceBinding]:
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: scheduling_pb2_grpc.add_SchedulingServiceServicer_to_server(servicer, server),
        )
    ]


async def build(
    settings: SchedulingSettings,
    pool: asyncpg.Pool,
    *,
    temporal: temporalio.client.Client,
    directory: grpc.aio.Channel,
) -> SchedulingRuntime:
    """The service bound to its port (tests pass port 0) with its relay, not yet started."""
    servicer, relay, background = _parts(settings, pool, temporal, directory)
    kit = await build_server(settings, pool=pool, services=_bindings(servicer))
    return SchedulingRuntime(kit=kit, relay=relay, background=background, servicer=servicer)


async def connect(
    settings: SchedulingSettings, pool: asyncpg.Pool
) -> tuple[list[ServiceBinding], tuple[grpc.aio.Channel, Background]]:
    """What a scheduling process serves and depends on: its bindings; the directory channel and the
    background tasks (for the kit's `serve`, which waits for them before SERVING and closes them at stop)."""
    directory = open_channel(settings, settings.directory_address)
    temporal = await connect_client(settings)
    servicer, _, background = _parts(settings, pool, temporal, directory)
    return _bindings(servicer), (directory, background)


async def run(settings: SchedulingSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> tuple[Sequence[ServiceBinding], Sequence[object]]:
        return await connect(settings, pool)

    # Background quacks like a channel (see the module's docstring); grpc is untyped, so mypy agrees.
    await serve(settings, bind)
