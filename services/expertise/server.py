"""Build and serve the expertise service: its gRPC server and its background tasks — the outbox relay that
starts every saved request's Teleexpertise workflow, and the purge of old idempotency entries.

SERVING once the pool answers, the directory channel is connected and the relay has drained what earlier
processes left (the kit's `serve`).
"""

from __future__ import annotations

import dataclasses

import asyncpg
import grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from temporalio.client import Client

from services.expertise.models import TELEEXPERTISE
from services.expertise.relay import CasePlan
from services.expertise.servicer import SERVICE_NAME, ExpertiseServicer
from services.expertise.settings import ExpertiseSettings
from services.expertise.store import LEDGER, OUTBOX, ExpertiseStore
from services.kit.cases import CaseClient, Relay
from services.kit.directory import DirectoryClient
from services.kit.idempotency import purge_task
from services.kit.server import (
    BackgroundTask,
    Bound,
    Runtime,
    ServiceBinding,
    build_server,
    open_channel,
    serve,
)
from services.kit.temporal import connect_client


def _parts(
    settings: ExpertiseSettings, pool: asyncpg.Pool, temporal: Client, directory: grpc.aio.Channel
) -> tuple[list[ServiceBinding], list[BackgroundTask]]:
    kind = dataclasses.replace(TELEEXPERTISE, task_queue=settings.teleexpertise_task_queue)
    store = ExpertiseStore(pool)
    relay = Relay(pool, temporal, OUTBOX, CasePlan(store, kind), kind)
    client = DirectoryClient(directory, cache_seconds=settings.directory_cache_seconds)
    servicer = ExpertiseServicer(
        settings,
        store,
        CaseClient(temporal, kind, update_timeout=settings.teleexpertise_update_timeout),
        relay,
        client,
    )
    purge = purge_task(LEDGER, pool, settings.idempotency_retention)
    bindings = [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: expertise_pb2_grpc.add_ExpertiseServiceServicer_to_server(servicer, server),
            # A practitioner's token is accepted only through an establishment where they practise.
            practice=client.practice,
        )
    ]
    return bindings, [relay, purge]


async def build(
    settings: ExpertiseSettings, pool: asyncpg.Pool, *, temporal: Client, directory: grpc.aio.Channel
) -> Runtime:
    """The expertise service bound to its port (tests pass port 0) with its background tasks, not started."""
    bindings, tasks = _parts(settings, pool, temporal, directory)
    return Runtime(await build_server(settings, pool=pool, services=bindings), tasks)


async def run(settings: ExpertiseSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # SERVING once the directory answers and the relay has drained the outbox; Temporal is connected
        # before the server is built (one client per process, with the payload codec and tracing).
        directory = open_channel(settings, settings.directory_address)
        temporal = await connect_client(settings)
        bindings, tasks = _parts(settings, pool, temporal, directory)
        return Bound(bindings, channels=[directory], tasks=tasks)

    await serve(settings, bind)
