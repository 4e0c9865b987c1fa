"""A long-running case behind an AIP API: how a case service starts and changes its Temporal workflow.

Every case service (scheduling's teleconsultations, expertise's téléexpertises, contracts' ARS cases) needs
the same plumbing, and this module is the one copy of it:

- `CaseKind`: a kind of case — its workflow type, task queue, id prefix (`<kind>-<case uuid>`, never patient
  data) and the table mapping each refusal reason its workflow raises to a gRPC status class.
- **Starting** (`Outbox`, `Relay`): a case's row and an outbox command (`start`, or a signal such as
  `cancel`) commit in one transaction; after the commit the handler wakes the relay, which starts the
  workflow (an id already started counts as done) and marks the command done. If the process dies between
  the commit and the start, or Temporal is away, the command stays pending and the relay of any process
  starts it later (it drains the outbox when it starts, before the service reports SERVING, then polls), so
  no saved case is ever left without its workflow — even when the client gave up and never retries — and,
  since only committed rows are relayed, no workflow exists without its case. Several relays may run at
  once: commands are claimed with FOR UPDATE SKIP LOCKED, and a case's later command waits for its earlier
  ones. A handler that must wait for the workflow (the téléexpertise creation waits for its first routing)
  relays its own case at once with `Relay.start_with_update` (update-with-start: one round trip). A handler
  that names its cases when it wakes the relay (`notify(case_id)`) has their workflow started (or signalled)
  inside its own trace: the call that booked a case and the case's first steps are one trace.
- **Changing** (`CaseClient.update`): a state-changing RPC becomes a Temporal Update with id
  `{update}-{request_id}` (a retried RPC is the same Update, applied once), a bounded wait, and one mapping
  of what can go wrong: the workflow's `ApplicationError.type` through the kind's reason table; a closed
  workflow through the service's own answer (its tables say how the case ended); a timeout or an
  unreachable Temporal → UNAVAILABLE with a reason telling the client to retry with the same request_id.
- **Search attributes** (`CaseAttributes`): one value built by one function of the domain, turned into the
  start's attributes or the workflow's upsert here, with one vocabulary for every kind of case (a region's
  code `84`, a GHT's id `ght-loire`, the API's specialty enum name `SPECIALTY_CARDIOLOGY`), never with
  patient data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import opentelemetry.context
import temporalio.client
import temporalio.common
import temporalio.exceptions
from opentelemetry import propagate
from temporalio.service import RPCError, RPCStatusCode

from services.kit import search_attributes as sa
from services.kit.errors import DomainError, FailedPrecondition, Unavailable
from services.kit.temporal import WORKFLOW_TASK_TIMEOUT, workflow_id

log = logging.getLogger(__name__)

_SCHEMA = re.compile(r"[a-z][a-z0-9_]{0,62}")
START = "start"
# How many cases' trace contexts a relay remembers (from `notify`) until it sends their commands.
_REMEMBERED_CAUSES = 10_000
# How long one attempt to start (or signal) a case's workflow may wait for Temporal, and the longest pause
# between two attempts of a command that failed.
RELAY_RPC_TIMEOUT = timedelta(seconds=10)
RETRY_CEILING_SECONDS = 10


# --- the kind of a case ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CaseKind:
    """A kind of case and how its refusals reach clients."""

    # Workflow id prefix and ParcoursKind value: `teleexpertise` → `teleexpertise-<uuid>`.
    kind: str
    workflow_type: str
    task_queue: str
    # Refusal reason (ApplicationError.type) → error class; reasons not listed are FAILED_PRECONDITION.
    refusals: Mapping[str, type[DomainError]] = field(default_factory=dict)
    # Reasons of the UNAVAILABLE answers: the workflow could not be reached, or did not answer in time.
    unavailable_reason: str = "CASE_UNAVAILABLE"
    busy_reason: str = "CASE_BUSY"

    def workflow_id(self, case_id: uuid.UUID | str) -> str:
        return workflow_id(self.kind, str(case_id))

    def refusal(self, reason: str, message: str) -> DomainError:
        return self.refusals.get(reason, FailedPrecondition)(reason, message)


# --- search attributes -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CaseAttributes:
    """What the Temporal Web UI filters a case on; never a patient, a name or free text."""

    kind: str
    state: str
    region: str = ""  # the region's code: 84
    ght: str = ""  # the GHT's id: ght-loire
    specialty: str = ""  # the API's enum name: SPECIALTY_CARDIOLOGY
    due_time: datetime | None = None
    start_time: datetime | None = None
    breached: bool | None = None
    overdue: bool | None = None
    expire_time: datetime | None = None

    def _pairs(self) -> list[tuple[temporalio.common.SearchAttributeKey[Any], Any]]:
        return [
            (sa.CASE_KIND, self.kind),
            (sa.CASE_STATE, self.state),
            (sa.REGION, self.region or None),
            (sa.GHT, self.ght or None),
            (sa.SPECIALTY, self.specialty or None),
            (sa.DUE_TIME, self.due_time),
            (sa.START_TIME, self.start_time),
            (sa.BREACHED, self.breached),
            (sa.OVERDUE, self.overdue),
            (sa.EXPIRE_TIME, self.expire_time),
        ]

    def at_start(self) -> temporalio.common.TypedSearchAttributes:
        """The attributes a workflow starts with (unset values are left out)."""
        return temporalio.common.TypedSearchAttributes(
            [
                temporalio.common.SearchAttributePair(key, value)
                for key, value in self._pairs()
                if value is not None
            ]
        )

    def updates(
        self, since: CaseAttributes | None = None
    ) -> list[temporalio.common.SearchAttributeUpdate[Any]]:
        """The upsert that takes a running workflow from the attributes `since` (None: what it started with,
        these very attributes built from its input) to these: changed values set, values gone removed.

        Only keys that had a value are ever removed: the visibility store reads back an unset key that never
        had a value as a null, which the SDK cannot decode for a Datetime key.
        """
        before = dict(since._pairs()) if since is not None else {}
        found: list[temporalio.common.SearchAttributeUpdate[Any]] = []
        for key, value in self._pairs():
            if value is not None:
                if before.get(key) != value or since is None:
                    found.append(key.value_set(value))
            elif before.get(key) is not None:
                found.append(key.value_unset())
        return found


# --- the outbox --------------------------------------------------------------------------------------------


def outbox_migration(schema: str) -> str:
    """The SQL creating `<schema>.outbox` (the one outbox shape); for a service's migration."""
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    return f"""
CREATE TABLE {schema}.outbox (
    event_id bigint GENERATED ALWAYS AS IDENTITY,
    case_id uuid NOT NULL,
    command text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_error text,
    done_time timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (event_id)
);
-- Only pending commands are ever searched: a small index.
CREATE INDEX outbox_pending_idx ON {schema}.outbox (case_id, event_id) WHERE done_time IS NULL;
COMMENT ON TABLE {schema}.outbox IS
    'Workflow commands written with the change that needs them, relayed to Temporal (services/kit/cases.py).';
"""


@dataclass(frozen=True)
class Command:
    event_id: int
    case_id: uuid.UUID
    command: str
    attempts: int


class Outbox:
    """The SQL of `<schema>.outbox`."""

    def __init__(self, schema: str) -> None:
        if not _SCHEMA.fullmatch(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        table = f"{schema}.outbox"
        self.table = table
        self._enqueue = f"INSERT INTO {table} (case_id, command) VALUES ($1, $2)"  # noqa: S608
        # Commands ready to relay, oldest first, skipping rows another relay holds; a case's later command
        # waits for its earlier ones (a `cancel` is never sent before its `start`).
        self._claim = f"""
SELECT o.event_id, o.case_id, o.command, o.attempts FROM {table} o
WHERE o.done_time IS NULL AND o.next_attempt_time <= now()
  AND NOT EXISTS (
      SELECT 1 FROM {table} e WHERE e.case_id = o.case_id AND e.done_time IS NULL AND e.event_id < o.event_id)
ORDER BY o.event_id LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""  # noqa: S608
        # One case's pending commands, waiting for a relay that holds them.
        self._claim_of = f"""
SELECT event_id, case_id, command, attempts FROM {table}
WHERE case_id = $1 AND done_time IS NULL ORDER BY event_id FOR UPDATE
"""  # noqa: S608
        self._done = f"UPDATE {table} SET done_time = now() WHERE event_id = ANY($1::bigint[])"  # noqa: S608
        # A failed command is tried again after 1, 2, 4, 8 then every RETRY_CEILING_SECONDS: a case saved
        # while Temporal was away gets its workflow within that long of Temporal's return, however long the
        # outage (the 30 s one included).
        self._failed = f"""
UPDATE {table} SET attempts = attempts + 1, last_error = $2,
    next_attempt_time = now() + least(power(2, attempts), {RETRY_CEILING_SECONDS}) * interval '1 second'
WHERE event_id = $1
"""  # noqa: S608
        self._pending = f"SELECT count(*) FROM {table} WHERE done_time IS NULL"  # noqa: S608

    async def enqueue(self, tx: Any, case_id: uuid.UUID, command: str = START) -> None:
        await tx.execute(self._enqueue, case_id, command)

    async def claim(self, tx: Any, limit: int) -> list[Command]:
        return [Command(*row) for row in await tx.fetch(self._claim, limit)]

    async def claim_of(self, tx: Any, case_id: uuid.UUID) -> list[Command]:
        return [Command(*row) for row in await tx.fetch(self._claim_of, case_id)]

    async def mark_done(self, tx: Any, event_ids: Sequence[int]) -> None:
        if event_ids:
            await tx.execute(self._done, list(event_ids))

    async def mark_failed(self, tx: Any, event_id: int, error: str) -> None:
        await tx.execute(self._failed, event_id, error[:500])

    async def pending(self, conn: Any) -> int:
        return int(await conn.fetchval(self._pending))


@dataclass(frozen=True, kw_only=True)
class StartCase:
    """How to start one case's workflow, as the relay sends it (built by the service from its row)."""

    workflow_id: str
    workflow_type: str
    task_queue: str
    arg: Any
    attributes: CaseAttributes
    # A command other than `start` is sent as this signal (with start: it reaches a running workflow, or
    # starts one that the signal finds, when the start was lost).
    signal: str | None = None
    signal_arg: Any = None


# The service's part of the relay: for these case ids (and the pending commands of each), how to send each
# command. A case whose row is gone is left out (its commands fail and are retried, then noticed).
Planner = Callable[[Any, Sequence[Command]], Awaitable[Mapping[int, StartCase]]]


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
            now = asyncio.get_running_loop().time()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    # How often the relay looks for commands the in-process wake-up did not reach (other replicas'
    # changes, failed starts), how many it takes at once, how many it sends concurrently, and at most how
    # many per second (a burst of changes never becomes a burst of Temporal calls competing with them).
    poll_seconds: float = 2.0
    batch_size: int = 64
    concurrency: int = 4
    max_per_second: float = 0.0


class Relay:
    """Relays a schema's outbox to Temporal: a background task of the service (see the module docstring)."""

    name = "outbox-relay"

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: temporalio.client.Client,
        outbox: Outbox,
        plan: Planner,
        kind: CaseKind,
        settings: RelaySettings = RelaySettings(),
    ) -> None:
        self._pool = pool
        self._client = client
        self._outbox = outbox
        self._plan = plan
        self._kind = kind
        self._settings = settings
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._rate = RateLimit(settings.max_per_second)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # The trace context of the call that committed each case's latest command (see `notify`).
        self._causes: dict[uuid.UUID, dict[str, str]] = {}

    # -- the background task ---------------------------------------------------------------------------

    def notify(self, *case_ids: uuid.UUID) -> None:
        """A command was committed: relay it now rather than at the next poll. The cases named are started
        (or signalled) within the caller's trace."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:
            for case_id in case_ids:
                self._causes.pop(case_id, None)
                self._causes[case_id] = carrier
            while len(self._causes) > _REMEMBERED_CAUSES:
                del self._causes[next(iter(self._causes))]
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def ready(self) -> None:
        """Returns once the relay has drained what earlier processes left (awaited before SERVING)."""
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
                log.exception("outbox relay of %s failed; retrying at the next poll", self._outbox.table)
            if first and relayed < self._settings.batch_size:
                first = False
                self._ready.set()
            if relayed >= self._settings.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_seconds)

    async def relay_batch(self) -> int:
        """Relay up to one batch of ready commands; returns how many were claimed."""
        async with self._pool.acquire() as conn, conn.transaction():
            commands = await self._outbox.claim(conn, self._settings.batch_size)
            if commands:
                await self._relay(conn, commands)
            return len(commands)

    # -- in the request path -----------------------------------------------------------------------------

    async def relay_now(self, case_id: uuid.UUID) -> None:
        """Relay one case's pending commands now (before an Update is sent to its workflow)."""
        async with self._pool.acquire() as conn, conn.transaction():
            commands = await self._outbox.claim_of(conn, case_id)
            if commands and not await self._relay(conn, commands):
                raise Unavailable(self._kind.unavailable_reason, "the case's workflow cannot be reached now")

    async def start_with_update(
        self,
        case_id: uuid.UUID,
        update: str,
        arg: Any,
        *,
        update_id: str,
        result_type: type | None,
        timeout: timedelta,  # noqa: ASYNC109 (the bounded wait of the update, not of the whole call)
    ) -> Any:
        """Start the case's workflow (if its `start` is pending) and run `update` on it, in one round trip.

        None when the workflow has already closed. Raises TimeoutError or RPCError when Temporal cannot be
        reached in time: the command stays pending (the background relay starts it later).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            commands = await self._outbox.claim_of(conn, case_id)
            starting = [c for c in commands if c.command == START]
            if not starting:
                if commands and not await self._relay(conn, commands):
                    raise Unavailable(
                        self._kind.unavailable_reason, "the case's workflow cannot be reached now"
                    )
                handle = self._client.get_workflow_handle(self._kind.workflow_id(case_id))
                return await asyncio.wait_for(
                    handle.execute_update(update, arg, id=update_id, result_type=result_type),
                    timeout.total_seconds(),
                )
            [start] = (await self._plan(conn, starting[:1])).values()
            operation: temporalio.client.WithStartWorkflowOperation[Any, Any] = (
                temporalio.client.WithStartWorkflowOperation(
                    start.workflow_type,
                    start.arg,
                    id=start.workflow_id,
                    task_queue=start.task_queue,
                    # A retried start joins the running workflow; a closed one is never started again.
                    id_conflict_policy=temporalio.common.WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=temporalio.common.WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=start.attributes.at_start(),
                    task_timeout=WORKFLOW_TASK_TIMEOUT,
                )
            )
            try:
                result = await asyncio.wait_for(
                    self._client.execute_update_with_start_workflow(
                        update,
                        arg,
                        start_workflow_operation=operation,
                        id=update_id,
                        result_type=result_type,
                    ),
                    timeout.total_seconds(),
                )
            except temporalio.exceptions.WorkflowAlreadyStartedError:
                result = None  # closed already: the tables say how it ended
            except (
                TimeoutError,
                RPCError,
                temporalio.client.WorkflowUpdateRPCTimeoutOrCancelledError,
            ) as exc:
                # The SDK also hands a failed start to the operation's own handle; take it from there, or
                # asyncio logs "exception never retrieved" with a traceback for every case Temporal missed.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(operation.workflow_handle(), 0.1)
                await self._outbox.mark_failed(conn, starting[0].event_id, type(exc).__name__)
                raise
            await self._outbox.mark_done(conn, [starting[0].event_id])
            rest = [c for c in commands if c.event_id != starting[0].event_id]
            if rest:
                await self._relay(conn, rest)
            return result

    # -- sending ------------------------------------------------------------------------------------------

    async def _relay(self, conn: Any, commands: Sequence[Command]) -> bool:
        plans = await self._plan(conn, commands)
        by_case: dict[uuid.UUID, list[Command]] = {}
        for command in commands:
            by_case.setdefault(command.case_id, []).append(command)
        outcomes = await asyncio.gather(*(self._relay_case(group, plans) for group in by_case.values()))
        await self._outbox.mark_done(conn, [event_id for done, _ in outcomes for event_id in done])
        for _, failure in outcomes:
            if failure is not None:
                await self._outbox.mark_failed(conn, *failure)
        return all(failure is None for _, failure in outcomes)

    async def _relay_case(
        self, commands: Sequence[Command], plans: Mapping[int, StartCase]
    ) -> tuple[list[int], tuple[int, str] | None]:
        done: list[int] = []
        cause = self._causes.pop(commands[0].case_id, None) if commands else None
        # Each case is relayed in a task of its own (gather): attaching here touches no other case's context.
        token = opentelemetry.context.attach(propagate.extract(cause)) if cause else None
        try:
            return await self._relay_commands(commands, plans, done)
        finally:
            if token is not None:
                opentelemetry.context.detach(token)

    async def _relay_commands(
        self, commands: Sequence[Command], plans: Mapping[int, StartCase], done: list[int]
    ) -> tuple[list[int], tuple[int, str] | None]:
        async with self._limit:
            for command in commands:
                try:
                    plan = plans.get(command.event_id)
                    if plan is None:
                        raise LookupError(f"no case {command.case_id} for outbox command {command.command}")
                    await self._rate.acquire()
                    await self._send(plan)
                except Exception as exc:
                    log.warning(
                        "outbox command %s (%s) not relayed yet: %s",
                        command.event_id,
                        command.command,
                        type(exc).__name__,
                    )
                    return done, (command.event_id, f"{type(exc).__name__}: {exc}")
                done.append(command.event_id)
        return done, None

    async def _send(self, plan: StartCase) -> None:
        options: dict[str, Any] = {}
        if plan.signal is not None:
            options = {"start_signal": plan.signal, "start_signal_args": [plan.signal_arg]}
        try:
            await self._client.start_workflow(
                plan.workflow_type,
                plan.arg,
                id=plan.workflow_id,
                task_queue=plan.task_queue,
                id_reuse_policy=temporalio.common.WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=plan.attributes.at_start(),
                task_timeout=WORKFLOW_TASK_TIMEOUT,
                # Bounded: a Temporal that does not answer (a partition) fails this attempt, which the
                # outbox retries, instead of holding the relay (or a request relaying its own case).
                rpc_timeout=RELAY_RPC_TIMEOUT,
                **options,
            )
        except temporalio.exceptions.WorkflowAlreadyStartedError:
            return  # started by an earlier attempt (or closed already, for a signal): done
        except RPCError as error:
            if error.status == RPCStatusCode.ALREADY_EXISTS:
                return
            raise


# --- changing a case -------------------------------------------------------------------------------------


def application_error(error: BaseException | None) -> temporalio.exceptions.ApplicationError | None:
    """The ApplicationError at the root of a failed Update (workflow or activity refusal), if any."""
    while error is not None and not isinstance(error, temporalio.exceptions.ApplicationError):
        error = error.__cause__
    return error


class CaseClient:
    """Sends state changes to a kind's case workflows as Temporal Updates (see the module docstring)."""

    def __init__(
        self,
        client: temporalio.client.Client,
        kind: CaseKind,
        *,
        update_timeout: timedelta,
        relay: Relay | None = None,
    ) -> None:
        self._client = client
        self._kind = kind
        self._timeout = update_timeout
        self._relay = relay

    @property
    def kind(self) -> CaseKind:
        return self._kind

    async def update(
        self,
        case_id: uuid.UUID,
        name: str,
        arg: Any,
        *,
        request_id: str,
        closed: Callable[[], Awaitable[DomainError]],
        result_type: type | None = None,
    ) -> Any:
        """Run the Update `name` on the case's workflow and return its result.

        `closed` says why a closed case cannot change (from the service's tables). Refusals are the kind's
        domain errors; a timeout or an unreachable Temporal is UNAVAILABLE (retry with the same request_id:
        the Update id makes the retry the same change).
        """
        if self._relay is not None:
            await self._relay.relay_now(case_id)
        handle = self._client.get_workflow_handle(self._kind.workflow_id(case_id))
        try:
            return await asyncio.wait_for(
                handle.execute_update(name, arg, id=f"{name}-{request_id}", result_type=result_type),
                self._timeout.total_seconds(),
            )
        except temporalio.client.WorkflowUpdateFailedError as failed:
            cause = application_error(failed.cause)
            if cause is not None and cause.type:
                raise self._kind.refusal(cause.type, cause.message) from None
            raise FailedPrecondition("INVALID_TRANSITION", "the case refused this change") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise await closed() from None
            raise Unavailable(
                self._kind.unavailable_reason, "the case cannot be changed right now; retry"
            ) from None
        except (TimeoutError, temporalio.client.WorkflowUpdateRPCTimeoutOrCancelledError):
            raise Unavailable(
                self._kind.busy_reason, "the change is not applied yet; retry with the same request_id"
            ) from None
