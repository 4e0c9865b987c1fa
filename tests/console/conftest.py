"""The console under test: the real development OpenID provider, the console in-process on a free port
(uvicorn over a real socket) against the suite's PostgreSQL, Temporal, directory and billing services.

Tests that need the contracts service (the inbox, a case page, decisions, the e2e scenario) ask for the
`contracts_address` fixture: until services/contracts has a server it SKIPS them, saying they wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

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


def _contracts_server_exists() -> bool:
    return importlib.util.find_spec("services.contracts.server") is not None


WAITING = "WAITS FOR THE CONTRACTS SERVICE (issue 10): services/contracts has no server yet"


@pytest.fixture(scope="session")
def contracts_address() -> str:
    """The contracts service (and its worker), started like the suite's other services. Until
    services/contracts has a server, every test that needs it skips with WAITING."""
    if not _contracts_server_exists():
        pytest.skip(WAITING)
    pytest.skip("the contracts service landed: start it here (server + worker) as billing_address does")


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
) -> AsyncIterator[RunningConsole]:
    settings = console_settings(
        pki,
        database_url,
        console_port,
        oidc_provider.issuer,
        temporal.address,
        directory_address=directory_address,
        billing_address=billing_address,
    )
    async with run_console(settings, pool) as running:
        yield running
