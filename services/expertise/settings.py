"""Settings of the expertise service (and the durations its cases are started with)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field, model_validator

from services.expertise.models import TASK_QUEUE, Timeline
from services.kit.notify import DeliveryPolicy
from services.kit.settings import KitSettings, TemporalSettings

DEFAULT_PORT = 50053
# Any health professional may request a téléexpertise since 2021 (domain §1.1, §3.3); psychologists are not
# a health profession of the CSP.
DEFAULT_REQUESTER_PROFESSIONS = ",".join(
    f"PROFESSION_{name}"
    for name in (
        "PHYSICIAN",
        "MIDWIFE",
        "DENTIST",
        "PHARMACIST",
        "NURSE",
        "PHYSIOTHERAPIST",
        "SPEECH_THERAPIST",
        "ORTHOPTIST",
        "PODIATRIST",
        "OCCUPATIONAL_THERAPIST",
        "PSYCHOMOTOR_THERAPIST",
        "DIETITIAN",
        "RADIOGRAPHER",
        "AUDIOPROSTHETIST",
        "OPTICIAN",
    )
)


class ExpertiseSettings(KitSettings, TemporalSettings):
    component: str = "expertise"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_EXPERTISE_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )
    # The directory service (patients, practitioners, establishments, expertise offers).
    directory_address: str
    # Where cases' workflows run (the teleexpertise worker polls the same queue).
    teleexpertise_task_queue: str = TASK_QUEUE
    # Reference data (establishments, practitioners, offers) is cached this long; patients never are.
    directory_cache_seconds: float = Field(default=60.0, ge=0)
    # How long a state-changing call waits for its case's workflow before answering UNAVAILABLE (the change
    # is still applied once a worker picks it up; a retry with the same request_id returns it).
    teleexpertise_update_timeout: timedelta = timedelta(seconds=20)

    # Bounds of the requested answer deadline, from the time of the request, per urgency; the default applies
    # when the request gives none.
    teleexpertise_routine_deadline_min: timedelta = timedelta(hours=48)
    teleexpertise_routine_deadline_max: timedelta = timedelta(days=30)
    teleexpertise_routine_deadline_default: timedelta = timedelta(days=7)
    teleexpertise_urgent_deadline_min: timedelta = timedelta(hours=2)
    teleexpertise_urgent_deadline_max: timedelta = timedelta(hours=48)
    teleexpertise_urgent_deadline_default: timedelta = timedelta(hours=24)

    # Acceptance windows as fractions of the time to the deadline (see teleexpertise.models.Timeline): the
    # first tier has half of it, later tiers an eighth each; reminders halfway through a window.
    teleexpertise_first_window_fraction: float = Field(default=0.5, gt=0, le=1)
    teleexpertise_next_window_fraction: float = Field(default=0.125, gt=0, le=1)
    teleexpertise_reminder_fraction: float = Field(default=0.5, gt=0, lt=1)
    # Whether the answer deadline stops while the expert waits for the requester's answer.
    teleexpertise_pause_deadline_while_awaiting_information: bool = True
    # An unassigned request expires this long after its (missed) deadline.
    teleexpertise_expire_after: timedelta = timedelta(days=14)
    # How soon an activity of a crashed worker is retried by another one.
    teleexpertise_activity_timeout: timedelta = timedelta(seconds=15)
    # How each case retries the delivery of a notification (e-mail, webhook) before recording it as failed:
    # attempts, then the first wait, doubling up to the longest (copied into the workflow's input).
    delivery_max_attempts: int = Field(default=12, ge=1, le=100)
    delivery_first_retry: timedelta = Field(default=timedelta(seconds=2), gt=timedelta(0))
    delivery_max_retry: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0))

    # Attachments stored by the hub (larger documents are referenced by URI).
    teleexpertise_attachment_media_types: str = "application/pdf,image/jpeg,image/png,text/plain"
    teleexpertise_attachment_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    teleexpertise_attachments_max_total_bytes: int = Field(default=3 * 1024 * 1024, ge=1)
    # Professions allowed to request (comma-separated Profession names).
    teleexpertise_requester_professions: str = DEFAULT_REQUESTER_PROFESSIONS

    @model_validator(mode="after")
    def _coherent(self) -> ExpertiseSettings:
        for urgency in ("routine", "urgent"):
            low = getattr(self, f"teleexpertise_{urgency}_deadline_min")
            high = getattr(self, f"teleexpertise_{urgency}_deadline_max")
            default = getattr(self, f"teleexpertise_{urgency}_deadline_default")
            if not timedelta(0) < low <= default <= high:
                raise ValueError(
                    f"PARCOURS_TELEEXPERTISE_{urgency.upper()}_DEADLINE_MIN <= _DEFAULT <= _MAX must hold"
                )
        return self

    def deadline_bounds(self, urgency: str) -> tuple[timedelta, timedelta, timedelta]:
        """(minimum, default, maximum) time to the answer deadline for ROUTINE or URGENT."""
        prefix = f"teleexpertise_{urgency.lower()}_deadline"
        return (
            getattr(self, f"{prefix}_min"),
            getattr(self, f"{prefix}_default"),
            getattr(self, f"{prefix}_max"),
        )

    def timeline(self) -> Timeline:
        return Timeline(
            first_window_fraction=self.teleexpertise_first_window_fraction,
            next_window_fraction=self.teleexpertise_next_window_fraction,
            reminder_fraction=self.teleexpertise_reminder_fraction,
            pause_deadline_while_awaiting_information=self.teleexpertise_pause_deadline_while_awaiting_information,
            expire_after_seconds=self.teleexpertise_expire_after.total_seconds(),
            activity_timeout_seconds=self.teleexpertise_activity_timeout.total_seconds(),
            delivery=DeliveryPolicy(
                max_attempts=self.delivery_max_attempts,
                first_retry_seconds=self.delivery_first_retry.total_seconds(),
                max_retry_seconds=self.delivery_max_retry.total_seconds(),
                # Four activities' worth: an attempt may reach several practitioners.
                attempt_timeout_seconds=4 * self.teleexpertise_activity_timeout.total_seconds(),
            ),
        )

    def media_types(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.teleexpertise_attachment_media_types.split(",") if t.strip())

    def requester_professions(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.teleexpertise_requester_professions.split(",") if p.strip())
