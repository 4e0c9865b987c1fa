"""Traces: one trace from the gRPC edge to each asyncpg query, with no patient data in any span."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from services.kit.pki import DevPki
from services.kit.telemetry import JsonFormatter
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
    server = [s for s in finished if s.name == "parcours.directory.v1.DirectoryService/GetPatient"]
    assert len(server) == 1
    trace_id = server[0].context.trace_id
    sql = [
        s
        for s in finished
        if s.context.trace_id == trace_id and (s.attributes or {}).get("db.system.name") == "postgresql"
    ]
    assert sql, "asyncpg queries are child spans of the RPC"
    assert server[0].attributes is not None
    assert server[0].attributes.get("parcours.establishment") == f"establishments/{LOIRE}"
    forbidden = [patient.matricule, patient.birth_family_name, str(patient.patient_id), "10000000101"]
    for span in finished:
        text = f"{span.name} {dict(span.attributes or {})} {[dict(e.attributes or {}) for e in span.events]}"
        for value in forbidden:
            assert value not in text, f"span {span.name} carries patient or practitioner data"


# --- database errors keep their details out of spans and logs (issue 9.8) ---------------------------------

SECRET = "CHAVANOL-1480342218001"  # stands for a key value PostgreSQL would quote in a DETAIL line


async def _violation(pool: asyncpg.Pool) -> asyncpg.UniqueViolationError:
    """A real unique violation whose DETAIL quotes SECRET, raised through the instrumented driver."""
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TEMP TABLE telemetry_keys (k text CONSTRAINT telemetry_keys_pkey PRIMARY KEY)"
        )
        try:
            await conn.execute("INSERT INTO telemetry_keys VALUES ($1)", SECRET)
            with pytest.raises(asyncpg.UniqueViolationError) as caught:
                await conn.execute("INSERT INTO telemetry_keys VALUES ($1)", SECRET)
        finally:
            await conn.execute("DROP TABLE telemetry_keys")
    assert SECRET in str(caught.value), "PostgreSQL quotes the key in the error's DETAIL"
    return caught.value


async def test_a_failed_query_span_says_what_failed_without_the_values(
    spans: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    await _violation(pool)
    for each in spans.get_finished_spans():
        events = [dict(e.attributes or {}) for e in each.events]
        text = f"{dict(each.attributes or {})} {each.status.description} {events}"
        assert SECRET not in text, f"span {each.name} carries a value from a database error"
    failed = [s for s in spans.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert failed, "the failed INSERT is a span with an ERROR status"
    span = failed[-1]
    assert span.attributes is not None
    assert span.attributes.get("error.type") == "UniqueViolationError"
    assert span.attributes.get("db.response.status_code") == "23505"


async def test_a_logged_database_error_names_its_constraint_never_its_values(pool: asyncpg.Pool) -> None:
    error = await _violation(pool)
    try:
        raise RuntimeError("while recording") from error
    except RuntimeError as outer:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "unexpected error", (), (type(outer), outer, outer.__traceback__)
        )
    line = json.loads(JsonFormatter().format(record))
    assert SECRET not in json.dumps(line)
    assert "UniqueViolationError (sqlstate 23505, constraint telemetry_keys_pkey" in line["exception"]
    assert "Traceback" in line["exception"]


async def test_a_statement_run_again_is_described_the_same_and_its_failure_is_its_own(
    spans: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    # Span names and attributes are worked out once per statement (services/kit/telemetry.py): the second
    # run of a statement, a failing run and the run after it are described as the first was.
    statement = "SELECT 1 / $1::integer AS quotient FROM pg_catalog.pg_class LIMIT 1"
    for divisor in (1, 2, 0, 3):
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            await pool.fetchval(statement, divisor)
    text = "SELECT ? / $1::integer AS quotient FROM pg_catalog.pg_class LIMIT ?"  # literals never recorded
    runs = [s for s in spans.get_finished_spans() if (s.attributes or {}).get("db.query.text") == text]
    assert [s.name for s in runs] == ["SELECT pg_catalog.pg_class"] * 4
    first, second, failed, after = (dict(s.attributes or {}) for s in runs)
    assert second == first == after, "the failure's attributes stay on the failed run's span"
    assert failed.items() >= first.items()
    assert failed["db.response.status_code"] == "22012"
    unset, error = StatusCode.UNSET, StatusCode.ERROR
    assert [s.status.status_code for s in runs] == [unset, unset, error, unset]
