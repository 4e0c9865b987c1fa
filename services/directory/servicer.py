"""RPC handlers of parcours.directory.v1.DirectoryService.

Reference data (regions, GHTs, establishments, practitioners, expertise offers) is readable by any
authenticated caller; writes are for hub operators (the proto's access policies say so and the kit enforces
them). A practitioner's token is accepted only through an establishment where they practise (the kit's
token-binding check, declared in server.py, runs before every handler).

Patients: the directory is where the hub's visibility rule is applied (`services.kit.directory` states it;
`store._PATIENT_VIEWS` is its one implementation). Hub operators and components acting on their own behalf are
unrestricted; anyone else — including a component acting for a caller it names (a delegated principal) — is
scoped to the GHT of its establishment, and sees patients as that GHT knows them. That is checked before
existence: a patient the caller may not see and a patient that does not exist get the same PERMISSION_DENIED
PATIENT_NOT_VISIBLE, so no id of another GHT can be probed.

How an identity known in another GHT is shared: see services/directory/README.md. In short, the INS is
national (one record per INS); local identifiers and identity statuses belong to the GHT that recorded them;
registering or linking an INS the caller's GHT does not know answers exactly as a new registration would.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from typing import TypeVar

import asyncpg
import grpc
from google.protobuf.message import Message
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.identifiers import (
    NIR_TRAITS_MISMATCH,
    check_nir_traits,
    nir_trait_mismatches,
    nir_violations,
)
from services.directory.store import LEDGER, DirectoryStore, EstablishmentChanges, PractitionerChanges
from services.kit.audit import audit_patients, audit_target
from services.kit.auth import Principal, current_principal
from services.kit.directory import patient_not_found, patient_not_visible, patient_scope
from services.kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.kit.idempotency import Call
from services.kit.pagination import decode_token, next_page_token, page_size

log = logging.getLogger(__name__)

SERVICE_NAME = directory_pb2.DESCRIPTOR.services_by_name["DirectoryService"].full_name

R = TypeVar("R", bound=Message)


def _id(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


def _opt(name: str, prefix: str) -> str | None:
    return name.removeprefix(prefix) or None


def _patient_uuid(name: str) -> uuid.UUID:
    try:
        return uuid.UUID(name.removeprefix("patients/"))
    except ValueError:
        raise InvalidArgument.one("name", "is not a patient name (patients/{uuid})") from None


def _require_masked(patch: Message, paths: Iterable[str], required: Iterable[str], prefix: str) -> None:
    """A field named in update_mask that cannot be empty must be given (an empty GHT clears the GHT)."""
    missing = [
        FieldViolation(f"{prefix}.{name}", "is in update_mask but empty")
        for name in required
        if name in paths and not _populated(patch, name)
    ]
    if missing:
        raise InvalidArgument(missing)


def _populated(message: Message, name: str) -> bool:
    value = getattr(message, name)
    return len(value) > 0 if not isinstance(value, (int, str)) else bool(value)


def _scope(principal: Principal) -> str | None:
    """The caller's FINESS when it is scoped to its GHT ('' scopes it to nothing), None when unrestricted."""
    scope = patient_scope(principal)
    return None if scope is None else scope.removeprefix("establishments/")


def _establishment_not_visible(message: str) -> PermissionDenied:
    return PermissionDenied("ESTABLISHMENT_NOT_VISIBLE", message)


class DirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(self, store: DirectoryStore) -> None:
        self._store = store

    # --- helpers -----------------------------------------------------------------------------------------

    async def _idempotent(
        self,
        request: Message,
        method: str,
        response_type: type[R],
        work: Callable[[asyncpg.Connection], Awaitable[R]],
    ) -> R:
        """Run `work` once per request id (the kit's ledger): a retry by the same caller with the same
        request gets the first response; the id reused otherwise is REQUEST_ID_REUSED."""
        call = Call.of(request, method, current_principal())
        async with self._store.transaction() as tx:
            done = await LEDGER.claim(tx, call)
            if done is not None and done.response is not None:
                return response_type.FromString(done.response)
            response = await work(tx)
            await LEDGER.record(tx, call, response=response)
            return response

    async def _in_scope(self, scope: str | None, establishment: str) -> bool:
        return await self._store.in_scope(scope, establishment.removeprefix("establishments/"))

    async def _visible_patient(self, scope: str | None, patient_id: uuid.UUID) -> directory_pb2.Patient:
        """The patient as the caller sees it; the uniform refusal when it may not (or there is none)."""
        patient = await self._store.get_patient(patient_id, scope=scope)
        return self._found(scope, patient)

    @staticmethod
    def _found(scope: str | None, patient: directory_pb2.Patient | None) -> directory_pb2.Patient:
        if patient is None:
            raise patient_not_found() if scope is None else patient_not_visible()
        audit_target(resource=patient.name, patient=patient.name)
        return patient

    # --- regions -----------------------------------------------------------------------------------------

    async def GetRegion(
        self, request: directory_pb2.GetRegionRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetRegionResponse:
        region = await self._store.get_region(_id(request.name, "regions/"))
        if region is None:
            raise NotFound("REGION_NOT_FOUND", f"no region {request.name}")
        return directory_pb2.GetRegionResponse(region=region)

    async def ListRegions(
        self, request: directory_pb2.ListRegionsRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListRegionsResponse:
        filters: dict[str, object] = {}
        items, next_key = await self._store.list_regions(
            page_size(request.page_size), decode_token(request.page_token, filters)
        )
        return directory_pb2.ListRegionsResponse(
            regions=items, next_page_token=next_page_token(next_key, filters)
        )

    # --- GHTs --------------------------------------------------------------------------------------------

    async def GetGht(
        self, request: directory_pb2.GetGhtRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetGhtResponse:
        ght = await self._store.get_ght(_id(request.name, "ghts/"))
        if ght is None:
            raise NotFound("GHT_NOT_FOUND", f"no GHT {request.name}")
        return directory_pb2.GetGhtResponse(ght=ght)

    async def ListGhts(
        self, request: directory_pb2.ListGhtsRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListGhtsResponse:
        filters: dict[str, object] = {"region": request.region}
        items, next_key = await self._store.list_ghts(
            page_size(request.page_size),
            decode_token(request.page_token, filters),
            region=_opt(request.region, "regions/"),
        )
        return directory_pb2.ListGhtsResponse(ghts=items, next_page_token=next_page_token(next_key, filters))

    async def CreateGht(
        self, request: directory_pb2.CreateGhtRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.CreateGhtResponse:
        if not request.ght.display_name:
            raise InvalidArgument.one("ght.display_name", "is required")
        if not request.ght.region.startswith("regions/"):
            raise InvalidArgument.one("ght.region", "must be regions/{code}")

        async def work(tx: asyncpg.Connection) -> directory_pb2.CreateGhtResponse:
            ght = await self._store.create_ght(
                request.ght_id,
                display_name=request.ght.display_name,
                region=_id(request.ght.region, "regions/"),
                support_finess=_opt(request.ght.support_establishment, "establishments/"),
                tx=tx,
            )
            return directory_pb2.CreateGhtResponse(ght=ght)

        return await self._idempotent(request, "CreateGht", directory_pb2.CreateGhtResponse, work)

    # --- establishments ----------------------------------------------------------------------------------

    async def GetEstablishment(
        self, request: directory_pb2.GetEstablishmentRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetEstablishmentResponse:
        found = await self._store.get_establishment(_id(request.name, "establishments/"))
        if found is None:
            raise NotFound("ESTABLISHMENT_NOT_FOUND", f"no establishment {request.name}")
        return directory_pb2.GetEstablishmentResponse(establishment=found)

    async def ListEstablishments(
        self, request: directory_pb2.ListEstablishmentsRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListEstablishmentsResponse:
        filters: dict[str, object] = {"ght": request.ght, "region": request.region}
        items, next_key = await self._store.list_establishments(
            page_size(request.page_size),
            decode_token(request.page_token, filters),
            ght=_opt(request.ght, "ghts/"),
            region=_opt(request.region, "regions/"),
        )
        return directory_pb2.ListEstablishmentsResponse(
            establishments=items, next_page_token=next_page_token(next_key, filters)
        )

    async def CreateEstablishment(
        self, request: directory_pb2.CreateEstablishmentRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.CreateEstablishmentResponse:
        given = request.establishment

        async def work(tx: asyncpg.Connection) -> directory_pb2.CreateEstablishmentResponse:
            created = await self._store.create_establishment(
                given.finess,
                display_name=given.display_name,
                kind=given.kind,
                ght=_opt(given.ght, "ghts/"),
                region=_id(given.region, "regions/"),
                time_zone=given.time_zone,
                tx=tx,
            )
            return directory_pb2.CreateEstablishmentResponse(establishment=created)

        return await self._idempotent(
            request, "CreateEstablishment", directory_pb2.CreateEstablishmentResponse, work
        )

    async def UpdateEstablishment(
        self, request: directory_pb2.UpdateEstablishmentRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.UpdateEstablishmentResponse:
        paths = list(request.update_mask.paths) or ["display_name", "ght", "time_zone"]
        _require_masked(request.establishment, paths, ("display_name", "time_zone"), "establishment")
        changes: EstablishmentChanges = {}
        if "display_name" in paths:
            changes["display_name"] = request.establishment.display_name
        if "ght" in paths:
            changes["ght"] = _opt(request.establishment.ght, "ghts/")
        if "time_zone" in paths:
            changes["time_zone"] = request.establishment.time_zone

        async def work(tx: asyncpg.Connection) -> directory_pb2.UpdateEstablishmentResponse:
            updated = await self._store.update_establishment(
                _id(request.name, "establishments/"), changes, tx=tx
            )
            if updated is None:
                raise NotFound("ESTABLISHMENT_NOT_FOUND", f"no establishment {request.name}")
            return directory_pb2.UpdateEstablishmentResponse(establishment=updated)

        return await self._idempotent(
            request, "UpdateEstablishment", directory_pb2.UpdateEstablishmentResponse, work
        )

    # --- practitioners -----------------------------------------------------------------------------------

    async def GetPractitioner(
        self, request: directory_pb2.GetPractitionerRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetPractitionerResponse:
        found = await self._store.get_practitioner(_id(request.name, "practitioners/"))
        if found is None:
            raise NotFound("PRACTITIONER_NOT_FOUND", f"no practitioner {request.name}")
        return directory_pb2.GetPractitionerResponse(practitioner=found)

    async def ListPractitioners(
        self, request: directory_pb2.ListPractitionersRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListPractitionersResponse:
        filters: dict[str, object] = {
            "profession": request.profession,
            "specialty": request.specialty,
            "establishment": request.establishment,
            "ght": request.ght,
            "region": request.region,
        }
        items, next_key = await self._store.list_practitioners(
            page_size(request.page_size),
            decode_token(request.page_token, filters),
            profession=request.profession or None,
            specialty=request.specialty or None,
            establishment=_opt(request.establishment, "establishments/"),
            ght=_opt(request.ght, "ghts/"),
            region=_opt(request.region, "regions/"),
        )
        return directory_pb2.ListPractitionersResponse(
            practitioners=items, next_page_token=next_page_token(next_key, filters)
        )

    async def CreatePractitioner(
        self, request: directory_pb2.CreatePractitionerRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.CreatePractitionerResponse:
        given = request.practitioner

        async def work(tx: asyncpg.Connection) -> directory_pb2.CreatePractitionerResponse:
            created = await self._store.create_practitioner(
                given.rpps,
                family_name=given.family_name,
                given_name=given.given_name,
                profession=given.profession,
                specialty=given.specialty,
                sector=given.sector,
                practice_places=[_id(p.establishment, "establishments/") for p in given.practice_places],
                active=given.active,
                tx=tx,
            )
            return directory_pb2.CreatePractitionerResponse(practitioner=created)

        return await self._idempotent(
            request, "CreatePractitioner", directory_pb2.CreatePractitionerResponse, work
        )

    async def UpdatePractitioner(
        self, request: directory_pb2.UpdatePractitionerRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.UpdatePractitionerResponse:
        given = request.practitioner
        paths = set(request.update_mask.paths) or {
            "family_name",
            "given_name",
            "specialty",
            "sector",
            "practice_places",
            "active",
        }
        _require_masked(
            given,
            paths,
            ("family_name", "given_name", "specialty", "sector", "practice_places"),
            "practitioner",
        )
        changes: PractitionerChanges = {}
        if "family_name" in paths:
            changes["family_name"] = given.family_name
        if "given_name" in paths:
            changes["given_name"] = given.given_name
        if "specialty" in paths:
            changes["specialty"] = given.specialty
        if "sector" in paths:
            changes["sector"] = given.sector
        if "practice_places" in paths:
            changes["practice_places"] = [
                _id(p.establishment, "establishments/") for p in given.practice_places
            ]
        if "active" in paths:
            changes["active"] = given.active

        async def work(tx: asyncpg.Connection) -> directory_pb2.UpdatePractitionerResponse:
            updated = await self._store.update_practitioner(
                _id(request.name, "practitioners/"), changes, tx=tx
            )
            if updated is None:
                raise NotFound("PRACTITIONER_NOT_FOUND", f"no practitioner {request.name}")
            return directory_pb2.UpdatePractitionerResponse(practitioner=updated)

        return await self._idempotent(
            request, "UpdatePractitioner", directory_pb2.UpdatePractitionerResponse, work
        )

    # --- expertise offers --------------------------------------------------------------------------------

    async def GetExpertiseOffer(
        self, request: directory_pb2.GetExpertiseOfferRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetExpertiseOfferResponse:
        found = await self._store.get_expertise_offer(_id(request.name, "expertiseOffers/"))
        if found is None:
            raise NotFound("EXPERTISE_OFFER_NOT_FOUND", f"no expertise offer {request.name}")
        return directory_pb2.GetExpertiseOfferResponse(expertise_offer=found)

    async def ListExpertiseOffers(
        self, request: directory_pb2.ListExpertiseOffersRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListExpertiseOffersResponse:
        filters: dict[str, object] = {
            "specialty": request.specialty,
            "ght": request.ght,
            "region": request.region,
            "member": request.member,
        }
        items, next_key = await self._store.list_expertise_offers(
            page_size(request.page_size),
            decode_token(request.page_token, filters),
            specialty=request.specialty or None,
            ght=_opt(request.ght, "ghts/"),
            region=_opt(request.region, "regions/"),
            member=_opt(request.member, "practitioners/"),
        )
        return directory_pb2.ListExpertiseOffersResponse(
            expertise_offers=items, next_page_token=next_page_token(next_key, filters)
        )

    async def CreateExpertiseOffer(
        self, request: directory_pb2.CreateExpertiseOfferRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.CreateExpertiseOfferResponse:
        async def work(tx: asyncpg.Connection) -> directory_pb2.CreateExpertiseOfferResponse:
            created = await self._store.create_expertise_offer(
                request.offer_id,
                display_name=request.display_name,
                specialty=request.specialty,
                ght=_opt(request.ght, "ghts/"),
                region=_opt(request.region, "regions/"),
                members=[_id(m, "practitioners/") for m in request.members],
                backup_rpps=_opt(request.backup_expert, "practitioners/"),
                tx=tx,
            )
            return directory_pb2.CreateExpertiseOfferResponse(expertise_offer=created)

        return await self._idempotent(
            request, "CreateExpertiseOffer", directory_pb2.CreateExpertiseOfferResponse, work
        )

    # --- patients ---

    async def GetPatient(
        self, request: directory_pb2.GetPatientRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.GetPatientResponse:
        patient_id = _patient_uuid(request.name)
        # Named before the visibility check: a refused attempt on a patient is what an auditor looks for.
        audit_target(resource=request.name, patient=request.name)
        scope = _scope(current_principal())
        return directory_pb2.GetPatientResponse(patient=await self._visible_patient(scope, patient_id))

    async def ListPatients(
        self, request: directory_pb2.ListPatientsRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ListPatientsResponse:
        scope = _scope(current_principal())
        if not await self._in_scope(scope, request.establishment):
            raise _establishment_not_visible("the establishment is outside the caller's GHT")
        audit_target(resource=request.establishment)
        filters: dict[str, object] = {"establishment": request.establishment}
        after = decode_token(request.page_token, filters)
        try:
            after_id = uuid.UUID(after) if after else None
        except ValueError:
            raise InvalidArgument.one("page_token", "is not a token this service issued") from None
        items, next_key = await self._store.list_patients(
            page_size(request.page_size),
            after_id,
            finess=_id(request.establishment, "establishments/"),
            scope=scope,
        )
        audit_patients(p.name for p in items)
        return directory_pb2.ListPatientsResponse(
            patients=items, next_page_token=next_page_token(next_key, filters)
        )

    async def CreatePatient(
        self, request: directory_pb2.CreatePatientRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.CreatePatientResponse:
        ins = request.ins
        birth_date = _ins_input(ins, "ins")
        scope = _scope(current_principal())
        # §7.5: the NIR agrees with the strict traits, or the identity is only provisional (then a warning).
        mismatches = check_nir_traits(
            nir_trait_mismatches(
                ins.matricule,
                sex=directory_pb2.Sex.Name(ins.sex),
                birth_date=birth_date,
                birth_place_code=ins.birth_place_code,
            ),
            provisional=request.identity_status == directory_pb2.IDENTITY_STATUS_PROVISIONAL,
        )
        local: tuple[str, str] | None = None
        if request.HasField("local_identifier"):
            establishment = request.local_identifier.establishment
            if not establishment.startswith("establishments/") or not request.local_identifier.ipp:
                raise InvalidArgument.one("local_identifier", "needs establishments/{finess} and an ipp")
            if not await self._in_scope(scope, establishment):
                raise _establishment_not_visible("a local identifier can only be set for the caller's GHT")
            local = (_id(establishment, "establishments/"), request.local_identifier.ipp)

        async def work(tx: asyncpg.Connection) -> directory_pb2.CreatePatientResponse:
            creation = await self._store.create_patient(
                matricule=ins.matricule,
                oid=ins.oid,
                birth_family_name=ins.birth_family_name,
                birth_given_names=ins.birth_given_names,
                birth_date=birth_date,
                sex=ins.sex,
                birth_place_code=ins.birth_place_code,
                identity_status=request.identity_status,
                local_identifier=local,
                scope=scope,
                tx=tx,
            )
            if not creation.traits_match:
                # Identity vigilance: the caller's GHT knows this INS with other strict traits; never merge
                # silently. (An INS only other GHTs know is never refused: that would tell it exists.)
                raise FailedPrecondition(
                    "IDENTITY_TRAITS_MISMATCH",
                    "this INS is already known with other strict traits; check the identity (INSi)",
                )
            if creation.conflict:
                # For the hub's identity vigilance; an opaque id only, never the identity.
                log.warning("INS registered with other strict traits: %s", creation.patient.name)
            return directory_pb2.CreatePatientResponse(
                patient=creation.patient,
                warnings=[
                    directory_pb2.IdentityWarning(
                        reason=NIR_TRAITS_MISMATCH, trait=m.trait, field=m.field, message=m.description
                    )
                    for m in mismatches
                ],
            )

        response = await self._idempotent(request, "CreatePatient", directory_pb2.CreatePatientResponse, work)
        # Named after the fact so that a replayed request is audited like the first one.
        audit_target(resource=response.patient.name, patient=response.patient.name)
        return response

    async def UpdatePatient(
        self, request: directory_pb2.UpdatePatientRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.UpdatePatientResponse:
        patient_id = _patient_uuid(request.name)
        audit_target(resource=request.name, patient=request.name)
        scope = _scope(current_principal())
        await self._visible_patient(scope, patient_id)

        async def work(tx: asyncpg.Connection) -> directory_pb2.UpdatePatientResponse:
            updated = await self._store.update_patient_status(
                patient_id, request.identity_status, scope=scope, tx=tx
            )
            return directory_pb2.UpdatePatientResponse(patient=self._found(scope, updated))

        return await self._idempotent(request, "UpdatePatient", directory_pb2.UpdatePatientResponse, work)

    async def LinkLocalIdentifier(
        self, request: directory_pb2.LinkLocalIdentifierRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.LinkLocalIdentifierResponse:
        patient_id = _patient_uuid(request.name)
        audit_target(resource=request.name, patient=request.name)
        scope = _scope(current_principal())
        presented = request.HasField("ins")
        if presented:
            birth_date = _ins_input(request.ins, "ins")
            if not request.identity_status:
                raise InvalidArgument.one("identity_status", "is required with ins")
        if not await self._in_scope(scope, request.establishment):
            raise _establishment_not_visible("a local identifier can only be set for the caller's GHT")
        visible = await self._store.get_patient(patient_id, scope=scope)
        matches = presented and await self._store.ins_matches(
            patient_id,
            matricule=request.ins.matricule,
            oid=request.ins.oid,
            birth_family_name=request.ins.birth_family_name,
            birth_given_names=request.ins.birth_given_names,
            birth_date=birth_date,
            sex=request.ins.sex,
            birth_place_code=request.ins.birth_place_code,
        )
        if visible is None and not matches:
            # Not known in the caller's GHT and not proven by its INS: exactly as if there were no patient.
            raise patient_not_found() if scope is None else patient_not_visible()
        if visible is not None and presented and not matches:
            raise FailedPrecondition(
                "IDENTITY_TRAITS_MISMATCH",
                "the INS presented is not this patient's; check the identity (INSi)",
            )
        # A GHT that proves the INS records its own identity status, as a registration does.
        domain_status = request.identity_status if visible is None else None

        async def work(tx: asyncpg.Connection) -> directory_pb2.LinkLocalIdentifierResponse:
            linked = await self._store.link_local_identifier(
                patient_id,
                _id(request.establishment, "establishments/"),
                request.ipp,
                scope=scope,
                domain_status=domain_status,
                tx=tx,
            )
            return directory_pb2.LinkLocalIdentifierResponse(patient=self._found(scope, linked))

        return await self._idempotent(
            request, "LinkLocalIdentifier", directory_pb2.LinkLocalIdentifierResponse, work
        )

    async def ResolvePatient(
        self, request: directory_pb2.ResolvePatientRequest, context: grpc.aio.ServicerContext
    ) -> directory_pb2.ResolvePatientResponse:
        scope = _scope(current_principal())
        if request.HasField("local_identifier"):
            establishment = request.local_identifier.establishment
            if not establishment.startswith("establishments/"):
                raise InvalidArgument.one("local_identifier.establishment", "must be establishments/{finess}")
            if not await self._in_scope(scope, establishment):
                raise patient_not_visible()
            patient = await self._store.resolve_by_local_identifier(
                _id(establishment, "establishments/"), request.local_identifier.ipp, scope=scope
            )
        else:
            violations = nir_violations(request.matricule, "matricule")
            if violations:
                raise InvalidArgument(violations)
            patient = await self._store.resolve_by_matricule(request.matricule, scope=scope)
        return directory_pb2.ResolvePatientResponse(patient=self._found(scope, patient))


def _ins_input(ins: directory_pb2.InsIdentityInput, field: str) -> date:
    """The birth date of an INS identity, after the checks its proto rules cannot say (the NIR's key)."""
    violations = nir_violations(ins.matricule, f"{field}.matricule")
    if violations:
        raise InvalidArgument(violations)
    try:
        return date(ins.birth_date.year, ins.birth_date.month, ins.birth_date.day)
    except ValueError:
        raise InvalidArgument.one(f"{field}.birth_date", "is not a calendar date") from None
