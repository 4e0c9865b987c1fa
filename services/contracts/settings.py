"""Settings of the contracts service (environment variables, read once) and the durations cases start with.

The decision-signing identity is the worker's (`workflows/contracts/worker.py`): the service renders previews
and verifies signed decisions against `decision_trust_roots_file`; only the worker holds the key.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator

from services.contracts.models import DAY, TASK_QUEUE, Step, Timeline
from services.kit.settings import KitSettings, TemporalSettings

DEFAULT_PORT = 50055
# The kit's gRPC servers keep gRPC's 4 MiB message limit: a document travels in one message with its
# request, so the hub stores documents up to a little less.
DEFAULT_DOCUMENT_MAX_BYTES = 4 * 1024 * 1024 - 64 * 1024


class ContractsSettings(KitSettings, TemporalSettings):
    component: str = "contracts"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_CONTRACTS_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )
    # The directory: regions (their time zone and name), establishments (a decision names its promoter) and
    # where a practitioner practises (a practitioner's token is accepted only through such an establishment).
    directory_address: str
    directory_cache_seconds: float = Field(default=60.0, ge=0)
    # Where cases' workflows run (the contracts worker polls the same queue).
    contracts_task_queue: str = TASK_QUEUE
    # How long a state-changing call waits for its case's workflow before answering UNAVAILABLE (the change
    # is still applied once a worker picks it up; a retry with the same request_id returns it).
    contracts_update_timeout: timedelta = timedelta(seconds=20)

    # The roots a signed decision is verified against when it is downloaded (PEM bundle): the hub's CA in
    # development, the State's (or the ARS's) in production.
    decision_trust_roots_file: Path | None = None

    # Decisions are rendered and verified in a child process (services/contracts/document_process.py), which
    # ends once idle this long; the next decision starts another (about half a second). A child that has not
    # answered within the timeout is killed, and the call answered UNAVAILABLE.
    document_process_idle_seconds: float = Field(default=60.0, gt=0)
    document_process_timeout_seconds: float = Field(default=60.0, gt=0)

    # Documents: the largest one the hub stores.
    document_max_bytes: int = Field(default=DEFAULT_DOCUMENT_MAX_BYTES, ge=1, le=DEFAULT_DOCUMENT_MAX_BYTES)

    # Durations that matter to people (tests shrink them): every step's due time in days, the reminder
    # before it, the escalation after it, the opinion reminder, and the renewal reminders before a
    # contract's end (90 and 30 days by default).
    step_due_days: dict[str, float] = Field(default_factory=dict)
    reminder_before_days: float = Field(default=3.0, ge=0)
    escalate_after_days: float = Field(default=0.0, ge=0)
    opinion_reminder_before_days: float = Field(default=2.0, ge=0)
    renewal_reminder_days: list[float] = Field(default_factory=lambda: [90.0, 30.0])
    # A case's run continues as new once its history holds this many events (its history stays bounded).
    contracts_history_limit: int = Field(default=2000, ge=100)
    # How soon an activity of a crashed worker is retried by another one.
    contracts_activity_timeout: timedelta = timedelta(seconds=15)

    @field_validator("step_due_days")
    @classmethod
    def _known_steps(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(Step.ROLE)
        if unknown:
            raise ValueError(f"unknown steps {sorted(unknown)} (known: {sorted(Step.ROLE)})")
        if any(days <= 0 for days in value.values()):
            raise ValueError("a step is due a positive number of days after it opens")
        return value

    @field_validator("renewal_reminder_days")
    @classmethod
    def _positive_offsets(cls, value: list[float]) -> list[float]:
        if any(days <= 0 for days in value):
            raise ValueError("renewal reminders come a positive number of days before the end")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _trust_roots(self) -> ContractsSettings:
        if not self.insecure_dev_mode and self.decision_trust_roots_file is None:
            raise ValueError("missing required setting PARCOURS_DECISION_TRUST_ROOTS_FILE")
        return self

    def timeline(self) -> Timeline:
        defaults = Timeline()
        due = dict(defaults.step_due_seconds)
        due.update({step: days * DAY for step, days in self.step_due_days.items()})
        return Timeline(
            step_due_seconds=due,
            reminder_before_seconds=self.reminder_before_days * DAY,
            escalate_after_seconds=self.escalate_after_days * DAY,
            opinion_reminder_before_seconds=self.opinion_reminder_before_days * DAY,
            renewal_reminder_offsets_seconds=[days * DAY for days in self.renewal_reminder_days],
            activity_timeout_seconds=self.contracts_activity_timeout.total_seconds(),
            continue_as_new_after_events=self.contracts_history_limit,
        )
