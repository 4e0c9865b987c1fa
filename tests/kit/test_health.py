"""Health tells the truth: a server whose database stops answering goes NOT_SERVING, and SERVING again when
the database answers again — here a network partition between the directory service and its PostgreSQL (a TCP
proxy that stops forwarding, the server and the database untouched). The chaos scenarios do the same with a
killed and restarted PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack.postgres import PostgresHandle
from services.directory.server import build
from services.directory.settings import DirectorySettings
from services.kit.db import open_pool
from services.kit.pki import DevPki
from tests.support import component_channel, kit_settings
from tests.support.proxy import Proxy

NOT_SERVING, SERVING = health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING


async def test_health_follows_the_database_through_a_partition(
    pki: DevPki, postgres: PostgresHandle, database_url: str, seeded_pool: asyncpg.Pool
) -> None:
    proxy = Proxy("127.0.0.1", postgres.port)
    await proxy.start()
    url = database_url.replace(f":{postgres.port}/", f":{proxy.port}/")
    settings = DirectorySettings(**kit_settings(pki, url, "directory"))  # type: ignore[arg-type]
    pool = await open_pool(settings)
    server = await build(settings, pool)
    await server.start()
    await server.set_serving(True)
    changes: list[tuple[float, int]] = []
    try:
        async with component_channel(pki, f"127.0.0.1:{server.port}", "cli") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

            async def next_status() -> int:
                reply = await asyncio.wait_for(watch.read(), 15)
                changes.append((time.monotonic(), reply.status))
                return int(reply.status)

            assert await next_status() == SERVING
            cut = time.monotonic()
            proxy.blackhole()
            assert await next_status() == NOT_SERVING
            # Not ready, but alive: a liveness probe does not restart a server waiting for its database.
            liveness = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5
            )
            assert liveness.status == SERVING
            healed = time.monotonic()
            proxy.resume()
            assert await next_status() == SERVING
            watch.cancel()
        # Noticed within the probe's timeout (2 s) and interval (1 s); back within about one interval (with a
        # margin for a busy machine).
        assert changes[1][0] - cut < 6.0
        assert changes[2][0] - healed < 5.0
    finally:
        proxy.resume()
        await server.stop(0.5)
        await pool.close()
        await proxy.stop()


async def test_a_server_that_stopped_serving_stays_not_serving_whatever_the_database_says(
    pki: DevPki, database_url: str, seeded_pool: asyncpg.Pool
) -> None:
    settings = DirectorySettings(**kit_settings(pki, database_url, "directory"))  # type: ignore[arg-type]
    server = await build(settings, seeded_pool)
    await server.start()
    await server.set_serving(True)
    assert server.serving
    await server.set_serving(False)  # as on SIGTERM, before the graceful stop
    assert server.probe is not None and await server.probe.check()  # the database answers…
    async with component_channel(pki, f"127.0.0.1:{server.port}", "cli") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == NOT_SERVING  # …and the server still says it is going away
    await server.stop(0.5)
