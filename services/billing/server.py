"""Build and serve the billing service.

The process is SERVING once its pool answers, its catalog is loaded and the directory channel is connected.
"""

from __future__ import annotations

import logging

import asyncpg
import grpc
from parcours.billing.v1 import billing_pb2_grpc

from services.billing.catalog import read_data_file
from services.billing.contracts import TableContractPolicy
from services.billing.servicer import SERVICE_NAME, BillingServicer
from services.billing.settings import BillingSettings
from services.billing.store import LEDGER, BillingStore
from services.kit.directory import DirectoryClient
from services.kit.idempotency import purge_task
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, open_channel, serve

log = logging.getLogger(__name__)


async def bindings(
    settings: BillingSettings, pool: asyncpg.Pool, directory: grpc.aio.Channel
) -> list[ServiceBinding]:
    """The billing servicer, its catalog loaded (fails at start when the migrations have not run)."""
    client = DirectoryClient(directory, cache_seconds=settings.directory_cache_seconds)
    servicer = BillingServicer(
        BillingStore(pool),
        # The contracts service will answer this once it exists; until then, the policy tables.
        TableContractPolicy(pool),
        client,
        catalog_refresh_seconds=settings.catalog_refresh_seconds,
    )
    loaded = await servicer.ready()
    shipped = read_data_file()
    if (loaded.version, loaded.sha256) != (shipped.version, shipped.sha256):
        # Serve what the database holds (migrations are not run at start); say that it is not what ships.
        log.warning(
            "billing catalog in the database is version %s, the data file is version %s (%s): apply the "
            "migrations, or ship one loading the new version",
            loaded.version,
            shipped.version,
            "same version, other content" if loaded.version == shipped.version else "other version",
        )
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server),
            # A practitioner's token is accepted only through an establishment where they practise.
            practice=client.practice,
        )
    ]


async def build(
    settings: BillingSettings, pool: asyncpg.Pool, *, directory: grpc.aio.Channel | None = None
) -> KitServer:
    """The billing server bound to its port (tests pass port 0), not yet started; it reaches the directory
    through `directory`, else through a channel of its own to `settings.directory_address`."""
    channel = directory or open_channel(settings, settings.directory_address)
    return await build_server(settings, pool=pool, services=await bindings(settings, pool, channel))


async def run(settings: BillingSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        directory = open_channel(settings, settings.directory_address)
        return Bound(
            await bindings(settings, pool, directory),
            channels=[directory],
            tasks=[purge_task(LEDGER, pool, settings.idempotency_retention)],
        )

    await serve(settings, bind)
