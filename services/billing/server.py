"""Build and serve the billing service."""

from __future__ import annotations

import logging

import asyncpg
from parcours.billing.v1 import billing_pb2_grpc

from services.billing.catalog import read_data_file
from services.billing.contracts import TableContractPolicy
from services.billing.servicer import SERVICE_NAME, BillingServicer
from services.billing.settings import BillingSettings
from services.billing.store import BillingStore
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, serve

log = logging.getLogger(__name__)


async def bindings(settings: BillingSettings, pool: asyncpg.Pool) -> list[ServiceBinding]:
    """The billing servicer, its catalog loaded (fails at start when the migrations have not run)."""
    servicer = BillingServicer(
        BillingStore(pool),
        # The contracts service will answer this once it exists; until then, the policy tables.
        TableContractPolicy(pool),
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
        )
    ]


async def build(settings: BillingSettings, pool: asyncpg.Pool) -> KitServer:
    """The billing server bound to its port (tests pass port 0), not yet started."""
    return await build_server(settings, pool=pool, services=await bindings(settings, pool))


async def run(settings: BillingSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # Billing calls no other service yet: SERVING as soon as its pool answers and its catalog is loaded.
        return Bound(await bindings(settings, pool))

    await serve(settings, bind)
