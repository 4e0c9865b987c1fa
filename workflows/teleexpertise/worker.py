"""The teleexpertise worker: runs `Teleexpertise` workflows and their activities.

One process holds one asyncpg pool (the expertise schema's projection), one channel to the directory and one
to billing (both with the `workflows` component certificate: a hub service principal), and one Temporal
client with the payload codec and tracing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

import asyncpg
import grpc
import temporalio.client
import temporalio.worker
from parcours.billing.v1 import billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from pydantic import Field

from services.expertise.models import TASK_QUEUE
from services.expertise.store import ExpertiseStore
from services.kit.notify import Notifier, NotifySettings
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.temporal import DEFAULT_STICKY_TIMEOUT, build_worker
from workflows.teleexpertise.activities import TeleexpertiseActivities
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

log = logging.getLogger(__name__)


class TeleexpertiseWorkerSettings(KitSettings, TemporalSettings, NotifySettings):
    component: str = "workflows-teleexpertise"
    directory_address: str
    billing_address: str
    teleexpertise_task_queue: str = TASK_QUEUE
    # How long a workflow task waits for this worker's cache before going to any worker: the delay before
    # another worker takes over the cases of one that died (services.kit.temporal.DEFAULT_STICKY_TIMEOUT).
    teleexpertise_sticky_timeout_seconds: float = Field(default=DEFAULT_STICKY_TIMEOUT.total_seconds(), gt=0)
    teleexpertise_max_concurrent_activities: int = Field(default=50, ge=1)

    def channels(self) -> dict[str, str]:
        return {"directory": self.directory_address, "billing": self.billing_address}


def build(
    settings: TeleexpertiseWorkerSettings,
    client: temporalio.client.Client,
    pool: asyncpg.Pool,
    channels: Mapping[str, grpc.aio.Channel],
) -> temporalio.worker.Worker:
    """The worker of a `python -m workflows.teleexpertise` process (services.kit.temporal.run_worker)."""
    activities = TeleexpertiseActivities(
        ExpertiseStore(pool),
        directory_pb2_grpc.DirectoryServiceStub(channels["directory"]),
        billing_pb2_grpc.BillingServiceStub(channels["billing"]),
        notifier=Notifier.from_settings(settings),
    )
    return build_worker(
        client,
        task_queue=settings.teleexpertise_task_queue,
        workflows=[TeleexpertiseWorkflow],
        activities=activities.all(),
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.teleexpertise_sticky_timeout_seconds
        ),
        max_concurrent_activities=settings.teleexpertise_max_concurrent_activities,
    )
