"""Calling our servers as a client does, and reading what a refusal carries."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, list[tuple[str, str]]]:
    """The ErrorInfo and the (field, description) violations a refused call carries."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[tuple[str, str]] = []
    assert status is not None, "a refusal must carry google.rpc.Status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return info, violations


async def call(coro: object) -> grpc.aio.AioRpcError:
    """Await a call that must fail; its error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro  # type: ignore[misc]
    return caught.value
