"""Settings of the contracts service and its workflows (environment variables, read once)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator

from services.contracts.models import DAY, Step, Timeline
from services.kit.settings import KitSettings

DEFAULT_PORT = 50055


class ContractsSettings(KitSettings):
    component: str = "contracts"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_CONTRACTS_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )

    # The certificate and key that sign decision documents (PAdES): the director general's or a named
    # delegate's, mounted from a Secret; in development, issued under the hub's CA by `make run`.
    decision_signing_cert_file: Path | None = None
    decision_signing_key_file: Path | None = None
    # Intermediate certificates between the signing certificate and its root (a JSON list of files).
    decision_signing_chain_files: list[Path] = Field(default_factory=list)
    # The roots a signed decision is verified against (PEM bundle).
    decision_trust_roots_file: Path | None = None

    # Durations that matter to people (tests shrink them): every step's due time in days, the reminder
    # before it, the escalation after it, the opinion reminder, and the renewal reminders before a
    # contract's end (90 and 30 days by default).
    step_due_days: dict[str, float] = Field(default_factory=dict)
    reminder_before_days: float = Field(default=3.0, ge=0)
    escalate_after_days: float = Field(default=0.0, ge=0)
    opinion_reminder_before_days: float = Field(default=2.0, ge=0)
    renewal_reminder_days: list[float] = Field(default_factory=lambda: [90.0, 30.0])

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
    def _signing_material(self) -> ContractsSettings:
        pair = (self.decision_signing_cert_file, self.decision_signing_key_file)
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError(
                "PARCOURS_DECISION_SIGNING_CERT_FILE and PARCOURS_DECISION_SIGNING_KEY_FILE go together"
            )
        if not self.insecure_dev_mode and (pair[0] is None or self.decision_trust_roots_file is None):
            raise ValueError(
                "missing required settings PARCOURS_DECISION_SIGNING_CERT_FILE, "
                "PARCOURS_DECISION_SIGNING_KEY_FILE and PARCOURS_DECISION_TRUST_ROOTS_FILE"
            )
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
        )
