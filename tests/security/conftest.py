"""The hub as an attacker inside the network meets it: directory, billing, contracts, scheduling and expertise
over mTLS with their workers, each process as its own database role, on a database and a Temporal dev server
of their own (the fuzzer writes what it may; no other test should see it, and the workers poll fixed task
queues)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest
from parcours.billing.v1 import billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.client import Client

from services.devstack import free_port
from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle, start_temporal
from services.kit.db import open_pool
from services.kit.migrate import apply_all
from services.kit.pki import DevPki
from services.kit.roles import AUDITOR, OWNER, SERVICE_ROLES, component_role
from services.kit.server import KitServer, Runtime, open_channel
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.temporal import connect_client
from tests.support import PAYLOAD_KEYS, component_channel, establishment_channel, kit_settings, role_url
from tests.support.contracts import running_contracts


@dataclass
class SecurityHub:
    """The five services (addresses), their database (owner URL and an administrator's pool), Temporal."""

    pki: DevPki
    database_url: str
    admin: asyncpg.Pool
    temporal: Client
    addresses: dict[str, str]
    _channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str, finess: str) -> grpc.aio.Channel:
        """A channel to a service presenting an establishment's certificate (a component's with
        `finess="component:<name>"`), kept for the session."""
        key = (service, finess)
        if key not in self._channels:
            address = self.addresses[service]
            if finess.startswith("component:"):
                self._channels[key] = component_channel(self.pki, address, finess.removeprefix("component:"))
            else:
                self._channels[key] = establishment_channel(self.pki, address, finess)
        return self._channels[key]

    def directory(self, finess: str) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel("directory", finess))

    def scheduling(self, finess: str) -> scheduling_pb2_grpc.SchedulingServiceStub:
        return scheduling_pb2_grpc.SchedulingServiceStub(self.channel("scheduling", finess))

    def expertise(self, finess: str) -> expertise_pb2_grpc.ExpertiseServiceStub:
        return expertise_pb2_grpc.ExpertiseServiceStub(self.channel("expertise", finess))

    def billing(self, finess: str) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel("billing", finess))

    def contracts(self, finess: str) -> contracts_pb2_grpc.ContractServiceStub:
        return contracts_pb2_grpc.ContractServiceStub(self.channel("contracts", finess))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def role_database(postgres: PostgresHandle, admin: asyncpg.Pool, prefix: str) -> tuple[str, str]:
    """A database set up as production sets one up: owned by the migrations' owner role, reachable by the
    hub's roles only, every migration applied by the owner. (name, the owner's URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}" OWNER {OWNER}')
    await admin.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
    await admin.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {", ".join((*SERVICE_ROLES, AUDITOR))}')
    owner_url = role_url(postgres.url_for(name), OWNER)
    await asyncio.to_thread(apply_all, owner_url)
    return name, owner_url


@pytest.fixture(scope="package")
def security_temporal() -> Iterator[TemporalHandle]:
    handle = start_temporal(None, port=free_port(), ui_port=None, headless=True)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="package")
async def hub(
    pki: DevPki, postgres: PostgresHandle, pool: asyncpg.Pool, security_temporal: TemporalHandle
) -> AsyncIterator[SecurityHub]:
    from services.billing.server import build as build_billing
    from services.billing.settings import BillingSettings
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

    name, url = await role_database(postgres, pool, "security")
    admin = await asyncpg.create_pool(postgres.url_for(name), min_size=1, max_size=4)
    assert admin is not None
    pools: dict[str, asyncpg.Pool] = {}

    async def role_pool(component: str) -> asyncpg.Pool:
        """The component's pool as its process opens it (its own role, its name as application_name)."""
        if component not in pools:
            role = role_url(url, component_role(component))
            values = {**kit_settings(pki, role, "workflows"), "component": component}
            settings = KitSettings(**values)  # type: ignore[arg-type]
            pools[component] = await open_pool(settings)
        return pools[component]

    try:
        await seed_demo(admin)
        client = await connect_client(
            TemporalSettings(temporal_address=security_temporal.address, payload_keys=PAYLOAD_KEYS)
        )
        temporal = {"temporal_address": security_temporal.address, "payload_keys": PAYLOAD_KEYS}
        async with AsyncExitStack() as exits:

            async def serving(kit: KitServer | Runtime) -> str:
                await kit.start()
                if isinstance(kit, KitServer):
                    await kit.set_serving(True)
                exits.push_async_callback(kit.stop, 0.5)
                return f"127.0.0.1:{kit.port}"

            directory = await serving(
                await build_directory(
                    DirectorySettings(**kit_settings(pki, url, "directory")),  # type: ignore[arg-type]
                    await role_pool("directory"),
                )
            )
            contracts = await exits.enter_async_context(
                running_contracts(
                    pki, url, await role_pool("contracts"), client, security_temporal.address, directory
                )
            )
            billing = await serving(
                await build_billing(
                    BillingSettings(
                        **kit_settings(  # type: ignore[arg-type]
                            pki, url, "billing", directory_address=directory, contracts_address=contracts
                        )
                    ),
                    await role_pool("billing"),
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
                scheduling_settings,
                await role_pool("scheduling"),
                temporal=client,
                directory=scheduling_directory,
            )
            scheduling = await serving(runtime)
            task_queue = f"teleexpertise-security-{uuid.uuid4()}"
            expertise_settings = ExpertiseSettings(
                **kit_settings(pki, url, "expertise"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                teleexpertise_task_queue=task_queue,
            )
            expertise_directory = open_channel(expertise_settings, directory)
            exits.push_async_callback(expertise_directory.close)
            expertise = await serving(
                await build_expertise(
                    expertise_settings,
                    await role_pool("expertise"),
                    temporal=client,
                    directory=expertise_directory,
                )
            )
            channels = [component_channel(pki, address, "workflows") for address in (directory, billing) * 2]
            for channel in channels:
                exits.push_async_callback(channel.close)
            await exits.enter_async_context(
                teleconsultation_worker(
                    client,
                    await role_pool("workflows-teleconsultation"),
                    directory=channels[0],
                    billing=channels[1],
                )
            )
            worker_settings = TeleexpertiseWorkerSettings(
                # The `workflows` certificate, the expertise role (as `make run` runs the worker).
                **kit_settings(pki, role_url(url, component_role("workflows-teleexpertise")), "workflows"),  # type: ignore[arg-type]
                **temporal,
                directory_address=directory,
                billing_address=billing,
                teleexpertise_task_queue=task_queue,
            )
            await exits.enter_async_context(
                build_teleexpertise_worker(
                    worker_settings,
                    client,
                    await role_pool("workflows-teleexpertise"),
                    {"directory": channels[2], "billing": channels[3]},
                )
            )
            found = SecurityHub(
                pki=pki,
                database_url=url,
                admin=admin,
                temporal=client,
                addresses={
                    "directory": directory,
                    "billing": billing,
                    "contracts": contracts,
                    "scheduling": scheduling,
                    "expertise": expertise,
                },
            )
            exits.push_async_callback(found.close)
            yield found
    finally:
        for created in pools.values():
            await created.close()
        await admin.close()
        await pool.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
