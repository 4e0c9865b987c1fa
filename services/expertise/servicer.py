"""RPC handlers of parcours.expertise.v1.ExpertiseService.

Reads come from the service's tables. A creation is saved by the service (its content never travels through
Temporal) with the outbox command that starts its `Teleexpertise` workflow; the call then starts it itself
and waits (update-with-start of `routed`, through the kit's relay) until the request is routed and its first
candidates notified. If that cannot happen now, the request is saved and the relay starts it later: the
client is told to retry with the same request_id, and nothing is lost if it never does. Every later state
change is a Temporal Update on the case's workflow (the kit's `CaseClient`), which validates it and persists
the projection, with the RPC's idempotency entry, before answering; the workflow's refusal reasons become
FAILED_PRECONDITION (state) or PERMISSION_DENIED (who) as `models.TELEEXPERTISE` declares.

Visibility is checked before existence, from the tables: the requester, the assigned expert, and the
candidates of an unassigned request; a former candidate may still try to accept (and is told
ALREADY_ASSIGNED). Everything else is REQUEST_NOT_VISIBLE, whether the request exists or not.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2, expertise_pb2_grpc
from parcours.type.v1 import practice_pb2
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from services.expertise import intake
from services.expertise.models import (
    AcceptInput,
    AnswerInput,
    AskInput,
    CancelInput,
    DeclineInput,
    HandBackInput,
    Reason,
    ReportInput,
    RoutedQuery,
    State,
    UpdateOutcome,
)
from services.expertise.settings import ExpertiseSettings
from services.expertise.store import Access, ExpertiseStore, NewRequest
from services.kit import names, reports
from services.kit.audit import audit_patients, audit_target
from services.kit.auth import Principal, current_principal
from services.kit.cases import CaseClient, Relay
from services.kit.directory import DirectoryClient
from services.kit.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.kit.fhir import MEDIA_TYPE
from services.kit.idempotency import Call
from services.kit.pagination import decode_token, next_page_token, page_size, split_page
from services.kit.records import RecordStore

log = logging.getLogger(__name__)

SERVICE_NAME = expertise_pb2.DESCRIPTOR.services_by_name["ExpertiseService"].full_name
Request = expertise_pb2.TeleexpertiseRequest
# The record documents written by the Teleexpertise workflow (services/kit/records.py).
RECORDS = RecordStore("expertise")

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


def _not_routed_yet() -> Unavailable:
    return Unavailable(
        "REQUEST_NOT_ROUTED_YET", "the request is saved but not routed yet; retry with the same request_id"
    )


class ExpertiseServicer(expertise_pb2_grpc.ExpertiseServiceServicer):
    def __init__(
        self,
        settings: ExpertiseSettings,
        store: ExpertiseStore,
        cases: CaseClient,
        relay: Relay,
        directory: DirectoryClient,
    ) -> None:
        self._settings = settings
        self._store = store
        self._cases = cases
        self._relay = relay
        self._directory = directory
        self._media_types = settings.media_types()
        self._professions = settings.requester_professions()

    # --- who is calling ----------------------------------------------------------------------------------

    @staticmethod
    def _rpps(principal: Principal) -> str:
        if not principal.rpps:
            raise PermissionDenied("PRACTITIONER_REQUIRED", "the call must be made for a practitioner")
        return principal.rpps

    async def _place(self, principal: Principal) -> str:
        """The establishment the practitioner acts from (the kit's token-binding rule), by name."""
        return str((await self._directory.require_practice_place(principal)).name)

    async def _access(
        self, name: str, field: str, *, offered_may: bool = False
    ) -> tuple[uuid.UUID, str, Access]:
        """The case and the caller's relation to it; REQUEST_NOT_VISIBLE unless they take part in it."""
        rpps = self._rpps(current_principal())
        case_id = names.TELEEXPERTISE_REQUEST.parse_uuid(name, field)
        audit_target(resource=names.TELEEXPERTISE_REQUEST.format(case_id))
        access = await self._store.access(case_id, rpps)
        if access is None or not (access.visible or (offered_may and access.offered)):
            raise _not_visible()
        audit_target(patient=names.PATIENT.format(access.patient))
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
        call = Call.of(request, "create", principal)
        applied = await self._store.applied(call)
        if applied is not None:
            return await self._created(applied)

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

        requester = names.PRACTITIONER.format(rpps)
        place = await self._place(principal)
        establishment = await self._directory.establishment(place)
        assert establishment is not None
        # The directory's one visibility rule, asked on behalf of the requester.
        patient = await self._directory.require_patient(given.patient, principal)
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
            requester_establishment=names.ESTABLISHMENT.parse(place, "establishment"),
            ght=names.GHT.parse_optional(establishment.ght, "ght"),
            region=names.REGION.parse(establishment.region, "region"),
            patient=names.PATIENT.parse_uuid(patient.name, "patient"),
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
            requested_expert=names.PRACTITIONER.parse_optional(named or "", "expert"),
            question=given.question,
            clinical_context=given.clinical_context,
            urgency=urgency,
            requested_answer_time=due,
            routing=[{"source": t.source, "members": t.members} for t in tiers],
            timeline=asdict(self._settings.timeline()),
            workflow_id=self._cases.kind.workflow_id(case_id),
            create_time=now,
            attachments=attachments,
        )
        # A concurrent retry of the same request that saved it first gives its case (never a second one).
        created_id, _ = await self._store.create_request(new, call)
        return await self._created(created_id)

    async def _created(self, case_id: uuid.UUID) -> expertise_pb2.CreateTeleexpertiseRequestResponse:
        """Start the case's workflow if it is not yet (a retried creation), and return the routed request."""
        audit_target(resource=names.TELEEXPERTISE_REQUEST.format(case_id))
        if await self._store.state(case_id) == State.REQUESTED:
            await self._route(case_id)
        found = await self._read(case_id)
        audit_target(patient=found.patient)
        return expertise_pb2.CreateTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def _route(self, case_id: uuid.UUID) -> None:
        """Start the case's workflow (if not yet) and wait until its first routing is persisted."""
        try:
            await self._relay.start_with_update(
                case_id,
                "routed",
                RoutedQuery(),
                update_id=f"routed-{case_id}",
                result_type=UpdateOutcome,
                timeout=self._settings.teleexpertise_update_timeout,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError, Unavailable) as error:
            log.warning("case %s not routed yet: %s", case_id, type(error).__name__)
            raise _not_routed_yet() from None

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
        audit_patients(r.patient for r in items)
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
        _, attachment = names.TELEEXPERTISE_ATTACHMENT.parse_ids(request.name, "name")
        case_id, _, _ = await self._access(request.name.rsplit("/attachments/", 1)[0], "name")
        attachment_id = uuid.UUID(attachment)
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
            names.TELEEXPERTISE_REQUEST.parse_uuid(request.teleexpertise_request, "teleexpertise_request")
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
        request: Message,
        checked: tuple[uuid.UUID, str, Access],
        build: Callable[[str], Any],
    ) -> Request:
        """Apply one state change through the case's workflow; returns the request as it is afterwards.

        `checked` is the caller's access to the case (`_access`), verified before anything else.
        """
        case_id, rpps, access = checked
        call = Call.of(request, method, current_principal())
        if await self._store.applied(call) is not None:
            return await self._read(case_id)  # a retry: the change was applied (with this very payload)
        change = build(names.PRACTITIONER.format(rpps))
        change.call = call

        async def closed() -> DomainError:
            # The workflow is gone: closed. Its final state is in the tables.
            current = await self._store.access(case_id, rpps)
            reason = _CLOSED_REASONS.get(current.state if current is not None else access.state)
            if reason is not None:
                return FailedPrecondition(*reason)
            return Unavailable("REQUEST_UNAVAILABLE", "the request cannot be changed right now; retry")

        await self._cases.update(
            case_id,
            method,
            change,
            request_id=call.request_id,
            closed=closed,
            result_type=UpdateOutcome,
        )
        return await self._read(case_id)

    async def AcceptTeleexpertiseRequest(
        self, request: expertise_pb2.AcceptTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AcceptTeleexpertiseRequestResponse:
        # Taking part in the request is checked first, then where the expert practises (where TE2 is billed).
        checked = await self._access(request.name, "name", offered_may=True)
        place = await self._place(current_principal())
        found = await self._change(
            "accept",
            request,
            checked,
            lambda actor: AcceptInput(request_id=request.request_id, actor=actor, establishment=place),
        )
        return expertise_pb2.AcceptTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def DeclineTeleexpertiseRequest(
        self, request: expertise_pb2.DeclineTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.DeclineTeleexpertiseRequestResponse:
        found = await self._change(
            "decline",
            request,
            await self._access(request.name, "name"),
            lambda actor: DeclineInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.DeclineTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def HandBackTeleexpertiseRequest(
        self, request: expertise_pb2.HandBackTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.HandBackTeleexpertiseRequestResponse:
        found = await self._change(
            "hand_back",
            request,
            await self._access(request.name, "name"),
            lambda actor: HandBackInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.HandBackTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def CancelTeleexpertiseRequest(
        self, request: expertise_pb2.CancelTeleexpertiseRequestRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.CancelTeleexpertiseRequestResponse:
        found = await self._change(
            "cancel",
            request,
            await self._access(request.name, "name"),
            lambda actor: CancelInput(request_id=request.request_id, actor=actor, reason=request.reason),
        )
        return expertise_pb2.CancelTeleexpertiseRequestResponse(teleexpertise_request=found)

    async def AskTeleexpertiseQuestion(
        self, request: expertise_pb2.AskTeleexpertiseQuestionRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AskTeleexpertiseQuestionResponse:
        found = await self._change(
            "ask",
            request,
            await self._access(request.name, "name"),
            lambda actor: AskInput(request_id=request.request_id, actor=actor, text=request.text),
        )
        return expertise_pb2.AskTeleexpertiseQuestionResponse(teleexpertise_request=found)

    async def AnswerTeleexpertiseQuestion(
        self, request: expertise_pb2.AnswerTeleexpertiseQuestionRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.AnswerTeleexpertiseQuestionResponse:
        found = await self._change(
            "answer",
            request,
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
            request,
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

    # --- the record as a FHIR document -------------------------------------------------------------------

    async def GetTeleexpertiseDocument(
        self, request: expertise_pb2.GetTeleexpertiseDocumentRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.GetTeleexpertiseDocumentResponse:
        case_id, _, access = await self._access(request.name, "name")
        found = await RECORDS.get(self._store.pool, case_id)
        if found is None:
            raise FailedPrecondition(
                "RECORD_NOT_AVAILABLE",
                "the record document is written once the report is submitted and billed",
                {"state": access.state},
            )
        document, submission = found
        reply = expertise_pb2.RecordDocument(
            document_id=f"urn:uuid:{document.document_id}",
            media_type=MEDIA_TYPE,
            content=json.dumps(document.bundle, ensure_ascii=False).encode(),
            create_time=_timestamp(document.create_time),
        )
        if submission is not None:
            reply.dmp_submission.CopyFrom(
                expertise_pb2.DmpSubmission(
                    state=expertise_pb2.DmpSubmission.State.Value(submission.state),
                    reason=submission.reason,
                    submit_time=_timestamp(submission.submit_time),
                )
            )
        return expertise_pb2.GetTeleexpertiseDocumentResponse(document=reply)

    # --- activity reports --------------------------------------------------------------------------------

    async def GetTeleexpertiseActivityReport(
        self, request: expertise_pb2.GetTeleexpertiseActivityReportRequest, context: grpc.aio.ServicerContext
    ) -> expertise_pb2.GetTeleexpertiseActivityReportResponse:
        principal = current_principal()
        region = names.REGION.parse_optional(request.region, "region")
        ght = names.GHT.parse_optional(request.ght, "ght")
        caller_ght = None
        if principal.establishment:
            calling = await self._directory.establishment(principal.establishment)
            caller_ght = names.GHT.parse_optional(calling.ght, "ght") if calling is not None else None
        scope = reports.scope_of(principal, caller_ght, region, ght)
        # The region asked narrows any scope (an officer's own was checked).
        scope = reports.Scope(
            region_code=scope.region_code or region, ght_id=scope.ght_id, finess=scope.finess
        )
        filters: dict[str, object] = {
            "start": f"{request.start_month.year}-{request.start_month.month}",
            "end": f"{request.end_month.year}-{request.end_month.month}",
            "region": request.region,
            "ght": request.ght,
            "specialty": request.specialty,
        }
        after = reports.parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await self._store.activity_report(
            scope,
            reports.first_day(request.start_month),
            reports.first_day(request.end_month),
            ght=ght,
            specialty=(
                practice_pb2.Specialty.Name(request.specialty).removeprefix("SPECIALTY_")
                if request.specialty
                else None
            ),
            limit=size + 1,
            after=after,
        )
        page, last = split_page(rows, size)
        return expertise_pb2.GetTeleexpertiseActivityReportResponse(
            rows=[_activity(r) for r in page],
            next_page_token=next_page_token(
                reports.key_token(last["month"], last["region_code"], last["ght"], last["specialty"])
                if last is not None
                else None,
                filters,
            ),
        )


def _timestamp(value: datetime) -> Timestamp:
    found = Timestamp()
    found.FromDatetime(value.astimezone(UTC))
    return found


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    found = Duration()
    found.FromTimedelta(timedelta(seconds=round(float(seconds))))
    return found


def _activity(row: Any) -> expertise_pb2.TeleexpertiseActivity:
    return expertise_pb2.TeleexpertiseActivity(
        region=names.REGION.format(row["region_code"]),
        ght=names.GHT.format_optional(row["ght"] or None),
        specialty=practice_pb2.Specialty.Value(f"SPECIALTY_{row['specialty']}"),
        month=reports.month_message(row["month"]),
        requests=row["requests"],
        completed=row["completed"],
        cancelled=row["cancelled"],
        expired=row["expired"],
        median_answer_time=_duration(row["median_answer"]),
        p90_answer_time=_duration(row["p90_answer"]),
        due=row["due"],
        breached=row["breached"],
        breach_rate=reports.rate(row["breached"], row["due"]),
    )
