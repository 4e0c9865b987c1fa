"""The kit's server interceptor (`KitInterceptor`): one interceptor running, outermost first,

1. errors — domain errors → canonical codes with google.rpc.Status details (BadRequest field violations,
   ErrorInfo with a stable reason); anything unexpected → INTERNAL with no detail, logged with its trace id.
2. authentication — the client certificate and bearer token → `Principal`.
3. audit — for methods whose policy says `patient_data` or `audited` (decisions on cases, reads of
   professionals' personal data), appends an audit record with the outcome, including refusals.
4. authorisation — the method's roles (from its proto `access` option) → PERMISSION_DENIED.
5. token binding — for services that declare it: a practitioner's token presented through an establishment
   where they do not practise → PERMISSION_DENIED `PRACTITIONER_NOT_AT_ESTABLISHMENT`, for every method (the
   binding is a property of the credentials, not of the method), before the request is looked at.
6. validation — a body that is not a valid message of its type, a Timestamp or Duration outside the range
   protobuf defines, then the request's protovalidate rules → INVALID_ARGUMENT naming each field. It runs
   after authentication: an unauthenticated caller learns nothing about how its body was read.

grpc.aio decodes a request before any interceptor sees it; the kit's server registers every service's
handlers with a tolerant decoder (`tolerant_handler`) that hands an `Undecodable` on instead of raising, so a
corrupt body becomes one INVALID_ARGUMENT (and one rate-limited log line) rather than UNKNOWN and a traceback.

The server span of `services.kit.telemetry.ServerTracing` wraps all of them, so every span and log line
carries the trace, and records the RED metric `rpc.server.call.duration`. The policies come from the proto
method options, so the contract and the check are one thing; a method without a policy is refused at server
start, not at call time.

Why one interceptor and not one per concern: grpc.aio runs every interceptor's `intercept_service` for every
call and each builds a new handler around the next, so eight interceptors were eight awaits, eight handlers
and eight nested coroutines per call — about twice the CPU of a small handler such as the directory's
GetPatient. The order and the behaviour of each concern are unchanged; what does not depend on the call (the
method's policy, whether it is audited, its token-binding check, its wrapped handler, its span's attributes)
is worked out once per method.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import protovalidate
from google.protobuf import any_pb2, descriptor, descriptor_pool
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from parcours.options.v1 import options_pb2

from services.kit import audit
from services.kit.auth import Authenticator, Principal, current_principal, reset_principal, set_principal
from services.kit.db import retryable_error
from services.kit.directory import PracticeBinding
from services.kit.errors import (
    ERROR_DOMAIN,
    DomainError,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from services.kit.pagination import PageTokens, reset_page_tokens, use_page_tokens
from services.kit.telemetry import ServerTracing

log = logging.getLogger(__name__)

# Services every server exposes without a principal: probes and reflection (mTLS still applies).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_AUDIT_CODES: dict[int, str] = {
    options_pb2.AUDIT_ACTION_CREATE: "C",
    options_pb2.AUDIT_ACTION_READ: "R",
    options_pb2.AUDIT_ACTION_UPDATE: "U",
    options_pb2.AUDIT_ACTION_DELETE: "D",
    options_pb2.AUDIT_ACTION_EXECUTE: "E",
}

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class MethodInfo:
    full_method: str  # "/pkg.Service/Method"
    service: str
    policy: options_pb2.AccessPolicy | None

    @property
    def open(self) -> bool:
        return self.service in OPEN_SERVICES


def method_info(full_method: str) -> MethodInfo:
    service, _, name = full_method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return MethodInfo(full_method, service, None)
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return MethodInfo(full_method, service, None)
    options = descriptor.GetOptions()
    policy = options.Extensions[options_pb2.access] if options.HasExtension(options_pb2.access) else None
    return MethodInfo(full_method, service, policy)


def policy_gaps(service_names: Sequence[str]) -> list[str]:
    """Methods whose access policy does not say who may call (roles) and how the call is audited (action)."""
    gaps: list[str] = []
    for service_name in service_names:
        service = descriptor_pool.Default().FindServiceByName(service_name)
        for method in service.methods:
            options = method.GetOptions()
            if not options.HasExtension(options_pb2.access):
                gaps.append(f"{method.full_name}: no (parcours.options.v1.access) policy")
                continue
            policy = options.Extensions[options_pb2.access]
            if not policy.roles:
                gaps.append(f"{method.full_name}: no roles")
            if policy.audit_action == options_pb2.AUDIT_ACTION_UNSPECIFIED:
                gaps.append(f"{method.full_name}: no audit action")
    return gaps


def require_policies(service_names: Sequence[str]) -> None:
    """Refuse to start a server exposing a method whose policy does not declare its roles and audit action:
    who may call is in the contract, never only in code."""
    gaps = policy_gaps(service_names)
    if gaps:
        raise RuntimeError("incomplete access policies: " + "; ".join(gaps))


# ---------------------------------------------------------------------------------------------------------
# 1. errors


def status_for(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status a domain error becomes."""
    details: list[any_pb2.Any] = []
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def _internal_status() -> status_pb2.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[info])


# ---------------------------------------------------------------------------------------------------------
# 2. authentication


def _common_name(context: grpc.aio.ServicerContext) -> str | None:
    values = context.auth_context().get("x509_common_name")
    if not values:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _metadata(context: grpc.aio.ServicerContext) -> Mapping[str, str]:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            found.setdefault(key.lower(), value)
    return found


# ---------------------------------------------------------------------------------------------------------
# 3. audit


def _outcome(error: BaseException | None, context: grpc.aio.ServicerContext) -> tuple[str, str]:
    if error is None:
        return "OK", ""
    if isinstance(error, DomainError):
        return error.code.name, error.reason
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), ""
    retryable = retryable_error(error)
    if retryable is not None:
        return retryable.code.name, retryable.reason
    return "INTERNAL", "INTERNAL"


async def _append_audit(
    audit_log: audit.AuditLog,
    info: MethodInfo,
    context: grpc.aio.ServicerContext,
    target: audit.AuditTarget,
    failure: BaseException | None,
) -> None:
    principal: Principal = current_principal()
    outcome, reason = _outcome(failure, context)
    span_context = trace.get_current_span().get_span_context()
    recorded_at = datetime.now(UTC)
    # One record per patient the call named (a List: each patient it returned), appended together.
    records = [
        audit.AuditRecord(
            recorded_at=recorded_at,
            practitioner=principal.practitioner or principal.subject,
            establishment=principal.establishment or (f"component/{principal.component}"),
            roles=principal.role_names(),
            action=_AUDIT_CODES.get(info.policy.audit_action if info.policy else 0, "E"),
            method=info.full_method,
            resource=target.resource,
            patient=patient,
            outcome=outcome,
            outcome_reason=reason,
            trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else "",
        )
        for patient in target.patients or [""]
    ]
    try:
        await audit_log.append_all(records)
    except Exception as exc:
        # Fail closed: a read that cannot be audited is not answered. A database outage is one line per
        # call, not a traceback each.
        if retryable_error(exc) is None:
            log.exception("audit append failed for %s", info.full_method)
        else:
            log.warning("audit append failed for %s: %s", info.full_method, type(exc).__name__)
        raise Unavailable("AUDIT_UNAVAILABLE", "the audit log cannot record this call; retry later") from exc


# ---------------------------------------------------------------------------------------------------------
# 6. validation (4. authorisation and 5. the token binding are a few lines of `KitInterceptor._checked`)


def _field_path(violation: protovalidate.Violation) -> str:
    parts: list[str] = []
    path = violation.proto.field
    for element in path.elements if path is not None else ():
        part = element.field_name
        subscript = element.subscript  # a protobuf-py Oneof(field=..., value=...) or None
        if subscript is not None:
            value = subscript.value
            part += f"[{value}]" if subscript.field == "index" else f"[{value!r}]"
        parts.append(part)
    return ".".join(parts)


# The ranges protobuf defines for its well-known types (google/protobuf/timestamp.proto, duration.proto):
# 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, and ±10,000 years. Values outside them are not
# instants or durations at all; rules and handlers may assume they never see one.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"


def _timestamp_problem(value: Message) -> str | None:
    seconds, nanos = value.seconds, value.nanos  # type: ignore[attr-defined]
    if not _TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1] or not 0 <= nanos <= _NANOS:
        return "is not an instant between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
    return None


def _duration_problem(value: Message) -> str | None:
    seconds, nanos = value.seconds, value.nanos  # type: ignore[attr-defined]
    if (
        not -_DURATION_SECONDS <= seconds <= _DURATION_SECONDS
        or not -_NANOS <= nanos <= _NANOS
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        return "is not a duration of at most 10,000 years with seconds and nanos of the same sign"
    return None


def _time_values(message: Message, prefix: str) -> Iterator[tuple[str, Message]]:
    """(field path, value) of every Timestamp and Duration set anywhere in the message."""
    for field, value in message.ListFields():
        if field.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
            continue
        path = f"{prefix}{field.name}"
        message_type = field.message_type
        assert message_type is not None  # a message field
        if message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            if value_field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    yield from _one_time_value(item, f"{path}[{key!r}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _one_time_value(item, f"{path}[{index}]")
        else:
            yield from _one_time_value(value, path)


def _one_time_value(value: Message, path: str) -> Iterator[tuple[str, Message]]:
    kind = value.DESCRIPTOR.full_name
    if kind in (_TIMESTAMP, _DURATION):
        yield path, value
    else:
        yield from _time_values(value, path + ".")


def time_range_violations(request: Message) -> list[FieldViolation]:
    """Every Timestamp or Duration of the request outside the range protobuf defines, by field path."""
    found: list[FieldViolation] = []
    for path, value in _time_values(request, ""):
        check = _timestamp_problem if value.DESCRIPTOR.full_name == _TIMESTAMP else _duration_problem
        problem = check(value)
        if problem is not None:
            found.append(FieldViolation(field=path, description=problem))
    return found


@functools.lru_cache(maxsize=1024)
def _holds_time(message_type: descriptor.Descriptor) -> bool:
    """Whether a message of this type can hold a Timestamp or Duration anywhere (if not, the range check has
    nothing to walk)."""
    seen: set[str] = set()
    pending = [message_type]
    while pending:
        current = pending.pop()
        if current.full_name in (_TIMESTAMP, _DURATION):
            return True
        if current.full_name not in seen:
            seen.add(current.full_name)
            pending.extend(f.message_type for f in current.fields if f.message_type is not None)
    return False


def violations_of(request: Message) -> list[FieldViolation]:
    out_of_range = time_range_violations(request) if _holds_time(request.DESCRIPTOR) else []
    if out_of_range:
        # protovalidate cannot evaluate a rule on such a value (it raises "Duration is out of range").
        return out_of_range
    try:
        found = protovalidate.collect_violations(request)
    except protovalidate.EvaluationError:
        # A rule that cannot be evaluated on this input is bad input, not a server fault. Its text names the
        # rule, not the field, and may quote the value: neither goes to the client.
        log.warning("a validation rule of %s could not be evaluated", request.DESCRIPTOR.full_name)
        return [FieldViolation(field="(request)", description="holds a value its rules cannot evaluate")]
    return [
        FieldViolation(field=_field_path(v) or "(request)", description=v.proto.message or v.proto.rule_id)
        for v in found
    ]


@dataclass(frozen=True)
class Undecodable:
    """A request body that is not a valid message of its type (corrupt wire format, invalid UTF-8 in a
    string, a bad varint, a group where none belongs): what the tolerant decoder hands on, not raising."""

    message_type: str
    error: str


def tolerant_decoder(decode: Callable[[bytes], Any], message_type: str) -> Callable[[bytes], Any]:
    """`decode`, returning an `Undecodable` where it would raise."""

    def tolerant(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as error:  # DecodeError, and whatever else a corrupt body makes the parser raise
            return Undecodable(message_type, type(error).__name__)

    return tolerant


def tolerant_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A unary-unary method handler whose request decoder never raises (see `Undecodable`)."""
    if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
        return handler
    decode = handler.request_deserializer
    message_type = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "request"
    return grpc.unary_unary_rpc_method_handler(
        handler.unary_unary,
        request_deserializer=tolerant_decoder(decode, name),
        response_serializer=handler.response_serializer,
    )


class _RateLimitedLog:
    """One log line per `interval` seconds at most, counting the ones it held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        held, self._held = self._held, 0
        self._next = now + self._interval
        log.warning(message + " (%d more since the last such line)", *args, held)


UNDECODABLE_LOG_INTERVAL_SECONDS = 10.0


# ---------------------------------------------------------------------------------------------------------
# the chain, as one interceptor


@dataclass(frozen=True)
class _Route:
    """What the chain decides about a method once, at its first call, rather than at every call."""

    info: MethodInfo
    audited: bool
    practice: PracticeBinding | None


class KitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """The kit's concerns 1-6 above, in that order, as one interceptor: one wrapper and one coroutine per
    call instead of one of each per concern, and each method's policy, audit and binding looked up once.

    Inside the call, outermost first: the server span (`tracing`, not for health and reflection), the error
    mapping, authentication, the audit record, authorisation, the token binding, validation, then the
    handler with the server's page-token signer current. Health and reflection get none of it (mTLS still
    applies): they name no principal.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        audit_log: audit.AuditLog,
        practice: Mapping[str, PracticeBinding] | None = None,
        *,
        page_tokens: PageTokens | None = None,
        tracing: ServerTracing | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._audit_log = audit_log
        self._practice = dict(practice or {})
        self._page_tokens = page_tokens
        self._tracing = tracing
        self._routes: dict[str, _Route] = {}
        # method → (the handler grpc found, the handler wrapping it): registered handlers are found again
        # and again, so their wrapper is built once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._undecodable_log = _RateLimitedLog(UNDECODABLE_LOG_INTERVAL_SECONDS)

    def _route(self, full_method: str) -> _Route:
        route = self._routes.get(full_method)
        if route is None:
            info = method_info(full_method)
            policy = info.policy
            route = self._routes[full_method] = _Route(
                info=info,
                audited=policy is not None and (policy.patient_data or policy.audited),
                practice=self._practice.get(info.service),
            )
        return route

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        route = self._route(method)
        if route.info.open:
            return handler
        inner: Behavior = handler.unary_unary
        traced = self._tracing.route(method) if self._tracing is not None else None

        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self._call(route, request, context, inner)

        async def spanned(request: Any, context: grpc.aio.ServicerContext) -> Any:
            assert traced is not None
            return await traced.around(request, context, checked)

        wrapped = grpc.unary_unary_rpc_method_handler(
            checked if traced is None else spanned,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _call(
        self, route: _Route, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        # 1. errors
        try:
            # 2. authentication
            principal = self._authenticator.authenticate(_common_name(context), _metadata(context))
            span = trace.get_current_span()
            # Roles and the establishment only: never the practitioner's or patient's identity in spans.
            span.set_attribute("parcours.roles", principal.role_names())
            if principal.establishment:
                span.set_attribute("parcours.establishment", principal.establishment)
            principal_token = set_principal(principal)
            try:
                if not route.audited:
                    return await self._checked(route, request, context, inner, principal)
                # 3. audit
                target = audit.begin_call()
                failure: BaseException | None = None
                try:
                    return await self._checked(route, request, context, inner, principal)
                except BaseException as error:
                    failure = error
                    raise
                finally:
                    await _append_audit(self._audit_log, route.info, context, target, failure)
            finally:
                reset_principal(principal_token)
        except DomainError as error:
            await context.abort_with_status(rpc_status.to_status(status_for(error)))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            # A database failure the client can retry (services.kit.db): UNAVAILABLE or ABORTED, not INTERNAL.
            retryable = retryable_error(error)
            if retryable is not None:
                log.warning(
                    "%s answered %s (%s)", route.info.full_method, retryable.reason, type(error).__name__
                )
                await context.abort_with_status(rpc_status.to_status(status_for(retryable)))
            else:
                # Its text may quote request content: keep it in the server log, tied to the trace.
                log.exception("unexpected error in %s", route.info.full_method)
                await context.abort_with_status(rpc_status.to_status(_internal_status()))

    async def _checked(
        self,
        route: _Route,
        request: Any,
        context: grpc.aio.ServicerContext,
        inner: Behavior,
        principal: Principal,
    ) -> Any:
        # 4. authorisation
        policy = route.info.policy
        if policy is None:
            raise PermissionDenied("METHOD_HAS_NO_POLICY", "this method is not open to any caller")
        if policy.roles and not principal.has_any(policy.roles):
            names = ", ".join(options_pb2.Role.Name(r) for r in policy.roles)
            raise PermissionDenied("ROLE_REQUIRED", f"this method requires one of the roles: {names}")
        # 5. token binding
        if route.practice is not None:
            await route.practice.check(principal)
        # 6. validation
        if isinstance(request, Undecodable):
            # No traceback and no body: a corrupt body is the client's fault and may be sent in a loop.
            self._undecodable_log.warning(
                "undecodable request body for %s (%s)", route.info.full_method, request.error
            )
            raise InvalidArgument(
                [
                    FieldViolation(
                        field="(request)",
                        description=f"is not a valid {request.message_type} in the protobuf wire format",
                    )
                ],
                reason="UNDECODABLE_REQUEST",
            )
        if isinstance(request, Message):
            found = violations_of(request)
            if found:
                raise InvalidArgument(found)
        if self._page_tokens is None:
            return await inner(request, context)
        tokens = use_page_tokens(self._page_tokens)
        try:
            return await inner(request, context)
        finally:
            reset_page_tokens(tokens)


def kit_interceptors(
    authenticator: Authenticator,
    audit_log: audit.AuditLog,
    practice: Mapping[str, PracticeBinding] | None = None,
    *,
    page_tokens: PageTokens | None = None,
    tracing: ServerTracing | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The kit's server interceptors: `KitInterceptor` (see it); `practice` maps full service names to the
    token-binding check their calls go through, `tracing` gives every call but health and reflection its
    server span, and `page_tokens` is the signer current in handlers."""
    return [KitInterceptor(authenticator, audit_log, practice, page_tokens=page_tokens, tracing=tracing)]
