"""Temporal client and worker construction shared by every Parcours component.

Every client built here encrypts payloads (`services.kit.codec`) and carries the OpenTelemetry tracing
interceptor of the client side (`ClientTracingInterceptor`); a worker built on it with `build_worker` gets the
worker side (`services.kit.case_tracing.CaseTracingInterceptor`), so each action on a case is one trace: from
the gRPC handler that starts the workflow or sends it an Update, through the workflow, to the activities and
the calls they make. Build workers with `build_worker(client, ...)` on a client from `connect_client` and
never pass tracing interceptors again (they would run twice).

The services that only start workflows and send them Updates never import `temporalio.worker` (its sandbox
and Temporal's contrib interceptor, which imports it, cost such a process 3–4 MB of resident memory, issue
15): this module imports them only when a worker is built; tests/kit/test_footprint.py keeps it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import opentelemetry.trace
import temporalio.api.common.v1
import temporalio.client
import temporalio.common
import temporalio.converter
import temporalio.exceptions
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from temporalio import activity

from services.kit.codec import Keyring, data_converter
from services.kit.settings import TemporalSettings

if TYPE_CHECKING:
    import temporalio.worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

logger = logging.getLogger(__name__)

# Time in-flight activities get to finish after SIGTERM before they are cancelled; below Kubernetes' default
# 30 s termination grace period so the worker still reports the cancellations before it is killed.
DEFAULT_GRACEFUL_SHUTDOWN = timedelta(seconds=20)
# How long a workflow task waits on the queue of the worker that has the workflow cached before any worker may
# take it (replaying the history). It is the delay before the cases of a worker that died (no graceful
# shutdown to hand them back) move on: Temporal's default, 10 s, is what the next Update on such a case
# waited. A live worker polls its own queue continuously, so 2 s costs a replay only when it is overloaded.
DEFAULT_STICKY_TIMEOUT = timedelta(seconds=2)
# An activity that heartbeats is known lost this soon after its worker dies (then retried), instead of at
# the end of its start-to-close timeout; `heartbeating` makes an activity heartbeat while it runs.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
# How long a worker may hold a workflow task before the server gives it to another: what a case waits when
# its worker dies in the middle of one (Temporal's default is 10 s). Our workflow tasks take milliseconds
# (a local activity's database write at most, and the SDK extends the task while a local activity runs).
WORKFLOW_TASK_TIMEOUT = timedelta(seconds=5)


async def connect_client(
    settings: TemporalSettings,
    *,
    tracing: bool = True,
    tracer: opentelemetry.trace.Tracer | None = None,
) -> temporalio.client.Client:
    """Connect to Temporal with payload encryption and (unless `tracing=False`) the tracing interceptor.

    `tracer` defaults to the process's global tracer provider (configured once from `OTEL_*`); tests pass
    their own to capture spans. A malformed `payload_keys` raises ValueError naming the entry.
    """
    keyring = Keyring.parse(settings.payload_keys)
    interceptors: list[temporalio.client.Interceptor] = [ClientTracingInterceptor(tracer)] if tracing else []
    client = await temporalio.client.Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(keyring),
        interceptors=interceptors,
        # Headers are encrypted too: today they only carry the trace context, but anything a future
        # interceptor puts there would otherwise be stored in clear.
        header_codec_behavior=temporalio.common.HeaderCodecBehavior.CODEC,
    )
    logger.info(
        "connected to Temporal at %s, namespace %s, encrypting with key %s",
        settings.temporal_address,
        settings.temporal_namespace,
        keyring.primary_id,
    )
    return client


class OnDemandClient:
    """A Temporal client connected by the first call that needs one, for a process whose Temporal calls are
    rare (the console's codec endpoint): an idle process then holds no connection, and none of the 8–9 MB
    of resident memory Temporal's runtime and connection take (issue 15).

    Concurrent first callers share one attempt. When Temporal cannot be reached (within `timeout` seconds)
    the call answers None and logs it; the next call tries again.
    """

    def __init__(self, settings: TemporalSettings, *, timeout: float = 10.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self._client: temporalio.client.Client | None = None
        self._connecting = asyncio.Lock()

    async def __call__(self) -> temporalio.client.Client | None:
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect_client(self._settings), self._timeout)
                except (TimeoutError, RuntimeError, OSError) as error:
                    logger.warning("Temporal unreachable (%s): try again later", type(error).__name__)
            return self._client


# Modules the workflow sandbox takes from outside instead of importing them again for every workflow instance:
# deterministic and free of side effects (no I/O, no clock, no global state a workflow could change). The
# generated protobuf modules (ours, buf.validate's, googleapis' common types) and the services' packages,
# where each case's payload models, state machines and names live (issue 8: a workflow package depends on its
# service's models, never the reverse). Workflow modules import these inside
# `workflow.unsafe.imports_passed_through()` as well; declaring them here keeps an import added outside that
# block from being re-executed per workflow instance. The standard library, temporalio, pydantic and
# google.protobuf are passed through by Temporal's defaults. The workflow modules themselves stay sandboxed
# (they are what the sandbox checks).
SANDBOX_PASSTHROUGH_MODULES = ("parcours", "buf", "google.api", "google.type", "google.rpc", "services")


def sandboxed_runner() -> SandboxedWorkflowRunner:
    """The workflow runner of every Parcours worker: Temporal's sandbox with `SANDBOX_PASSTHROUGH_MODULES`."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH_MODULES)
    )


def build_worker(
    client: temporalio.client.Client,
    *,
    task_queue: str,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
    **kwargs: Any,
) -> temporalio.worker.Worker:
    """A worker on `client`'s connection, data converter and interceptors.

    A client that traces (`connect_client`'s `ClientTracingInterceptor`) gets its worker side here: the
    worker's workflows and activities continue the traces of the calls that reach them, with the client's
    tracer (`services.kit.case_tracing.CaseTracingInterceptor`); do not pass a tracing interceptor again.
    Other keyword arguments go to `Worker` unchanged (`activity_executor` for sync activities, tuning,
    other `interceptors`, ...); `graceful_shutdown_timeout` defaults to `DEFAULT_GRACEFUL_SHUTDOWN`,
    `sticky_queue_schedule_to_start_timeout` to `DEFAULT_STICKY_TIMEOUT` and `workflow_runner` to
    `sandboxed_runner()`.
    """
    import temporalio.worker

    from services.kit.case_tracing import CaseTracingInterceptor

    kwargs.setdefault("graceful_shutdown_timeout", DEFAULT_GRACEFUL_SHUTDOWN)
    kwargs.setdefault("sticky_queue_schedule_to_start_timeout", DEFAULT_STICKY_TIMEOUT)
    kwargs.setdefault("workflow_runner", sandboxed_runner())
    traced = [i for i in client.config()["interceptors"] if isinstance(i, ClientTracingInterceptor)]
    if traced:
        kwargs["interceptors"] = [*kwargs.get("interceptors", ()), CaseTracingInterceptor(traced[0].tracer)]
    return temporalio.worker.Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),
        **kwargs,
    )


A = TypeVar("A", bound=Callable[..., Awaitable[Any]])


def heartbeating(activity_fn: A) -> A:
    """Make an async activity heartbeat while it runs (below `@activity.defn`), so that the workflow can give
    it a short `heartbeat_timeout` (`HEARTBEAT_TIMEOUT`): the server then retries it this soon after its
    worker dies, while a slow but live run is never cut short. Without a heartbeat timeout it runs as is.

    The beat runs beside the activity on the worker's event loop, every third of the timeout (the SDK
    throttles what it sends to the server); it stops when the activity ends.
    """

    @functools.wraps(activity_fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        # Called as a plain coroutine (a test replaying an activity by hand), or given no heartbeat timeout.
        timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
        if not timeout:
            return await activity_fn(*args, **kwargs)
        beat = asyncio.create_task(_beat(timeout.total_seconds() / 3))
        try:
            return await activity_fn(*args, **kwargs)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    return run  # type: ignore[return-value]


async def _beat(every: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


async def run_worker_until_signalled(
    worker: temporalio.worker.Worker,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Run `worker` until one of `signals` arrives, then shut it down gracefully and return.

    In-flight activities get the worker's `graceful_shutdown_timeout` to finish. A fatal worker error is
    raised. Must run on the main thread's event loop (signal handlers can only be installed there).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("%s received again: shutdown already in progress", signum.name)
            return
        logger.info("%s received: shutting the worker down", signum.name)
        stop.set()

    # Handlers are in place before the worker polls, so a signal can never hit the default handler (which
    # would kill the process with activities half done) once tasks are being processed.
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        run = asyncio.create_task(worker.run(), name="temporal-worker")
        stopped = asyncio.create_task(stop.wait(), name="temporal-worker-stop")
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also on cancellation of the caller: the worker is still shut down cleanly, never abandoned.
            stopped.cancel()
            if not run.done():
                await worker.shutdown()
        # Re-raises a fatal worker error; returns normally after a requested shutdown.
        await run
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    logger.info("worker on task queue %s stopped", worker.task_queue)


_KIND = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_HUB_ID = re.compile(r"[a-z0-9-]{1,64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID_HEX = re.compile(r"[0-9a-f]{32}")
# Ten or more digits in a row, separators ignored: NIR (13 + 2-digit key, with 2A/2B for Corsica), INS,
# phone numbers, RPPS. A FINESS number (9 digits) still fits.
_PERSONAL_NUMBER = re.compile(r"(?:[0-9]|2[ab]){10,}")


def workflow_id(kind: str, opaque_id: str) -> str:
    """A business workflow id `<kind>-<opaque_id>`, e.g. `teleexpertise-0b6c…`.

    Workflow ids are stored and shown in clear (Web UI, search, logs), so they must never carry patient data.
    `opaque_id` must be a UUID (canonical or 32 hex digits, any case; normalised to canonical lowercase) or
    a hub id of `[a-z0-9-]{1,64}` that does not look like a personal number. The check catches mistakes (an
    NIR or a name passed by accident); it cannot prove an arbitrary string is harmless, so prefer UUIDs.
    """
    if not _KIND.fullmatch(kind) or len(kind) > 40:
        raise ValueError("workflow kind must be lowercase letters/digits in hyphenated words, at most 40")
    # Never echo the rejected id in the message: the point is that it may be patient data.
    if _UUID.fullmatch(opaque_id.lower()) or _UUID_HEX.fullmatch(opaque_id.lower()):
        return f"{kind}-{uuid.UUID(opaque_id)}"
    if not _HUB_ID.fullmatch(opaque_id):
        raise ValueError("workflow id part must be a UUID or a hub id [a-z0-9-]{1,64}")
    if _PERSONAL_NUMBER.search(opaque_id.replace("-", "")):
        raise ValueError("workflow id part looks like a personal number (NIR, phone, ...): use a UUID")
    return f"{kind}-{opaque_id}"


S = TypeVar("S")
WorkerBuilder = Callable[[S, temporalio.client.Client, Any, Mapping[str, Any]], "temporalio.worker.Worker"]


async def run_worker(settings: S, build: WorkerBuilder[S], channels: Mapping[str, str]) -> None:
    """The whole life of a worker process: telemetry, its pool, a channel (with this component's
    certificate) to each service it calls, one Temporal client, the worker `build` makes, until SIGTERM."""
    from services.kit.db import open_pool
    from services.kit.server import open_channel, settle_heap
    from services.kit.settings import KitSettings, TemporalSettings
    from services.kit.telemetry import configure_telemetry

    assert isinstance(settings, KitSettings)
    assert isinstance(settings, TemporalSettings)
    configure_telemetry(settings.component)
    pool = await open_pool(settings)
    opened = {name: open_channel(settings, address) for name, address in channels.items()}
    try:
        client = await connect_client(settings)
        worker = build(settings, client, pool, opened)
        settled = settle_heap()
        logger.info(
            "%s polling task queue %s (%d objects settled)", settings.component, worker.task_queue, settled
        )
        await run_worker_until_signalled(worker)
    finally:
        for channel in opened.values():
            await channel.close()
        await pool.close()


# --- tracing, the client side -------------------------------------------------------------------------------

# Where a call to a workflow carries its trace context, and how: Temporal's contrib interceptor's header key,
# propagator (W3C trace context and baggage) and payload format (the carrier as a JSON payload), so that a
# worker's `CaseTracingInterceptor` (built on that interceptor) continues what a client here started.
TRACE_HEADER = "_tracer-data"
TRACE_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def error_type(error: BaseException) -> str:
    """What a span says of a failure: an ApplicationError's type, else the exception's class (never its
    text, which may quote patient data)."""
    if isinstance(error, temporalio.exceptions.ApplicationError) and error.type:
        return error.type
    return type(error).__qualname__


class ClientTracingInterceptor(temporalio.client.Interceptor):
    """The client side of Temporal's tracing: a CLIENT span for each call that reaches a workflow (start,
    Update, update-with-start, signal, query; a standalone activity's start), named as Temporal's contrib
    interceptor names it (`StartWorkflow:Teleconsultation`, `StartWorkflowUpdate:accept`, ...), its context
    in the call's `TRACE_HEADER` header. A failed call's span is an ERROR with the exception's type
    (`error.type`), never its text.

    It is the contrib interceptor's client half without the contrib package, which imports `temporalio.worker`
    (see the module's docstring); `build_worker` adds the worker half to a worker built on the client.
    """

    def __init__(self, tracer: opentelemetry.trace.Tracer | None = None) -> None:
        self.tracer = tracer or opentelemetry.trace.get_tracer(__name__)
        self._payloads = temporalio.converter.PayloadConverter.default

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _ClientTracing(next, self)

    def headers(
        self, headers: Mapping[str, temporalio.api.common.v1.Payload]
    ) -> Mapping[str, temporalio.api.common.v1.Payload]:
        """`headers` with the current trace context (unchanged when there is none)."""
        carrier: dict[str, str] = {}
        TRACE_PROPAGATOR.inject(carrier)
        if not carrier:
            return headers
        return {**headers, TRACE_HEADER: self._payloads.to_payloads([carrier])[0]}

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, str]) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            name,
            attributes=attributes,
            kind=opentelemetry.trace.SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield None
            except Exception as exc:
                span.set_status(opentelemetry.trace.Status(opentelemetry.trace.StatusCode.ERROR))
                span.set_attribute("error.type", error_type(exc))
                raise


class _ClientTracing(temporalio.client.OutboundInterceptor):
    def __init__(self, next: temporalio.client.OutboundInterceptor, root: ClientTracingInterceptor) -> None:
        super().__init__(next)
        self.root = root

    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        prefix = "SignalWithStartWorkflow" if input.start_signal else "StartWorkflow"
        with self.root.span(f"{prefix}:{input.workflow}", {"temporalWorkflowID": input.id}):
            input.headers = self.root.headers(input.headers)
            return await super().start_workflow(input)

    async def query_workflow(self, input: temporalio.client.QueryWorkflowInput) -> Any:
        with self.root.span(f"QueryWorkflow:{input.query}", {"temporalWorkflowID": input.id}):
            input.headers = self.root.headers(input.headers)
            return await super().query_workflow(input)

    async def signal_workflow(self, input: temporalio.client.SignalWorkflowInput) -> None:
        with self.root.span(f"SignalWorkflow:{input.signal}", {"temporalWorkflowID": input.id}):
            input.headers = self.root.headers(input.headers)
            return await super().signal_workflow(input)

    async def start_workflow_update(
        self, input: temporalio.client.StartWorkflowUpdateInput
    ) -> temporalio.client.WorkflowUpdateHandle[Any]:
        with self.root.span(f"StartWorkflowUpdate:{input.update}", {"temporalWorkflowID": input.id}):
            input.headers = self.root.headers(input.headers)
            return await super().start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: temporalio.client.StartWorkflowUpdateWithStartInput
    ) -> temporalio.client.WorkflowUpdateHandle[Any]:
        start, update = input.start_workflow_input, input.update_workflow_input
        attributes = {"temporalWorkflowID": start.id}
        if update.update_id is not None:
            attributes["temporalUpdateID"] = update.update_id
        with self.root.span(f"StartUpdateWithStartWorkflow:{start.workflow}", attributes):
            # The start and the Update carry the same context: the call's span.
            start.headers = self.root.headers(start.headers)
            if TRACE_HEADER in start.headers:
                update.headers = {**update.headers, TRACE_HEADER: start.headers[TRACE_HEADER]}
            return await super().start_update_with_start_workflow(input)

    async def start_activity(
        self, input: temporalio.client.StartActivityInput
    ) -> temporalio.client.ActivityHandle[Any]:
        attributes = {"temporalActivityID": input.id, "temporalActivityType": input.activity_type}
        with self.root.span(f"StartActivity:{input.activity_type}", attributes):
            input.headers = self.root.headers(input.headers)
            return await super().start_activity(input)
