"""Traces: one trace from the gRPC edge to each asyncpg query, with no patient data in any span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import LOIRE, bearer, establishment_channel


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the kit configures an SDK tracer provider"
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()


async def test_a_patient_read_is_one_trace_down_to_sql_without_patient_data(
    spans: InMemorySpanExporter, pki: DevPki, directory_address: str, mint: Minter
) -> None:
    patient = DEMO_PATIENTS[0]
    async with establishment_channel(pki, directory_address, LOIRE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        await stub.GetPatient(
            directory_pb2.GetPatientRequest(name=f"patients/{patient.patient_id}"),
            metadata=bearer(mint(rpps="10000000101")),
        )
    finished = spans.get_finished_spans()
    server = [s for s in finished if s.name == "/parcours.directory.v1.DirectoryService/GetPatient"]
    assert len(server) == 1
    trace_id = server[0].context.trace_id
    sql = [
        s
        for s in finished
        if s.context.trace_id == trace_id and s.attributes and "db.system" in str(dict(s.attributes))
    ]
    assert sql, "asyncpg queries are child spans of the RPC"
    assert server[0].attributes is not None
    assert server[0].attributes.get("parcours.establishment") == f"establishments/{LOIRE}"
    forbidden = [patient.matricule, patient.birth_family_name, str(patient.patient_id), "10000000101"]
    for span in finished:
        text = f"{span.name} {dict(span.attributes or {})} {[dict(e.attributes or {}) for e in span.events]}"
        for value in forbidden:
            assert value not in text, f"span {span.name} carries patient or practitioner data"
