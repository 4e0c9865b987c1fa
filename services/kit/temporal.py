"""Temporal client and worker construction shared by every Parcours component.

Every client built here encrypts payloads (`services.kit.codec`) and carries the OpenTelemetry tracing
interceptor (`CaseTracingInterceptor`), so each action on a case is one trace: from the gRPC handler that
starts the workflow or sends it an Update, through the workflow, to the activities and the calls they make.
Workers take their interceptors and data converter from the client they are built on: build workers with
`build_worker(client, ...)` on a client from `connect_client` and never pass interceptors again (they would
run twice).
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
from typing import Any, TypeVar

import opentelemetry.context
import opentelemetry.trace
import opentelemetry.util.types
import temporalio.api.common.v1
import temporalio.client
import temporalio.common
import temporalio.exceptions
import temporalio.worker
import temporalio.workflow
from temporalio import activity
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor

# Temporal's tracing interceptor offers no public hook for a workflow's handlers or for the spans it makes
# inside the sandbox: `CaseTracingInterceptor` builds on these internals (pinned with temporalio; the
# observability tests fail if they move).
from temporalio.contrib.opentelemetry._context import attached_context
from temporalio.contrib.opentelemetry._interceptor import (
    _CarrierDict,
    _CompletedWorkflowSpanParams,
    _TracingWorkflowOutboundInterceptor,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from services.kit.codec import Keyring, data_converter
from services.kit.settings import TemporalSettings

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
    interceptors: list[temporalio.client.Interceptor] = [CaseTracingInterceptor(tracer)] if tracing else []
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

    The client's interceptors that are also worker interceptors (the tracing interceptor is) are applied by
    the SDK; do not pass `interceptors=` for them again. Other keyword arguments go to `Worker` unchanged
    (`activity_executor` for sync activities, tuning, ...); `graceful_shutdown_timeout` defaults to
    `DEFAULT_GRACEFUL_SHUTDOWN`, `sticky_queue_schedule_to_start_timeout` to `DEFAULT_STICKY_TIMEOUT` and
    `workflow_runner` to `sandboxed_runner()`.
    """
    kwargs.setdefault("graceful_shutdown_timeout", DEFAULT_GRACEFUL_SHUTDOWN)
    kwargs.setdefault("sticky_queue_schedule_to_start_timeout", DEFAULT_STICKY_TIMEOUT)
    kwargs.setdefault("workflow_runner", sandboxed_runner())
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
WorkerBuilder = Callable[[S, temporalio.client.Client, Any, Mapping[str, Any]], temporalio.worker.Worker]


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


# --- tracing: one trace per action --------------------------------------------------------------------------

# Set in the OpenTelemetry context of a workflow's handler while it carries out an action (the carrier of the
# action's span): what it starts belongs to that action.
_ACTION = opentelemetry.context.create_key("parcours_case_action")


class CaseTracingInterceptor(TracingInterceptor):
    """Temporal's tracing interceptor, with one trace per action on a case.

    Temporal's own interceptor parents everything a workflow does on the span of the call that *started* it:
    an Update sent by a later RPC (accept, report) becomes a link, and the Update's handling, the activities
    it runs and the billing they call land in the case's creation trace, which then grows for the life of the
    case. Here a workflow's work joins the trace of what caused it:

    - the workflow's first task: the call that started it (the `RunWorkflow` span);
    - an Update (or a Signal) carrying a trace context: the RPC that sent it — `ValidateUpdate` and
      `HandleUpdate` are children of its `StartWorkflowUpdate` span, linked to the case's start, and the
      activities the handler starts are children of `HandleUpdate`;
    - what the workflow's main loop starts in the same workflow task as an action's last step (an Update's
      handler returning, an activity of the action completing): that action — so the billing a report
      unblocks, and what billing's result leads to, are in the report's trace;
    - anything else (a timer fired: a reminder, a deadline, an escalation): a trace of its own, rooted at a
      `FireTimer` span linked to the case's start.

    Spans never carry an exception's text (it may quote patient data): a failure is an ERROR status with the
    exception's type (`error.type`).
    """

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the extern function that makes the spans
        return _CaseWorkflowTracing

    @contextmanager
    def _start_as_current_span(
        self,
        name: str,
        *,
        attributes: opentelemetry.util.types.Attributes,
        input_with_headers: Any = None,
        input_with_ctx: Any = None,
        kind: opentelemetry.trace.SpanKind,
        context: opentelemetry.context.Context | None = None,
    ) -> Iterator[None]:
        with super()._start_as_current_span(
            name,
            attributes=attributes,
            input_with_headers=input_with_headers,
            input_with_ctx=input_with_ctx,
            kind=kind,
            context=context,
        ):
            try:
                yield None
            except Exception as exc:
                # The base class described the status with the exception's text: only its type here.
                span = opentelemetry.trace.get_current_span()
                span.set_status(opentelemetry.trace.Status(opentelemetry.trace.StatusCode.ERROR))
                span.set_attribute("error.type", _error_type(exc))
                raise

    def _completed_workflow_span(self, params: _CompletedWorkflowSpanParams) -> _CarrierDict | None:
        # As the base class does, but a failure is recorded by its type, never its text.
        if params.parent_missing and not self._always_create_workflow_spans:
            return None
        context = self.text_map_propagator.extract(params.context)
        links: list[opentelemetry.trace.Link] = []
        if params.link_context:
            linked = opentelemetry.trace.get_current_span(
                self.text_map_propagator.extract(params.link_context)
            )
            if linked is not opentelemetry.trace.INVALID_SPAN:
                links.append(opentelemetry.trace.Link(linked.get_span_context()))
        attributes = dict(params.attributes or {})
        if params.exception is not None:
            attributes["error.type"] = _error_type(params.exception)
        span = self.tracer.start_span(
            params.name,
            context,
            attributes=attributes,
            links=links,
            start_time=params.time_ns,
            kind=params.kind,
        )
        if params.exception is not None:
            span.set_status(opentelemetry.trace.Status(opentelemetry.trace.StatusCode.ERROR))
        # Started and ended at once: a long-lived span is not replay-safe (as in the base class).
        span.end(end_time=params.time_ns)
        carrier: _CarrierDict = {}
        self.text_map_propagator.inject(carrier, opentelemetry.trace.set_span_in_context(span, context))
        return carrier


def _error_type(error: BaseException) -> str:
    if isinstance(error, temporalio.exceptions.ApplicationError) and error.type:
        return error.type
    return type(error).__qualname__


class _CaseWorkflowTracing(TracingWorkflowInboundInterceptor):
    """The workflow side of `CaseTracingInterceptor` (one instance per workflow run, inside the sandbox).

    Deterministic: it issues no command and reads only the workflow's clock and history length; spans are made
    outside the sandbox by the extern function, and none while replaying.
    """

    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        # The span of the action the workflow is carrying out, and the workflow task (history length) it was
        # last active in.
        self._action: _CarrierDict | None = None
        self._action_task = -1
        self._timer: tuple[int, _CarrierDict] | None = None

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        temporalio.worker.WorkflowInboundInterceptor.init(self, _CaseWorkflowOutboundTracing(outbound, self))

    # --- the spans ----------------------------------------------------------------------------------------

    def _span(
        self,
        name: str,
        parent: _CarrierDict,
        *,
        link: _CarrierDict | None = None,
        kind: opentelemetry.trace.SpanKind = opentelemetry.trace.SpanKind.SERVER,
    ) -> _CarrierDict | None:
        """A completed span (child of `parent`; a root when it is empty); its context as a carrier."""
        if temporalio.workflow.unsafe.is_replaying():
            return None
        info = temporalio.workflow.info()
        made: _CarrierDict | None = self._extern_functions["__temporal_opentelemetry_completed_span"](
            _CompletedWorkflowSpanParams(
                context=parent,
                name=name,
                attributes={"temporalWorkflowID": info.workflow_id, "temporalRunID": info.run_id},
                time_ns=temporalio.workflow.time_ns(),
                link_context=link,
                exception=None,
                kind=kind,
                parent_missing=False,
            )
        )
        return made

    def _sender(self, headers: Mapping[str, temporalio.api.common.v1.Payload]) -> _CarrierDict | None:
        payload = headers.get(self.header_key)
        if not payload:
            return None
        carrier: _CarrierDict = self.payload_converter.from_payloads([payload])[0]
        return carrier or None

    # --- which action the workflow is carrying out ----------------------------------------------------------

    @staticmethod
    def _task() -> int:
        return temporalio.workflow.info().get_current_history_length()

    @contextmanager
    def acting(self, action: _CarrierDict) -> Iterator[None]:
        """Run the block as `action`'s work: what it starts are children of the action's span."""
        context = self._set_on_context(self.text_map_propagator.extract(action))
        with attached_context(opentelemetry.context.set_value(_ACTION, action, context)):
            yield

    def acted(self, action: _CarrierDict) -> None:
        """A step of `action` is done: what the main loop starts next in this workflow task follows from
        it."""
        self._action, self._action_task = action, self._task()

    def current_action(self) -> _CarrierDict:
        """The action the running code works for: its handler's, else the one whose step ended in this
        workflow task, else (a timer fired) a trace of its own for this task."""
        found = opentelemetry.context.get_value(_ACTION)
        if isinstance(found, dict):
            return found
        task = self._task()
        if self._action is not None and self._action_task == task:
            return self._action
        if self._timer is None or self._timer[0] != task:
            timer = self._span(
                f"FireTimer:{temporalio.workflow.info().workflow_type}",
                {},
                link=self._load_workflow_context_carrier(),
                kind=opentelemetry.trace.SpanKind.INTERNAL,
            )
            self._timer = (task, timer or {})
        return self._timer[1]

    # --- inbound ------------------------------------------------------------------------------------------

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        with self._top_level_workflow_context(success_is_complete=True):
            started = self._load_workflow_context_carrier() or {}
            run = self._span(f"RunWorkflow:{temporalio.workflow.info().workflow_type}", started)
            self.acted(run or started)
            return await temporalio.worker.WorkflowInboundInterceptor.execute_workflow(self, input)

    async def handle_signal(self, input: temporalio.worker.HandleSignalInput) -> None:
        sender = self._sender(input.headers)
        if sender is None:
            return await super().handle_signal(input)
        span = self._span(f"HandleSignal:{input.signal}", sender, link=self._load_workflow_context_carrier())
        with self.acting(span or sender):
            await temporalio.worker.WorkflowInboundInterceptor.handle_signal(self, input)
        self.acted(span or sender)

    def handle_update_validator(self, input: temporalio.worker.HandleUpdateInput) -> None:
        sender = self._sender(input.headers)
        if sender is None:
            return super().handle_update_validator(input)
        span = self._span(
            f"ValidateUpdate:{input.update}", sender, link=self._load_workflow_context_carrier()
        )
        with self.acting(span or sender):
            temporalio.worker.WorkflowInboundInterceptor.handle_update_validator(self, input)

    async def handle_update_handler(self, input: temporalio.worker.HandleUpdateInput) -> Any:
        sender = self._sender(input.headers)
        if sender is None:
            return await super().handle_update_handler(input)
        span = self._span(f"HandleUpdate:{input.update}", sender, link=self._load_workflow_context_carrier())
        with self.acting(span or sender):
            result = await temporalio.worker.WorkflowInboundInterceptor.handle_update_handler(self, input)
        self.acted(span or sender)
        return result


class _CaseWorkflowOutboundTracing(_TracingWorkflowOutboundInterceptor):
    """Activities start inside the action they work for, and their completion continues that action."""

    def __init__(
        self, next: temporalio.worker.WorkflowOutboundInterceptor, root: _CaseWorkflowTracing
    ) -> None:
        super().__init__(next, root)
        self.case = root

    def start_activity(
        self, input: temporalio.worker.StartActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        action = self.case.current_action()
        with self.case.acting(action):
            handle = super().start_activity(input)
        handle.add_done_callback(lambda _: self.case.acted(action))
        return handle

    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        action = self.case.current_action()
        with self.case.acting(action):
            handle = super().start_local_activity(input)
        handle.add_done_callback(lambda _: self.case.acted(action))
        return handle
