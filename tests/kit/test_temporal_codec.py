"""Payload encryption against a real Temporal dev server: nothing readable reaches Temporal's history."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # The sandbox re-imports this module to run the workflow; these are not workflow code.
    import base64

    import pytest
    import pytest_asyncio
    from google.protobuf.message import Message
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from temporalio.api.common.v1 import Payload
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.converter import DataConverter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from services.kit.codec import ENCODING, METADATA_ENCODING, METADATA_KEY_ID, Keyring, data_converter
    from services.kit.search_attributes import cli_flags
    from services.kit.settings import TemporalSettings
    from services.kit.temporal import build_worker, connect_client, run_worker_until_signalled, workflow_id

# The dev server is shared by the module, so its tests share the module's event loop.
on_module_loop = pytest.mark.asyncio(loop_scope="module")

SECRET = "NIR 1 85 05 78 006 084 36 — Mme Probe"
# The JSON converter escapes non-ASCII ("—" becomes \u2014), so look for ASCII fragments of the secret, in
# both directions, rather than for its UTF-8 bytes.
NEEDLES = [b"NIR 1 85 05 78 006 084 36", b"Mme Probe"]
NEEDLES += [n[::-1] for n in NEEDLES]

KEY_SPEC = "k1:" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


@dataclass
class ProbeInput:
    secret: str


@dataclass
class ProbeOutput:
    reversed_secret: str


@activity.defn(name="reverse_probe_secret")
async def reverse_secret(probe: ProbeInput) -> ProbeOutput:
    return ProbeOutput(reversed_secret=probe.secret[::-1])


@workflow.defn(name="CodecProbe")
class CodecProbeWorkflow:
    @workflow.run
    async def run(self, probe: ProbeInput) -> ProbeOutput:
        return await workflow.execute_activity(
            reverse_secret,
            probe,
            start_to_close_timeout=timedelta(seconds=10),
            # A failing probe should fail the test quickly, not retry for ever.
            retry_policy=RetryPolicy(maximum_attempts=2),
        )


@workflow.defn(name="FailingCodecProbe")
class FailingProbeWorkflow:
    @workflow.run
    async def run(self, probe: ProbeInput) -> ProbeOutput:
        raise ApplicationError(f"no booking for {probe.secret}", non_retryable=True, type="NO_BOOKING")


def temporal_binary() -> str:
    return shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=data_converter(Keyring.parse(KEY_SPEC)),
        dev_server_extra_args=["--headless", *cli_flags()],
    ) as environment:
        yield environment


def iter_payloads(message: Message) -> Iterator[Payload]:
    """Every `Payload` anywhere inside `message` (inputs, results, headers, memos, failures...)."""
    if isinstance(message, Payload):
        yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            # Maps of scalars to messages (header fields, memo fields): walk the values.
            values = value.values()
            if descriptor.message_type.fields_by_name["value"].message_type is None:
                continue
        elif descriptor.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            yield from iter_payloads(item)


def contains_plaintext(data: bytes) -> bool:
    return any(needle in data for needle in NEEDLES)


@on_module_loop
async def test_history_holds_only_ciphertext(env: WorkflowEnvironment) -> None:
    task_queue = f"codec-probe-{uuid.uuid4()}"
    wf_id = workflow_id("codecprobe", str(uuid.uuid4()))
    async with Worker(
        env.client, task_queue=task_queue, workflows=[CodecProbeWorkflow], activities=[reverse_secret]
    ):
        result = await env.client.execute_workflow(
            CodecProbeWorkflow.run, ProbeInput(secret=SECRET), id=wf_id, task_queue=task_queue
        )
    assert result == ProbeOutput(reversed_secret=SECRET[::-1])

    # A client on the same connection without the codec sees what the Temporal server stores.
    plain = Client(
        env.client.service_client, namespace=env.client.namespace, data_converter=DataConverter.default
    )
    history = await plain.get_workflow_handle(wf_id).fetch_history()

    assert not contains_plaintext(history.to_json().encode())
    assert not contains_plaintext(b"".join(e.SerializeToString() for e in history.events))
    payloads = [p for event in history.events for p in iter_payloads(event)]
    # Input and result of the workflow and of the activity, at least.
    assert len(payloads) >= 4
    for payload in payloads:
        assert payload.metadata[METADATA_ENCODING] == ENCODING
        assert payload.metadata[METADATA_KEY_ID] == b"k1"
        assert not contains_plaintext(payload.SerializeToString())

    # The stored input decodes back with the codec, and the needles would have been found in clear.
    [started] = [e for e in history.events if e.HasField("workflow_execution_started_event_attributes")]
    stored_input = list(started.workflow_execution_started_event_attributes.input.payloads)
    decoded = await data_converter(Keyring.parse(KEY_SPEC)).decode(stored_input, [ProbeInput])
    assert decoded == [ProbeInput(secret=SECRET)]
    clear = await DataConverter.default.encode([ProbeInput(secret=SECRET)])
    assert contains_plaintext(clear[0].SerializeToString())

    # Without the keys, the result cannot be read.
    with pytest.raises(Exception, match="binary/encrypted"):
        await plain.get_workflow_handle(wf_id).result()


@on_module_loop
async def test_failure_messages_are_encrypted(env: WorkflowEnvironment) -> None:
    task_queue = f"codec-probe-fail-{uuid.uuid4()}"
    wf_id = workflow_id("codecprobe", str(uuid.uuid4()))
    async with Worker(env.client, task_queue=task_queue, workflows=[FailingProbeWorkflow]):
        with pytest.raises(WorkflowFailureError) as info:
            await env.client.execute_workflow(
                FailingProbeWorkflow.run, ProbeInput(secret=SECRET), id=wf_id, task_queue=task_queue
            )
    # The codec's client still sees the message...
    assert "Mme Probe" in str(info.value.cause)
    # ...which the server only holds encrypted.
    plain = Client(env.client.service_client, namespace=env.client.namespace)
    history = await plain.get_workflow_handle(wf_id).fetch_history()
    assert not contains_plaintext(b"".join(e.SerializeToString() for e in history.events))


@on_module_loop
async def test_connect_client_build_worker_and_signal_shutdown(env: WorkflowEnvironment) -> None:
    settings = TemporalSettings(
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        payload_keys=KEY_SPEC,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await connect_client(settings, tracer=provider.get_tracer(__name__))
    task_queue = f"codec-probe-e2e-{uuid.uuid4()}"
    worker = build_worker(
        client, task_queue=task_queue, workflows=[CodecProbeWorkflow], activities=[reverse_secret]
    )
    running = asyncio.create_task(run_worker_until_signalled(worker))

    wf_id = workflow_id("codecprobe", str(uuid.uuid4()))
    with provider.get_tracer(__name__).start_as_current_span("grpc handler"):
        result = await client.execute_workflow(
            CodecProbeWorkflow.run, ProbeInput(secret=SECRET), id=wf_id, task_queue=task_queue
        )
    assert result == ProbeOutput(reversed_secret=SECRET[::-1])

    # The worker completed a task, so its signal handlers are installed: SIGTERM stops it, not the process.
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, timeout=30)
    assert worker.is_shutdown

    # One trace from the caller's span through the workflow to the activity.
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"StartWorkflow:CodecProbe", "RunWorkflow:CodecProbe", "RunActivity:reverse_probe_secret"} <= names
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    assert not any(contains_plaintext(str(s.attributes).encode()) for s in spans)

    # The tracing header is encrypted like the rest.
    history = await client.get_workflow_handle(wf_id).fetch_history()
    payloads = [p for event in history.events for p in iter_payloads(event)]
    headers = [
        p
        for e in history.events
        for p in e.workflow_execution_started_event_attributes.header.fields.values()
    ]
    assert headers, "tracing header expected"
    assert all(h in payloads for h in headers)  # the walker does reach map values
    assert all(p.metadata[METADATA_ENCODING] == ENCODING for p in payloads)
    assert not contains_plaintext(b"".join(e.SerializeToString() for e in history.events))


@on_module_loop
async def test_connect_client_refuses_a_bad_keyring() -> None:
    settings = TemporalSettings(payload_keys="k1:tooshort")

    with pytest.raises(ValueError, match=r"payload key 1 \('k1'\)"):
        await connect_client(settings)


def test_workflow_id_accepts_opaque_ids() -> None:
    case = uuid.uuid4()

    assert workflow_id("teleexpertise", str(case)) == f"teleexpertise-{case}"
    assert workflow_id("teleexpertise", str(case).upper()) == f"teleexpertise-{case}"
    assert workflow_id("teleexpertise", case.hex) == f"teleexpertise-{case}"
    assert workflow_id("ght-sync", "ght-paris-nord") == "ght-sync-ght-paris-nord"
    assert workflow_id("establishment", "finess-750712184") == "establishment-finess-750712184"


@pytest.mark.parametrize(
    "opaque_id",
    [
        "185057800608436",  # NIR with its key
        "1850578006084",  # NIR without the key
        "1-85-05-78-006-084-36",  # NIR split by hyphens
        "185052a00608436",  # Corsican NIR
        "0612345678",  # phone number
        "Mme Probe",
        "jean dupont",
        "NIR 1 85 05 78 006 084 36",
        "",
        "a" * 65,
        "case/../other",
    ],
)
def test_workflow_id_refuses_what_could_be_patient_data(opaque_id: str) -> None:
    with pytest.raises(ValueError, match="workflow id part") as info:
        workflow_id("teleexpertise", opaque_id)
    if opaque_id:
        assert opaque_id not in str(info.value)


@pytest.mark.parametrize("kind", ["", "Teleexpertise", "tele expertise", "-x", "x-", "9lives"])
def test_workflow_id_refuses_bad_kinds(kind: str) -> None:
    with pytest.raises(ValueError, match="workflow kind"):
        workflow_id(kind, str(uuid.uuid4()))
