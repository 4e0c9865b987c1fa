"""Build and serve the directory service."""

from __future__ import annotations

import asyncpg
from parcours.directory.v1 import directory_pb2_grpc

from services.directory.servicer import SERVICE_NAME, DirectoryServicer
from services.directory.settings import DirectorySettings
from services.directory.store import DirectoryStore
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, serve


def bindings(pool: asyncpg.Pool) -> list[ServiceBinding]:
    servicer = DirectoryServicer(DirectoryStore(pool))
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: directory_pb2_grpc.add_DirectoryServiceServicer_to_server(servicer, server),
        )
    ]


async def build(settings: DirectorySettings, pool: asyncpg.Pool) -> KitServer:
    """The directory's server bound to its port (tests pass port 0), not yet started."""
    return await build_server(settings, pool=pool, services=bindings(pool))


async def run(settings: DirectorySettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # The directory calls no other service: SERVING as soon as its pool answers.
        return Bound(bindings(pool))

    await serve(settings, bind)
