"""The Teleconsultation worker: its settings and how it is built (tests build it the same way)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import asyncpg
import grpc
import temporalio.client
import temporalio.worker
from parcours.billing.v1 import billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from pydantic import Field, SecretStr

from services.kit.notify import Notifier, NotifySettings
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.temporal import DEFAULT_STICKY_TIMEOUT, build_worker
from services.scheduling.join import JoinLinks
from services.scheduling.models import TASK_QUEUE
from workflows.teleconsultation.activities import TeleconsultationActivities
from workflows.teleconsultation.workflows import TeleconsultationWorkflow


class TeleconsultationWorkerSettings(KitSettings, TemporalSettings, NotifySettings):
    component: str = "workflows-teleconsultation"
    # Join links: `<join_base_url>/<token>` (the video bridge's page), tokens HMAC-signed with this key
    # (base64url, 32 bytes or more; the same for every worker so that a retried delivery sends the same link).
    join_base_url: str = "https://visio.parcours.invalid/join"
    join_token_key: SecretStr | None = None
    # Billing records the act; the directory gives the practitioner's sector and the patient's age.
    billing_address: str
    directory_address: str
    # Activities run concurrently on the worker's event loop (database and gRPC calls only).
    max_concurrent_activities: int = Field(default=50, ge=1, le=1000)
    # How long a workflow task waits for this worker's cache before going to any worker: the delay before
    # another worker takes over the cases of one that died (services.kit.temporal.DEFAULT_STICKY_TIMEOUT).
    teleconsultation_sticky_timeout_seconds: float = Field(
        default=DEFAULT_STICKY_TIMEOUT.total_seconds(), gt=0
    )

    def channels(self) -> dict[str, str]:
        return {"billing": self.billing_address, "directory": self.directory_address}

    def join_links(self) -> JoinLinks:
        import base64

        key = None
        if self.join_token_key is not None:
            text = self.join_token_key.get_secret_value()
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(key) < 32:
                raise ValueError("PARCOURS_JOIN_TOKEN_KEY must hold at least 32 bytes")
        return JoinLinks.with_key(self.join_base_url, key)


def teleconsultation_worker(
    client: temporalio.client.Client,
    pool: asyncpg.Pool,
    *,
    billing: grpc.aio.Channel,
    directory: grpc.aio.Channel,
    component: str = "workflows-teleconsultation",
    task_queue: str = TASK_QUEUE,
    max_concurrent_activities: int = 50,
    notifier: Notifier | None = None,
    join_links: JoinLinks | None = None,
    sticky_timeout: timedelta = DEFAULT_STICKY_TIMEOUT,
) -> temporalio.worker.Worker:
    activities = TeleconsultationActivities(
        pool,
        billing_pb2_grpc.BillingServiceStub(billing),
        directory_pb2_grpc.DirectoryServiceStub(directory),
        component,
        notifier=notifier,
        join_links=join_links,
    )
    return build_worker(
        client,
        task_queue=task_queue,
        workflows=[TeleconsultationWorkflow],
        activities=activities.all(),
        max_concurrent_activities=max_concurrent_activities,
        sticky_queue_schedule_to_start_timeout=sticky_timeout,
    )


def build(
    settings: TeleconsultationWorkerSettings,
    client: temporalio.client.Client,
    pool: asyncpg.Pool,
    channels: Mapping[str, grpc.aio.Channel],
) -> temporalio.worker.Worker:
    """The worker of a `python -m workflows.teleconsultation` process (services.kit.temporal.run_worker)."""
    return teleconsultation_worker(
        client,
        pool,
        billing=channels["billing"],
        directory=channels["directory"],
        component=settings.component,
        max_concurrent_activities=settings.max_concurrent_activities,
        notifier=Notifier.from_settings(settings),
        join_links=settings.join_links(),
        sticky_timeout=timedelta(seconds=settings.teleconsultation_sticky_timeout_seconds),
    )
