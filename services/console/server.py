"""The console process: its pool, its gRPC channels, its background tasks, and uvicorn serving the app.

`build(settings, pool)` wires everything (tests run it in-process); `serve(settings)` is the process's life:
telemetry, pool, app on `console_http_port`, the export worker, the daily digest, the case notifications'
poller, and on SIGTERM a graceful stop.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import asyncpg
import uvicorn
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.types import ASGIApp

from services.console.app import Deps, build_app
from services.console.exports import ExportWorker
from services.console.hub import Hub
from services.console.notifications import CaseNotificationPoller, DailyDigest, Deliveries
from services.console.security import DelegateTokens
from services.console.settings import ConsoleSettings
from services.console.store import Store
from services.kit.codec import AesGcmPayloadCodec, Keyring
from services.kit.db import open_pool
from services.kit.notify import SmtpTransport
from services.kit.server import Periodic, settle_heap
from services.kit.settings import TemporalSettings
from services.kit.telemetry import configure_telemetry
from services.kit.temporal import OnDemandClient

logger = logging.getLogger(__name__)


@dataclass
class Console:
    app: ASGIApp
    deps: Deps
    tasks: list[Periodic | ExportWorker]

    async def start_tasks(self) -> None:
        for task in self.tasks:
            await task.start()

    async def stop(self) -> None:
        for task in reversed(self.tasks):
            await task.stop()
        await self.deps.hub.close()


async def build(settings: ConsoleSettings, pool: asyncpg.Pool) -> Console:
    store = Store(pool)
    hub = Hub(settings, DelegateTokens(settings))
    exports = ExportWorker(hub, store)
    codec = None
    temporal = None
    if settings.payload_keys is not None:
        keys = settings.payload_keys.get_secret_value()
        codec = AesGcmPayloadCodec(Keyring.parse(keys))
        # Only the codec endpoint and "open in Temporal" call Temporal: connected by the first of them.
        temporal = OnDemandClient(
            TemporalSettings(
                temporal_address=settings.temporal_address,
                temporal_namespace=settings.temporal_namespace,
                payload_keys=keys,
            )
        )
    deps = Deps(settings=settings, store=store, hub=hub, exports=exports, codec=codec, temporal=temporal)
    deliveries = Deliveries(store, SmtpTransport(settings), settings.public_url)
    digest = DailyDigest(pool, store, hub, settings.digest_hour, deliveries)
    idle = settings.session_idle_timeout
    tasks: list[Periodic | ExportWorker] = [
        exports,
        Periodic("daily-digest", digest.run_once, 600.0),
        Periodic("session-purge", lambda: store.purge(idle), 300.0),
    ]
    if settings.notification_poll_seconds:
        poller = CaseNotificationPoller(store, hub, deliveries)
        tasks.append(Periodic(poller.name, poller.run_once, settings.notification_poll_seconds))
    return Console(app=OpenTelemetryMiddleware(build_app(deps)), deps=deps, tasks=tasks)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def uvicorn_server(app: ASGIApp, settings: ConsoleSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    return uvicorn.Server(config)


async def serve(settings: ConsoleSettings) -> None:
    configure_telemetry(settings.component)
    pool = await open_pool(settings)
    try:
        console = await build(settings, pool)
        await console.start_tasks()
        settled = settle_heap()
        sock = listen(settings.http_host, settings.console_http_port)
        logger.info(
            "console serving on http://%s:%d (%d objects settled)",
            settings.http_host,
            sock.getsockname()[1],
            settled,
        )
        try:
            # uvicorn turns SIGTERM / SIGINT into a graceful shutdown of the HTTP server.
            await uvicorn_server(console.app, settings).serve(sockets=[sock])
        finally:
            await console.stop()
    finally:
        await pool.close()
