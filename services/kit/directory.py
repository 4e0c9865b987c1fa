"""The directory as every Parcours service uses it: one typed client, one caching policy, and the two rules
that decide who may act on what — patient visibility and the binding of a token to an establishment.

Patient visibility (the directory owns the data, so the directory applies it). A caller acting through
establishment E sees a patient when E, or an establishment of E's GHT, knows the patient (a local IPP). Hub
operators and Parcours components acting on their own behalf see every patient. A patient the caller may not
see and a patient that does not exist get the same answer, everywhere: PERMISSION_DENIED
`PATIENT_NOT_VISIBLE` with the same message (`patient_not_visible()`), so no id can be probed. A service
never applies the rule itself: it asks the directory *on behalf of its caller* (`DirectoryClient.patient`,
which names the caller in call metadata, see `services.kit.auth`), and gets the patient or `None`.

Token binding. A practitioner's token is accepted only through an establishment where that practitioner
practises: the calling establishment is one of their practice places, or shares its GHT with one (a GHT
runs a convergent information system, art. L.6132-3 CSP, so a GHT's doctors reach the hub through its
shared systems). Otherwise every call is refused with PERMISSION_DENIED `PRACTITIONER_NOT_AT_ESTABLISHMENT`.
`PracticeBinding` checks it; the kit's interceptor runs it for the services that declare it in their
`ServiceBinding`, before any handler.

Caching (one policy: found answers are kept `cache_seconds`, default 60 s; misses are never kept, so a
resource created or a patient linked a moment ago is usable at once).
- Reference data — establishments, practitioners with their practice places, expertise offers — is read on
  almost every call and changes rarely. Consequence for the token binding: a practitioner removed from an
  establishment may keep acting through it, and one just added may be refused, for at most `cache_seconds`.
- Patient visibility (`require_visible`, for the services that need to know only that the caller may act on
  the patient, not the patient's data): a yes is kept for that one caller — the same establishment, token
  subject and practitioner — and that one patient. Why it is safe:
  * no caller is answered from another caller's read, so the cache tells nobody, not even through timing,
    what anyone else looked at;
  * visibility only grows: local identifiers are never removed. It shrinks only when an operator moves an
    establishment (the caller's, or one that knows the patient) out of a GHT; a caller may then act on the
    patient for at most `cache_seconds` more — the bound the token binding already has, and GHTs change
    by decree, not by the minute;
  * the directory records the first read (within `cache_seconds`); every call of the acting service is
    audited there with the patient named (`audit_target`), so the record of who acted on which patient is
    complete.
- Patient data (`patient`, `require_patient`) is never cached: traits change (identity vigilance), and the
  caller must get what the directory holds now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

import grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.type.v1 import practice_pb2

from services.kit.auth import ACTING_ESTABLISHMENT_HEADER, ACTING_PRACTITIONER_HEADER, Principal
from services.kit.errors import NotFound, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT_SECONDS = 5.0
Metadata = tuple[tuple[str, str], ...]


# --- The visibility rule's inputs and its uniform answers ---------------------------------------------------


def patient_scope(principal: Principal) -> str | None:
    """The establishment (`establishments/{finess}`) whose GHT bounds the patients a principal sees.

    None: the principal sees every patient (a hub operator, a component acting on its own behalf). '': it
    sees none (a restricted principal without an establishment, e.g. a token without a certificate in
    development mode).
    """
    if principal.unrestricted:
        return None
    return principal.establishment


def patient_not_visible() -> PermissionDenied:
    """The one answer for a patient the caller may not see or that does not exist (every service)."""
    return PermissionDenied(
        "PATIENT_NOT_VISIBLE", "the patient is not known in the caller's GHT (or does not exist)"
    )


def patient_not_found() -> NotFound:
    """The answer to an unrestricted caller (hub operator, component) for a patient that does not exist."""
    return NotFound("PATIENT_NOT_FOUND", "no such patient")


def not_at_establishment() -> PermissionDenied:
    return PermissionDenied(
        "PRACTITIONER_NOT_AT_ESTABLISHMENT",
        "the practitioner does not practise at the calling establishment or in its GHT",
    )


def acting_metadata(principal: Principal) -> Metadata:
    """Call metadata naming the caller a component acts for; empty when the caller sees every patient."""
    if patient_scope(principal) is None:
        return ()
    found: list[tuple[str, str]] = [(ACTING_ESTABLISHMENT_HEADER, principal.establishment)]
    if principal.practitioner:
        found.append((ACTING_PRACTITIONER_HEADER, principal.practitioner))
    return tuple(found)


# --- Token binding ------------------------------------------------------------------------------------------


def practice_place(
    practitioner: directory_pb2.Practitioner,
    calling: directory_pb2.Establishment,
    places: Sequence[directory_pb2.Establishment],
) -> directory_pb2.Establishment | None:
    """Where a practitioner acting through `calling` practises: `calling` itself when it is one of their
    practice places, else their practice place in the same GHT; None when they practise in neither, or are
    not active. `places` are the establishments of the practitioner's practice places."""
    if not practitioner.active:
        return None
    if calling.name in {p.establishment for p in practitioner.practice_places}:
        return calling
    if calling.ght:
        for place in places:
            if place.ght == calling.ght:
                return place
    return None


class ReferenceData(Protocol):
    """Reference data by resource name; None when there is no such resource."""

    async def establishment(self, name: str) -> directory_pb2.Establishment | None: ...

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None: ...


class PracticeBinding:
    """The token-binding rule over any source of reference data (the directory's store, or the client)."""

    def __init__(self, reference: ReferenceData) -> None:
        self._reference = reference

    async def place(self, principal: Principal) -> directory_pb2.Establishment | None:
        """The practice place the principal's practitioner acts from (see `practice_place`), or None."""
        if not principal.establishment or not principal.practitioner:
            return None
        calling = await self._reference.establishment(principal.establishment)
        practitioner = await self._reference.practitioner(principal.practitioner)
        if calling is None or practitioner is None:
            return None
        places = [await self._reference.establishment(p.establishment) for p in practitioner.practice_places]
        return practice_place(practitioner, calling, [p for p in places if p is not None])

    async def check(self, principal: Principal) -> None:
        """Refuse a practitioner's token presented through an establishment where they do not practise.

        Applies to a practitioner's token presented with an establishment's certificate; components (their
        certificate vouches for them, and for whom they act) and staff tokens without an RPPS are not bound.
        """
        if principal.component or not principal.practitioner or not principal.establishment:
            return
        if await self.place(principal) is None:
            raise not_at_establishment()


# --- Caching ------------------------------------------------------------------------------------------------


class TtlCache(Generic[T]):
    """Found values kept `ttl` seconds (misses are never kept); bounded, cleared when full."""

    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[object, tuple[float, T]] = {}

    async def get(self, key: object, load: Callable[[], Awaitable[T | None]]) -> T | None:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if value is not None and self._ttl > 0:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (now + self._ttl, value)
        return value


class CachedReference:
    """A `ReferenceData` keeping found establishments and practitioners for `ttl` seconds."""

    def __init__(self, source: ReferenceData, ttl: float) -> None:
        self._source = source
        self._establishments: TtlCache[directory_pb2.Establishment] = TtlCache(ttl)
        self._practitioners: TtlCache[directory_pb2.Practitioner] = TtlCache(ttl)

    async def establishment(self, name: str) -> directory_pb2.Establishment | None:
        return await self._establishments.get(name, lambda: self._source.establishment(name))

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None:
        return await self._practitioners.get(name, lambda: self._source.practitioner(name))


# --- The client ---------------------------------------------------------------------------------------------


def _unavailable(error: grpc.aio.AioRpcError, method: str) -> Unavailable:
    log.warning("directory %s failed: %s", method, error.code().name)
    return Unavailable("DIRECTORY_UNAVAILABLE", "the directory cannot answer right now; retry later")


class _GrpcReference:
    def __init__(self, stub: directory_pb2_grpc.DirectoryServiceStub, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout

    async def establishment(self, name: str) -> directory_pb2.Establishment | None:
        try:
            reply: directory_pb2.GetEstablishmentResponse = await self._stub.GetEstablishment(
                directory_pb2.GetEstablishmentRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable(error, "GetEstablishment") from error
        return reply.establishment

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None:
        try:
            reply: directory_pb2.GetPractitionerResponse = await self._stub.GetPractitioner(
                directory_pb2.GetPractitionerRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable(error, "GetPractitioner") from error
        return reply.practitioner


class DirectoryClient:
    """The directory over gRPC, called with this component's certificate (see the module docstring).

    Resources are named as in the API (`establishments/{finess}`, `practitioners/{rpps}`, `patients/{id}`).
    A missing resource is None; a directory that cannot answer is UNAVAILABLE `DIRECTORY_UNAVAILABLE`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        cache_seconds: float = 60.0,
        timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> None:
        self._stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        self._timeout = timeout
        self._reference = CachedReference(_GrpcReference(self._stub, timeout), cache_seconds)
        self._offers: TtlCache[list[directory_pb2.ExpertiseOffer]] = TtlCache(cache_seconds)
        self._visible: TtlCache[bool] = TtlCache(cache_seconds)
        self.practice = PracticeBinding(self._reference)

    # --- reference data (cached) ---

    async def establishment(self, name: str) -> directory_pb2.Establishment | None:
        return await self._reference.establishment(name)

    async def practitioner(self, name: str) -> directory_pb2.Practitioner | None:
        return await self._reference.practitioner(name)

    async def ght_of(self, establishment: str) -> str | None:
        """The GHT (`ghts/{id}`) of an establishment; None when it has none or is unknown."""
        found = await self.establishment(establishment)
        return found.ght if found is not None and found.ght else None

    async def offers(
        self, specialty: practice_pb2.Specialty.ValueType, *, ght: str = "", region: str = ""
    ) -> list[directory_pb2.ExpertiseOffer]:
        """The accepting expertise offers of a specialty for a GHT (`ghts/{id}`) or region-wide
        (`regions/{code}`), every page."""

        async def load() -> list[directory_pb2.ExpertiseOffer]:
            found: list[directory_pb2.ExpertiseOffer] = []
            token = ""
            while True:
                try:
                    reply: directory_pb2.ListExpertiseOffersResponse = await self._stub.ListExpertiseOffers(
                        directory_pb2.ListExpertiseOffersRequest(
                            specialty=specialty, ght=ght, region=region, page_size=500, page_token=token
                        ),
                        timeout=self._timeout,
                    )
                except grpc.aio.AioRpcError as error:
                    raise _unavailable(error, "ListExpertiseOffers") from error
                found += [o for o in reply.expertise_offers if o.accepting]
                token = reply.next_page_token
                if not token:
                    return found

        offers = await self._offers.get((int(specialty), ght, region), load)
        return list(offers or ())

    # --- token binding ---

    async def practice_place(self, principal: Principal) -> directory_pb2.Establishment | None:
        """Where the principal's practitioner acts from (see `practice_place`); None when nowhere."""
        return await self.practice.place(principal)

    async def require_practice_place(self, principal: Principal) -> directory_pb2.Establishment:
        """The principal's practice place; PERMISSION_DENIED when there is none to act from."""
        if not principal.establishment:
            raise PermissionDenied(
                "ESTABLISHMENT_REQUIRED", "the call must come from an establishment's information system"
            )
        found = await self.practice.place(principal)
        if found is None:
            raise not_at_establishment()
        return found

    async def practises_at(self, practitioner: str, establishment: str) -> bool:
        """Whether `practitioner` may act through `establishment` (the token-binding rule)."""
        calling = await self.establishment(establishment)
        found = await self.practitioner(practitioner)
        if calling is None or found is None:
            return False
        places = [await self.establishment(p.establishment) for p in found.practice_places]
        return practice_place(found, calling, [p for p in places if p is not None]) is not None

    # --- patients (their data never cached; a caller's visibility, see the module docstring) ---

    async def patient(self, name: str, principal: Principal) -> directory_pb2.Patient | None:
        """The patient as `principal` may see it, or None — for a hidden and a missing patient alike.

        Asked on behalf of the principal: the directory applies the visibility rule, audits the read with
        the principal's establishment and practitioner, and returns only what that caller's GHT may see.
        """
        if patient_scope(principal) == "":
            return None
        try:
            reply: directory_pb2.GetPatientResponse = await self._stub.GetPatient(
                directory_pb2.GetPatientRequest(name=name),
                metadata=acting_metadata(principal),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                return None
            raise _unavailable(error, "GetPatient") from error
        return reply.patient

    async def require_patient(self, name: str, principal: Principal) -> directory_pb2.Patient:
        """The patient, or the uniform refusal: PATIENT_NOT_VISIBLE (NOT_FOUND for unrestricted callers)."""
        found = await self.patient(name, principal)
        if found is None:
            raise _not_visible(principal)
        return found

    async def require_visible(self, name: str, principal: Principal) -> None:
        """That `principal` may act on the patient, or the uniform refusal (as `require_patient`).

        A yes is kept `cache_seconds` for this caller and this patient only (see the module docstring); a no
        is asked again every time.
        """

        async def ask() -> bool | None:
            return True if await self.patient(name, principal) is not None else None

        who = (principal.establishment, principal.subject, principal.practitioner, principal.unrestricted)
        key = (*who, name)
        if not await self._visible.get(key, ask):
            raise _not_visible(principal)


def _not_visible(principal: Principal) -> NotFound | PermissionDenied:
    return patient_not_found() if patient_scope(principal) is None else patient_not_visible()


async def practitioner_or_none(
    stub: directory_pb2_grpc.DirectoryServiceStub, name: str
) -> directory_pb2.Practitioner | None:
    """One practitioner as a component reads it (uncached, not delegated); None when there is none."""
    try:
        reply = await stub.GetPractitioner(
            directory_pb2.GetPractitionerRequest(name=name), timeout=CALL_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    found: directory_pb2.Practitioner = reply.practitioner
    return found
