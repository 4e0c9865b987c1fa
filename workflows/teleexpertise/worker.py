"""The teleexpertise worker: runs `Teleexpertise` workflows and their activities.

One process holds one asyncpg pool (the expertise schema's projection), one channel to the directory and one
to billing (both with the `workflows` component certificate: a hub service principal), and one Temporal
client with the payload codec and tracing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg
import grpc
import temporalio.client
import temporalio.worker
from parcours.billing.v1 import billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from pydantic import Field

from services.expertise.store import ExpertiseStore
from services.kit.db import open_pool
from services.kit.server import open_channel
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.telemetry import configure_telemetry
from services.kit.temporal import build_worker, connect_client, run_worker_until_signalled
from workflows.teleexpertise.activities import TeleexpertiseActivities
from workflows.teleexpertise.models import TASK_QUEUE
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

log = logging.getLogger(__name__)


class TeleexpertiseWorkerSettings(KitSettings, TemporalSettings):
    component: str = "workflows-teleexpertise"
    directory_address: str
    billing_address: str
    teleexpertise_task_queue: str = TASK_QUEUE
    # How long a workflow task waits for this worker's cache before going to any worker: the delay before
    # another worker takes over the cases of one that died.
    teleexpertise_sticky_timeout_seconds: float = Field(default=10.0, gt=0)
    teleexpertise_max_concurrent_activities: int = Field(default=50, ge=1)


def build(
    settings: TeleexpertiseWorkerSettings,
    client: temporalio.client.Client,
    pool: asyncpg.Pool,
    *,
    directory: grpc.aio.Channel,
    billing: grpc.aio.Channel,
) -> temporalio.worker.Worker:
    activities = TeleexpertiseActivities(
        ExpertiseStore(pool),
        directory_pb2_grpc.DirectoryServiceStub(directory),
        billing_pb2_grpc.BillingServiceStub(billing),
    )
    return build_worker(
        client,
        task_queue=settings.teleexpertise_task_queue,
        workflows=[TeleexpertiseWorkflow],
        activities=[activities.persist_case, activities.record_acts],
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.teleexpertise_sticky_timeout_seconds
        ),
        max_concurrent_activities=settings.teleexpertise_max_concurrent_activities,
    )


async def run(settings: TeleexpertiseWorkerSettings) -> None:
    configure_telemetry(settings.component)
    pool = await open_pool(settings)
    directory = open_channel(settings, settings.directory_address)
    billing = open_channel(settings, settings.billing_address)
    try:
        client = await connect_client(settings)
        worker = build(settings, client, pool, directory=directory, billing=billing)
        log.info("teleexpertise worker polling %s", settings.teleexpertise_task_queue)
        await run_worker_until_signalled(worker)
    finally:
        await directory.close()
        await billing.close()
        await pool.close()
