"""The worker side of Parcours' Temporal tracing: one trace per action on a case.

Only worker processes import this module (`services.kit.temporal.build_worker` does, when it builds a worker):
it builds on Temporal's contrib OpenTelemetry interceptor, which imports `temporalio.worker` and its sandbox
(3–4 MB of resident memory in a service process, 9 MB beside temporalio.client alone), which a service that
only starts workflows and sends them Updates has no use for. Those services carry
`services.kit.temporal.ClientTracingInterceptor`, which writes the trace context into the same header, in the
same format, as the contrib interceptor reads it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import opentelemetry.context
import opentelemetry.trace
import opentelemetry.util.types
import temporalio.api.common.v1
import temporalio.worker
import temporalio.workflow
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

from services.kit.temporal import TRACE_HEADER, TRACE_PROPAGATOR, error_type

# Set in the OpenTelemetry context of a workflow's handler while it carries out an action (the carrier of the
# action's span): what it starts belongs to that action.
_ACTION = opentelemetry.context.create_key("parcours_case_action")


class CaseTracingInterceptor(TracingInterceptor):
    """Temporal's tracing interceptor on a worker, with one trace per action on a case (`build_worker` adds
    it; the client's `ClientTracingInterceptor` makes the spans of the calls that reach the workflow).

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

    def __init__(self, tracer: opentelemetry.trace.Tracer | None = None) -> None:
        super().__init__(tracer)
        # Temporal's defaults, named once for both sides (what a client writes is what a workflow reads).
        self.header_key = TRACE_HEADER
        self.text_map_propagator = TRACE_PROPAGATOR

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
                span.set_attribute("error.type", error_type(exc))
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
            attributes["error.type"] = error_type(params.exception)
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


class _CaseWorkflowTracing(TracingWorkflowInboundInterceptor):
    """The workflow side of `CaseTracingInterceptor` (one instance per workflow run, inside the sandbox).

    Deterministic: it issues no command and reads only the workflow's clock and history length; spans are made
    outside the sandbox by the extern function, and none while replaying.
    """

    def __init__(self, next: temporalio.worker.WorkflowInboundInterceptor) -> None:
        super().__init__(next)
        self.header_key = TRACE_HEADER
        self.text_map_propagator = TRACE_PROPAGATOR
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
