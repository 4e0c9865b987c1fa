"""The hub as it runs in production, for what only a whole hub shows: every service and worker as its own
process (`python -m services.<name>`, `python -m workflows.<name>`), exporting its spans and metrics over
OTLP/HTTP to a receiver in the test process (pip `oteltap`), on a PostgreSQL database and a Temporal dev
server of their own (so that no other test's relay or worker touches these cases, nor these theirs).

`Telemetry` keeps everything the receiver gets; tests await what they expect in it (no sleeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
import temporalio.client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

from services.devstack import free_port
from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle, start_temporal
from services.kit.migrate import apply_all
from services.kit.pki import DevPki
from services.kit.settings import TemporalSettings
from services.kit.temporal import connect_client
from tests.support import (
    LOIRE,
    PAYLOAD_KEYS,
    component_channel,
    establishment_channel,
    process_env,
    repo_root,
)

SERVICES = ("directory", "billing", "contracts", "expertise", "scheduling")
WORKERS = ("teleexpertise", "teleconsultation", "contracts")


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


@dataclass
class Telemetry:
    """What the hub's processes exported, as it arrives."""

    spans: list[Span] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _collect(self, stream: AsyncIterator[Any], into: list[Any]) -> None:
        async for item in stream:
            async with self._arrived:
                into.append(item)
                self._arrived.notify_all()

    async def until(self, condition: Callable[[], bool], within: float = 30.0) -> None:
        """Wait until `condition()` holds of what has arrived."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(condition)

    def trace(self, trace_id: bytes) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


@dataclass
class Hub:
    pki: DevPki
    database_url: str
    addresses: dict[str, str]
    temporal: temporalio.client.Client
    telemetry: Telemetry
    _channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str, finess: str = LOIRE) -> grpc.aio.Channel:
        """A channel to `service` presenting the certificate of the establishment `finess`."""
        key = (service, finess)
        if key not in self._channels:
            self._channels[key] = establishment_channel(self.pki, self.addresses[service], finess)
        return self._channels[key]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@pytest.fixture(scope="package")
def hub_temporal() -> Iterator[TemporalHandle]:
    handle = start_temporal(None, port=free_port(), ui_port=None, headless=True)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="package")
async def hub_database(postgres: PostgresHandle, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A database of the hub's own: every migration, the demo region."""
    from services.directory.seed import seed_demo

    name = f"observability_{uuid.uuid4().hex[:12]}"
    await pool.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url_for(name)
    try:
        await asyncio.to_thread(apply_all, url)
        seeded = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert seeded is not None
        try:
            await seed_demo(seeded)
        finally:
            await seeded.close()
        yield url
    finally:
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def _serving(pki: DevPki, address: str) -> None:
    async with component_channel(pki, address, "cli") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # wait_for_ready: the call waits for the listener while the process starts.
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=60)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        async for update in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                return


@pytest.fixture(scope="package")
async def hub(pki: DevPki, hub_database: str, hub_temporal: TemporalHandle) -> AsyncIterator[Hub]:
    telemetry = Telemetry()
    otlp_port = free_port()
    receiver = OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=otlp_port))
    await receiver.start()
    collecting = [
        asyncio.create_task(telemetry._collect(receiver.stream_traces(), telemetry.spans)),
        asyncio.create_task(telemetry._collect(receiver.stream_metrics(), telemetry.metrics)),
    ]
    ports = {name: free_port() for name in SERVICES}
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    common: dict[str, object] = {
        "database_url": hub_database,
        "temporal_address": hub_temporal.address,
        "payload_keys": PAYLOAD_KEYS,
        **{f"{name}_address": address for name, address in addresses.items()},
        "shutdown_grace_seconds": 2,
        # Scheduling: the join window opens a day ahead, so that a slot of today can start at once.
        "join_window_before": "P1D",
        "log_level": "WARNING",
    }
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        # Export within a fifth of a second, metrics every second: the tests wait for them.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    }
    processes: list[asyncio.subprocess.Process] = []
    logs = repo_root() / "build" / "observability-logs"
    logs.mkdir(parents=True, exist_ok=True)

    async def spawn(module: str, certificate: str, component: str, **settings: object) -> None:
        env = {**process_env(pki, certificate, component=component, **common, **settings), **otel}
        with (logs / f"{component}.log").open("wb") as log:
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", module, env=env, cwd=repo_root(), stdout=log, stderr=log
                )
            )

    client: temporalio.client.Client | None = None
    found: Hub | None = None
    try:
        from services.contracts.decisions import ensure_dev_signing_identity

        signing_cert, signing_key = ensure_dev_signing_identity(pki.directory)
        # Contracts verifies the decisions its worker signs (billing asks it whether an act is covered).
        only = {
            "contracts": {"decision_trust_roots_file": pki.ca_file},
            "workflows-contracts": {
                "decision_signing_cert_file": signing_cert,
                "decision_signing_key_file": signing_key,
            },
        }
        for name in SERVICES:
            await spawn(
                f"services.{name}", name, name, **{f"{name}_grpc_port": ports[name]}, **only.get(name, {})
            )
        await spawn("workflows.contracts", "workflows", "workflows-contracts", **only["workflows-contracts"])
        await spawn("workflows.teleexpertise", "workflows", "workflows-teleexpertise")
        await spawn(
            "workflows.teleconsultation",
            "workflows",
            "workflows-teleconsultation",
        )
        await asyncio.gather(*(_serving(pki, address) for address in addresses.values()))
        client = await connect_client(
            TemporalSettings(temporal_address=hub_temporal.address, payload_keys=PAYLOAD_KEYS)
        )
        found = Hub(pki, hub_database, addresses, client, telemetry)
        yield found
    finally:
        if found is not None:
            await found.close()
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in collecting:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await receiver.stop()
