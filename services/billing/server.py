"""Build and serve the billing service.

The process is SERVING once its pool answers, its catalog is loaded and the directory and contracts channels
are connected.
"""

from __future__ import annotations

import logging

import asyncpg
import grpc
from parcours.billing.v1 import billing_pb2_grpc

from services.billing.catalog import read_data_file
from services.billing.contracts import GrpcContractPolicy
from services.billing.servicer import SERVICE_NAME, BillingServicer
from services.billing.settings import BillingSettings
from services.billing.store import LEDGER, BillingStore
from services.kit.directory import DirectoryClient
from services.kit.idempotency import purge_task
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, open_channel, serve

log = logging.getLogger(__name__)


async def bindings(
    settings: BillingSettings, pool: asyncpg.Pool, directory: grpc.aio.Channel, contracts: grpc.aio.Channel
) -> list[ServiceBinding]:
    """The billing servicer, its catalog loaded (fails at start when the migrations have not run)."""
    client = DirectoryClient(directory, cache_seconds=settings.directory_cache_seconds)
    servicer = BillingServicer(
        BillingStore(pool),
        GrpcContractPolicy(
            contracts,
            check_seconds=settings.contracts_cache_check_seconds,
            max_age_seconds=settings.contracts_cache_max_age_seconds,
        ),
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
    settings: BillingSettings,
    pool: asyncpg.Pool,
    *,
    directory: grpc.aio.Channel | None = None,
    contracts: grpc.aio.Channel | None = None,
) -> KitServer:
    """The billing server bound to its port (tests pass port 0), not yet started; it reaches the directory and
    the contracts service through the channels given, else through channels of its own to their addresses."""
    directory = directory or open_channel(settings, settings.directory_address)
    contracts = contracts or open_channel(settings, settings.contracts_address)
    return await build_server(
        settings, pool=pool, services=await bindings(settings, pool, directory, contracts)
    )


async def run(settings: BillingSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # SERVING once both services it asks answer (billing waits for contracts).
        directory = open_channel(settings, settings.directory_address)
        contracts = open_channel(settings, settings.contracts_address)
        return Bound(
            await bindings(settings, pool, directory, contracts),
            channels=[directory, contracts],
            tasks=[purge_task(LEDGER, pool, settings.idempotency_retention)],
        )

    await serve(settings, bind)
