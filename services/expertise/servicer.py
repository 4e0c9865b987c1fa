"""RPC handlers of parcours.expertise.v1.ExpertiseService.

Reads come from the service's tables. A creation is saved by the service (its content never travels through
Temporal), then its `Teleexpertise` workflow is started and the call waits (update-with-start of `routed`)
until the request is routed and its first candidates notified. Every later state change is a Temporal
Update on the case's workflow, which validates it and persists the projection before answering; the
workflow's refusal reasons become FAILED_PRECONDITION (state) or PERMISSION_DENIED (who) here.

Visibility is checked before existence, from the tables: the requester, the assigned expert, and the
candidates of an unassigned request; a former candidate may still try to accept (and is told
ALREADY_ASSIGNED). Everything else is REQUEST_NOT_VISIBLE, whether the request exists or not.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from parcours.type.v1 import practice_pb2
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from services.expertise import intake
from services.expertise.directory import DirectoryClient
from services.expertise.settings import ExpertiseSettings
from services.expertise.store import Access, ExpertiseStore, NewRequest, StartData
from services.kit import search_attributes as sa
from services.kit.audit import audit_target
from services.kit.auth import Principal, current_principal
from services.kit.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.kit.pagination import decode_token, next_page_token, page_size
from services.kit.temporal import workflow_id
from workflows.teleexpertise.models import (
    WORKFLOW_KIND,
    AcceptInput,
    AnswerInput,
    AskInput,
    CancelInput,
    CaseInput,
    DeclineInput,
    HandBackInput,
    Reason,
    ReportInput,
    RoutedQuery,
    State,
    Tier,
    Timeline,
)
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

log = logging.getLogger(__name__)

SERVICE_NAME = expertise_pb2.DESCRIPTOR.services_by_name["ExpertiseService"].full_name
Request = expertise_pb2.TeleexpertiseRequest

_RELATIONS = {
    expertise_pb2.RELATION_UNSPECIFIED: "ANY",
    expertise_pb2.RELATION_REQUESTER: "REQUESTER",
    expertise_pb2.RELATION_ASSIGNED_EXPERT: "ASSIGNED_EXPERT",
    expertise_pb2.RELATION_CANDIDATE: "CANDIDATE",
}
_CLOSED_REASONS = {
    State.COMPLETED: (Reason.REQUEST_COMPLETED, "the request is completed: its report was submitted"),
    State.CANCELLED: (Reason.REQUEST_CANCELLED, "the requester cancelled the request"),
    State.EXPIRED: (Reason.REQUEST_EXPIRED, "the request expired without an expert"),
}


def _not_visible() -> PermissionDenied:
    return PermissionDenied(
        "REQUEST_NOT_VISIBLE", "the request is not one the caller takes part in (or does not exist)"
    )


def _case_id(name: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(name.removeprefix("teleexpertiseRequests/").split("/", 1)[0])
    except ValueError:
        raise InvalidArgument.one(field, "is not a request name (teleexpertiseRequests/{uuid})") from None


def _refusal(error: ApplicationError) -> DomainError:
    reason = error.type or "REFUSED"
    if reason in Reason.PERMISSION:
        return PermissionDenied(reason, error.message)
    return FailedPrecondition(reason, error.message)


class ExpertiseServicer(expertise_pb2_grpc.ExpertiseServiceServicer):
    def __init__(
        self,
        settings: ExpertiseSettings,
        store: ExpertiseStore,
        temporal: Client,
        directory: DirectoryClient,
    ) -> None:
        self._settings = settings
        self._store = store
        self._temporal = temporal
        self._directory = directory
        self._media_types = settings.media_types()
        self._professions = settings.requester_professions()

    # --- who is calling ----------------------------------------------------------------------------------

    @staticmethod
    def _rpps(principal: Principal) -> str:
        if not principal.rpps:
            raise PermissionDenied("PRACTITIONER_REQUIRED", "the call must be made for a practitioner")
        return principal.rpps

    async def _place(self, principal: Principal, practitioner_name: str) -> str:
        """The establishment the practitioner acts from (see intake.practice_establishment), by name."""
        if not principal.establishment:
            raise PermissionDenied(
                "ESTABLISHMENT_REQUIRED", "the call must come from an establishment's information system"
            )
        calling = await self._directory.establishment(principal.establishment)
        practitioner = await self._directory.practitioner(practitioner_name)
        if calling is None or practitioner is None or not practitioner.active:
            raise PermissionDenied(
                "PRACTITIONER_NOT_AT_ESTABLISHMENT",
                "the practitioner is not an active practitioner of the calling establishment's GHT",
            )
        places = [await self._directory.establishment(p.establishment) for p in practitioner.practice_places]
        found = intake.practice_establishment(practitioner, calling, [p for p in places if p is not None])
        if found is None:
            raise PermissionDenied(
                "PRACTITIONER_NOT_AT_ESTABLISHMENT",
                "the practitioner does not practise at the calling establishment or in its GHT",
            )
        return str(found.name)

    async def _access(
        self, name: str, field: str, *, offered_may: bool = False
    ) -> tuple[uuid.UUID, str, Access]:
        """The case and the caller's relation to it; REQUEST_NOT_VISIBLE unless they take part in it."""
        rpps = self._rpps(current_principal())
        case_id = _case_id(name, field)
        audit_target(resource=f"teleexpertiseRequests/{case_id}")
        access = await self._store.access(case_id, rpps)
        if access is None or not (access.visible or (offered_may and access.offered)):
            raise _not_visible()
        audit_target(patient=f"patients/{access.patient}")
        return case_id, rpps, access

    async def _read(self, case_id: uuid.UUID) -> Request:
        found = await self._store.get_request(case_id)
        if found is None:  # a case is never deleted: only reachable through a bug
            raise NotFound("REQUEST_NOT_FOUND", "no such request")
        return found

    # --- create ------------------------------------------------------------------------------------------

    async def CreateTeleexpertiseRequest(
        self, request: expertise_pb2.CreateTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.CreateTeleexpertiseRequestResponse:
        principal = current_principal()
        rpps = self._rpps(principal)
        request_id = uuid.UUID(request.request_id)
        applied = await self._store.applied(request_id)
        if applied is not None:
            if applied.method != "create" or applied.actor != rpps:
                raise FailedPrecondition("REQUEST_ID_REUSED", "this request_id was used for another call")
            return await self._created(applied.case_id)

        if principal.profession not in self._professions:
            raise PermissionDenied(
                "PROFESSION_NOT_ALLOWED_TO_REQUEST", "this profession may not request a téléexpertise"
            )
        given = request.teleexpertise_request
        now = datetime.now(UTC)
        urgency = expertise_pb2.Urgency.Name(given.urgency).removeprefix("URGENCY_")
        due = intake.answer_deadline(
            given.answer_deadline if given.HasField("answer_deadline") else None,
            now,
            self._settings.deadline_bounds(urgency),
            urgency,
        )
        attachments = intake.attachments(
            given.attachments,
            media_types=self._media_types,
            max_bytes=self._settings.teleexpertise_attachment_max_bytes,
            max_total_bytes=self._settings.teleexpertise_attachments_max_total_bytes,
        )

        requester = f"practitioners/{rpps}"
        place = await self._place(principal, requester)
        establishment = await self._directory.establishment(place)
        assert establishment is not None
        patient = await self._visible_patient(given.patient, establishment.ght, place)
        audit_target(patient=patient.name)
        if not given.patient_consent:
            raise FailedPrecondition(
                "CONSENT_REQUIRED", "the patient's consent to the téléexpertise must be collected first"
            )
        specialty, named = await self._target(given, requester)
        tiers = intake.tiers(
            requester=requester,
            named_expert=named,
            ght_offers=await self._directory.offers(specialty, ght=establishment.ght)
            if establishment.ght
            else [],
            region_offers=await self._directory.offers(specialty, region=establishment.region),
        )
        if not tiers:
            raise FailedPrecondition(
                "NO_EXPERT_AVAILABLE",
                "no expert of this specialty can be reached from the requester's GHT or region",
            )

        case_id = uuid.uuid4()
        ins = patient.ins
        new = NewRequest(
            case_id=case_id,
            request_id=request_id,
            requester=rpps,
            requester_establishment=place.removeprefix("establishments/"),
            ght=establishment.ght.removeprefix("ghts/") or None,
            region=establishment.region.removeprefix("regions/"),
            patient=uuid.UUID(patient.name.removeprefix("patients/")),
            patient_identity={
                "birth_family_name": ins.birth_family_name,
                "birth_given_names": ins.birth_given_names,
                "birth_date": (
                    f"{ins.birth_date.year:04d}-{ins.birth_date.month:02d}-{ins.birth_date.day:02d}"
                    if ins.birth_date.year
                    else ""
                ),
                "sex": directory_pb2.Sex.Name(ins.sex),
                "identity_status": directory_pb2.IdentityStatus.Name(patient.identity_status),
            },
            specialty=practice_pb2.Specialty.Name(specialty).removeprefix("SPECIALTY_"),
            requested_expert=named.removeprefix("practitioners/") if named else None,
            question=given.question,
            clinical_context=given.clinical_context,
            urgency=urgency,
            requested_answer_time=due,
            routing=[{"source": t.source, "members": t.members} for t in tiers],
            timeline=self._settings.timeline().__dict__,
            workflow_id=workflow_id(WORKFLOW_KIND, str(case_id)),
            create_time=now,
            attachments=attachments,
        )
        created_id, created = await self._store.create_request(new)
        if not created:
            # A concurrent retry of the same request saved it first.
            applied = await self._store.applied(request_id)
            if applied is None or applied.method != "create" or applied.actor != rpps:
                raise FailedPrecondition("REQUEST_ID_REUSED", "this request_id was used for another call")
            return await self._created(created_id)
        return await self._created(case_id, StartData.of(new))

    async def _created(
        self, case_id: uuid.UUID, data: StartData | None = None
    ) -> expertise_pb2.CreateTeleexpertiseRequestResponse:
        """Start the case's workflow if it is not yet (a retried creation), and return the routed request."""
        if data is None:
            data = await self._store.start_data(case_id)
            assert data is not None
        audit_target(resource=f"teleexpertiseRequests/{case_id}", patient=f"patients/{data.patient}")
        if data.state == State.REQUESTED:
            await self._start(data)
        return expertise_pb2.CreateTeleexpertiseRequestResponse(
            teleexpertise_request=await self._read(case_id)
        )

    async def _visible_patient(self, name: str, ght: str, place: str) -> directory_pb2.Patient:
        """The directory patient, if known at the requester's establishment or in its GHT."""
        patient = await self._directory.patient(name)
        if patient is not None:
            for local in patient.local_identifiers:
                if local.establishment == place:
                    return patient
                known_at = await self._directory.establishment(local.establishment)
                if ght and known_at is not None and known_at.ght == ght:
                    return patient
        raise PermissionDenied(
            "PATIENT_NOT_VISIBLE", "the patient is not known in the requester's GHT (or does not exist)"
        )

    async def _target(
        self, given: expertise_pb2.TeleexpertiseRequestInput, requester: str
    ) -> tuple[practice_pb2.Specialty.ValueType, str | None]:
        """(specialty, named expert or None) of the request."""
        if given.WhichOneof("target") == "specialty":
            return given.specialty, None
        expert = await self._directory.practitioner(given.expert)
        if expert is None:
            raise InvalidArgument.one(
                "teleexpertise_request.expert", "is not a practitioner of the directory"
            )
        if given.expert == requester:
            raise InvalidArgument.one(
                "teleexpertise_request.expert", "must be someone else than the requester"
            )
        profession = practice_pb2.Profession.Name(expert.profession)
        if not expert.active or profession not in intake.MEDICAL_PROFESSIONS:
            raise FailedPrecondition(
                "EXPERT_NOT_ELIGIBLE",
                "the expert of a téléexpertise must be an active physician, midwife or dentist (R.6316-1)",
            )
        return expert.specialty, given.expert

    async def _start(self, data: StartData) -> None:
        """Start the case's workflow (if not yet) and wait until its first routing is persisted."""
        case = CaseInput(
            case_id=str(data.case_id),
            requester=f"practitioners/{data.requester}",
            requester_establishment=f"establishments/{data.requester_establishment}",
            patient=f"patients/{data.patient}",
            specialty=data.specialty,
            ght=data.ght,
            region=data.region,
            tiers=[Tier(source=t["source"], members=list(t["members"])) for t in data.routing],
            created_at=data.create_time,
            answer_due=data.requested_answer_time,
            timeline=Timeline(**data.timeline),
        )
        attributes: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.CASE_KIND, WORKFLOW_KIND),
            SearchAttributePair(sa.CASE_STATE, State.REQUESTED),
            SearchAttributePair(sa.SPECIALTY, data.specialty),
            SearchAttributePair(sa.REGION, data.region),
            SearchAttributePair(sa.DUE_TIME, data.requested_answer_time),
            SearchAttributePair(sa.START_TIME, data.create_time),
            SearchAttributePair(sa.BREACHED, False),
        ]
        if data.ght:
            attributes.append(SearchAttributePair(sa.GHT, data.ght))
        start = WithStartWorkflowOperation(
            TeleexpertiseWorkflow.run,
            case,
            id=data.workflow_id,
            task_queue=self._settings.teleexpertise_task_queue,
            # A retried creation joins the running workflow; a closed one is never started again.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(attributes),
        )
        try:
            # (The SDK types the awaited value of this overload as a coroutine: it is the update's result.)
            routed: object = await asyncio.wait_for(
                self._temporal.execute_update_with_start_workflow(
                    TeleexpertiseWorkflow.routed,
                    RoutedQuery(),
                    start_workflow_operation=start,
                    id=f"routed-{data.case_id}",
                ),
                self._settings.teleexpertise_update_timeout.total_seconds(),
            )
            log.debug("case %s routed: %s", data.case_id, routed)
        except WorkflowAlreadyStartedError:
            return  # closed already: the tables say how it ended
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as error:
            log.warning("case %s not routed yet: %s", data.case_id, type(error).__name__)
            raise Unavailable(
                "REQUEST_NOT_ROUTED_YET",
                "the request is saved but not routed yet; retry with the same request_id",
            ) from None

    # --- reads -------------------------------------------------------------------------------------------

    async def GetTeleexpertiseRequest(
        self, request: expertise_pb2.GetTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.GetTeleexpertiseRequestResponse:
        case_id, _, _ = await self._access(request.name, "name")
        return expertise_pb2.GetTeleexpertiseRequestResponse(teleexpertise_request=await self._read(case_id))

    async def ListTeleexpertiseRequests(
        self, request: expertise_pb2.ListTeleexpertiseRequestsRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.ListTeleexpertiseRequestsResponse:
        rpps = self._rpps(current_principal())
        audit_target(resource="teleexpertiseRequests")
        state = Request.State.Name(request.state).removeprefix("STATE_") if request.state else None
        filters: dict[str, object] = {"relation": request.relation, "state": request.state, "caller": rpps}
        key = decode_token(request.page_token, filters)
        after: tuple[datetime, uuid.UUID] | None = None
        if key is not None:
            stamp, _, case = key.partition("|")
            after = (datetime.fromisoformat(stamp), uuid.UUID(case))
        items, next_key = await self._store.list_requests(
            rpps,
            relation=_RELATIONS[request.relation],
            state=state,
            size=page_size(request.page_size),
            after=after,
        )
        token_key = f"{next_key[0].isoformat()}|{next_key[1]}" if next_key is not None else None
        return expertise_pb2.ListTeleexpertiseRequestsResponse(
            teleexpertise_requests=items, next_page_token=next_page_token(token_key, filters)
        )

    async def ListTeleexpertiseMessages(
        self, request: expertise_pb2.ListTeleexpertiseMessagesRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.ListTeleexpertiseMessagesResponse:
        case_id, _, _ = await self._access(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        items, next_key = await self._store.list_messages(
            case_id, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return expertise_pb2.ListTeleexpertiseMessagesResponse(
            messages=items, next_page_token=next_page_token(next_key, filters)
        )

    async def ListTeleexpertiseEvents(
        self, request: expertise_pb2.ListTeleexpertiseEventsRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.ListTeleexpertiseEventsResponse:
        case_id, _, _ = await self._access(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        items, next_key = await self._store.list_events(
            case_id, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return expertise_pb2.ListTeleexpertiseEventsResponse(
            events=items, next_page_token=next_page_token(next_key, filters)
        )

    async def GetTeleexpertiseAttachment(
        self, request: expertise_pb2.GetTeleexpertiseAttachmentRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.GetTeleexpertiseAttachmentResponse:
        case_id, _, _ = await self._access(request.name, "name")
        attachment_id = uuid.UUID(request.name.rsplit("/", 1)[1])
        found = await self._store.get_attachment(case_id, attachment_id)
        if found is None:
            raise NotFound("ATTACHMENT_NOT_FOUND", "the request has no such attachment")
        return expertise_pb2.GetTeleexpertiseAttachmentResponse(attachment=found)

    async def ListTeleexpertiseNotifications(
        self, request: expertise_pb2.ListTeleexpertiseNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.ListTeleexpertiseNotificationsResponse:
        rpps = self._rpps(current_principal())
        filters: dict[str, object] = {"request": request.teleexpertise_request, "caller": rpps}
        key = decode_token(request.page_token, filters)
        case_id = (
            _case_id(request.teleexpertise_request, "teleexpertise_request")
            if request.teleexpertise_request
            else None
        )
        items, next_key = await self._store.list_notifications(
            rpps, size=page_size(request.page_size), after=int(key) if key else 0, case_id=case_id
        )
        return expertise_pb2.ListTeleexpertiseNotificationsResponse(
            notifications=items, next_page_token=next_page_token(next_key, filters)
        )

    # --- state changes -----------------------------------------------------------------------------------

    async def _change(
        self,
        method: str,
        request_id: str,
        checked: tuple[uuid.UUID, str, Access],
        build: Callable[[str], Any],
    ) -> Request:
        """Apply one state change through the case's workflow; returns the request as it is afterwards.

        `checked` is the caller's access to the case (`_access`), verified before anything else.
        """
        case_id, rpps, access = checked
        applied = await self._store.applied(uuid.UUID(request_id))
        if applied is not None:
            if applied.case_id != case_id or applied.method != method or applied.actor != rpps:
                raise FailedPrecondition("REQUEST_ID_REUSED", "this request_id was used for another call")
            return await self._read(case_id)
        handle = self._temporal.get_workflow_handle(workflow_id(WORKFLOW_KIND, str(case_id)))
        update = getattr(TeleexpertiseWorkflow, method)
        try:
            await asyncio.wait_for(
                handle.execute_update(update, build(f"practitioners/{rpps}"), id=f"{method}-{request_id}"),
                self._settings.teleexpertise_update_timeout.total_seconds(),
            )
        except WorkflowUpdateFailedError as error:
            if isinstance(error.cause, ApplicationError):
                raise _refusal(error.cause) from None
            raise
        except RPCError:
            # The workflow is gone: closed. Its final state is in the tables.
            current = await self._store.access(case_id, rpps)
            closed = _CLOSED_REASONS.get(current.state if current is not None else access.state)
            if closed is not None:
                raise FailedPrecondition(*closed) from None
            raise Unavailable(
                "REQUEST_UNAVAILABLE", "the request cannot be changed right now; retry"
            ) from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            raise Unavailable(
                "REQUEST_BUSY", "the change is not applied yet; retry with the same request_id"
            ) from None
        return await self._read(case_id)

    async def AcceptTeleexpertiseRequest(
        self, request: expertise_pb2.AcceptTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AcceptTeleexpertiseRequestResponse:
        # Taking part in the request is checked first, then where the expert practises (where TE2 is billed).
        checked = await self._access(request.name, "name", offered_may=True)
        place = await self._place(current_principal(), f"practitioners/{checked[1]}")
        found = await self._change(
            "accept",
            request.request_id,
            checked,
            lambda actor: AcceptInput(request_id=request.request_id, actor=actor, establishment=place),
        )
        return expertise_pb2.AcceptTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def DeclineTeleexpertiseRequest(
        self, request: expertise_pb2.DeclineTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.DeclineTeleexpertiseRequestResponse:
        found = await self._change(
            "decline",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: DeclineInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.DeclineTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def HandBackTeleexpertiseRequest(
        self, request: expertise_pb2.HandBackTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.HandBackTeleexpertiseRequestResponse:
        found = await self._change(
            "hand_back",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: HandBackInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.HandBackTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def CancelTeleexpertiseRequest(
        self, request: expertise_pb2.CancelTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.CancelTeleexpertiseRequestResponse:
        found = await self._change(
            "cancel",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: CancelInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.CancelTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def AskTeleexpertiseQuestion(
        self, request: expertise_pb2.AskTeleexpertiseQuestionRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AskTeleexpertiseQuestionResponse:
        found = await self._change(
            "ask",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: AskInput(request_id=request.request_id, actor=actor, text=request.text),
        )
        return expertise_pb2.AskTeleexpertiseQuestionResponse(teleexpertise_request=found)

    async def AnswerTeleexpertiseQuestion(
        self, request: expertise_pb2.AnswerTeleexpertiseQuestionRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AnswerTeleexpertiseQuestionResponse:
        found = await self._change(
            "answer",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: AnswerInput(request_id=request.request_id, actor=actor, text=request.text),
        )
        return expertise_pb2.AnswerTeleexpertiseQuestionResponse(teleexpertise_request=found)

    async def SubmitTeleexpertiseReport(
        self, request: expertise_pb2.SubmitTeleexpertiseReportRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.SubmitTeleexpertiseReportResponse:
        report = request.report
        found = await self._change(
            "submit_report",
            request.request_id,
            await self._access(request.name, "name"),
            lambda actor: ReportInput(
                request_id=request.request_id,
                actor=actor,
                summary=report.summary,
                acts_and_prescriptions=list(report.acts_and_prescriptions),
                technical_incidents=report.technical_incidents,
                other_participants=list(report.other_participants),
            ),
        )
        return expertise_pb2.SubmitTeleexpertiseReportResponse(teleexpertise_request=found)
