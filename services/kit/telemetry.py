"""OpenTelemetry and JSON logs, configured once per process from the standard OTEL_* variables.

Spans and metrics go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT /
..._METRICS_ENDPOINT) is set; with no collector configured nothing is exported and nothing breaks. Log lines
are JSON with trace_id / span_id.

Names and attributes follow the OpenTelemetry semantic conventions 1.44 (`SCHEMA_URL`):

- gRPC (`ServerTracing`, `client_interceptors`): one SERVER span per call received and one CLIENT span per
  call sent, named by `rpc.method` (`parcours.expertise.v1.ExpertiseService/AcceptTeleexpertiseRequest`), with
  `rpc.system.name` `grpc`, `rpc.response.status_code` (`OK`, `NOT_FOUND`…), `error.type` on failures,
  `server.address` / `server.port` on client spans, `network.peer.*` on server spans; the pre-1.38
  `rpc.system` and `rpc.service` are kept beside them for dashboards not yet moved. The trace context
  travels in the W3C `traceparent` metadata. Metrics `rpc.server.call.duration` and
  `rpc.client.call.duration`, in seconds. Health checks and reflection are not traced: nobody's action.
- PostgreSQL (asyncpg, through `DatabaseTracerProvider`): CLIENT spans named by `db.query.summary`
  (`SELECT expertise.requests`), with `db.system.name` `postgresql`, `db.namespace`, `db.query.text` with
  every literal replaced by `?` (statements are parameterised; parameters are never recorded),
  `server.address` and `server.port`; metric `db.client.operation.duration`, in seconds.

Database errors never carry their details into spans or logs. PostgreSQL's DETAIL of a violated constraint
quotes the key or the whole failing row ("Key (oid, matricule)=(…)", "Failing row contains (…)") — patient
data. The asyncpg instrumentation would record the exception's text as a span event and status description:
its tracer records failed queries as an ERROR status with the exception type and SQLSTATE only. The JSON log
formatter writes a database error as its type, SQLSTATE, constraint and table names, and its stack, never its
message (services.kit.db's constraint mapping and the error interceptor give clients constant messages).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg
import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor, _hydrate_span_from_args
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# The semantic conventions these names and attributes follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

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


# --- PostgreSQL spans ---------------------------------------------------------------------------------------

# One token of SQL: what can hold a value (literals), what names things, the rest.
_SQL_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>[EeBbXxNn]?'(?:[^']|'')*')
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$.*?\$(?P=tag)?\$)
  | (?P<param>\$\d+)
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<other>.)
    """,
    re.S | re.X,
)
# Operations that may appear anywhere in a statement (subqueries, CTEs, INSERT … SELECT).
_NESTED_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
# Commands only recognised as a statement's first word.
_LEADING_OPERATIONS = frozenset(
    {
        "ALTER", "ANALYZE", "BEGIN", "CALL", "COMMENT", "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DISCARD",
        "DO", "DROP", "EXECUTE", "EXPLAIN", "GRANT", "LISTEN", "LOCK", "NOTIFY", "PREPARE", "REFRESH",
        "RELEASE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SET", "SHOW", "START", "TRUNCATE",
        "UNLISTEN", "VACUUM", "VALUES", "WITH",
    }
)  # fmt: skip
# Words after which UPDATE / DELETE are not operations (ON CONFLICT DO UPDATE, FOR UPDATE, ON DELETE …).
_NOT_AN_OPERATION_AFTER = frozenset({"DO", "FOR", "KEY", "ON"})
# Words that open a parenthesis without being a function call (so a FROM inside is a table's).
_NOT_A_FUNCTION = frozenset(
    {"AS", "IN", "EXISTS", "ANY", "ALL", "SOME", "VALUES", "FROM", "JOIN", "ON", "USING", "WHERE", "AND",
     "OR", "NOT", "SELECT", "INTO", "LATERAL", "RETURNING", "SET", "WITH"}
)  # fmt: skip
_TARGET_AFTER = frozenset({"FROM", "JOIN", "INTO", "UPDATE", "TABLE"})
_SKIP_BEFORE_TARGET = frozenset({"ONLY", "LATERAL", "TABLE"})
_SUMMARY_LIMIT = 255


# A process runs the same few statements over and over (named, parameterised queries): each statement's
# redacted text and summary are computed once, not at every query (they were ~80 µs of CPU per query).
_SQL_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_SQL_CACHE_SIZE)
def sanitize_sql(text: str) -> str:
    """The statement with every literal (string, dollar-quoted, number) replaced by `?` and comments
    dropped: what `db.query.text` may say. Placeholders (`$1`) stay; their values are never recorded."""
    parts: list[str] = []
    for token in _SQL_TOKEN.finditer(text):
        kind = token.lastgroup
        if kind in ("string", "dollar", "number"):
            parts.append("?")
        elif kind == "comment":
            parts.append(" ")
        else:
            parts.append(token.group())
    return "".join(parts)


@functools.lru_cache(maxsize=_SQL_CACHE_SIZE)
def summarize_sql(text: str) -> str:
    """`db.query.summary`: the statement's operations and the tables they act on, in order
    (`INSERT expertise.outbox SELECT expertise.requests`), at most 255 characters; '' when none is found."""
    tokens = [
        (t.lastgroup, t.group()) for t in _SQL_TOKEN.finditer(text) if t.lastgroup not in ("space", "comment")
    ]
    words: list[str] = []
    # For each open parenthesis: does it hold a function's arguments (then FROM inside is no table)?
    functions: list[bool] = []
    previous = ""
    index = 0
    while index < len(tokens):
        kind, value = tokens[index]
        upper = value.upper() if kind == "word" else ""
        if value == "(":
            functions.append(previous not in _NOT_A_FUNCTION and tokens[index - 1][0] in ("word", "quoted"))
        elif value == ")":
            if functions:
                functions.pop()
        elif upper in _NESTED_OPERATIONS and previous not in _NOT_AN_OPERATION_AFTER:
            if upper == "SELECT" and functions:
                functions[-1] = False  # ARRAY(SELECT …): a subquery after all
            words.append(value)
        elif upper in _LEADING_OPERATIONS and not words and index == 0 and upper != "WITH":
            words.append(value)
        locking = upper in ("UPDATE", "DELETE") and previous in _NOT_AN_OPERATION_AFTER
        if upper in _TARGET_AFTER and not locking and not (functions and functions[-1]):
            index = _targets(tokens, index + 1, words, upper)
            previous = upper
            continue
        previous = upper or value
        index += 1
    summary = ""
    for word in words:
        candidate = f"{summary} {word}" if summary else word
        if len(candidate) > _SUMMARY_LIMIT:
            break
        summary = candidate
    return summary


def _targets(tokens: Sequence[tuple[str | None, str]], index: int, found: list[str], keyword: str) -> int:
    """Collect the table names (dotted, quoted as written) from `index`; returns where it stopped."""
    while index < len(tokens) and tokens[index][1].upper() in _SKIP_BEFORE_TARGET:
        index += 1
    while index < len(tokens) and tokens[index][0] in ("word", "quoted"):
        name = tokens[index][1]
        index += 1
        while (
            index + 1 < len(tokens) and tokens[index][1] == "." and tokens[index + 1][0] in ("word", "quoted")
        ):
            name += "." + tokens[index + 1][1]
            index += 2
        if index < len(tokens) and tokens[index][1] == "(" and keyword != "INTO":
            return index  # a set-returning function (FROM unnest($1)), not a table
        if name.upper() in _NESTED_OPERATIONS or name.upper() in _LEADING_OPERATIONS:
            return index - 1
        found.append(name)
        if keyword != "FROM":
            return index
        # FROM a [AS] x, b [AS] y: every table of the list.
        if index < len(tokens) and tokens[index][1].upper() == "AS":
            index += 1
        if index < len(tokens) and tokens[index][0] == "word" and tokens[index][1].upper() not in _CLAUSES:
            index += 1
        if index < len(tokens) and tokens[index][1] == ",":
            index += 1
            continue
        return index
    return index


_CLAUSES = frozenset(
    {"WHERE", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "ON", "USING", "GROUP", "ORDER",
     "LIMIT", "OFFSET", "FOR", "UNION", "EXCEPT", "INTERSECT", "RETURNING", "HAVING", "WINDOW", "FETCH",
     "SET", "VALUES", "SELECT", "DEFAULT", "OVERRIDING", "TABLESAMPLE"}
)  # fmt: skip


def database_span(name: str, attributes: Any) -> tuple[str, dict[str, Any]]:
    """A database span's name and attributes as the conventions want them, from what the asyncpg
    instrumentation gives (either its old or its new attribute names)."""
    given = dict(attributes or {})
    found: dict[str, Any] = {"db.system.name": given.get("db.system.name") or given.get("db.system")}
    namespace = given.get("db.namespace") or given.get("db.name")
    if namespace:
        found["db.namespace"] = namespace
    address = given.get("server.address") or given.get("net.peer.name")
    if address:
        found["server.address"] = address
    port = given.get("server.port") or given.get("net.peer.port")
    if port:
        found["server.port"] = int(port)
    text = given.get("db.query.text") or given.get("db.statement")
    summary = ""
    if isinstance(text, str):
        found["db.query.text"] = sanitize_sql(text)
        summary = summarize_sql(text)
    if summary:
        found["db.query.summary"] = summary
    # Never `db.statement.parameters` (patient data), never `db.user`.
    cursor = "CURSOR " if name.startswith("CURSOR") else ""
    return cursor + (summary or str(found["db.system.name"] or "postgresql")), found


def _mark_failed(span: trace.Span, error: BaseException) -> str | None:
    sqlstate = getattr(error, "sqlstate", None)
    if span.is_recording():
        span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.set_attribute("error.type", type(error).__qualname__)
        if isinstance(sqlstate, str):
            span.set_attribute("db.response.status_code", sqlstate)
    return sqlstate if isinstance(sqlstate, str) else None


_METRIC_ATTRIBUTES = ("db.system.name", "db.namespace", "db.query.summary", "server.address", "server.port")


@dataclass(frozen=True)
class Statement:
    """A statement's span as the conventions want it: its name, its attributes and the metric's (never
    mutated: shared by every execution of the statement)."""

    name: str
    attributes: dict[str, Any]
    measured: dict[str, Any]

    @classmethod
    def of(cls, name: str, attributes: Any) -> Statement:
        span_name, described = database_span(name, attributes)
        return cls(span_name, described, {k: described[k] for k in _METRIC_ATTRIBUTES if k in described})


class _DatabaseTracer(trace.Tracer):
    """The asyncpg instrumentation's tracer: spans named and attributed by the conventions, the
    `db.client.operation.duration` metric, and never an exception's text (only its type and SQLSTATE).

    `StatementInstrumentor` describes each statement once and opens its span with `statement_span`; the
    instrumentation's other calls (`start_span`, `start_as_current_span`) are described each time."""

    def __init__(self, inner: trace.Tracer, duration: Histogram) -> None:
        self._inner = inner
        self._duration = duration

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
        statement = Statement.of(name, attributes)
        return self._inner.start_span(
            statement.name,
            context,
            kind,
            statement.attributes,
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
        with self.statement_span(
            Statement.of(name, attributes), context, kind, links, start_time, end_on_exit
        ) as span:
            yield span

    @contextmanager
    def statement_span(
        self,
        statement: Statement,
        context: Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.CLIENT,
        links: Any = None,
        start_time: int | None = None,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """The current span of one execution of `statement`, and its duration recorded."""
        started = time.perf_counter()
        measured = statement.measured
        with self._inner.start_as_current_span(
            statement.name,
            context,
            kind,
            statement.attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=end_on_exit,
        ) as span:
            try:
                yield span
            except BaseException as error:
                sqlstate = _mark_failed(span, error)
                measured = {**measured, "error.type": type(error).__qualname__}
                if sqlstate:
                    measured["db.response.status_code"] = sqlstate
                raise
            finally:
                self._duration.record(time.perf_counter() - started, measured)


class StatementInstrumentor(AsyncPGInstrumentor):
    """asyncpg's OpenTelemetry instrumentation, each statement described once per statement and database
    rather than at every query (the instrumentation runs a regular expression over the statement, splits all
    of it into words for its first one, and builds the attributes, each time; the conventions' name, the
    sanitised text and the metric's attributes are then derived from those). Spans are otherwise exactly the
    instrumentation's, through `_DatabaseTracer`; parameters are never captured."""

    def __init__(self) -> None:
        super().__init__(capture_parameters=False)
        self._statements: dict[tuple[Any, ...], Statement] = {}

    def _statement(self, connection: Any, query: str) -> Statement:
        params = getattr(connection, "_params", None)
        address = getattr(connection, "_addr", None)
        key = (query, getattr(params, "database", None), getattr(params, "user", None), address)
        found = self._statements.get(key)
        if found is None:
            name = query if query else getattr(params, "database", "postgresql")
            try:
                name = self._leading_comment_remover.sub("", name).split()[0]
            except IndexError:
                name = ""
            attributes = _hydrate_span_from_args(
                connection, query, None, semconv_opt_in_mode=self._semconv_opt_in_mode
            )
            found = Statement.of(name, attributes)
            if len(self._statements) >= _SQL_CACHE_SIZE:
                self._statements.clear()
            self._statements[key] = found
        return found

    async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        tracer = self._tracer
        if (
            not is_instrumentation_enabled()
            or not args
            or not isinstance(args[0], str)
            or not isinstance(tracer, _DatabaseTracer)
        ):
            return await super()._do_execute(func, instance, args, kwargs)
        # `_DatabaseTracer` marks a failed statement (its type and SQLSTATE only).
        with tracer.statement_span(self._statement(instance, args[0])):
            return await func(*args, **kwargs)


class DatabaseTracerProvider(trace.TracerProvider):
    """Tracers of `inner` for the asyncpg instrumentation (see `_DatabaseTracer`)."""

    def __init__(
        self, inner: trace.TracerProvider, meter_provider: metrics.MeterProvider | None = None
    ) -> None:
        self._inner = inner
        meter = metrics.get_meter(__name__, schema_url=SCHEMA_URL, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "db.client.operation.duration", unit="s", description="Duration of database client operations."
        )

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _DatabaseTracer(
            self._inner.get_tracer(
                instrumenting_module_name, instrumenting_library_version, SCHEMA_URL, attributes
            ),
            self._duration,
        )


# --- gRPC spans and metrics ---------------------------------------------------------------------------------

# Probes and reflection: nobody's action, polled every few seconds by kubelet.
UNTRACED_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)
# The codes that make a server span an error (the gRPC conventions); on the client side every code but OK.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_CLIENT_ERRORS = frozenset(code for code in grpc.StatusCode if code is not grpc.StatusCode.OK)


def _rpc_attributes(method: str) -> dict[str, Any]:
    service = method.partition("/")[0]
    return {"rpc.system.name": "grpc", "rpc.method": method, "rpc.system": "grpc", "rpc.service": service}


# A server sees the same few peers (its clients' connections) call after call; callers copy the mapping.
@functools.lru_cache(maxsize=4096)
def _peer(peer: str) -> dict[str, Any]:
    """`network.peer.*` of `ipv4:10.0.0.5:52314`, `ipv6:[::1]:52314`, `unix:/run/x.sock`."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return {"network.peer.address": rest, "network.transport": "unix"}
    address, _, port = rest.rpartition(":")
    if not address or not port.isdigit():
        return {}
    return {
        "network.peer.address": address.strip("[]"),
        "network.peer.port": int(port),
        "network.transport": "tcp",
    }


def target_address(target: str) -> dict[str, Any]:
    """`server.address` / `server.port` of a channel target (`billing:50054`, `dns:///billing:50054`)."""
    rest = target.split("://", 1)[-1].lstrip("/") if "://" in target else target
    if rest.startswith("unix:"):
        return {"server.address": rest.removeprefix("unix:")}
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return {"server.address": rest}
    return {"server.address": host.strip("[]"), "server.port": int(port)}


class _Outcomes:
    """How a call of one method ends, per status code: the outcome attributes on its span, the error status
    when the code is a failure, and the duration metric's attributes (`measured` and the outcome), each
    built once per code."""

    def __init__(self, measured: dict[str, Any], failures: Collection[grpc.StatusCode]) -> None:
        self._measured = measured
        self._failures = failures
        self._known: dict[grpc.StatusCode, tuple[dict[str, Any], dict[str, Any]]] = {}

    def end(self, span: trace.Span, code: grpc.StatusCode, duration: Histogram, started: float) -> None:
        """Say on `span` how the call ended, and record its duration since `started` (perf_counter)."""
        known = self._known.get(code)
        if known is None:
            outcome: dict[str, Any] = {"rpc.response.status_code": code.name}
            if code in self._failures:
                outcome["error.type"] = code.name
            known = self._known[code] = (outcome, {**self._measured, **outcome})
        outcome, measured = known
        if code in self._failures:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.set_attributes(outcome)
        duration.record(time.perf_counter() - started, measured)


class ServerTracing:
    """A SERVER span and the `rpc.server.call.duration` metric for every unary call, one `TracedMethod` per
    method. The kit's one interceptor (`services.kit.interceptors.KitInterceptor`) runs it outermost: the
    span covers the kit's own checks, so their refusals and the audit append are in it."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(__name__, schema_url=SCHEMA_URL, tracer_provider=tracer_provider)
        meter = metrics.get_meter(__name__, schema_url=SCHEMA_URL, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "rpc.server.call.duration", unit="s", description="Measures the duration of an incoming RPC."
        )
        self._routes: dict[str, TracedMethod | None] = {}

    def route(self, full_method: str) -> TracedMethod | None:
        """How calls of `full_method` (`/pkg.Service/Method`) are traced; None for health and reflection."""
        if full_method not in self._routes:
            method = full_method.lstrip("/")
            traced = method.partition("/")[0] not in UNTRACED_SERVICES
            self._routes[full_method] = TracedMethod(self._tracer, self._duration, method) if traced else None
        return self._routes[full_method]


class TracedMethod:
    """The server span and duration metric of one method's calls. What does not change from one call to the
    next — the span's name and rpc attributes, the outcome attributes and the metric's attributes of each
    status code — is built once; a peer's `network.peer.*` once per peer."""

    def __init__(self, tracer: trace.Tracer, duration: Histogram, method: str) -> None:
        self._tracer = tracer
        self._duration = duration
        self._method = method
        self._attributes = _rpc_attributes(method)
        self._outcomes = _Outcomes({"rpc.system.name": "grpc", "rpc.method": method}, _SERVER_ERRORS)

    async def around(
        self,
        request: Any,
        context: grpc.aio.ServicerContext,
        call_next: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    ) -> Any:
        carrier = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            self._method,
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={**self._attributes, **_peer(context.peer() or "")},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            code = grpc.StatusCode.OK
            try:
                response = await call_next(request, context)
                code = _status(context.code(), grpc.StatusCode.OK)
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = _status(context.code(), grpc.StatusCode.UNKNOWN)
                raise
            except Exception:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                self._outcomes.end(span, code, self._duration, started)


def _status(value: Any, default: grpc.StatusCode) -> grpc.StatusCode:
    return value if isinstance(value, grpc.StatusCode) else default


class _ClientTracing(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, target: str, tracer: trace.Tracer, duration: Histogram) -> None:
        self._address = target_address(target)
        self._tracer = tracer
        self._duration = duration
        # Per method called (a channel calls a handful): its name, span attributes and how its calls end.
        self._methods: dict[Any, tuple[str, dict[str, Any], _Outcomes]] = {}

    def _method(self, given: Any) -> tuple[str, dict[str, Any], _Outcomes]:
        known = self._methods.get(given)
        if known is None:
            method = (given.decode() if isinstance(given, bytes) else str(given)).lstrip("/")
            measured = {"rpc.system.name": "grpc", "rpc.method": method, **self._address}
            known = self._methods[given] = (
                method,
                {**_rpc_attributes(method), **self._address},
                _Outcomes(measured, _CLIENT_ERRORS),
            )
        return known

    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        method, attributes, outcomes = self._method(client_call_details.method)
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            metadata = grpc.aio.Metadata(*(tuple(client_call_details.metadata or ())))
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            for key, value in carrier.items():
                metadata.add(key, value)
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            code = grpc.StatusCode.UNKNOWN
            try:
                call = await continuation(details, request)
                code = await call.code()
                return call
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AioRpcError as error:
                code = error.code()
                raise
            finally:
                outcomes.end(span, code, self._duration, started)


def client_interceptors(target: str) -> list[grpc.aio.ClientInterceptor]:
    """What a channel to another Parcours service carries: a CLIENT span per call, the trace context in
    its metadata, the `rpc.client.call.duration` metric."""
    tracer = trace.get_tracer(__name__, schema_url=SCHEMA_URL)
    meter = metrics.get_meter(__name__, schema_url=SCHEMA_URL)
    duration = meter.create_histogram(
        "rpc.client.call.duration", unit="s", description="Measures the duration of an outgoing RPC."
    )
    return [_ClientTracing(target, tracer, duration)]


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
    StatementInstrumentor().instrument(tracer_provider=DatabaseTracerProvider(tracer_provider))
    if json_logs:
        configure_logging()
