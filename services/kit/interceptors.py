"""The kit's server interceptors, outermost first:

1. `ErrorInterceptor` — domain errors → canonical codes with google.rpc.Status details (BadRequest field
   violations, ErrorInfo with a stable reason); anything unexpected → INTERNAL with no detail, logged with
   its trace id.
2. `AuthenticationInterceptor` — the client certificate and bearer token → `Principal`.
3. `AuditInterceptor` — for methods whose policy says `patient_data` or `audited` (decisions on cases,
   reads of professionals' personal data), appends an audit record with the outcome, including refusals.
4. `AuthorizationInterceptor` — the method's roles (from its proto `access` option) → PERMISSION_DENIED.
5. `PracticeInterceptor` — for services that declare it: a practitioner's token presented through an
   establishment where they do not practise → PERMISSION_DENIED `PRACTITIONER_NOT_AT_ESTABLISHMENT`, for every
   method (the binding is a property of the credentials, not of the method), before the request is looked at.
6. `ValidationInterceptor` — a body that is not a valid message of its type, a Timestamp or Duration outside
   the range protobuf defines, then the request's protovalidate rules → INVALID_ARGUMENT naming each field.
   It runs after authentication: an unauthenticated caller learns nothing about how its body was read.

grpc.aio decodes a request before any interceptor sees it; the kit's server registers every service's
handlers with a tolerant decoder (`tolerant_handler`) that hands an `Undecodable` on instead of raising, so a
corrupt body becomes one INVALID_ARGUMENT (and one rate-limited log line) rather than UNKNOWN and a traceback.

The kit's tracing interceptor (`services.kit.telemetry.ServerTracing`) runs before all of them, so every span
and log line carries the trace, and records the RED metric `rpc.server.call.duration`. The policies come
from the proto method options, so the contract and the check are one thing; a method without a policy is
refused at server start, not at call time.
"""

from __future__ import annotations

import abc
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


class _UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Wraps the behaviour of unary-unary methods; Parcours exposes no streaming methods."""

    def __init__(self) -> None:
        self._infos: dict[str, MethodInfo] = {}

    def _info(self, full_method: str) -> MethodInfo:
        info = self._infos.get(full_method)
        if info is None:
            info = self._infos[full_method] = method_info(full_method)
        return info

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        info = self._info(handler_call_details.method)
        if info.open and not self.applies_to_open_services:
            return handler
        inner: Behavior = handler.unary_unary

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.around(info, request, context, inner)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    applies_to_open_services = False

    @abc.abstractmethod
    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        """Run the call through this interceptor's concern."""


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


class ErrorInterceptor(_UnaryInterceptor):
    applies_to_open_services = False

    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        try:
            return await call_next(request, context)
        except DomainError as error:
            await context.abort_with_status(rpc_status.to_status(status_for(error)))
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            # A database failure the client can retry (services.kit.db): UNAVAILABLE or ABORTED, not INTERNAL.
            retryable = retryable_error(error)
            if retryable is not None:
                log.warning("%s answered %s (%s)", info.full_method, retryable.reason, type(error).__name__)
                await context.abort_with_status(rpc_status.to_status(status_for(retryable)))
            else:
                # Its text may quote request content: keep it in the server log, tied to the trace.
                log.exception("unexpected error in %s", info.full_method)
                await context.abort_with_status(rpc_status.to_status(_internal_status()))


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


class AuthenticationInterceptor(_UnaryInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self._authenticator = authenticator

    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        principal = self._authenticator.authenticate(_common_name(context), _metadata(context))
        span = trace.get_current_span()
        # Roles and the establishment only: never the practitioner's or patient's identity in spans.
        span.set_attribute("parcours.roles", principal.role_names())
        if principal.establishment:
            span.set_attribute("parcours.establishment", principal.establishment)
        token = set_principal(principal)
        try:
            return await call_next(request, context)
        finally:
            reset_principal(token)


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


class AuditInterceptor(_UnaryInterceptor):
    def __init__(self, audit_log: audit.AuditLog) -> None:
        super().__init__()
        self._log = audit_log

    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        if info.policy is None or not (info.policy.patient_data or info.policy.audited):
            return await call_next(request, context)
        target = audit.begin_call()
        failure: BaseException | None = None
        try:
            return await call_next(request, context)
        except BaseException as error:
            failure = error
            raise
        finally:
            await self._append(info, context, target, failure)

    async def _append(
        self,
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
            await self._log.append_all(records)
        except Exception as exc:
            # Fail closed: a read that cannot be audited is not answered. A database outage is one line per
            # call, not a traceback each.
            if retryable_error(exc) is None:
                log.exception("audit append failed for %s", info.full_method)
            else:
                log.warning("audit append failed for %s: %s", info.full_method, type(exc).__name__)
            raise Unavailable(
                "AUDIT_UNAVAILABLE", "the audit log cannot record this call; retry later"
            ) from exc


# ---------------------------------------------------------------------------------------------------------
# 4. authorization


class AuthorizationInterceptor(_UnaryInterceptor):
    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        if info.policy is None:
            raise PermissionDenied("METHOD_HAS_NO_POLICY", "this method is not open to any caller")
        allowed = list(info.policy.roles)
        if allowed and not current_principal().has_any(allowed):
            names = ", ".join(options_pb2.Role.Name(r) for r in allowed)
            raise PermissionDenied("ROLE_REQUIRED", f"this method requires one of the roles: {names}")
        return await call_next(request, context)


# ---------------------------------------------------------------------------------------------------------
# 5. token binding


class PracticeInterceptor(_UnaryInterceptor):
    """Runs the token-binding check of the services that declare one (by full service name)."""

    def __init__(self, bindings: Mapping[str, PracticeBinding]) -> None:
        super().__init__()
        self._bindings = dict(bindings)

    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        binding = self._bindings.get(info.service)
        if binding is not None:
            await binding.check(current_principal())
        return await call_next(request, context)


# ---------------------------------------------------------------------------------------------------------
# 6. validation


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


def violations_of(request: Message) -> list[FieldViolation]:
    out_of_range = time_range_violations(request)
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


class ValidationInterceptor(_UnaryInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self._undecodable_log = _RateLimitedLog(UNDECODABLE_LOG_INTERVAL_SECONDS)

    async def around(
        self, info: MethodInfo, request: Any, context: grpc.aio.ServicerContext, call_next: Behavior
    ) -> Any:
        if isinstance(request, Undecodable):
            # No traceback and no body: a corrupt body is the client's fault and may be sent in a loop.
            self._undecodable_log.warning(
                "undecodable request body for %s (%s)", info.full_method, request.error
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
        return await call_next(request, context)


def kit_interceptors(
    authenticator: Authenticator,
    audit_log: audit.AuditLog,
    practice: Mapping[str, PracticeBinding] | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The kit's interceptors in order (outermost first), after OpenTelemetry's; `practice` maps full
    service names to the token-binding check their calls go through."""
    return [
        ErrorInterceptor(),
        AuthenticationInterceptor(authenticator),
        AuditInterceptor(audit_log),
        AuthorizationInterceptor(),
        PracticeInterceptor(practice or {}),
        ValidationInterceptor(),
    ]
