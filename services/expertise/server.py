"""Build and serve the expertise service."""

from __future__ import annotations

import asyncpg
import grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from temporalio.client import Client

from services.expertise.directory import DirectoryClient
from services.expertise.servicer import SERVICE_NAME, ExpertiseServicer
from services.expertise.settings import ExpertiseSettings
from services.expertise.store import ExpertiseStore
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, open_channel, serve
from services.kit.temporal import connect_client


def bindings(
    settings: ExpertiseSettings, pool: asyncpg.Pool, temporal: Client, directory: grpc.aio.Channel
) -> list[ServiceBinding]:
    servicer = ExpertiseServicer(
        settings,
        ExpertiseStore(pool),
        temporal,
        DirectoryClient(
            directory_pb2_grpc.DirectoryServiceStub(directory), cache_seconds=settings.directory_cache_seconds
        ),
    )
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: expertise_pb2_grpc.add_ExpertiseServiceServicer_to_server(servicer, server),
        )
    ]


async def build(
    settings: ExpertiseSettings, pool: asyncpg.Pool, *, temporal: Client, directory: grpc.aio.Channel
) -> KitServer:
    """The expertise server bound to its port (tests pass port 0), not yet started."""
    return await build_server(settings, pool=pool, services=bindings(settings, pool, temporal, directory))


async def run(settings: ExpertiseSettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # SERVING once the directory answers; Temporal is connected before the server is built (one client
        # per process, with the payload codec and tracing).
        directory = open_channel(settings, settings.directory_address)
        temporal = await connect_client(settings)
        return Bound(bindings(settings, pool, temporal, directory), channels=[directory])

    await serve(settings, bind)
