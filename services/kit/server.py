"""The gRPC server every Parcours service runs: mTLS, health, reflection (v1 and v1alpha, with comments), the
kit's interceptors, SIGTERM.

`build_server(settings, ...)` binds the configured port (`0` in tests picks a free one) and returns a
`KitServer`; `serve(settings, bind)` is the whole life of a service process: telemetry, the pool, the server,
its background tasks (an outbox relay, periodic jobs), SERVING once the pool, the downstream channels and the
tasks are ready, and on SIGTERM NOT_SERVING then a graceful stop. `Runtime` is the same life in-process, for
tests and benchmarks.

Health tells the truth: a started server runs a `DatabaseProbe` (one of its background tasks) that asks the
database every second on a connection of its own (a pool busy with requests is not an unhealthy database),
and the server is SERVING only while it is meant to serve *and* its database answers — NOT_SERVING within a
probe or two of an outage, SERVING again as soon as the database is back. That is readiness. Liveness is the
health service `liveness`: SERVING from start to stop whatever the database says, so that a liveness probe
never restarts a process that is only waiting for its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.kit.anchors import AuditAnchorer, FolderAnchorStore, writer_name
from services.kit.audit import AuditKeys, AuditLog
from services.kit.auth import Authenticator
from services.kit.db import connect, open_pool
from services.kit.directory import PracticeBinding
from services.kit.interceptors import kit_interceptors, require_policies, tolerant_handler
from services.kit.pagination import PageTokens
from services.kit.reflection import enable_reflection
from services.kit.settings import KitSettings, page_token_key_bytes
from services.kit.telemetry import ServerTracing, client_interceptors, configure_telemetry
from services.kit.tokens import TokenVerifier

log = logging.getLogger(__name__)
T = TypeVar("T")

# The health service name of liveness (see the module docstring).
LIVENESS = "liveness"
# How often a server asks its database whether it answers, and how long it waits for the answer: health
# turns NOT_SERVING within about two seconds of an outage and SERVING within about one of the recovery.
HEALTH_PROBE_SECONDS = 1.0
HEALTH_PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to expose: its full proto service name and the generated `add_..._to_server`; with
    `practice`, every call to it first passes the token-binding check (services.kit.directory)."""

    name: str
    add: Callable[[grpc.aio.Server], None]
    practice: PracticeBinding | None = None


@dataclass
class KitServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    services: list[str]
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    audit_log: AuditLog | None = None
    audit_anchorer: AuditAnchorer | None = None
    # Watches the database while the server runs (None: health follows `set_serving` alone).
    probe: DatabaseProbe | None = None
    _started: bool = field(default=False, repr=False)
    # What the process means (SERVING once ready, until it stops) and what the probe last found.
    _meant: bool = field(default=False, repr=False)
    _database_up: bool = field(default=True, repr=False)

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        if self.audit_anchorer is not None:
            await self.audit_anchorer.start()
        if self.probe is not None:
            self.probe.on_change = self._database_changed
            await self.probe.start()
        self._started = True
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    @property
    def serving(self) -> bool:
        return self._meant and self._database_up

    async def set_serving(self, serving: bool) -> None:
        """SERVING (while the database answers) or NOT_SERVING, for the server and each of its services."""
        self._meant = serving
        await self._publish()

    async def _database_changed(self, up: bool) -> None:
        self._database_up = up
        await self._publish()

    async def _publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None) -> None:
        await self.set_serving(False)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.probe is not None:
            await self.probe.stop()
        if self.health_server is not None:
            await self.health_server.stop(grace)
        await self.server.stop(grace)
        if self.audit_log is not None:
            await self.audit_log.close()
        if self.audit_anchorer is not None:
            # After the last append: the final head is anchored.
            await self.audit_anchorer.stop()


class DatabaseProbe:
    """A background task asking the database `SELECT 1` every `interval` seconds on a connection of its own
    (opened again after a failure); `on_change(up)` is awaited when the answer changes, and each change is
    logged once (not once per probe)."""

    name = "database-probe"

    def __init__(
        self,
        database_url: str,
        component: str,
        *,
        interval: float = HEALTH_PROBE_SECONDS,
        timeout: float = HEALTH_PROBE_TIMEOUT_SECONDS,
    ) -> None:
        self._url = database_url
        self._component = component
        self._interval = interval
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = True
        self.on_change: Callable[[bool], Awaitable[None]] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def ready(self) -> None:
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def check(self) -> bool:
        """One probe: does the database answer within the timeout?"""
        try:
            async with asyncio.timeout(self._timeout):
                if self._connection is None or self._connection.is_closed():
                    self._connection = await connect(
                        self._url,
                        timeout=self._timeout,
                        server_settings={"application_name": f"parcours-{self._component}-health"},
                    )
                return bool(await self._connection.fetchval("SELECT 1") == 1)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.debug("database probe failed: %s", type(error).__name__)
            await self._close()
            return False

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    async def _run(self) -> None:
        while True:
            up = await self.check()
            if up != self._up:
                self._up = up
                if up:
                    log.info("the database answers again: %s is SERVING", self._component)
                else:
                    log.warning("the database does not answer: %s is NOT_SERVING", self._component)
                if self.on_change is not None:
                    await self.on_change(up)
            await asyncio.sleep(self._interval)


def _read(path: object) -> bytes:
    from pathlib import Path

    assert isinstance(path, Path)
    return path.read_bytes()


class _TolerantRegistration:
    """What a generated `add_..._to_server` sees of the server: every method handler it registers gets the
    kit's tolerant request decoder (services.kit.interceptors: a corrupt body reaches the interceptors as an
    `Undecodable`, and is refused after authentication, instead of failing inside grpc before them)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_TolerantGenericHandler(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service, {name: tolerant_handler(handler) for name, handler in handlers.items()}
        )


class _TolerantGenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        # method → (the inner handler, its tolerant version): the same handler is found at every call, and
        # an unchanged handler lets the kit's interceptor reuse its wrapper too.
        self._tolerant: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._inner.service(handler_call_details)
        if found is None:
            return None
        known = self._tolerant.get(handler_call_details.method)
        if known is None or known[0] is not found:
            known = self._tolerant[handler_call_details.method] = (found, tolerant_handler(found))
        return known[1]


def server_credentials(settings: KitSettings) -> grpc.ServerCredentials:
    """mTLS: a client certificate signed by the hub's CA is required (no certificate, no connection)."""
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=_read(settings.tls_ca_file),
        require_client_auth=True,
    )


def channel_credentials(settings: KitSettings) -> grpc.ChannelCredentials:
    """This component's client identity (its own certificate) towards other Parcours services."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )


def open_channel(settings: KitSettings, target: str) -> grpc.aio.Channel:
    """A traced channel to another Parcours service; await `channel_ready()` before reporting SERVING."""
    interceptors = client_interceptors(target)
    if settings.insecure_dev_mode:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return grpc.aio.secure_channel(target, channel_credentials(settings), interceptors=interceptors)


def build_authenticator(settings: KitSettings) -> Authenticator:
    verifier = None
    if settings.token_jwks_file is not None:
        verifier = TokenVerifier(
            jwks_file=settings.token_jwks_file,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            leeway_seconds=settings.token_leeway_seconds,
        )
    return Authenticator(
        verifier, insecure_dev_mode=settings.insecure_dev_mode, hub_components=settings.hub_components
    )


def audit_keys(settings: KitSettings) -> AuditKeys:
    """The service's audit keys: its configured ones, or (development mode only) a per-process one."""
    if settings.audit_keys is not None:
        return AuditKeys.parse(settings.audit_keys.get_secret_value())
    if not settings.insecure_dev_mode:
        raise SystemExit("parcours: cannot start:\n  missing required setting PARCOURS_AUDIT_KEYS")
    log.warning(
        "no PARCOURS_AUDIT_KEYS: audit rows are keyed with a per-process key nobody can verify later "
        "(development mode)"
    )
    return AuditKeys.parse(AuditKeys.generate("dev"))


def page_tokens(settings: KitSettings) -> PageTokens:
    """The service's page-token signer: its configured key, or (development mode only) a per-process one."""
    if settings.page_token_key is not None:
        return PageTokens(page_token_key_bytes(settings.page_token_key))
    if not settings.insecure_dev_mode:
        raise SystemExit("parcours: cannot start:\n  missing required setting PARCOURS_PAGE_TOKEN_KEY")
    import secrets

    log.warning(
        "no PARCOURS_PAGE_TOKEN_KEY: page tokens are signed with a per-process key (development mode)"
    )
    return PageTokens(secrets.token_bytes(32))


async def build_server(
    settings: KitSettings, *, pool: asyncpg.Pool, services: Sequence[ServiceBinding]
) -> KitServer:
    """Build (not start) the server with every service, health and reflection, bound to its port."""
    names = [s.name for s in services]
    require_policies(names)
    keys = audit_keys(settings)
    audit_log = AuditLog(pool, settings.component, keys)
    interceptors = kit_interceptors(
        build_authenticator(settings),
        audit_log,
        {s.name: s.practice for s in services if s.practice is not None},
        page_tokens=page_tokens(settings),
        tracing=ServerTracing(),
    )
    server = grpc.aio.server(interceptors=interceptors)
    for binding in services:
        binding.add(_TolerantRegistration(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Reflection v1 and v1alpha, with the protos' comments (services/kit/reflection.py).
    enable_reflection(server, names)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.insecure_dev_mode:
        log.warning("INSECURE DEVELOPMENT MODE: plaintext gRPC on %s", address)
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(settings))
    kit = KitServer(
        server=server,
        port=port,
        health=health_servicer,
        services=names,
        audit_log=audit_log,
        probe=DatabaseProbe(settings.database_url, settings.component),
    )
    if settings.audit_anchor_dir is not None:
        store = FolderAnchorStore(settings.audit_anchor_dir, writer_name(settings.component))
        kit.audit_anchorer = AuditAnchorer(audit_log, store, keys, settings.audit_anchor_interval_seconds)
    elif not settings.insecure_dev_mode:
        log.warning(
            "no PARCOURS_AUDIT_ANCHOR_DIR: the audit chain's head is not anchored outside the database"
        )
    if settings.health_port is not None:
        # Kubelet's native gRPC probes speak plaintext: a health-only listener, no data behind it.
        kit.health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, kit.health_server)
        kit.health_port = kit.health_server.add_insecure_port(f"{settings.grpc_host}:{settings.health_port}")
    await kit.set_serving(False)
    return kit


class BackgroundTask(Protocol):
    """Work a service process runs beside its RPCs (an outbox relay, a periodic job)."""

    name: str

    async def start(self) -> None:
        """Begin (returns at once; the work runs in its own asyncio task)."""

    async def ready(self) -> None:
        """Returns once the service may report SERVING as far as this task is concerned."""

    async def stop(self) -> None:
        """Stop and wait for the task to end."""


class Periodic:
    """Runs `job` every `interval` seconds (first at start); a failed run is logged and the next one runs."""

    def __init__(self, name: str, job: Callable[[], Awaitable[object]], interval: float) -> None:
        self.name = name
        self._job = job
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def ready(self) -> None:
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background job %s failed; it runs again in %ss", self.name, self._interval)
            await asyncio.sleep(self._interval)


@dataclass
class Bound:
    """What a service process serves and depends on."""

    services: Sequence[ServiceBinding]
    # Downstream services: SERVING once each is connected; closed at stop.
    channels: Sequence[grpc.aio.Channel] = ()
    tasks: Sequence[BackgroundTask] = ()


@dataclass
class Runtime:
    """A built server and its background tasks: the life `serve` gives a process, for tests and benches."""

    kit: KitServer
    tasks: Sequence[BackgroundTask] = ()

    @property
    def port(self) -> int:
        return self.kit.port

    def task(self, kind: type[T]) -> T:
        """The background task of this type (tests drive a service's relay with it)."""
        for task in self.tasks:
            if isinstance(task, kind):
                return task
        raise LookupError(f"no {kind.__name__} among the background tasks")

    async def start(self, channels: Sequence[grpc.aio.Channel] = ()) -> None:
        await self.kit.start()
        for task in self.tasks:
            await task.start()
        for channel in channels:
            await channel.channel_ready()
        for task in self.tasks:
            await task.ready()
        await self.kit.set_serving(True)

    async def stop(self, grace: float | None = 0.5) -> None:
        await self.kit.stop(grace)
        for task in reversed(self.tasks):
            await task.stop()


Binder = Callable[[asyncpg.Pool], Awaitable[Bound]]


# glibc's allocator, for every Parcours process (the image's ENV, `make run`'s children): a block of 128 KB or
# more is its own mapping, given back to the system when freed, and free memory at the top of the heap is
# trimmed from 128 KB. By default glibc raises its mapping threshold each time such a block is freed (up to
# 32 MB), so that the next large buffers (a message, a PDF, a batch of rows) come from the heap, where freed
# space stays resident: a service then keeps the high-water mark of its first large requests. Measured after
# `make run`'s demo data (tests/bench/rss.py): scheduling 120.9 → 119.4 MB, contracts 128.8 → 125.2.
ALLOCATOR_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def settle_heap() -> int:
    """Put what the process built to start (modules, descriptors, settings, pools, workers) out of the cyclic
    collector's reach, once it is ready to serve.

    A full collection walks every tracked object and stops the event loop while it does: on these hosts about
    1.5 µs per object, so 0.3–2 s for a heap of a few hundred thousand objects, which every request in flight
    waits out (the fuzzer saw answers at 5–6 s). Objects built at start live as long as the process; frozen,
    they are no longer walked, and a full collection only walks what serving has built since. What is frozen
    is still freed when its last reference goes; only a cycle among frozen objects would outlive its use.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(settings: KitSettings, bind: Binder) -> None:
    """Run a service process until SIGTERM/SIGINT."""
    configure_telemetry(settings.component)
    pool = await open_pool(settings)
    bound = Bound(services=())
    try:
        bound = await bind(pool)
        kit = await build_server(settings, pool=pool, services=bound.services)
        runtime = Runtime(kit, bound.tasks)
        # SERVING only once the pool answers, every downstream channel is connected and every background
        # task is ready (an outbox relay has re-driven what earlier processes left).
        await pool.fetchval("SELECT 1")
        await runtime.start(bound.channels)
        settled = settle_heap()
        log.info("%s serving on port %s (%d objects settled)", settings.component, kit.port, settled)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("%s stopping (grace %ss)", settings.component, settings.shutdown_grace_seconds)
        await runtime.stop(settings.shutdown_grace_seconds)
    finally:
        for channel in bound.channels:
            await channel.close()
        await pool.close()
