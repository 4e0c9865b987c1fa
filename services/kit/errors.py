"""Domain errors and their mapping to canonical gRPC codes with google.rpc.Status details.

Handlers raise these; the error interceptor turns them into statuses. Business refusals carry a stable
UPPER_SNAKE `reason` in `google.rpc.ErrorInfo`; bad input carries `google.rpc.BadRequest` field violations.
Anything else becomes INTERNAL with no detail (and is logged with its trace id, without patient data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

ERROR_DOMAIN = "parcours.health"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (`ins.matricule`) and why."""

    field: str
    description: str


class DomainError(Exception):
    """A refusal a client can act on."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """Bad input: names every offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation], reason: str = "INVALID_ARGUMENT") -> None:
        described = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(reason, f"invalid request: {described}")
        self.violations = list(violations)

    @classmethod
    def one(cls, field_path: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field_path, description)])


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent change won; retrying may succeed."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


@dataclass
class ErrorSummary:
    """What the audit log and metrics keep of an outcome (never a message with patient data)."""

    code: grpc.StatusCode
    reason: str = ""
    details: list[str] = field(default_factory=list)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a call another service refused ('' if it carries none)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
