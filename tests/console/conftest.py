"""The console under test: the real development OpenID provider, the console in-process on a free port
(uvicorn over a real socket) against the suite's PostgreSQL, Temporal, directory and billing services, and the
expertise and scheduling services' gRPC servers (their activity reports feed the dashboards).

The contracts service and its worker are the suite's (`contracts_address`, tests/conftest.py): the console
calls them for every case it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import temporalio.client

from services.console.server import Console, build, listen, uvicorn_server
from services.console.settings import ConsoleSettings
from services.devstack import free_port
from services.devstack.oidc import (
    CONSOLE_CLIENT_ID,
    OidcProviderHandle,
    RelyingParty,
    node_modules_ready,
    start_oidc_provider,
)
from services.devstack.temporal import TemporalHandle
from services.kit.pki import DevPki
from services.kit.server import Runtime, open_channel
from services.kit.settings import KitSettings
from tests.support import PAYLOAD_KEYS, kit_settings

CLIENT_SECRET = "console-tests-secret"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "console-tests"


@dataclass
class RunningConsole:
    url: str
    port: int
    console: Console
    settings: ConsoleSettings
    issuer: str


@pytest.fixture(scope="session")
def console_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def oidc_provider(
    console_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcProviderHandle]:
    if not node_modules_ready():
        pytest.fail("build/console has no node_modules: run `make console-assets` (make test does)")
    base = f"http://127.0.0.1:{console_port}"
    handle = start_oidc_provider(
        port=free_port(),
        clients=[
            RelyingParty(
                CONSOLE_CLIENT_ID,
                CLIENT_SECRET,
                [f"{base}/connexion/retour"],
                [f"{base}/connexion?au-revoir=1"],
            )
        ],
        log_file=tmp_path_factory.mktemp("oidc") / "oidc.log",
    )
    try:
        yield handle
    finally:
        handle.stop()


def console_settings(
    pki: DevPki,
    database_url: str,
    port: int,
    issuer: str,
    temporal_address: str,
    **overrides: object,
) -> ConsoleSettings:
    values = kit_settings(pki, database_url, "console")
    values.update(
        {
            "console_http_port": port,
            "console_public_url": f"http://127.0.0.1:{port}",
            "oidc_issuer": issuer,
            "oidc_client_id": CONSOLE_CLIENT_ID,
            "oidc_client_secret": CLIENT_SECRET,
            "cookie_secure": False,
            "console_token_signing_key_file": pki.signing_key_file,
            "payload_keys": PAYLOAD_KEYS,
            "temporal_address": temporal_address,
            "temporal_ui_url": "http://127.0.0.1:8233",
            # The tests run the case-notification pass themselves (`CaseNotificationPoller.run_once`): a
            # background pass would take the notifications a test is waiting for.
            "notification_poll_seconds": 0,
        }
    )
    values.update(overrides)
    return ConsoleSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def run_console(settings: ConsoleSettings, pool: asyncpg.Pool) -> AsyncIterator[RunningConsole]:
    console = await build(settings, pool)
    await console.start_tasks()
    sock = listen("127.0.0.1", settings.console_http_port)
    server = uvicorn_server(console.app, settings)
    # The suite's loop owns the signals; uvicorn must not install its own handlers in a test.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no event for "listening"; its flag is set once the socket serves (a few ms).
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield RunningConsole(
            f"http://127.0.0.1:{settings.console_http_port}",
            settings.console_http_port,
            console,
            settings,
            settings.oidc_issuer,
        )
    finally:
        server.should_exit = True
        await task
        await console.stop()
        sock.close()


@contextlib.asynccontextmanager
async def grpc_server_only(
    build: Callable[..., Awaitable[Runtime]],
    settings: KitSettings,
    pool: asyncpg.Pool,
    temporal_client: temporalio.client.Client,
    directory_address: str,
) -> AsyncIterator[str]:
    """A case service's gRPC server without its background tasks (its outbox relay would race the suite's
    own): enough for what the console reads of it, the activity reports. Its address."""
    directory = open_channel(settings, directory_address)
    runtime = await build(settings, pool, temporal=temporal_client, directory=directory)
    await runtime.kit.start()
    await runtime.kit.set_serving(True)
    try:
        yield f"127.0.0.1:{runtime.port}"
    finally:
        await runtime.kit.stop(0.5)
        await directory.close()


@pytest.fixture(scope="session")
async def report_addresses(
    pki: DevPki,
    database_url: str,
    seeded_pool: asyncpg.Pool,
    temporal: TemporalHandle,
    temporal_client: temporalio.client.Client,
    directory_address: str,
) -> AsyncIterator[dict[str, str]]:
    """The expertise and scheduling services the dashboards read activity reports from: their addresses."""
    from services.expertise.server import build as build_expertise
    from services.expertise.settings import ExpertiseSettings
    from services.scheduling.server import build as build_scheduling
    from tests.scheduling.conftest import scheduling_settings

    expertise = ExpertiseSettings(
        **{  # type: ignore[arg-type]
            **kit_settings(pki, database_url, "expertise"),
            "temporal_address": temporal.address,
            "payload_keys": PAYLOAD_KEYS,
            "directory_address": directory_address,
        }
    )
    scheduling = scheduling_settings(pki, database_url, directory_address, temporal.address)
    shared = (seeded_pool, temporal_client, directory_address)
    async with (
        grpc_server_only(build_expertise, expertise, *shared) as expertise_address,
        grpc_server_only(build_scheduling, scheduling, *shared) as scheduling_address,
    ):
        yield {"expertise_address": expertise_address, "scheduling_address": scheduling_address}


@pytest.fixture(scope="session")
async def console(
    pki: DevPki,
    database_url: str,
    pool: asyncpg.Pool,
    temporal: TemporalHandle,
    oidc_provider: OidcProviderHandle,
    console_port: int,
    directory_address: str,
    billing_address: str,
    contracts_address: str,
    report_addresses: dict[str, str],
) -> AsyncIterator[RunningConsole]:
    settings = console_settings(
        pki,
        database_url,
        console_port,
        oidc_provider.issuer,
        temporal.address,
        directory_address=directory_address,
        billing_address=billing_address,
        contracts_address=contracts_address,
        **report_addresses,
    )
    async with run_console(settings, pool) as running:
        yield running
