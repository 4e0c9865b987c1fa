"""Build and serve the directory service."""

from __future__ import annotations

import asyncpg
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.servicer import SERVICE_NAME, DirectoryServicer
from services.directory.settings import DirectorySettings
from services.directory.store import LEDGER, DirectoryStore
from services.kit.directory import CachedReference, PracticeBinding
from services.kit.idempotency import purge_task
from services.kit.server import Bound, KitServer, ServiceBinding, build_server, serve


class StoreReference:
    """The directory's own reference data, by resource name, for the token-binding check."""

    def __init__(self, store: DirectoryStore) -> None:
        self._store = store

    async def establishment(self, name: str) -> directory_pb2.Establishment | None:
        return await self._store.get_establishment(name.removeprefix("establishments/"))

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None:
        return await self._store.get_practitioner(name.removeprefix("practitioners/"))


def bindings(settings: DirectorySettings, pool: asyncpg.Pool) -> list[ServiceBinding]:
    store = DirectoryStore(pool)
    servicer = DirectoryServicer(store)
    # Practice places are read through a short cache: no query per call for the binding check (see
    # services.kit.directory for what that delay means).
    practice = PracticeBinding(CachedReference(StoreReference(store), settings.reference_cache_seconds))
    return [
        ServiceBinding(
            SERVICE_NAME,
            lambda server: directory_pb2_grpc.add_DirectoryServiceServicer_to_server(servicer, server),
            practice=practice,
        )
    ]


async def build(settings: DirectorySettings, pool: asyncpg.Pool) -> KitServer:
    """The directory's server bound to its port (tests pass port 0), not yet started."""
    return await build_server(settings, pool=pool, services=bindings(settings, pool))


async def run(settings: DirectorySettings) -> None:
    async def bind(pool: asyncpg.Pool) -> Bound:
        # The directory calls no other service: SERVING as soon as its pool answers.
        return Bound(
            bindings(settings, pool), tasks=[purge_task(LEDGER, pool, settings.idempotency_retention)]
        )

    await serve(settings, bind)
