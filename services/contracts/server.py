"""Build and serve the contracts service: its gRPC server and its background tasks — the outbox relay that
starts every saved case's workflow, the purge of old idempotency entries, and the child process that renders
and verifies decisions (ended with the service).

SERVING once the pool answers, the directory channel is connected and the relay has drained what earlier
processes left (the kit's `serve`).
"""

from __future__ import annotations

import dataclasses

import asyncpg
import grpc
from parcours.contracts.v1 import contracts_pb2_grpc
from temporalio.client import Client

from services.contracts.document_process import DocumentProcess
from services.contracts.models import KINDS
from services.contracts.relay import CasePlan
from services.contracts.servicer import SERVICE_NAME, ContractsServicer, Regions
from services.contracts.settings import ContractsSettings
from services.contracts.store import OUTBOX, ContractsStore, PgDocumentStore
from services.kit.cases import CaseClient, Relay
from services.kit.directory import DirectoryClient
from services.kit.server import (
    BackgroundTask,
    Bound,
    Periodic,
    Runtime,
    ServiceBinding,
    build_server,
    open_channel,
    serve,
)
from services.kit.temporal import connect_client

PURGE_INTERVAL_SECONDS = 3600.0


def _parts(
    settings: ContractsSettings, pool: asyncpg.Pool, temporal: Client, directory: grpc.aio.Channel
) -> tuple[list[ServiceBinding], list[BackgroundTask]]:
    store = ContractsStore(pool)
    plan = CasePlan(store, settings.contracts_task_queue)
    kinds = {
        name: dataclasses.replace(kind, task_queue=settings.contracts_task_queue)
        for name, kind in KINDS.items()
    }
    # One relay drains the whole outbox in the background (its planner starts each kind's workflow); one per
    # kind serves the request path (a creation's update-with-start, an update's pending start).
    relay = Relay(pool, temporal, OUTBOX, plan, kinds["ARS_CONTRACT"])
    relays = {name: Relay(pool, temporal, OUTBOX, plan, kind) for name, kind in kinds.items()}
    cases = {
        name: CaseClient(temporal, kind, update_timeout=settings.contracts_update_timeout, relay=relays[name])
        for name, kind in kinds.items()
    }
    client = DirectoryClient(directory, cache_seconds=settings.directory_cache_seconds)
    trust_roots = (
        [settings.decision_trust_roots_file.read_bytes()]
        if settings.decision_trust_roots_file is not None
        else []
    )
    document_process = DocumentProcess(
        idle_seconds=settings.document_process_idle_seconds,
        timeout_seconds=settings.document_process_timeout_seconds,
    )
    servicer = ContractsServicer(
        settings,
        store,
        PgDocumentStore(pool),
        cases,
        relays,
        client,
        Regions(directory, settings.directory_cache_seconds),
        trust_roots,
        document_process,
    )
    purge = Periodic(
        "idempotency-purge",
        lambda: store.purge_ledger(settings.idempotency_retention),
        PURGE_INTERVAL_SECONDS,
    )
    bindings = [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: contracts_pb2_grpc.add_ContractServiceServicer_to_server(servicer, server),
            # A practitioner's token is accepted only through an establishment where they practise.
            practice=client.practice,
        )
    ]
    return bindings, [relay, purge, document_process]


async def build(
    settings: ContractsSettings, pool: asyncpg.Pool, *, temporal: Client, directory: grpc.aio.Channel
) -> Runtime:
    """The contracts service bound to its port (tests pass port 0) with its background tasks, not started."""
    bindings, tasks = _parts(settings, pool, temporal, directory)
    return Runtime(await build_server(settings, pool=pool, services=bindings), tasks)


async def run(settings: ContractsSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        directory = open_channel(settings, settings.directory_address)
        temporal = await connect_client(settings)
        bindings, tasks = _parts(settings, pool, temporal, directory)
        return Bound(bindings, channels=[directory], tasks=tasks)

    await serve(settings, bind)
