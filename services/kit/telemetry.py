"""OpenTelemetry and JSON logs, configured once per process from the standard OTEL_* variables.

Spans go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; with no collector
configured nothing is exported and nothing breaks. asyncpg queries become child spans (statements only,
never parameters). Log lines are JSON with trace_id / span_id.

Database errors never carry their details into spans or logs. PostgreSQL's DETAIL of a violated constraint
quotes the key or the whole failing row ("Key (oid, matricule)=(…)", "Failing row contains (…)") — patient
data. The asyncpg instrumentation would record the exception's text as a span event and status description:
its tracer records failed queries as an ERROR status with the exception type and SQLSTATE only. The JSON log
formatter writes a database error as its type, SQLSTATE, constraint and table names, and its stack, never its
message (services.kit.db's constraint mapping and the error interceptor give clients constant messages).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def database_error(error: BaseException) -> asyncpg.PostgresError | None:
    """The PostgreSQL error an exception is, or was raised from (its cause or context), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, asyncpg.PostgresError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_database_error(error: asyncpg.PostgresError) -> str:
    """What may be said of a database error: its type and the names of what it concerns, no values."""
    names = [f"sqlstate {getattr(error, 'sqlstate', None) or '?'}"]
    for label in ("constraint_name", "table_name", "column_name"):
        value = getattr(error, label, None)
        if value:
            names.append(f"{label.removesuffix('_name')} {value}")
    return f"{type(error).__name__} ({', '.join(names)})"


def _mark_failed(span: trace.Span, error: BaseException) -> None:
    if not span.is_recording():
        return
    span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.set_attribute("error.type", type(error).__qualname__)
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        span.set_attribute("db.response.status_code", sqlstate)


class _DetailFreeTracer(trace.Tracer):
    """A tracer whose spans never record an exception's text: only its type (and SQLSTATE)."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self._inner.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
        )

    # The API types this with a private context-manager class; a generator context manager behaves the same.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        with self._inner.start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=end_on_exit,
        ) as span:
            try:
                yield span
            except BaseException as error:
                _mark_failed(span, error)
                raise


class DetailFreeTracerProvider(trace.TracerProvider):
    """Tracers of `inner` whose spans keep no exception text (given to the asyncpg instrumentation)."""

    def __init__(self, inner: trace.TracerProvider) -> None:
        self._inner = inner

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _DetailFreeTracer(
            self._inner.get_tracer(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
        )


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def format_exception(exc_info: ExcInfo) -> str:
    """A traceback for the log; a database error's message (its DETAIL quotes values) is replaced by what
    `describe_database_error` says of it."""
    error = exc_info[1]
    found = database_error(error)
    if found is None:
        return "".join(traceback.format_exception(*exc_info))
    frames: Sequence[str] = traceback.format_tb(exc_info[2])
    return "Traceback (most recent call last):\n" + "".join(frames) + describe_database_error(found)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        span_context = trace.get_current_span().get_span_context()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = format_exception(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("PARCOURS_LOG_LEVEL", "INFO"))


def _otlp_configured(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def configure_telemetry(component: str, *, json_logs: bool = True) -> None:
    """Set the process's tracer and meter providers and instrument asyncpg (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", f"parcours-{component}"),
            "service.namespace": "parcours",
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    if _otlp_configured("TRACES"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    readers: list[MetricReader] = []
    if _otlp_configured("METRICS"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    AsyncPGInstrumentor().instrument(tracer_provider=DetailFreeTracerProvider(tracer_provider))
    if json_logs:
        configure_logging()
