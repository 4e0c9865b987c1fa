"""A trace started in a service continues in the workflow's spans, against a real Temporal dev server.

The services that only call workflows (scheduling, expertise, contracts, the console) trace their calls
with `services.kit.temporal.ClientTracingInterceptor`, which never imports `temporalio.worker`; the workers
continue those traces with `services.kit.case_tracing.CaseTracingInterceptor`, built on Temporal's contrib
interceptor. Here the client runs in a process of its own, as a service does, and the worker in the test's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # The sandbox re-imports this module to run the workflow; these are not workflow code.
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services.devstack.temporal import TemporalHandle
    from services.kit.settings import TemporalSettings
    from services.kit.temporal import build_worker, connect_client, workflow_id
    from tests.support import PAYLOAD_KEYS, repo_root


@workflow.defn(name="TraceProbe")
class TraceProbeWorkflow:
    def __init__(self) -> None:
        self._finished = False

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self._finished)
        return "finished"

    @workflow.update(name="finish")
    async def finish(self) -> str:
        self._finished = True
        return "finishing"


# What a service process does: the process's tracer provider, a client from `connect_client`, a workflow
# started in one action's span and sent an Update in another's. It prints its spans and whether it imported
# the worker side.
_SERVICE = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from services.kit.settings import TemporalSettings
from services.kit.temporal import connect_client

async def main(address, keys, task_queue, workflow_id):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    client = await connect_client(TemporalSettings(temporal_address=address, payload_keys=keys))
    tracer = trace.get_tracer("service")
    with tracer.start_as_current_span("BookAppointment"):
        handle = await client.start_workflow("TraceProbe", id=workflow_id, task_queue=task_queue)
    with tracer.start_as_current_span("CompleteTeleconsultation"):
        await handle.execute_update("finish")
    await handle.result()
    spans = [
        {"name": s.name, "trace_id": s.context.trace_id, "span_id": s.context.span_id, "kind": s.kind.name}
        for s in exporter.get_finished_spans()
    ]
    loaded = [m for m in ("temporalio.worker", "temporalio.contrib.opentelemetry") if m in sys.modules]
    print(json.dumps({"spans": spans, "loaded": loaded}))

asyncio.run(main(*sys.argv[1:]))
"""


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


async def test_a_trace_started_in_a_service_continues_in_the_workflow(temporal: TemporalHandle) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = TemporalSettings(temporal_address=temporal.address, payload_keys=PAYLOAD_KEYS)
    client = await connect_client(settings, tracer=provider.get_tracer(__name__))
    task_queue = f"trace-probe-{uuid.uuid4()}"
    case = workflow_id("traceprobe", str(uuid.uuid4()))

    async with build_worker(client, task_queue=task_queue, workflows=[TraceProbeWorkflow], activities=[]):
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SERVICE,
            temporal.address,
            PAYLOAD_KEYS,
            task_queue,
            case,
            cwd=repo_root(),
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await asyncio.wait_for(service.communicate(), 60)
    assert service.returncode == 0
    called = json.loads(output.decode().strip().splitlines()[-1])

    # The service never loaded the worker side of the SDK.
    assert called["loaded"] == []
    sent = {s["name"]: s for s in called["spans"]}
    started, updated = sent["StartWorkflow:TraceProbe"], sent["StartWorkflowUpdate:finish"]
    assert started["kind"] == updated["kind"] == "CLIENT"
    assert started["trace_id"] == sent["BookAppointment"]["trace_id"]
    assert updated["trace_id"] == sent["CompleteTeleconsultation"]["trace_id"] != started["trace_id"]

    # The workflow's spans continue each action's trace, under the span of the call that caused them.
    spans = list(exporter.get_finished_spans())
    run = _one(spans, "RunWorkflow:TraceProbe")
    handled = _one(spans, "HandleUpdate:finish")
    assert run.context is not None and run.parent is not None
    assert (run.context.trace_id, run.parent.span_id) == (started["trace_id"], started["span_id"])
    assert handled.context is not None and handled.parent is not None
    assert (handled.context.trace_id, handled.parent.span_id) == (updated["trace_id"], updated["span_id"])
