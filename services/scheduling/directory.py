"""What scheduling asks the directory, with a short-lived cache.

Scheduling calls the directory with its own component certificate (ROLE_HUB_SERVICE): practitioners and
establishments when a schedule is created, the patient (which establishments know them) and the caller's
establishment (its GHT) when an appointment is made. Answers are kept `ttl` seconds, so a burst of bookings
does not become a burst of directory calls; a missing resource is never cached (it may be created next).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.kit.errors import Unavailable

T = TypeVar("T")

CALL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class PatientScope:
    """The patient facts scheduling needs: that they exist and which establishments know them."""

    name: str
    establishments: frozenset[str]


class _TtlCache(Generic[T]):
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, T]] = {}

    def peek(self, key: str) -> T | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def get(self, key: str, load: Callable[[], Awaitable[T | None]]) -> T | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if value is not None and self._ttl > 0:
            if len(self._entries) > 50_000:
                self._entries.clear()
            self._entries[key] = (now + self._ttl, value)
        return value


class DirectoryLookup:
    def __init__(self, stub: directory_pb2_grpc.DirectoryServiceStub, ttl: float) -> None:
        self._stub = stub
        self._practitioners: _TtlCache[directory_pb2.Practitioner] = _TtlCache(ttl)
        self._establishments: _TtlCache[directory_pb2.Establishment] = _TtlCache(ttl)
        self._patients: _TtlCache[PatientScope] = _TtlCache(ttl)

    async def practitioner(self, rpps: str) -> directory_pb2.Practitioner | None:
        async def load() -> directory_pb2.Practitioner | None:
            reply = await self._call(
                self._stub.GetPractitioner(
                    directory_pb2.GetPractitionerRequest(name=f"practitioners/{rpps}"),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            )
            return reply.practitioner if reply is not None else None

        return await self._practitioners.get(rpps, load)

    async def establishment(self, finess: str) -> directory_pb2.Establishment | None:
        async def load() -> directory_pb2.Establishment | None:
            reply = await self._call(
                self._stub.GetEstablishment(
                    directory_pb2.GetEstablishmentRequest(name=f"establishments/{finess}"),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            )
            return reply.establishment if reply is not None else None

        return await self._establishments.get(finess, load)

    async def ght_of(self, finess: str) -> str | None:
        """The GHT id of an establishment (None outside any GHT or unknown)."""
        found = self._establishments.peek(finess) or await self.establishment(finess)
        if found is None or not found.ght:
            return None
        return found.ght.removeprefix("ghts/")

    async def patient(self, patient_name: str) -> PatientScope | None:
        cached = self._patients.peek(patient_name)
        if cached is not None:
            return cached

        async def load() -> PatientScope | None:
            reply = await self._call(
                self._stub.GetPatient(
                    directory_pb2.GetPatientRequest(name=patient_name), timeout=CALL_TIMEOUT_SECONDS
                )
            )
            if reply is None:
                return None
            known = frozenset(
                local.establishment.removeprefix("establishments/")
                for local in reply.patient.local_identifiers
            )
            return PatientScope(name=reply.patient.name, establishments=known)

        return await self._patients.get(patient_name, load)

    async def _call(self, call: Awaitable[T]) -> T | None:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(
                "DIRECTORY_UNAVAILABLE", "the directory cannot answer right now; retry later"
            ) from error
