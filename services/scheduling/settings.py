"""Settings of the scheduling service."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field, field_validator

from services.kit.notify import DeliveryPolicy
from services.kit.settings import KitSettings, TemporalSettings

DEFAULT_PORT = 50052


class SchedulingSettings(KitSettings, TemporalSettings):
    component: str = "scheduling"
    grpc_port: int = Field(
        default=DEFAULT_PORT,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("PARCOURS_SCHEDULING_GRPC_PORT", "PARCOURS_GRPC_PORT"),
    )
    # The directory (practitioners, establishments, patients), called with this component's certificate.
    directory_address: str

    # How long a hold lasts unless the request asks for less; how long a proposal holds its slot.
    hold_duration: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))
    proposal_duration: timedelta = Field(default=timedelta(hours=48), gt=timedelta(0))
    # How long a freed slot offered to a patient on the waitlist is held for them before it goes to the next
    # in line, and how often the service looks for offers that lapsed (issue 13 item 15).
    waitlist_offer_hold: timedelta = Field(default=timedelta(hours=2), gt=timedelta(0))
    waitlist_lapse_seconds: float = Field(default=30.0, gt=0)
    # Durations of each booking's Teleconsultation workflow, copied into its input (tests shrink them):
    # reminders this long before the start, the join window opening this long before it, and no-show once
    # this long after it has passed without the teleconsultation starting.
    reminder_offsets: list[timedelta] = Field(default=[timedelta(days=1), timedelta(hours=1)])
    join_window_before: timedelta = Field(default=timedelta(minutes=15), ge=timedelta(0))
    no_show_grace: timedelta = Field(default=timedelta(minutes=30), ge=timedelta(0))

    # How each workflow retries the delivery of a notification (e-mail, webhook) before recording it as
    # failed: attempts, then the first wait, doubling up to the longest (copied into the workflow's input).
    delivery_max_attempts: int = Field(default=12, ge=1, le=100)
    delivery_first_retry: timedelta = Field(default=timedelta(seconds=2), gt=timedelta(0))
    delivery_max_retry: timedelta = Field(default=timedelta(minutes=15), gt=timedelta(0))

    # The outbox relay: how often it looks for commands the in-process wake-up did not reach (other
    # replicas' bookings, failed starts), how many it takes at once and how many starts run concurrently.
    # Few concurrent starts on purpose: under a burst of bookings the outbox absorbs the difference and the
    # relay leaves the CPU to the bookings (a start lag of seconds is fine; a slow booking is not).
    relay_poll_seconds: float = Field(default=2.0, gt=0)
    relay_batch_size: int = Field(default=64, ge=1, le=1000)
    relay_concurrency: int = Field(default=4, ge=1, le=256)
    # At most this many workflow starts (and cancellations) per second per process (0: no limit): a burst of
    # bookings never becomes a burst of Temporal calls competing with the bookings themselves or exceeding the
    # namespace's rate limits; the outbox holds the rest. A whole country peaks at a few bookings a second.
    relay_max_starts_per_second: float = Field(default=50.0, ge=0)
    # How often every schedule's slots are materialised up to its horizon (and past slots pruned).
    horizon_refresh_seconds: float = Field(default=6 * 3600.0, gt=0)
    # How long directory answers (practitioners, establishments, patients' known establishments) are reused.
    directory_cache_seconds: float = Field(default=60.0, ge=0)

    # How long a teleconsultation step (start, completion) waits for its workflow before answering
    # UNAVAILABLE (the step is still applied once a worker picks it up; a retry with the same request_id
    # returns it).
    update_timeout: timedelta = Field(default=timedelta(seconds=20), gt=timedelta(0))

    @field_validator("reminder_offsets")
    @classmethod
    def _positive_offsets(cls, value: list[timedelta]) -> list[timedelta]:
        if any(offset <= timedelta(0) for offset in value):
            raise ValueError("reminder offsets must be positive durations")
        return sorted(set(value), reverse=True)

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            max_attempts=self.delivery_max_attempts,
            first_retry_seconds=self.delivery_first_retry.total_seconds(),
            max_retry_seconds=self.delivery_max_retry.total_seconds(),
        )
