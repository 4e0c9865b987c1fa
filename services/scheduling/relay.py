"""The outbox relay: every booking's Teleconsultation workflow is started, exactly once, after its commit.

A booking writes, in its own transaction, an outbox row `start`; a cancellation writes `cancel`. After the
commit the handler wakes the relay, which starts the workflow (`teleconsultation-<appointment id>`) and marks
the row done. Starting is idempotent: the id is the appointment's and an already-started id counts as done.
If the process dies between the commit and the start, the row is still there and the relay of the next process
(it drains the outbox when it starts, then polls) starts the workflow: there is never a booking without its
workflow, and since only committed rows are relayed, never a workflow without its booking.

`cancel` is a signal-with-start: it reaches a running workflow, starts one (already cancelled) in the unlikely
case the start was lost, and counts as done when the workflow has already closed.

Several processes may relay at once: rows are claimed with FOR UPDATE SKIP LOCKED, and an appointment's later
command waits until its earlier ones are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import temporalio.client
import temporalio.common
import temporalio.exceptions
from temporalio.service import RPCError, RPCStatusCode

from services.kit import search_attributes
from services.kit.errors import Unavailable
from services.kit.temporal import workflow_id
from services.scheduling import store
from workflows.teleconsultation import TASK_QUEUE, WORKFLOW_KIND, WORKFLOW_TYPE
from workflows.teleconsultation.models import CancelNotice, CaseState, Reminder, TeleconsultationInput

log = logging.getLogger(__name__)


def iso_duration(value: timedelta) -> str:
    """`P1D`, `PT1H`, `PT15M`, `PT90S` (the label of a reminder)."""
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "") if value else "PT0S"


@dataclass(frozen=True)
class WorkflowPlan:
    """The durations each workflow gets in its input (from the service's settings)."""

    reminder_offsets: Sequence[timedelta]


def workflow_input(appointment: asyncpg.Record, plan: WorkflowPlan) -> TeleconsultationInput:
    start: datetime = appointment["start_time"]
    return TeleconsultationInput(
        appointment_id=str(appointment["appointment_id"]),
        start_time=start,
        end_time=appointment["end_time"],
        join_open_time=appointment["join_open_time"],
        no_show_time=appointment["no_show_time"],
        reminders=[Reminder(label=iso_duration(o), send_time=start - o) for o in plan.reminder_offsets],
        ght=f"ghts/{appointment['ght_id']}" if appointment["ght_id"] else "",
        specialty=appointment["specialty"],
        region=f"regions/{appointment['region_code']}",
    )


def initial_search_attributes(appointment: asyncpg.Record) -> temporalio.common.TypedSearchAttributes:
    # State, kind, GHT, region, specialty and start time only: never the patient.
    pair = temporalio.common.SearchAttributePair
    pairs: list[temporalio.common.SearchAttributePair[Any]] = [
        pair(search_attributes.CASE_KIND, WORKFLOW_KIND),
        pair(search_attributes.CASE_STATE, CaseState.BOOKED),
        pair(search_attributes.REGION, appointment["region_code"]),
        pair(search_attributes.SPECIALTY, appointment["specialty"]),
        pair(search_attributes.START_TIME, appointment["start_time"]),
    ]
    if appointment["ght_id"]:
        pairs.append(pair(search_attributes.GHT, appointment["ght_id"]))
    return temporalio.common.TypedSearchAttributes(pairs)


def teleconsultation_workflow_id(appointment_id: uuid.UUID | str) -> str:
    return workflow_id(WORKFLOW_KIND, str(appointment_id))


class RateLimit:
    """At most `per_second` acquisitions per second, spread evenly (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)


class WorkflowRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        client: temporalio.client.Client,
        plan: WorkflowPlan,
        *,
        poll_seconds: float = 2.0,
        batch_size: int = 64,
        concurrency: int = 4,
        max_starts_per_second: float = 0.0,
    ) -> None:
        self._pool = pool
        self._client = client
        self._plan = plan
        self._poll = poll_seconds
        self._batch = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self._rate = RateLimit(max_starts_per_second)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def notify(self) -> None:
        """A command was committed: relay it now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="workflow-outbox-relay")

    async def ready(self) -> None:
        """Returns once the relay has drained what earlier processes left (called before SERVING)."""
        await self._ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        first = True
        while True:
            self._wake.clear()
            relayed = 0
            try:
                relayed = await self.relay_batch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("workflow outbox relay failed; retrying at the next poll")
            if first and relayed < self._batch:
                first = False
                self._ready.set()
            if relayed >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def relay_batch(self) -> int:
        """Relay up to one batch of ready commands; returns how many were claimed."""
        async with self._pool.acquire() as conn, conn.transaction():
            events = await store.claim_outbox(conn, self._batch)
            if not events:
                return 0
            await self._relay(conn, events)
            return len(events)

    async def ensure_relayed(self, appointment_id: uuid.UUID) -> None:
        """Relay one appointment's pending commands now (before an Update is sent to its workflow)."""
        async with self._pool.acquire() as conn, conn.transaction():
            events = await store.claim_outbox_of(conn, appointment_id)
            if events and not await self._relay(conn, events):
                raise Unavailable(
                    "WORKFLOW_UNAVAILABLE", "the teleconsultation workflow cannot be reached now"
                )

    async def drain(self) -> None:
        """Relay until nothing ready is left (tests, shutdown)."""
        while await self.relay_batch():
            pass

    async def _relay(self, conn: asyncpg.Connection, events: Sequence[asyncpg.Record]) -> bool:
        appointments = await store.outbox_appointments(conn, [e["appointment_id"] for e in events])
        groups: dict[uuid.UUID, list[asyncpg.Record]] = {}
        for event in events:
            groups.setdefault(event["appointment_id"], []).append(event)
        outcomes = await asyncio.gather(
            *(self._relay_group(appointments[key], group) for key, group in groups.items())
        )
        done = [event_id for group_done, _ in outcomes for event_id in group_done]
        await store.mark_outbox_done(conn, done)
        for _, failure in outcomes:
            if failure is not None:
                await store.mark_outbox_failed(conn, failure[0], failure[1])
        return all(failure is None for _, failure in outcomes)

    async def _relay_group(
        self, appointment: asyncpg.Record, events: Sequence[asyncpg.Record]
    ) -> tuple[list[int], tuple[int, str] | None]:
        done: list[int] = []
        async with self._limit:
            for event in events:
                try:
                    await self._rate.acquire()
                    await self._send(appointment, event["kind"])
                except Exception as exc:
                    log.warning(
                        "outbox event %s (%s) not relayed yet: %s",
                        event["event_id"],
                        event["kind"],
                        type(exc).__name__,
                    )
                    return done, (event["event_id"], f"{type(exc).__name__}: {exc}")
                done.append(event["event_id"])
        return done, None

    async def _send(self, appointment: asyncpg.Record, kind: str) -> None:
        wf_id = teleconsultation_workflow_id(appointment["appointment_id"])
        options: dict[str, Any] = {}
        if kind == "cancel":
            status = appointment["status"]
            options = {
                "start_signal": "cancel",
                "start_signal_args": [CancelNotice(status=status, reason=appointment["cancel_reason"] or "")],
            }
        try:
            await self._client.start_workflow(
                WORKFLOW_TYPE,
                workflow_input(appointment, self._plan),
                id=wf_id,
                task_queue=TASK_QUEUE,
                id_reuse_policy=temporalio.common.WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=initial_search_attributes(appointment),
                **options,
            )
        except temporalio.exceptions.WorkflowAlreadyStartedError:
            # Started by an earlier attempt (or closed already, for a cancel): done.
            return
        except RPCError as error:
            if error.status == RPCStatusCode.ALREADY_EXISTS:
                return
            raise
