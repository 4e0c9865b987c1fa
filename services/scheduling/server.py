"""Build and serve the scheduling service: its gRPC server and its background tasks — the outbox relay that
starts each booking's Teleconsultation workflow, the horizon refresher that opens each schedule's next days,
and the purge of old idempotency entries.

The process is SERVING once its pool answers, the directory channel is connected and the relay has drained
what earlier processes left in the outbox (the kit's `serve`).
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
import grpc
import temporalio.client
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.kit.cases import CaseClient, Relay, RelaySettings
from services.kit.directory import DirectoryClient
from services.kit.idempotency import purge_task
from services.kit.server import Bound, Periodic, Runtime, ServiceBinding, build_server, open_channel, serve
from services.kit.temporal import connect_client
from services.scheduling import store
from services.scheduling.agenda import materialise_schedule
from services.scheduling.models import TELECONSULTATION
from services.scheduling.relay import WorkflowPlan
from services.scheduling.servicer import SERVICE_NAME, SchedulingServicer
from services.scheduling.settings import SchedulingSettings
from services.scheduling.waitlist import WaitlistLapser

log = logging.getLogger(__name__)

REFRESH_BATCH = 200
# Failures of the database itself, which no schedule causes.
_DATABASE_AWAY = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)


class HorizonRefresher:
    """Opens each schedule's next days as days pass (and prunes past slots).

    Each schedule is materialised in its own transaction, and a schedule that fails is logged and left for
    the next run: one bad schedule never stops the others (issue 9.10). A run walks the schedules in id order
    once, so failing ones cannot keep it busy either.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def __call__(self) -> int:
        refreshed = failed = 0
        after: uuid.UUID | None = None
        while True:
            schedule_ids = await store.schedules_to_refresh(self._pool, REFRESH_BATCH, after)
            for schedule_id in schedule_ids:
                try:
                    async with store.transaction(self._pool) as tx:
                        await materialise_schedule(tx, schedule_id)
                except _DATABASE_AWAY:
                    raise  # the database, not this schedule: the whole run waits for the next one
                except Exception as error:
                    # The schedule's id only (no patient data here), and no traceback per schedule per run.
                    failed += 1
                    log.warning(
                        "slot horizon of schedule %s not extended (%s); next run retries it",
                        schedule_id,
                        type(error).__name__,
                    )
                else:
                    refreshed += 1
            if len(schedule_ids) < REFRESH_BATCH:
                break
            after = schedule_ids[-1]
        await store.prune_past_slots(self._pool)
        if refreshed or failed:
            log.info("slot horizon extended for %d schedules (%d failed)", refreshed, failed)
        return refreshed


def _parts(
    settings: SchedulingSettings,
    pool: asyncpg.Pool,
    temporal: temporalio.client.Client,
    directory: grpc.aio.Channel,
) -> tuple[list[ServiceBinding], Relay, list[Periodic]]:
    relay = Relay(
        pool,
        temporal,
        store.OUTBOX,
        WorkflowPlan(reminder_offsets=settings.reminder_offsets, delivery=settings.delivery_policy()),
        TELECONSULTATION,
        RelaySettings(
            poll_seconds=settings.relay_poll_seconds,
            batch_size=settings.relay_batch_size,
            concurrency=settings.relay_concurrency,
            max_per_second=settings.relay_max_starts_per_second,
        ),
    )
    cases = CaseClient(temporal, TELECONSULTATION, update_timeout=settings.update_timeout, relay=relay)
    client = DirectoryClient(directory, cache_seconds=settings.directory_cache_seconds)
    servicer = SchedulingServicer(pool, client, cases, relay, settings)
    periodic = [
        Periodic("slot-horizon-refresher", HorizonRefresher(pool), settings.horizon_refresh_seconds),
        purge_task(store.LEDGER, pool, settings.idempotency_retention),
        WaitlistLapser(
            pool,
            hold=settings.waitlist_offer_hold,
            join_window_before=settings.join_window_before,
            no_show_grace=settings.no_show_grace,
            interval=settings.waitlist_lapse_seconds,
        ),
    ]
    bindings = [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: scheduling_pb2_grpc.add_SchedulingServiceServicer_to_server(servicer, server),
            # A practitioner's token is accepted only through an establishment where they practise.
            practice=client.practice,
        )
    ]
    return bindings, relay, periodic


async def build(
    settings: SchedulingSettings,
    pool: asyncpg.Pool,
    *,
    temporal: temporalio.client.Client,
    directory: grpc.aio.Channel,
) -> Runtime:
    """The service bound to its port (tests pass port 0) with its background tasks, not yet started."""
    bindings, relay, periodic = _parts(settings, pool, temporal, directory)
    kit = await build_server(settings, pool=pool, services=bindings)
    return Runtime(kit, [relay, *periodic])


async def run(settings: SchedulingSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        directory = open_channel(settings, settings.directory_address)
        temporal = await connect_client(settings)
        bindings, relay, periodic = _parts(settings, pool, temporal, directory)
        return Bound(bindings, channels=[directory], tasks=[relay, *periodic])

    await serve(settings, bind)
