"""The gRPC services the console is a client of, called as the signed-in officer's delegate.

Each call carries the console's client certificate (mutual TLS, CN `parcours-console`) and a delegate token
naming the officer (services/console/security.py): the service authorises, scopes and audits the officer.
A refusal comes back as a `ServiceError` with the service's stable reason and its field violations, which the
pages show in French (services/console/french.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from parcours.billing.v1 import billing_pb2_grpc
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc

from services.console.security import DelegateTokens, Officer
from services.console.settings import ConsoleSettings
from services.kit.server import open_channel

logger = logging.getLogger(__name__)

Response = TypeVar("Response")


@dataclass
class ServiceError(Exception):
    """A call the service refused (or could not answer)."""

    service: str
    code: grpc.StatusCode
    reason: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""

    def __str__(self) -> str:
        return f"{self.service}: {self.code.name} {self.reason}".strip()

    @property
    def hidden(self) -> bool:
        """A case the officer may not see, or that does not exist: the same answer either way."""
        return self.code in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.NOT_FOUND,
        ) and self.reason in (
            "",
            "CASE_NOT_VISIBLE",
            "NOT_FOUND",
        )


class Hub:
    """Channels to the configured services and the officer's calls on them."""

    SERVICES = ("contracts", "directory", "billing", "expertise", "scheduling")

    def __init__(self, settings: ConsoleSettings, tokens: DelegateTokens) -> None:
        self._settings = settings
        self._tokens = tokens
        self._timeout = settings.rpc_timeout_seconds
        self.channels: dict[str, grpc.aio.Channel] = {}
        for name in self.SERVICES:
            address = getattr(settings, f"{name}_address")
            if address:
                self.channels[name] = open_channel(settings, address)
        self.contracts = (
            contracts_pb2_grpc.ContractServiceStub(self.channels["contracts"])
            if "contracts" in self.channels
            else None
        )
        self.directory = (
            directory_pb2_grpc.DirectoryServiceStub(self.channels["directory"])
            if "directory" in self.channels
            else None
        )
        self.billing = (
            billing_pb2_grpc.BillingServiceStub(self.channels["billing"])
            if "billing" in self.channels
            else None
        )
        self.expertise = (
            expertise_pb2_grpc.ExpertiseServiceStub(self.channels["expertise"])
            if "expertise" in self.channels
            else None
        )
        self.scheduling = (
            scheduling_pb2_grpc.SchedulingServiceStub(self.channels["scheduling"])
            if "scheduling" in self.channels
            else None
        )

    async def call(
        self, officer: Officer, service: str, method: Callable[..., Awaitable[Response]], request: Any
    ) -> Response:
        """`method(request)` with the officer's delegate token; ServiceError when refused or unreachable."""
        metadata = (("authorization", f"Bearer {self._tokens.token(officer)}"),)
        try:
            return await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise service_error(service, error) from None

    def require(self, name: str) -> None:
        if name not in self.channels:
            raise ServiceError(name, grpc.StatusCode.UNAVAILABLE, "SERVICE_NOT_CONFIGURED")

    async def readiness(self, wait_seconds: float = 1.0) -> dict[str, bool]:
        """Each configured channel: connected now, or within `wait_seconds` (an idle channel connects
        first)."""

        async def ready(channel: grpc.aio.Channel) -> bool:
            try:
                await asyncio.wait_for(channel.channel_ready(), wait_seconds)
            except TimeoutError:
                return False
            return True

        names = list(self.channels)
        results = await asyncio.gather(*(ready(self.channels[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def service_error(service: str, error: grpc.aio.AioRpcError) -> ServiceError:
    reason = ""
    violations: list[tuple[str, str]] = []
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not reason:
        reason = "SERVICE_UNAVAILABLE"
    logger.info("%s refused a call: %s %s", service, code.name, reason)
    return ServiceError(service, code, reason, violations, error.details() or "")
