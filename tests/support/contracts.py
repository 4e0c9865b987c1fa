"""The contracts service and its worker, in process, for fixtures that need billing (billing asks contracts
whether an act is covered): the suite's session fixture and the security tests' own hub."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import temporalio.client

from services.kit.pki import DevPki
from tests.support import PAYLOAD_KEYS, kit_settings


@asynccontextmanager
async def running_contracts(
    pki: DevPki,
    database_url: str,
    pool: asyncpg.Pool,
    client: temporalio.client.Client,
    temporal_address: str,
    directory_address: str,
) -> AsyncIterator[str]:
    """Contracts on `pool` (its own role) and its worker on a task queue of their own; yields its address.
    The worker signs decisions with the development identity under the test CA, which the service trusts."""
    from services.contracts.decisions import ensure_dev_signing_identity
    from services.contracts.server import build
    from services.contracts.settings import ContractsSettings
    from services.kit.server import open_channel
    from workflows.contracts.worker import ContractsWorkerSettings
    from workflows.contracts.worker import build as build_worker

    task_queue = f"contracts-{uuid.uuid4()}"
    temporal = {"temporal_address": temporal_address, "payload_keys": PAYLOAD_KEYS}
    settings = ContractsSettings(
        **kit_settings(pki, database_url, "contracts"),  # type: ignore[arg-type]
        **temporal,
        directory_address=directory_address,
        contracts_task_queue=task_queue,
        decision_trust_roots_file=pki.ca_file,
    )
    certificate, key = ensure_dev_signing_identity(pki.directory)
    worker_settings = ContractsWorkerSettings(
        **kit_settings(pki, database_url, "workflows"),  # type: ignore[arg-type]
        **temporal,
        contracts_task_queue=task_queue,
        decision_signing_cert_file=certificate,
        decision_signing_key_file=key,
    )
    directory = open_channel(settings, directory_address)
    runtime = await build(settings, pool, temporal=client, directory=directory)
    await runtime.start()
    try:
        async with build_worker(worker_settings, client, pool, {}):
            yield f"127.0.0.1:{runtime.port}"
    finally:
        await runtime.stop(0.5)
        await directory.close()
