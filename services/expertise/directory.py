"""The directory as the expertise service uses it: over gRPC with the service's component certificate.

Reference data (establishments, practitioners, expertise offers) changes rarely and is read on every request,
so it is cached for a short while (`directory_cache_seconds`); patients are always read afresh (the directory
audits each read). The component certificate makes the service a privileged caller of the directory: the
GHT scoping of patients is therefore checked here, by the service, for the practitioner it acts for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.type.v1 import practice_pb2

from services.kit.errors import Unavailable

T = TypeVar("T")
CALL_TIMEOUT_SECONDS = 5.0


class DirectoryClient:
    def __init__(self, stub: directory_pb2_grpc.DirectoryServiceStub, *, cache_seconds: float) -> None:
        self._stub = stub
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}

    async def _cached(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = await load()
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._cache_seconds, value)
        return value

    @staticmethod
    async def _or_none(call: Awaitable[T]) -> T | None:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            raise Unavailable(
                "DIRECTORY_UNAVAILABLE", "the directory cannot be reached; retry later"
            ) from error

    async def establishment(self, name: str) -> directory_pb2.Establishment | None:
        async def load() -> directory_pb2.Establishment | None:
            reply = await self._or_none(
                self._stub.GetEstablishment(
                    directory_pb2.GetEstablishmentRequest(name=name), timeout=CALL_TIMEOUT_SECONDS
                )
            )
            return reply.establishment if reply is not None else None

        return await self._cached(("establishment", name), load)

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None:
        async def load() -> directory_pb2.Practitioner | None:
            reply = await self._or_none(
                self._stub.GetPractitioner(
                    directory_pb2.GetPractitionerRequest(name=name), timeout=CALL_TIMEOUT_SECONDS
                )
            )
            return reply.practitioner if reply is not None else None

        return await self._cached(("practitioner", name), load)

    async def offers(
        self, specialty: practice_pb2.Specialty.ValueType, *, ght: str = "", region: str = ""
    ) -> list[directory_pb2.ExpertiseOffer]:
        """Every accepting offer of a specialty for a GHT (`ghts/{id}`) or region-wide (`regions/{code}`)."""

        async def load() -> list[directory_pb2.ExpertiseOffer]:
            found: list[directory_pb2.ExpertiseOffer] = []
            token = ""
            while True:
                reply = await self._or_none(
                    self._stub.ListExpertiseOffers(
                        directory_pb2.ListExpertiseOffersRequest(
                            specialty=specialty, ght=ght, region=region, page_size=500, page_token=token
                        ),
                        timeout=CALL_TIMEOUT_SECONDS,
                    )
                )
                if reply is None:
                    return found
                found += [o for o in reply.expertise_offers if o.accepting]
                token = reply.next_page_token
                if not token:
                    return found

        return await self._cached(("offers", str(specialty), ght, region), load)

    async def patient(self, name: str) -> directory_pb2.Patient | None:
        reply = await self._or_none(
            self._stub.GetPatient(directory_pb2.GetPatientRequest(name=name), timeout=CALL_TIMEOUT_SECONDS)
        )
        return reply.patient if reply is not None else None
