"""The contracts worker: runs the four contracts workflows and their activities.

One process holds one asyncpg pool (the contracts schema's projection and documents), the decision-signing
identity (the director general's or a delegate's certificate and key, from a Secret; a development one under
`make run`) and one Temporal client with the payload codec and tracing. It calls no other service.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import temporalio.client
import temporalio.worker
from pydantic import Field, model_validator

from services.contracts.decisions import SigningIdentity
from services.contracts.models import TASK_QUEUE
from services.contracts.store import ContractsStore, PgDocumentStore
from services.kit.settings import KitSettings, TemporalSettings
from services.kit.temporal import build_worker
from workflows.contracts.activities import ContractsActivities
from workflows.contracts.workflows import WORKFLOWS

log = logging.getLogger(__name__)


class ContractsWorkerSettings(KitSettings, TemporalSettings):
    component: str = "workflows-contracts"
    contracts_task_queue: str = TASK_QUEUE
    # How long a workflow task waits for this worker's cache before going to any worker: the delay before
    # another worker takes over the cases of one that died.
    contracts_sticky_timeout_seconds: float = Field(default=10.0, gt=0)
    contracts_max_concurrent_activities: int = Field(default=20, ge=1)
    # The certificate and key that sign decision documents (PAdES): the director general's or a named
    # delegate's, mounted from a Secret; in development, issued under the hub's CA by `make run`.
    decision_signing_cert_file: Path | None = None
    decision_signing_key_file: Path | None = None
    # Intermediate certificates between the signing certificate and its root (a JSON list of files).
    decision_signing_chain_files: list[Path] = Field(default_factory=list)

    @model_validator(mode="after")
    def _signing_identity(self) -> ContractsWorkerSettings:
        pair = (self.decision_signing_cert_file, self.decision_signing_key_file)
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError(
                "PARCOURS_DECISION_SIGNING_CERT_FILE and PARCOURS_DECISION_SIGNING_KEY_FILE go together"
            )
        if not self.insecure_dev_mode and pair[0] is None:
            raise ValueError(
                "missing required settings PARCOURS_DECISION_SIGNING_CERT_FILE and "
                "PARCOURS_DECISION_SIGNING_KEY_FILE"
            )
        return self

    def channels(self) -> dict[str, str]:
        """The services the worker calls: none (its activities write contracts' tables and sign)."""
        return {}

    def identity(self) -> SigningIdentity | None:
        if self.decision_signing_cert_file is None or self.decision_signing_key_file is None:
            return None
        return SigningIdentity.from_files(
            self.decision_signing_cert_file, self.decision_signing_key_file, self.decision_signing_chain_files
        )


def build(
    settings: ContractsWorkerSettings,
    client: temporalio.client.Client,
    pool: asyncpg.Pool,
    channels: Mapping[str, grpc.aio.Channel],
) -> temporalio.worker.Worker:
    """The worker of a `python -m workflows.contracts` process (services.kit.temporal.run_worker)."""
    activities = ContractsActivities(ContractsStore(pool), PgDocumentStore(pool), settings.identity())
    return build_worker(
        client,
        task_queue=settings.contracts_task_queue,
        workflows=WORKFLOWS,
        activities=[activities.persist_case, activities.sign_decision],
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.contracts_sticky_timeout_seconds),
        max_concurrent_activities=settings.contracts_max_concurrent_activities,
    )
