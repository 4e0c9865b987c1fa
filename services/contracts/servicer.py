"""RPC handlers of parcours.contracts.v1.ContractService.

Reads come from the service's tables. A creation is saved by the service (its content never travels through
Temporal) with the outbox command that starts its workflow; the call then starts it itself and waits
(update-with-start of `created`, through the kit's relay) until the workflow has opened the case. Every later
state change is a Temporal Update on the case's workflow (the kit's `CaseClient`, update id
`{update}-{request_id}`), which validates it, persists the projection with the RPC's idempotency entry and
answers; the workflow's refusal reasons become gRPC statuses through `models.REASON_STATUS`.

Scope is checked before existence, from the tables (`store.Viewer`): ARS staff see their region's cases, an
Ordre reviewer the cases routed to its territory, a promoter its own (its establishment's, with the PROMOTER
role, or its practitioner's), an expert the cases it was asked an opinion on, a hub operator every case. A
case the caller may not see and a case that does not exist get the same PERMISSION_DENIED CASE_NOT_VISIBLE,
to the byte; lists and counters leave hidden cases out. The step's rules (who is of the step's candidate
group, who holds it, whether the caller is the promoter) are the workflow's.

Every Get of a case, of one of its documents or of a decision is recorded in the case's timeline (VIEWED);
the kit audits every call of the methods the proto marks `audited`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.options.v1 import options_pb2
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from services.contracts import clock, coverage, decisions, policy, views
from services.contracts.document_process import DocumentProcess, DocumentProcessFailed
from services.contracts.models import (
    KINDS,
    AcknowledgeInput,
    ActionInput,
    Actor,
    AgrementCase,
    AgrementState,
    ArsContractCase,
    ArsContractState,
    AttachDocumentInput,
    CaseCore,
    CaseKind,
    ChangeInput,
    ChangeKind,
    ClauseInput,
    CommentInput,
    ContractActivity,
    CreatedQuery,
    DeclarationState,
    DocumentRef,
    IntermediaryReviewCase,
    LegalClock,
    MessageInput,
    OperatorDeclarationCase,
    OpinionInput,
    OpinionRequestInput,
    Reason,
    ReassignInput,
    ReviewState,
    Role,
    SignInput,
    Step,
    Timeline,
    UpdateOutcome,
    refusal_error,
)
from services.contracts.settings import ContractsSettings
from services.contracts.store import (
    CaseFilter,
    ContractsStore,
    DocumentStore,
    NewCase,
    Scope,
    StaffMember,
    Viewer,
    to_json,
)
from services.kit import names
from services.kit.audit import audit_target
from services.kit.auth import Principal, current_principal
from services.kit.cases import CaseClient, Relay
from services.kit.db import constraint_errors
from services.kit.directory import DirectoryClient, TtlCache
from services.kit.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.kit.idempotency import Call, actor_of, digest_of
from services.kit.pagination import decode_token, next_page_token, page_size

log = logging.getLogger(__name__)

SERVICE_NAME = c.DESCRIPTOR.services_by_name["ContractService"].full_name
R = TypeVar("R")
PARIS = "Europe/Paris"

# Opinion ids derive from the request that asked for them: a retried request asks for the same opinion.
_OPINIONS = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/contracts/opinions")
# Request ids of the cases of a bulk call derive from the call's and the case's.
_BULK = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/contracts/bulk")

STAFF = frozenset(
    {Role.ARS_OFFICER, Role.ARS_SUPERVISOR, Role.ARS_SIGNATORY, Role.ORDRE_REVIEWER, Role.HUB_OPERATOR}
)
ARS = frozenset({Role.ARS_OFFICER, Role.ARS_SUPERVISOR, Role.ARS_SIGNATORY})

# The decisions each kind renders, and the kinds a signature takes at each signing step.
DECISIONS: Mapping[str, frozenset[str]] = {
    CaseKind.ARS_CONTRACT: frozenset(
        {
            decisions.DecisionKind.CONTRACT_APPROVAL,
            decisions.DecisionKind.CONTRACT_REJECTION,
            decisions.DecisionKind.CONTRACT_AMENDMENT,
            decisions.DecisionKind.CONTRACT_RENEWAL,
            decisions.DecisionKind.CONTRACT_TERMINATION,
        }
    ),
    CaseKind.OPERATOR_DECLARATION: frozenset({decisions.DecisionKind.DECLARATION_ACKNOWLEDGEMENT}),
    CaseKind.INTERMEDIARY_CONTRACT_REVIEW: frozenset(
        {decisions.DecisionKind.INTERMEDIARY_VISA, decisions.DecisionKind.INTERMEDIARY_VISA_REFUSAL}
    ),
    CaseKind.AGREMENT_APPLICATION: frozenset(),
}
_CLAUSE_WORDS = {
    "PROFESSIONAL_INDEPENDENCE": "indépendance professionnelle du médecin",
    "REMUNERATION": "rémunération avec tact et mesure, sans partage d'honoraires",
    "QUALIFICATION": "qualification du médecin pour l'offre",
    "ROLL_REGISTRATION": "inscription au tableau de l'Ordre",
    "NO_CANVASSING": "absence de démarchage et de publicité directe ou indirecte",
    "HEALTH_DATA_PROTECTION": "protection et hébergement (HDS) des données de santé",
    "CIVIL_LIABILITY_INSURANCE": "assurance de responsabilité civile professionnelle",
}
_MAGIC = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
}


def _not_visible() -> PermissionDenied:
    return PermissionDenied(
        Reason.CASE_NOT_VISIBLE, "the case is not one the caller may see (or it does not exist)"
    )


def _closed() -> FailedPrecondition:
    return FailedPrecondition(Reason.CASE_CLOSED, "the case is closed: it accepts no change")


# --- who is calling -----------------------------------------------------------------------------------------


def role_names(principal: Principal) -> list[str]:
    return sorted(options_pb2.Role.Name(r).removeprefix("ROLE_") for r in principal.roles)  # type: ignore[arg-type]


def person(principal: Principal) -> str:
    """Who acts, as timelines and claims name them: `practitioners/{rpps}`, `staff/{id}` or the component."""
    if principal.practitioner:
        return principal.practitioner
    if principal.subject.startswith("staff:"):
        return names.STAFF.format(principal.subject.removeprefix("staff:"))
    if principal.component:
        return f"component/{principal.component}"
    return principal.establishment or "anonymous"


def parties(principal: Principal) -> tuple[str, ...]:
    """The promoter identities the caller acts for: its establishment (PROMOTER role), its practitioner."""
    found: list[str] = []
    if principal.establishment and principal.has_any([options_pb2.ROLE_PROMOTER]):
        found.append(principal.establishment)
    if principal.practitioner:
        found.append(principal.practitioner)
    return tuple(found)


def viewer(principal: Principal) -> Viewer:
    roles = set(role_names(principal))
    return Viewer(
        region=principal.region if roles & ARS and principal.region else None,
        territory=principal.territory if Role.ORDRE_REVIEWER in roles and principal.territory else None,
        everything=Role.HUB_OPERATOR in roles,
        parties=parties(principal),
        me=person(principal),
    )


def actor(principal: Principal, scope: Scope | None = None) -> Actor:
    """The caller as the case's rules see it. The organisation is the promoter it acts for; for an agrément,
    whose promoter is the company, the filer's side and the hub operators (who record the ministers'
    correspondence) act for the company."""
    mine = parties(principal)
    organisation = mine[0] if mine and mine[0].startswith("establishments/") else ""
    if scope is not None and scope.kind == CaseKind.AGREMENT_APPLICATION:
        roles = set(role_names(principal))
        if scope.filer in mine or Role.HUB_OPERATOR in roles:
            organisation = scope.promoter
    return Actor(id=person(principal), organisation=organisation, roles=role_names(principal))


def promoter_of(principal: Principal) -> str:
    """Who a creation is filed for: the caller's establishment (PROMOTER role), else its practitioner."""
    mine = parties(principal)
    if not mine:
        raise PermissionDenied(
            Reason.PROMOTER_REQUIRED,
            "a case is filed by a promoter: an establishment's staff (PROMOTER role, its certificate) or a "
            "practitioner",
        )
    return mine[0]


# --- reference data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionInfo:
    code: str
    display_name: str
    time_zone: str


class Regions:
    """Regions as the directory knows them (time zone, name), kept `cache_seconds`."""

    def __init__(self, channel: grpc.aio.Channel, cache_seconds: float) -> None:
        self._stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        self._cache: TtlCache[RegionInfo] = TtlCache(cache_seconds)
        self._ght_regions: TtlCache[str] = TtlCache(cache_seconds)

    async def get(self, code: str) -> RegionInfo | None:
        async def load() -> RegionInfo | None:
            try:
                reply: directory_pb2.GetRegionResponse = await self._stub.GetRegion(
                    directory_pb2.GetRegionRequest(name=names.REGION.format(code)), timeout=5.0
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return None
                raise Unavailable("DIRECTORY_UNAVAILABLE", "the directory cannot answer right now") from error
            region = reply.region
            return RegionInfo(code=region.code, display_name=region.display_name, time_zone=region.time_zone)

        return await self._cache.get(code, load)

    async def require(self, name: str, field_path: str) -> RegionInfo:
        found = await self.get(names.REGION.parse(name, field_path))
        if found is None:
            raise InvalidArgument.one(field_path, "is not a region of the directory")
        return found

    async def require_ght(self, name: str, field_path: str, region: RegionInfo) -> None:
        """`name` is empty or a GHT of `region` (a contract of region 84 cannot name a GHT of region 93)."""
        if not name:
            return
        ght_id = names.GHT.parse(name, field_path)

        async def load() -> str | None:
            try:
                reply: directory_pb2.GetGhtResponse = await self._stub.GetGht(
                    directory_pb2.GetGhtRequest(name=name), timeout=5.0
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return None
                raise Unavailable("DIRECTORY_UNAVAILABLE", "the directory cannot answer right now") from error
            return reply.ght.region

        if await self._ght_regions.get(ght_id, load) != names.REGION.format(region.code):
            raise InvalidArgument.one(field_path, f"is not a GHT of region {region.code}")


def _duration(seconds: float) -> Duration:
    found = Duration()
    found.FromTimedelta(timedelta(seconds=round(float(seconds))))
    return found


def _check_content(media_type: str, content: bytes, limit: int) -> None:
    if len(content) > limit:
        raise InvalidArgument.one("content", f"is larger than the hub's limit of {limit} bytes")
    if not content.startswith(_MAGIC[media_type]):
        raise InvalidArgument.one("content", f"is not a {media_type} document")


def _instant(day: date, zone: str) -> datetime:
    return clock.start_of_day(day, zone)


def _end_instant(day: date, zone: str) -> datetime:
    """The instant after a last day (periods end exclusively)."""
    return clock.start_of_day(day + timedelta(days=1), zone)


def _today(zone: str = PARIS) -> date:
    return clock.local_date(datetime.now(UTC), zone)


def _activity(given: c.Activity) -> policy.Activity:
    return policy.Activity(
        act_type=billing_pb2.ActType.Name(given.act_type).removeprefix("ACT_TYPE_"),
        offerer=c.Offerer.Name(given.offerer).removeprefix("OFFERER_"),
        in_parcours=given.in_parcours,
        experimental=given.experimental,
    )


# The document store, or the process that renders and verifies decisions, did not answer: retry.
DOCUMENT_UNAVAILABLE = "DOCUMENT_UNAVAILABLE"


def _bulk_request_id(request_id: str, name: str) -> str:
    return str(uuid.uuid5(_BULK, f"{request_id}/{name}"))


class ContractsServicer(contracts_pb2_grpc.ContractServiceServicer):
    def __init__(
        self,
        settings: ContractsSettings,
        store: ContractsStore,
        documents: DocumentStore,
        cases: Mapping[str, CaseClient],
        relays: Mapping[str, Relay],
        directory: DirectoryClient,
        regions: Regions,
        trust_roots: Sequence[bytes],
        document_process: DocumentProcess,
    ) -> None:
        self._settings = settings
        self._store = store
        self._documents = documents
        self._cases = cases
        self._relays = relays
        self._directory = directory
        self._regions = regions
        self._trust_roots = list(trust_roots)
        # Decisions are rendered and verified there, with their libraries (ReportLab, pyHanko), not here.
        self._document_process = document_process
        self._timeline = settings.timeline()
        # Staff as this process last recorded them (their row is written when it changes).
        self._staff_seen: dict[str, StaffMember] = {}

    # --- who is calling ------------------------------------------------------------------------------------

    async def _caller(self) -> Principal:
        """The principal, recording a staff member's roles and scope (whom a supervisor may reassign to)."""
        principal = current_principal()
        roles = set(role_names(principal))
        if roles & STAFF and principal.subject.startswith("staff:"):
            member = StaffMember(
                staff=person(principal),
                roles=tuple(sorted(roles)),
                region=principal.region or "",
                territory=principal.territory or "",
            )
            if self._staff_seen.get(member.staff) != member:
                await self._store.saw_staff(member)
                self._staff_seen[member.staff] = member
        return principal

    async def _scope(self, name: str, field_path: str, kind: str | None = None) -> tuple[Principal, Scope]:
        """The case a name designates, if the caller may see it; CASE_NOT_VISIBLE otherwise (and when it
        does not exist, or is of another kind than its name says)."""
        principal = await self._caller()
        collection, case = names.CONTRACTS_CASE.parse_ids(name, field_path)
        audit_target(resource=f"{collection}/{case}")
        found = await self._store.scope(uuid.UUID(case))
        if (
            found is None
            or CaseKind.COLLECTION[found.kind] != collection
            or (kind is not None and found.kind != kind)
            or not viewer(principal).sees(found)
        ):
            raise _not_visible()
        return principal, found

    # --- changes -------------------------------------------------------------------------------------------

    async def _change(
        self,
        principal: Principal,
        scope: Scope,
        update: str,
        request: Message,
        build: Callable[[Actor], Any],
        *,
        call: Call | None = None,
    ) -> None:
        """One state change through the case's workflow (a retry of an applied request changes nothing)."""
        call = call or Call.of(request, update, principal)
        if await self._store.applied(call) is not None:
            return
        arg = build(actor(principal, scope))
        arg.call = call

        async def closed() -> DomainError:
            return _closed()

        await self._cases[scope.kind].update(
            scope.case_id, update, arg, request_id=call.request_id, closed=closed, result_type=UpdateOutcome
        )

    def _action(
        self, request: Any, *, motivation: bool = True, items: bool = False
    ) -> Callable[[Actor], Any]:
        def build(who: Actor) -> ActionInput:
            return ActionInput(
                request_id=request.request_id,
                actor=who,
                expected_version=getattr(request, "expected_version", 0),
                motivation=request.motivation if motivation else "",
                items=list(request.items) if items else [],
            )

        return build

    async def _create(self, new: NewCase, call: Call) -> uuid.UUID:
        """Save a case and start its workflow, waiting until it opened the case."""
        case_id, _ = await self._store.create_case(new, call)
        kind = KINDS[new.kind]
        try:
            await self._relays[new.kind].start_with_update(
                case_id,
                "created",
                CreatedQuery(request_id=call.request_id),
                update_id=f"created-{case_id}",
                result_type=UpdateOutcome,
                timeout=self._settings.contracts_update_timeout,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError, Unavailable) as error:
            log.warning("case %s not opened yet: %s", case_id, type(error).__name__)
            raise Unavailable(
                kind.unavailable_reason,
                "the case is saved but not opened yet; retry with the same request_id",
            ) from None
        return case_id

    async def _row(self, case_id: uuid.UUID) -> Any:
        row = await self._store.case_row(case_id)
        if row is None:  # a case is never deleted: only reachable through a bug
            raise NotFound("CASE_NOT_FOUND", "no such case")
        return row

    async def _view(self, principal: Principal, scope: Scope, detail: str) -> None:
        await self._store.record_view(scope.case_id, person(principal), detail)

    # --- renderers ------------------------------------------------------------------------------------------

    async def _contract(self, case_id: uuid.UUID) -> c.ArsContract:
        return views.ars_contract(await self._row(case_id), datetime.now(UTC))

    async def _declaration(self, case_id: uuid.UUID) -> c.OperatorDeclaration:
        return views.operator_declaration(await self._row(case_id), datetime.now(UTC))

    async def _review(self, case_id: uuid.UUID) -> c.IntermediaryContractReview:
        return views.intermediary_review(await self._row(case_id), datetime.now(UTC))

    async def _agrement(self, case_id: uuid.UUID) -> c.AgrementApplication:
        return views.agrement_application(await self._row(case_id), datetime.now(UTC))

    # ========================================================================================================
    # The policy and coverage

    async def _region_policy(self, region: str, day: date) -> policy.RegionPolicy | None:
        return policy.region_policy_on(await self._store.policies(region), day)

    async def _evaluate(self, activity: policy.Activity, day: date, region: str) -> policy.Evaluation:
        try:
            return policy.evaluate(activity, day, await self._region_policy(region, day))
        except policy.PolicyRefusal as refused:
            raise refusal_error(refused.reason, refused.message) from None

    async def EvaluateActivity(
        self, request: c.EvaluateActivityRequest, context: grpc.aio.ServicerContext
    ) -> c.EvaluateActivityResponse:
        region = names.REGION.parse(request.region, "region")
        found = await self._evaluate(_activity(request.activity), views.py_date(request.date), region)
        return c.EvaluateActivityResponse(evaluation=views.evaluation(found))

    async def ListPolicyVersions(
        self, request: c.ListPolicyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListPolicyVersionsResponse:
        region = names.REGION.parse(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        found, last = await self._store.list_policies(
            region, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return c.ListPolicyVersionsResponse(
            region_policies=[views.region_policy(v) for v in found],
            next_page_token=next_page_token(last, filters),
        )

    async def GetPolicyVersion(
        self, request: c.GetPolicyVersionRequest, context: grpc.aio.ServicerContext
    ) -> c.GetPolicyVersionResponse:
        region, version = names.REGION_POLICY.parse_ids(request.name, "name")
        for found in await self._store.policies(region):
            if found.version == int(version):
                return c.GetPolicyVersionResponse(region_policy=views.region_policy(found))
        raise NotFound(Reason.POLICY_VERSION_NOT_FOUND, "the region published no such version")

    async def PublishPolicyVersion(
        self, request: c.PublishPolicyVersionRequest, context: grpc.aio.ServicerContext
    ) -> c.PublishPolicyVersionResponse:
        principal = await self._caller()
        region = names.REGION.parse(request.parent, "parent")
        audit_target(resource=request.parent)
        if principal.region != region:
            raise PermissionDenied(
                Reason.REGION_NOT_CALLERS, "an ARS officer publishes their own region's policy"
            )
        call = Call.of(request, "publish_policy", principal)
        done = await self._store.applied(call)
        if done is not None:
            return c.PublishPolicyVersionResponse(
                region_policy=(
                    await self.GetPolicyVersion(c.GetPolicyVersionRequest(name=done.resource), context)
                ).region_policy
            )
        given = request.region_policy
        info = await self._regions.require(request.parent, "parent")
        offerers = [c.Offerer.Name(o).removeprefix("OFFERER_") for o in given.cnom_offerers]
        try:
            version = policy.next_region_version(
                await self._store.policies(region),
                region=region,
                effective_from=views.py_date(given.effective_date),
                profile=c.RegionPolicy.Profile.Name(given.profile).removeprefix("PROFILE_"),
                today=_today(info.time_zone),
                cnom_offerers=offerers or None,
                published_by=person(principal),
                published_at=datetime.now(UTC),
                note=given.note,
            )
        except policy.PolicyRefusal as refused:
            raise refusal_error(refused.reason, refused.message) from None
        latest = lambda: refusal_error(  # noqa: E731
            Reason.POLICY_VERSION_NOT_LATEST, "another version was published meanwhile: publish after it"
        )
        async with constraint_errors(
            {"region_policies_pkey": latest, "region_policies_effective_date_key": latest}
        ):
            await self._store.publish_policy(version, call)
        audit_target(resource=version.name)
        return c.PublishPolicyVersionResponse(region_policy=views.region_policy(version))

    async def CheckCoverage(
        self, request: c.CheckCoverageRequest, context: grpc.aio.ServicerContext
    ) -> c.CheckCoverageResponse:
        region = names.REGION.parse(request.region, "region")
        day = views.py_date(request.act_date)
        # The version first: an answer is never newer than the version it says.
        version, _ = await self._store.coverage_version()
        activity = _activity(request.activity)
        evaluation = await self._evaluate(activity, day, region)
        holders = [request.practitioner, request.establishment, request.company]
        holdings = await self._store.holdings(holders, region, day) if evaluation.obligations else []
        result = coverage.check(
            evaluation,
            act_type=activity.act_type,
            act_date=day,
            region=region,
            holders=holders,
            holdings=holdings,
        )
        return c.CheckCoverageResponse(coverage=views.coverage(result), coverage_version=version)

    async def GetCoverageVersion(
        self, request: c.GetCoverageVersionRequest, context: grpc.aio.ServicerContext
    ) -> c.GetCoverageVersionResponse:
        version, changed = await self._store.coverage_version()
        return c.GetCoverageVersionResponse(version=version, update_time=views.timestamp(changed))

    # ========================================================================================================
    # Creations

    def _core(
        self,
        *,
        case_id: uuid.UUID,
        kind: str,
        region: str,
        departement: str,
        ght: str,
        promoter: str,
        principal: Principal,
        state: str,
        now: datetime,
        time_zone: str,
        legal: LegalClock | None = None,
    ) -> CaseCore:
        return CaseCore(
            case_id=str(case_id),
            kind=kind,
            region=region,
            departement=departement,
            ght=ght,
            promoter=promoter,
            created_at=now,
            created_by=person(principal),
            state=state,
            timeline=Timeline(**self._timeline.__dict__),
            clock=legal,
            time_zone=time_zone,
        )

    async def _created(self, call: Call) -> uuid.UUID | None:
        done = await self._store.applied(call)
        return names.CONTRACTS_CASE.parse_uuid(done.resource, "name") if done is not None else None

    async def CreateArsContract(
        self, request: c.CreateArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateArsContractResponse:
        principal = await self._caller()
        call = Call.of(request, "create", principal)
        case_id = await self._created(call)
        if case_id is None:
            given = request.ars_contract
            promoter = promoter_of(principal)
            info = await self._regions.require(given.region, "ars_contract.region")
            await self._regions.require_ght(given.ght, "ars_contract.ght", info)
            start, end = views.py_date(given.requested_start_date), views.py_date(given.requested_end_date)
            if end < start:
                raise InvalidArgument.one(
                    "ars_contract.requested_end_date", "must not be before the start date"
                )
            activity = _activity(given.activity)
            evaluation = await self._evaluate(activity, max(start, _today(info.time_zone)), info.code)
            now = datetime.now(UTC)
            case_id = uuid.uuid4()
            # What the promoter gave, and what the hub sets at creation (the rest is the workflow's).
            resource = c.ArsContract(
                region=given.region,
                departement=given.departement,
                ght=given.ght,
                promoter=promoter,
                title=given.title,
                description=given.description,
                activity=given.activity,
                evaluation=views.evaluation(evaluation),
                participants=list(given.participants),
                annual_funding=given.annual_funding if given.HasField("annual_funding") else None,
                requested_start_date=given.requested_start_date,
                requested_end_date=given.requested_end_date,
                creator=person(principal),
            )
            resource.create_time.FromDatetime(now)
            visa = policy.Obligation.ORDINAL_VISA in evaluation.obligations
            state = ArsContractCase(
                core=self._core(
                    case_id=case_id,
                    kind=CaseKind.ARS_CONTRACT,
                    region=info.code,
                    departement=given.departement,
                    ght=given.ght,
                    promoter=promoter,
                    principal=principal,
                    state=ArsContractState.DRAFT,
                    now=now,
                    time_zone=info.time_zone,
                ),
                activity=ContractActivity(
                    act_type=activity.act_type,
                    offerer=activity.offerer,
                    in_parcours=activity.in_parcours,
                    experimental=activity.experimental,
                ),
                requirement=evaluation.requirement,
                visa_required=visa,
                requested_valid_from=_instant(start, info.time_zone),
                requested_valid_until=_end_instant(end, info.time_zone),
            )
            case_id = await self._create(
                self._new(
                    CaseKind.ARS_CONTRACT, state, call, principal, given.title, resource.SerializeToString()
                ),
                call,
            )
        else:
            await self._resume(CaseKind.ARS_CONTRACT, case_id)
        audit_target(resource=views.case_name(CaseKind.ARS_CONTRACT, case_id))
        return c.CreateArsContractResponse(ars_contract=await self._contract(case_id))

    def _new(
        self,
        kind: str,
        state: Any,
        call: Call,
        principal: Principal,
        title: str,
        resource: bytes,
        filer: str = "",
    ) -> NewCase:
        core: CaseCore = state.core
        return NewCase(
            case_id=uuid.UUID(core.case_id),
            kind=kind,
            request_id=uuid.UUID(call.request_id),
            workflow_id=KINDS[kind].workflow_id(core.case_id),
            region=core.region,
            departement=core.departement,
            ght=core.ght,
            promoter=core.promoter,
            filer=filer or core.promoter,
            creator=person(principal),
            title=title,
            resource=resource,
            start_state=to_json(state),
            state=core.state,
            create_time=core.created_at,
        )

    async def _resume(self, kind: str, case_id: uuid.UUID) -> None:
        """A retried creation: start the workflow if the first attempt could not, and wait for it."""
        if (await self._row(case_id))["version"] > 0:
            return
        try:
            await self._relays[kind].start_with_update(
                case_id,
                "created",
                CreatedQuery(),
                update_id=f"created-{case_id}",
                result_type=UpdateOutcome,
                timeout=self._settings.contracts_update_timeout,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError, Unavailable):
            raise Unavailable(
                KINDS[kind].unavailable_reason,
                "the case is saved but not opened yet; retry with the same request_id",
            ) from None

    async def CreateOperatorDeclaration(
        self, request: c.CreateOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateOperatorDeclarationResponse:
        principal = await self._caller()
        call = Call.of(request, "create", principal)
        case_id = await self._created(call)
        if case_id is None:
            given = request.operator_declaration
            operator = promoter_of(principal)
            info = await self._regions.require(given.region, "operator_declaration.region")
            now = datetime.now(UTC)
            case_id = uuid.uuid4()
            resource = c.OperatorDeclaration(
                region=given.region,
                departement=given.departement,
                operator=operator,
                indications=list(given.indications),
                device=given.device,
                device_on_latm_list=given.device_on_latm_list,
                operator_level=given.operator_level,
                creator=person(principal),
                create_time=views.timestamp(now),
            )
            state = OperatorDeclarationCase(
                core=self._core(
                    case_id=case_id,
                    kind=CaseKind.OPERATOR_DECLARATION,
                    region=info.code,
                    departement=given.departement,
                    ght="",
                    promoter=operator,
                    principal=principal,
                    state=DeclarationState.DECLARED,
                    now=now,
                    time_zone=info.time_zone,
                ),
                indications=[c.Indication.Name(i).removeprefix("INDICATION_") for i in given.indications],
                dmn=given.device,
                latm_registered=given.device_on_latm_list,
                operator_level=billing_pb2.OperatorLevel.Name(given.operator_level).removeprefix("OPERATOR_"),
            )
            case_id = await self._create(
                self._new(
                    CaseKind.OPERATOR_DECLARATION,
                    state,
                    call,
                    principal,
                    given.device,
                    resource.SerializeToString(),
                ),
                call,
            )
        else:
            await self._resume(CaseKind.OPERATOR_DECLARATION, case_id)
        audit_target(resource=views.case_name(CaseKind.OPERATOR_DECLARATION, case_id))
        return c.CreateOperatorDeclarationResponse(operator_declaration=await self._declaration(case_id))

    async def CreateIntermediaryContractReview(
        self, request: c.CreateIntermediaryContractReviewRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateIntermediaryContractReviewResponse:
        principal = await self._caller()
        call = Call.of(request, "create", principal)
        case_id = await self._created(call)
        if case_id is None:
            if not principal.practitioner:
                raise PermissionDenied(
                    Reason.PROMOTER_REQUIRED,
                    "a contract with a company is submitted by the doctor who signs it",
                )
            given = request.intermediary_contract_review
            info = await self._regions.require(given.region, "intermediary_contract_review.region")
            if given.company and given.company != names.TELECONSULTATION_COMPANY.format(given.company_siren):
                raise InvalidArgument.one(
                    "intermediary_contract_review.company", "must be the company of company_siren"
                )
            now = datetime.now(UTC)
            case_id = uuid.uuid4()
            resource = c.IntermediaryContractReview(
                region=given.region,
                territory=given.territory,
                doctor=principal.practitioner,
                company=given.company,
                company_siren=given.company_siren,
                company_name=given.company_name,
                offer=given.offer,
                remuneration_per_act=given.remuneration_per_act
                if given.HasField("remuneration_per_act")
                else None,
            )
            resource.create_time.FromDatetime(now)
            state = IntermediaryReviewCase(
                core=self._core(
                    case_id=case_id,
                    kind=CaseKind.INTERMEDIARY_CONTRACT_REVIEW,
                    region=info.code,
                    departement=given.territory if given.territory != "FR" else "",
                    ght="",
                    promoter=principal.practitioner,
                    principal=principal,
                    state=ReviewState.UNDER_REVIEW,
                    now=now,
                    time_zone=info.time_zone,
                ),
                company=given.company or f"companies/{given.company_siren}",
                territory=given.territory,
            )
            case_id = await self._create(
                self._new(
                    CaseKind.INTERMEDIARY_CONTRACT_REVIEW,
                    state,
                    call,
                    principal,
                    given.company_name,
                    resource.SerializeToString(),
                ),
                call,
            )
        else:
            await self._resume(CaseKind.INTERMEDIARY_CONTRACT_REVIEW, case_id)
        audit_target(resource=views.case_name(CaseKind.INTERMEDIARY_CONTRACT_REVIEW, case_id))
        return c.CreateIntermediaryContractReviewResponse(
            intermediary_contract_review=await self._review(case_id)
        )

    async def CreateAgrementApplication(
        self, request: c.CreateAgrementApplicationRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateAgrementApplicationResponse:
        principal = await self._caller()
        call = Call.of(request, "create", principal)
        case_id = await self._created(call)
        if case_id is None:
            given = request.agrement_application
            siren = names.TELECONSULTATION_COMPANY.parse(given.company, "agrement_application.company")
            company = await self._store.company(siren)
            if company is None:
                raise FailedPrecondition(
                    Reason.COMPANY_NOT_REGISTERED,
                    "register the company before filing its agrément application",
                )
            mine = parties(principal)
            filer = mine[0] if mine else given.company
            national = policy.national_policy()
            today = _today()
            try:
                rule = national.clock_on("agrement", today).rule()
                validity = national.agrement_validity_on(today).validity_months
            except policy.PolicyRefusal as refused:
                raise refusal_error(refused.reason, refused.message) from None
            now = datetime.now(UTC)
            case_id = uuid.uuid4()
            resource = c.AgrementApplication(company=given.company, create_time=views.timestamp(now))
            state = AgrementCase(
                core=self._core(
                    case_id=case_id,
                    kind=CaseKind.AGREMENT_APPLICATION,
                    region="",
                    departement="",
                    ght="",
                    promoter=given.company,
                    principal=principal,
                    state=AgrementState.FILED,
                    now=now,
                    time_zone=PARIS,
                    legal=LegalClock(rule=rule, filed_at=now, time_zone=PARIS),
                ),
                company=given.company,
                validity_months=validity,
            )
            case_id = await self._create(
                self._new(
                    CaseKind.AGREMENT_APPLICATION,
                    state,
                    call,
                    principal,
                    str(company["legal_name"]),
                    resource.SerializeToString(),
                    filer=filer,
                ),
                call,
            )
        else:
            await self._resume(CaseKind.AGREMENT_APPLICATION, case_id)
        audit_target(resource=views.case_name(CaseKind.AGREMENT_APPLICATION, case_id))
        return c.CreateAgrementApplicationResponse(agrement_application=await self._agrement(case_id))

    # ========================================================================================================
    # Reads of one kind

    async def GetArsContract(
        self, request: c.GetArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.GetArsContractResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.ARS_CONTRACT)
        await self._view(principal, scope, scope.name)
        return c.GetArsContractResponse(ars_contract=await self._contract(scope.case_id))

    async def GetOperatorDeclaration(
        self, request: c.GetOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.GetOperatorDeclarationResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.OPERATOR_DECLARATION)
        await self._view(principal, scope, scope.name)
        return c.GetOperatorDeclarationResponse(operator_declaration=await self._declaration(scope.case_id))

    async def GetIntermediaryContractReview(
        self, request: c.GetIntermediaryContractReviewRequest, context: grpc.aio.ServicerContext
    ) -> c.GetIntermediaryContractReviewResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.INTERMEDIARY_CONTRACT_REVIEW)
        await self._view(principal, scope, scope.name)
        return c.GetIntermediaryContractReviewResponse(
            intermediary_contract_review=await self._review(scope.case_id)
        )

    async def GetAgrementApplication(
        self, request: c.GetAgrementApplicationRequest, context: grpc.aio.ServicerContext
    ) -> c.GetAgrementApplicationResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.AGREMENT_APPLICATION)
        await self._view(principal, scope, scope.name)
        return c.GetAgrementApplicationResponse(agrement_application=await self._agrement(scope.case_id))

    async def _list_kind(
        self,
        request: Any,
        kind: str,
        render: Callable[[Any, datetime], R],
        *,
        state: str = "",
        promoter: str = "",
        territory: str = "",
        company: str = "",
    ) -> tuple[list[R], str]:
        principal = await self._caller()
        audit_target(resource=CaseKind.COLLECTION[kind])
        if promoter and not any(
            n.matches(promoter)
            for n in (names.ESTABLISHMENT, names.PRACTITIONER, names.TELECONSULTATION_COMPANY)
        ):
            raise InvalidArgument.one(
                "promoter",
                "must be establishments/{finess}, practitioners/{rpps} or teleconsultationCompanies/{siren}",
            )
        filters: dict[str, object] = {
            "kind": kind,
            "state": state,
            "promoter": promoter,
            "territory": territory,
            "company": company,
            "caller": person(principal),
        }
        key = decode_token(request.page_token, filters)
        after = None
        if key:
            stamp, _, case = key.partition("|")
            after = (datetime.fromisoformat(stamp), uuid.UUID(case))
        rows, last = await self._store.list_kind(
            viewer(principal),
            kind,
            state=state,
            promoter=promoter,
            territory=territory,
            company=company,
            size=page_size(request.page_size),
            after=after,
        )
        now = datetime.now(UTC)
        token_key = f"{last[0].isoformat()}|{last[1]}" if last is not None else None
        return [render(r, now) for r in rows], next_page_token(token_key, filters)

    @staticmethod
    def _state_name(enum: Any, value: int) -> str:
        return str(enum.Name(value)).removeprefix("STATE_") if value else ""

    async def ListArsContracts(
        self, request: c.ListArsContractsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListArsContractsResponse:
        items, token = await self._list_kind(
            request,
            CaseKind.ARS_CONTRACT,
            views.ars_contract,
            state=self._state_name(c.ArsContract.State, request.state),
            promoter=request.promoter,
        )
        return c.ListArsContractsResponse(ars_contracts=items, next_page_token=token)

    async def ListOperatorDeclarations(
        self, request: c.ListOperatorDeclarationsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListOperatorDeclarationsResponse:
        items, token = await self._list_kind(
            request,
            CaseKind.OPERATOR_DECLARATION,
            views.operator_declaration,
            state=self._state_name(c.OperatorDeclaration.State, request.state),
            promoter=request.promoter,
        )
        return c.ListOperatorDeclarationsResponse(operator_declarations=items, next_page_token=token)

    async def ListIntermediaryContractReviews(
        self, request: c.ListIntermediaryContractReviewsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListIntermediaryContractReviewsResponse:
        items, token = await self._list_kind(
            request,
            CaseKind.INTERMEDIARY_CONTRACT_REVIEW,
            views.intermediary_review,
            state=self._state_name(c.IntermediaryContractReview.State, request.state),
            promoter=request.promoter,
            territory=request.territory,
        )
        return c.ListIntermediaryContractReviewsResponse(
            intermediary_contract_reviews=items, next_page_token=token
        )

    async def ListAgrementApplications(
        self, request: c.ListAgrementApplicationsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListAgrementApplicationsResponse:
        items, token = await self._list_kind(
            request,
            CaseKind.AGREMENT_APPLICATION,
            views.agrement_application,
            state=self._state_name(c.AgrementApplication.State, request.state),
            company=request.company,
        )
        return c.ListAgrementApplicationsResponse(agrement_applications=items, next_page_token=token)

    # ========================================================================================================
    # ArsContract

    async def _contract_change(
        self, request: Any, update: str, build: Callable[[Actor], Any] | None = None, **action: bool
    ) -> c.ArsContract:
        principal, scope = await self._scope(request.name, "name", CaseKind.ARS_CONTRACT)
        await self._change(principal, scope, update, request, build or self._action(request, **action))
        return await self._contract(scope.case_id)

    async def SubmitArsContract(
        self, request: c.SubmitArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.SubmitArsContractResponse:
        return c.SubmitArsContractResponse(
            ars_contract=await self._contract_change(request, "submit", motivation=False)
        )

    def _correction(self, request: Any) -> Callable[[Actor], ActionInput]:
        def build(who: Actor) -> ActionInput:
            reason = request.correction_reason or c.CORRECTION_REASON_INCOMPLETE
            return ActionInput(
                request_id=request.request_id,
                actor=who,
                expected_version=request.expected_version,
                motivation=request.motivation,
                items=list(request.items),
                correction_reason=c.CorrectionReason.Name(reason).removeprefix("CORRECTION_REASON_"),
            )

        return build

    async def RequestArsContractDocuments(
        self, request: c.RequestArsContractDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestArsContractDocumentsResponse:
        return c.RequestArsContractDocumentsResponse(
            ars_contract=await self._contract_change(request, "request_documents", self._correction(request))
        )

    async def CompleteArsContractDocuments(
        self, request: c.CompleteArsContractDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.CompleteArsContractDocumentsResponse:
        return c.CompleteArsContractDocumentsResponse(
            ars_contract=await self._contract_change(request, "complete_documents", motivation=False)
        )

    async def MarkArsContractComplete(
        self, request: c.MarkArsContractCompleteRequest, context: grpc.aio.ServicerContext
    ) -> c.MarkArsContractCompleteResponse:
        return c.MarkArsContractCompleteResponse(
            ars_contract=await self._contract_change(request, "mark_complete", motivation=False)
        )

    async def GiveArsContractVisa(
        self, request: c.GiveArsContractVisaRequest, context: grpc.aio.ServicerContext
    ) -> c.GiveArsContractVisaResponse:
        return c.GiveArsContractVisaResponse(ars_contract=await self._contract_change(request, "give_visa"))

    async def RefuseArsContractVisa(
        self, request: c.RefuseArsContractVisaRequest, context: grpc.aio.ServicerContext
    ) -> c.RefuseArsContractVisaResponse:
        return c.RefuseArsContractVisaResponse(
            ars_contract=await self._contract_change(request, "refuse_visa")
        )

    async def ApproveArsContract(
        self, request: c.ApproveArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.ApproveArsContractResponse:
        return c.ApproveArsContractResponse(ars_contract=await self._contract_change(request, "approve"))

    async def RejectArsContract(
        self, request: c.RejectArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.RejectArsContractResponse:
        return c.RejectArsContractResponse(ars_contract=await self._contract_change(request, "reject"))

    async def RequestArsContractChanges(
        self, request: c.RequestArsContractChangesRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestArsContractChangesResponse:
        return c.RequestArsContractChangesResponse(
            ars_contract=await self._contract_change(request, "request_changes", items=True)
        )

    async def ResubmitArsContract(
        self, request: c.ResubmitArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.ResubmitArsContractResponse:
        return c.ResubmitArsContractResponse(
            ars_contract=await self._contract_change(request, "resubmit", motivation=False)
        )

    async def _preview_ref(self, scope: Scope, kinds: Sequence[str], step: str) -> DocumentRef | None:
        """The latest unsigned preview of one of `kinds` rendered at `step`: what the signature signs."""
        found = await self._store.latest_preview(scope.case_id, kinds, step)
        if found is None:
            return None
        return DocumentRef(
            document=f"{scope.name}/decisions/{found['decision_id']}",
            version=1,
            document_type="DECISION",
            media_type="application/pdf",
            # Unused: the workflow signs the preview's bytes and records the signed document (its size too).
            size_bytes=0,
            sha256=str(found["preview_sha256"]),
            title=str(found["reference"]),
        )

    async def _signing_place(self, scope: Scope) -> str:
        found = await self._regions.get(scope.region) if scope.region else None
        return f"Agence régionale de santé {found.display_name}" if found is not None else "Parcours"

    async def SignArsContract(
        self, request: c.SignArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.SignArsContractResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.ARS_CONTRACT)
        row = await self._row(scope.case_id)
        state = views.state_of(row)
        assert isinstance(state, ArsContractCase)
        zone = state.core.time_zone
        # The decision previewed states the requested period: a signature signs that period.
        requested = (
            clock.local_date(state.requested_valid_from, zone) if state.requested_valid_from else None,
            clock.local_date(state.requested_valid_until, zone) - timedelta(days=1)
            if state.requested_valid_until
            else None,
        )
        differs = "must be the period of the decision previewed (the requested period)"
        if request.HasField("start_date") and views.py_date(request.start_date) != requested[0]:
            raise InvalidArgument.one("start_date", differs)
        if request.HasField("end_date") and views.py_date(request.end_date) != requested[1]:
            raise InvalidArgument.one("end_date", differs)
        preview = await self._preview_ref(scope, [decisions.DecisionKind.CONTRACT_APPROVAL], Step.SIGNATURE)
        place = await self._signing_place(scope)

        def build(who: Actor) -> SignInput:
            return SignInput(
                request_id=request.request_id,
                actor=who,
                decision_document=preview,
                valid_from=state.requested_valid_from,
                valid_until=state.requested_valid_until,
                expected_version=request.expected_version,
                reason=decisions.TEMPLATES[decisions.DecisionKind.CONTRACT_APPROVAL].title,
                location=place,
            )

        await self._change(principal, scope, "sign", request, build)
        return c.SignArsContractResponse(ars_contract=await self._contract(scope.case_id))

    async def AmendArsContract(
        self, request: c.AmendArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.AmendArsContractResponse:
        def build(who: Actor) -> ChangeInput:
            return ChangeInput(
                request_id=request.request_id,
                actor=who,
                change_id=request.change_id,
                kind=ChangeKind.AMENDMENT,
                summary=request.summary,
            )

        return c.AmendArsContractResponse(
            ars_contract=await self._contract_change(request, "propose_change", build)
        )

    async def RenewArsContract(
        self, request: c.RenewArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.RenewArsContractResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.ARS_CONTRACT)
        state = views.state_of(await self._row(scope.case_id))
        zone = state.core.time_zone if state is not None else PARIS
        end = _end_instant(views.py_date(request.end_date), zone)

        def build(who: Actor) -> ChangeInput:
            return ChangeInput(
                request_id=request.request_id,
                actor=who,
                change_id=request.change_id,
                kind=ChangeKind.RENEWAL,
                summary=request.summary or "Renouvellement",
                new_valid_until=end,
            )

        await self._change(principal, scope, "propose_change", request, build)
        return c.RenewArsContractResponse(ars_contract=await self._contract(scope.case_id))

    async def ApproveArsContractChange(
        self, request: c.ApproveArsContractChangeRequest, context: grpc.aio.ServicerContext
    ) -> c.ApproveArsContractChangeResponse:
        return c.ApproveArsContractChangeResponse(
            ars_contract=await self._contract_change(request, "approve_change")
        )

    async def RejectArsContractChange(
        self, request: c.RejectArsContractChangeRequest, context: grpc.aio.ServicerContext
    ) -> c.RejectArsContractChangeResponse:
        return c.RejectArsContractChangeResponse(
            ars_contract=await self._contract_change(request, "reject_change")
        )

    async def SignArsContractChange(
        self, request: c.SignArsContractChangeRequest, context: grpc.aio.ServicerContext
    ) -> c.SignArsContractChangeResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.ARS_CONTRACT)
        state = views.state_of(await self._row(scope.case_id))
        change = state.pending_change if isinstance(state, ArsContractCase) else None
        kind = (
            decisions.DecisionKind.CONTRACT_RENEWAL
            if change is not None and change.kind == ChangeKind.RENEWAL
            else decisions.DecisionKind.CONTRACT_AMENDMENT
        )
        preview = await self._preview_ref(scope, [kind], Step.CHANGE_SIGNATURE)
        place = await self._signing_place(scope)

        def build(who: Actor) -> SignInput:
            return SignInput(
                request_id=request.request_id,
                actor=who,
                decision_document=preview,
                expected_version=request.expected_version,
                reason=decisions.TEMPLATES[kind].title,
                location=place,
            )

        await self._change(principal, scope, "sign_change", request, build)
        return c.SignArsContractChangeResponse(ars_contract=await self._contract(scope.case_id))

    async def TerminateArsContract(
        self, request: c.TerminateArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.TerminateArsContractResponse:
        return c.TerminateArsContractResponse(ars_contract=await self._contract_change(request, "terminate"))

    async def WithdrawArsContract(
        self, request: c.WithdrawArsContractRequest, context: grpc.aio.ServicerContext
    ) -> c.WithdrawArsContractResponse:
        return c.WithdrawArsContractResponse(ars_contract=await self._contract_change(request, "withdraw"))

    # ========================================================================================================
    # OperatorDeclaration

    async def _declaration_change(
        self, request: Any, update: str, build: Callable[[Actor], Any] | None = None, **action: bool
    ) -> c.OperatorDeclaration:
        principal, scope = await self._scope(request.name, "name", CaseKind.OPERATOR_DECLARATION)
        await self._change(principal, scope, update, request, build or self._action(request, **action))
        return await self._declaration(scope.case_id)

    async def RequestOperatorDeclarationDocuments(
        self, request: c.RequestOperatorDeclarationDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestOperatorDeclarationDocumentsResponse:
        return c.RequestOperatorDeclarationDocumentsResponse(
            operator_declaration=await self._declaration_change(request, "request_documents", items=True)
        )

    async def CompleteOperatorDeclarationDocuments(
        self, request: c.CompleteOperatorDeclarationDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.CompleteOperatorDeclarationDocumentsResponse:
        return c.CompleteOperatorDeclarationDocumentsResponse(
            operator_declaration=await self._declaration_change(
                request, "complete_documents", motivation=False
            )
        )

    async def _acknowledge(
        self,
        principal: Principal,
        scope: Scope,
        request: Message,
        effective: date,
        expected: int,
        call: Call | None,
    ) -> None:
        row = await self._row(scope.case_id)
        state = views.state_of(row)
        zone = state.core.time_zone if state is not None else PARIS
        filed = clock.local_date(row["create_time"], zone)
        if effective < filed:
            raise InvalidArgument.one("effective_date", "a declaration takes effect on or after it was filed")

        def build(who: Actor) -> AcknowledgeInput:
            return AcknowledgeInput(
                request_id=call.request_id if call else getattr(request, "request_id"),  # noqa: B009
                actor=who,
                effective_from=_instant(effective, zone),
                expected_version=expected,
            )

        await self._change(principal, scope, "acknowledge", request, build, call=call)

    async def AcknowledgeOperatorDeclaration(
        self, request: c.AcknowledgeOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.AcknowledgeOperatorDeclarationResponse:
        principal, scope = await self._scope(request.name, "name", CaseKind.OPERATOR_DECLARATION)
        await self._acknowledge(
            principal, scope, request, views.py_date(request.effective_date), request.expected_version, None
        )
        return c.AcknowledgeOperatorDeclarationResponse(
            operator_declaration=await self._declaration(scope.case_id)
        )

    async def _bulk(
        self, request: Any, names_: Sequence[str], act: Callable[[str, Call], Awaitable[None]]
    ) -> list[c.BatchResult]:
        """Each case on its own, in order: done, or refused with its reason (never a half-done batch: each
        case is one change, and a retried batch replays each case's first outcome)."""
        principal = current_principal()
        results: list[c.BatchResult] = []
        for name in names_:
            per_case = uuid.UUID(_bulk_request_id(request.request_id, name))
            call = Call(
                request_id=str(per_case),
                method=type(request).__name__,
                actor=actor_of(principal),
                digest=digest_of(request),
            )
            try:
                await act(name, call)
            except DomainError as refused:
                results.append(
                    c.BatchResult(name=name, ok=False, reason=refused.reason, message=refused.message)
                )
            else:
                results.append(c.BatchResult(name=name, ok=True))
        return results

    async def BatchAcknowledgeOperatorDeclarations(
        self, request: c.BatchAcknowledgeOperatorDeclarationsRequest, context: grpc.aio.ServicerContext
    ) -> c.BatchAcknowledgeOperatorDeclarationsResponse:
        effective = views.py_date(request.effective_date)

        async def act(name: str, call: Call) -> None:
            principal, scope = await self._scope(name, "names", CaseKind.OPERATOR_DECLARATION)
            await self._acknowledge(principal, scope, request, effective, 0, call)

        audit_target(resource="operatorDeclarations")
        return c.BatchAcknowledgeOperatorDeclarationsResponse(
            results=await self._bulk(request, request.names, act)
        )

    async def RejectOperatorDeclaration(
        self, request: c.RejectOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.RejectOperatorDeclarationResponse:
        return c.RejectOperatorDeclarationResponse(
            operator_declaration=await self._declaration_change(request, "reject")
        )

    async def WithdrawOperatorDeclaration(
        self, request: c.WithdrawOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.WithdrawOperatorDeclarationResponse:
        return c.WithdrawOperatorDeclarationResponse(
            operator_declaration=await self._declaration_change(request, "withdraw")
        )

    async def LapseOperatorDeclaration(
        self, request: c.LapseOperatorDeclarationRequest, context: grpc.aio.ServicerContext
    ) -> c.LapseOperatorDeclarationResponse:
        return c.LapseOperatorDeclarationResponse(
            operator_declaration=await self._declaration_change(request, "lapse")
        )

    # ========================================================================================================
    # IntermediaryContractReview

    async def _review_change(
        self, request: Any, update: str, build: Callable[[Actor], Any] | None = None, **action: bool
    ) -> c.IntermediaryContractReview:
        principal, scope = await self._scope(request.name, "name", CaseKind.INTERMEDIARY_CONTRACT_REVIEW)
        await self._change(principal, scope, update, request, build or self._action(request, **action))
        return await self._review(scope.case_id)

    async def MarkIntermediaryContractClause(
        self, request: c.MarkIntermediaryContractClauseRequest, context: grpc.aio.ServicerContext
    ) -> c.MarkIntermediaryContractClauseResponse:
        def build(who: Actor) -> ClauseInput:
            return ClauseInput(
                request_id=request.request_id,
                actor=who,
                clause=c.Clause.Name(request.clause).removeprefix("CLAUSE_"),
                status=c.ClauseStatus.Name(request.status).removeprefix("CLAUSE_STATUS_"),
                note=request.note,
            )

        return c.MarkIntermediaryContractClauseResponse(
            intermediary_contract_review=await self._review_change(request, "mark_clause", build)
        )

    async def GiveIntermediaryContractVisa(
        self, request: c.GiveIntermediaryContractVisaRequest, context: grpc.aio.ServicerContext
    ) -> c.GiveIntermediaryContractVisaResponse:
        return c.GiveIntermediaryContractVisaResponse(
            intermediary_contract_review=await self._review_change(request, "give_visa")
        )

    async def RefuseIntermediaryContractVisa(
        self, request: c.RefuseIntermediaryContractVisaRequest, context: grpc.aio.ServicerContext
    ) -> c.RefuseIntermediaryContractVisaResponse:
        return c.RefuseIntermediaryContractVisaResponse(
            intermediary_contract_review=await self._review_change(request, "refuse_visa")
        )

    async def RequestIntermediaryContractChanges(
        self, request: c.RequestIntermediaryContractChangesRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestIntermediaryContractChangesResponse:
        return c.RequestIntermediaryContractChangesResponse(
            intermediary_contract_review=await self._review_change(request, "request_changes", items=True)
        )

    async def ResubmitIntermediaryContractReview(
        self, request: c.ResubmitIntermediaryContractReviewRequest, context: grpc.aio.ServicerContext
    ) -> c.ResubmitIntermediaryContractReviewResponse:
        return c.ResubmitIntermediaryContractReviewResponse(
            intermediary_contract_review=await self._review_change(request, "resubmit", motivation=False)
        )

    async def WithdrawIntermediaryContractReview(
        self, request: c.WithdrawIntermediaryContractReviewRequest, context: grpc.aio.ServicerContext
    ) -> c.WithdrawIntermediaryContractReviewResponse:
        return c.WithdrawIntermediaryContractReviewResponse(
            intermediary_contract_review=await self._review_change(request, "withdraw")
        )

    # ========================================================================================================
    # Téléconsultation companies and agréments

    async def CreateTeleconsultationCompany(
        self, request: c.CreateTeleconsultationCompanyRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateTeleconsultationCompanyResponse:
        principal = await self._caller()
        given = request.teleconsultation_company
        siren = names.TELECONSULTATION_COMPANY.parse(given.name, "teleconsultation_company.name")
        audit_target(resource=given.name)
        call = Call.of(request, "create_company", principal)
        exists = lambda: AlreadyExists(  # noqa: E731
            "COMPANY_ALREADY_REGISTERED", "this company is already in the register"
        )
        async with constraint_errors({"companies_pkey": exists}):
            await self._store.create_company(
                siren, given.legal_name, given.ans_certificate, call, person(principal)
            )
        return c.CreateTeleconsultationCompanyResponse(teleconsultation_company=await self._company(siren))

    async def _company(self, siren: str) -> c.TeleconsultationCompany:
        row = await self._store.company(siren)
        if row is None:
            raise NotFound(Reason.COMPANY_NOT_FOUND, "no such company in the register")
        agrements = await self._store.agrements_of(names.TELECONSULTATION_COMPANY.format(siren))
        return views.company(row, agrements, _today())

    async def GetTeleconsultationCompany(
        self, request: c.GetTeleconsultationCompanyRequest, context: grpc.aio.ServicerContext
    ) -> c.GetTeleconsultationCompanyResponse:
        siren = names.TELECONSULTATION_COMPANY.parse(request.name, "name")
        return c.GetTeleconsultationCompanyResponse(teleconsultation_company=await self._company(siren))

    async def ListTeleconsultationCompanies(
        self, request: c.ListTeleconsultationCompaniesRequest, context: grpc.aio.ServicerContext
    ) -> c.ListTeleconsultationCompaniesResponse:
        filters: dict[str, object] = {"valid": request.with_valid_agrement_only}
        key = decode_token(request.page_token, filters)
        today = _today()
        rows, last = await self._store.list_companies(
            valid_on=today if request.with_valid_agrement_only else None,
            size=page_size(request.page_size),
            after=key or "",
        )
        companies = [
            views.company(
                r, await self._store.agrements_of(names.TELECONSULTATION_COMPANY.format(r["siren"])), today
            )
            for r in rows
        ]
        return c.ListTeleconsultationCompaniesResponse(
            teleconsultation_companies=companies, next_page_token=next_page_token(last, filters)
        )

    async def _agrement_change(
        self, request: Any, update: str, build: Callable[[Actor], Any] | None = None, **action: bool
    ) -> c.AgrementApplication:
        principal, scope = await self._scope(request.name, "name", CaseKind.AGREMENT_APPLICATION)
        await self._change(principal, scope, update, request, build or self._action(request, **action))
        return await self._agrement(scope.case_id)

    async def RequestAgrementDocuments(
        self, request: c.RequestAgrementDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestAgrementDocumentsResponse:
        return c.RequestAgrementDocumentsResponse(
            agrement_application=await self._agrement_change(
                request, "request_documents", self._correction(request)
            )
        )

    async def CompleteAgrementDocuments(
        self, request: c.CompleteAgrementDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.CompleteAgrementDocumentsResponse:
        return c.CompleteAgrementDocumentsResponse(
            agrement_application=await self._agrement_change(request, "complete_documents", motivation=False)
        )

    async def GrantAgrement(
        self, request: c.GrantAgrementRequest, context: grpc.aio.ServicerContext
    ) -> c.GrantAgrementResponse:
        return c.GrantAgrementResponse(agrement_application=await self._agrement_change(request, "grant"))

    async def RefuseAgrement(
        self, request: c.RefuseAgrementRequest, context: grpc.aio.ServicerContext
    ) -> c.RefuseAgrementResponse:
        return c.RefuseAgrementResponse(agrement_application=await self._agrement_change(request, "refuse"))

    async def WithdrawAgrement(
        self, request: c.WithdrawAgrementRequest, context: grpc.aio.ServicerContext
    ) -> c.WithdrawAgrementResponse:
        return c.WithdrawAgrementResponse(
            agrement_application=await self._agrement_change(request, "withdraw")
        )

    # ========================================================================================================
    # The inbox

    def _filters(self, request: Any, principal: Principal) -> CaseFilter:
        assignment = {
            c.ASSIGNMENT_CLAIMED_BY_ME: "ME",
            c.ASSIGNMENT_UNCLAIMED: "UNCLAIMED",
            c.ASSIGNMENT_CLAIMED_BY_OTHERS: "OTHERS",
        }.get(request.assignment, "")
        return CaseFilter(
            kinds=tuple(views.KIND_OF_ENUM[k] for k in request.kinds),
            states=tuple(request.states),
            steps=tuple(c.Step.Name(s).removeprefix("STEP_") for s in request.steps),
            region=request.region.removeprefix("regions/"),
            ght=request.ght,
            departement=request.departement,
            establishment=request.establishment,
            assignment=assignment,
            claimant=request.claimant,
            due_before=request.due_before.ToDatetime(tzinfo=UTC) if request.HasField("due_before") else None,
            overdue_only=request.overdue_only,
            expiring_within_days=request.expiring_within_days,
            include_closed=request.include_closed,
        )

    async def ListCases(
        self, request: c.ListCasesRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCasesResponse:
        principal = await self._caller()
        audit_target(resource="cases")
        filters = self._filters(request, principal)
        tab = c.Tab.Name(request.tab or c.TAB_ALL).removeprefix("TAB_")
        order = c.CaseOrder.Name(request.order_by or c.CASE_ORDER_DUE_TIME).removeprefix("CASE_ORDER_")
        token_filters: dict[str, object] = {
            "filters": repr(filters),
            "tab": tab,
            "order": order,
            "caller": person(principal),
        }
        key = decode_token(request.page_token, token_filters)
        after = None
        if key:
            stamp, _, case = key.partition("|")
            after = (datetime.fromisoformat(stamp), uuid.UUID(case))
        rows, last = await self._store.list_cases(
            viewer(principal),
            filters,
            tab=tab,
            roles=role_names(principal),
            order=order,
            size=page_size(request.page_size),
            after=after,
        )
        token_key = f"{last[0].isoformat()}|{last[1]}" if last is not None else None
        return c.ListCasesResponse(
            cases=[views.summary(r) for r in rows], next_page_token=next_page_token(token_key, token_filters)
        )

    async def CountCases(
        self, request: c.CountCasesRequest, context: grpc.aio.ServicerContext
    ) -> c.CountCasesResponse:
        principal = await self._caller()
        audit_target(resource="cases")
        counts = await self._store.count_cases(
            viewer(principal), self._filters(request, principal), roles=role_names(principal)
        )
        return c.CountCasesResponse(counts=c.TabCounts(**counts))

    async def ListNotifications(
        self, request: c.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListNotificationsResponse:
        principal = await self._caller()
        audit_target(resource="notifications")
        token_filters: dict[str, object] = {
            "after": request.after_notification_id,
            "caller": person(principal),
        }
        key = decode_token(request.page_token, token_filters)
        rows, last = await self._store.list_notifications(
            viewer(principal),
            roles=role_names(principal),
            after=int(key) if key else request.after_notification_id,
            size=page_size(request.page_size),
        )
        return c.ListNotificationsResponse(
            notifications=[views.notification(r) for r in rows],
            next_page_token=next_page_token(last, token_filters),
        )

    async def GetCaseActivityReport(
        self, request: c.GetCaseActivityReportRequest, context: grpc.aio.ServicerContext
    ) -> c.GetCaseActivityReportResponse:
        principal = await self._caller()
        audit_target(resource="cases")
        region = ""
        zone = PARIS
        if request.region:
            info = await self._regions.require(request.region, "region")
            region, zone = info.code, info.time_zone
        elif principal.region and set(role_names(principal)) & ARS:
            found = await self._regions.get(principal.region)
            zone = found.time_zone if found is not None else PARIS
        report = await self._store.activity_report(
            viewer(principal),
            region=region,
            zone=zone,
            start=date(request.start_month.year, request.start_month.month, 1),
            end=date(request.end_month.year, request.end_month.month, 1),
            expiring_days=request.expiring_within_days or 90,
        )
        return c.GetCaseActivityReportResponse(
            state_counts=[
                c.CaseStateCount(kind=views.KIND_ENUM[r["kind"]], state=r["state"], count=r["count"])
                for r in report["states"]
            ],
            lead_times=[
                c.DecisionLeadTimes(
                    month=date_pb2.Date(year=r["month"].year, month=r["month"].month),
                    decisions=r["decisions"],
                    median_lead_time=_duration(r["median_seconds"]),
                    p90_lead_time=_duration(r["p90_seconds"]),
                )
                for r in report["lead_times"]
            ],
            expirations=[
                c.ExpiryCount(
                    expire_date=views.pb_date(r["expire_date"]),
                    kind=views.KIND_ENUM[r["kind"]],
                    count=r["count"],
                )
                for r in report["expirations"]
            ],
        )

    async def _summary(self, case_id: uuid.UUID) -> c.CaseSummary:
        return views.summary(await self._row(case_id))

    async def ClaimCaseStep(
        self, request: c.ClaimCaseStepRequest, context: grpc.aio.ServicerContext
    ) -> c.ClaimCaseStepResponse:
        principal, scope = await self._scope(request.name, "name")
        await self._change(principal, scope, "claim", request, self._action(request, motivation=False))
        return c.ClaimCaseStepResponse(case=await self._summary(scope.case_id))

    async def ReleaseCaseStep(
        self, request: c.ReleaseCaseStepRequest, context: grpc.aio.ServicerContext
    ) -> c.ReleaseCaseStepResponse:
        principal, scope = await self._scope(request.name, "name")
        await self._change(principal, scope, "release", request, self._action(request, motivation=False))
        return c.ReleaseCaseStepResponse(case=await self._summary(scope.case_id))

    async def ReassignCaseSteps(
        self, request: c.ReassignCaseStepsRequest, context: grpc.aio.ServicerContext
    ) -> c.ReassignCaseStepsResponse:
        member = await self._store.staff(request.assignee)

        async def act(name: str, call: Call) -> None:
            principal, scope = await self._scope(name, "names")
            # The assignee is of the step's group in the case's scope, as their last call showed.
            in_scope = member is not None and (
                (member.region and member.region == scope.region)
                or (member.territory and member.territory == scope.ordre_territory)
                or Role.HUB_OPERATOR in member.roles
            )
            roles = list(member.roles) if member is not None and in_scope else []

            def build(who: Actor) -> ReassignInput:
                return ReassignInput(
                    request_id=call.request_id, actor=who, assignee=request.assignee, assignee_roles=roles
                )

            await self._change(principal, scope, "reassign", request, build, call=call)

        audit_target(resource="cases")
        return c.ReassignCaseStepsResponse(results=await self._bulk(request, request.names, act))

    # ========================================================================================================
    # Opinions, messages, comments

    async def RequestCaseOpinion(
        self, request: c.RequestCaseOpinionRequest, context: grpc.aio.ServicerContext
    ) -> c.RequestCaseOpinionResponse:
        principal, scope = await self._scope(request.parent, "parent")
        opinion_id = uuid.uuid5(_OPINIONS, request.request_id)

        def build(who: Actor) -> OpinionRequestInput:
            return OpinionRequestInput(
                request_id=request.request_id,
                actor=who,
                opinion_id=str(opinion_id),
                expert=request.expert,
                question=request.question,
                due_at=request.due_time.ToDatetime(tzinfo=UTC),
            )

        await self._change(principal, scope, "request_opinion", request, build)
        return c.RequestCaseOpinionResponse(opinion=await self._opinion(scope, opinion_id))

    async def _opinion(self, scope: Scope, opinion_id: uuid.UUID) -> c.Opinion:
        row = await self._store.opinion(scope.case_id, opinion_id)
        if row is None:
            raise NotFound(Reason.OPINION_NOT_FOUND, "no such opinion on this case")
        return views.opinion(scope.name, row)

    async def _opinion_change(self, request: Any, update: str, text: str, verdict: str = "") -> c.Opinion:
        collection, case, opinion = names.CASE_OPINION.parse_ids(request.name, "name")
        principal, scope = await self._scope(f"{collection}/{case}", "name")

        def build(who: Actor) -> OpinionInput:
            return OpinionInput(
                request_id=request.request_id, actor=who, opinion_id=opinion, verdict=verdict, text=text
            )

        await self._change(principal, scope, update, request, build)
        return await self._opinion(scope, uuid.UUID(opinion))

    async def GiveCaseOpinion(
        self, request: c.GiveCaseOpinionRequest, context: grpc.aio.ServicerContext
    ) -> c.GiveCaseOpinionResponse:
        verdict = c.Verdict.Name(request.verdict).removeprefix("VERDICT_")
        return c.GiveCaseOpinionResponse(
            opinion=await self._opinion_change(request, "give_opinion", request.text, verdict)
        )

    async def RevokeCaseOpinion(
        self, request: c.RevokeCaseOpinionRequest, context: grpc.aio.ServicerContext
    ) -> c.RevokeCaseOpinionResponse:
        return c.RevokeCaseOpinionResponse(
            opinion=await self._opinion_change(request, "revoke_opinion", request.reason)
        )

    async def ListCaseOpinions(
        self, request: c.ListCaseOpinionsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCaseOpinionsResponse:
        _, scope = await self._scope(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        after = None
        if key:
            stamp, _, opinion = key.partition("|")
            after = (datetime.fromisoformat(stamp), uuid.UUID(opinion))
        rows, last = await self._store.list_opinions(
            scope.case_id, size=page_size(request.page_size), after=after
        )
        token_key = f"{last[0].isoformat()}|{last[1]}" if last is not None else None
        return c.ListCaseOpinionsResponse(
            opinions=[views.opinion(scope.name, r) for r in rows],
            next_page_token=next_page_token(token_key, filters),
        )

    async def PostCaseMessage(
        self, request: c.PostCaseMessageRequest, context: grpc.aio.ServicerContext
    ) -> c.PostCaseMessageResponse:
        principal, scope = await self._scope(request.parent, "parent")

        def build(who: Actor) -> MessageInput:
            return MessageInput(
                request_id=request.request_id, actor=who, text=request.text, items=list(request.items)
            )

        await self._change(principal, scope, "post_message", request, build)
        row = await self._store.message_of(request.request_id)
        if row is None:
            raise Unavailable("CASE_BUSY", "the message is not recorded yet; retry with the same request_id")
        return c.PostCaseMessageResponse(message=views.message(scope.name, row))

    async def ListCaseMessages(
        self, request: c.ListCaseMessagesRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCaseMessagesResponse:
        _, scope = await self._scope(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        rows, last = await self._store.list_messages(
            scope.case_id, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return c.ListCaseMessagesResponse(
            messages=[views.message(scope.name, r) for r in rows],
            next_page_token=next_page_token(last, filters),
        )

    async def AddCaseComment(
        self, request: c.AddCaseCommentRequest, context: grpc.aio.ServicerContext
    ) -> c.AddCaseCommentResponse:
        principal, scope = await self._scope(request.parent, "parent")

        def build(who: Actor) -> CommentInput:
            return CommentInput(request_id=request.request_id, actor=who, text=request.text)

        await self._change(principal, scope, "add_comment", request, build)
        row = await self._store.comment_of(request.request_id)
        if row is None:
            raise Unavailable("CASE_BUSY", "the comment is not recorded yet; retry with the same request_id")
        return c.AddCaseCommentResponse(comment=views.comment(scope.name, row))

    async def ListCaseComments(
        self, request: c.ListCaseCommentsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCaseCommentsResponse:
        _, scope = await self._scope(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        rows, last = await self._store.list_comments(
            scope.case_id, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return c.ListCaseCommentsResponse(
            comments=[views.comment(scope.name, r) for r in rows],
            next_page_token=next_page_token(last, filters),
        )

    # ========================================================================================================
    # Documents and the timeline

    async def CreateCaseDocument(
        self, request: c.CreateCaseDocumentRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateCaseDocumentResponse:
        principal, scope = await self._scope(request.parent, "parent")
        call = Call.of(request, "attach_document", principal)
        if await self._store.applied(call) is None:
            _check_content(request.media_type, request.content, self._settings.document_max_bytes)
            digest = await self._documents.put(request.content)
            uploader = person(principal)

            def build(who: Actor) -> AttachDocumentInput:
                return AttachDocumentInput(
                    request_id=request.request_id,
                    actor=who,
                    document=DocumentRef(
                        document=f"{scope.name}/documents/{request.document_id}",
                        version=0,
                        document_type=c.DocumentType.Name(request.document_type).removeprefix(
                            "DOCUMENT_TYPE_"
                        ),
                        media_type=request.media_type,
                        size_bytes=len(request.content),
                        sha256=digest,
                        title=request.title,
                        uploader=uploader,
                        request_id=request.request_id,
                    ),
                )

            await self._change(principal, scope, "attach_document", request, build, call=call)
        row = await self._store.document_of(request.request_id)
        if row is None:
            raise Unavailable("CASE_BUSY", "the document is not recorded yet; retry with the same request_id")
        return c.CreateCaseDocumentResponse(document=views.document(scope.name, row))

    async def GetCaseDocument(
        self, request: c.GetCaseDocumentRequest, context: grpc.aio.ServicerContext
    ) -> c.GetCaseDocumentResponse:
        collection, case, document_id = names.CASE_DOCUMENT.parse_ids(request.name, "name")
        principal, scope = await self._scope(f"{collection}/{case}", "name")
        row = await self._store.document(scope.case_id, document_id, request.version)
        if row is None:
            raise NotFound(Reason.DOCUMENT_NOT_FOUND, "the case has no such document (or version)")
        content = await self._documents.get(str(row["sha256"]))
        if content is None:
            raise Unavailable(DOCUMENT_UNAVAILABLE, "the document's content cannot be read right now")
        await self._view(principal, scope, f"{request.name} v{row['version']}")
        return c.GetCaseDocumentResponse(document=views.document(scope.name, row, content))

    async def ListCaseDocuments(
        self, request: c.ListCaseDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCaseDocumentsResponse:
        _, scope = await self._scope(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent, "all": request.all_versions}
        key = decode_token(request.page_token, filters)
        after = None
        if key:
            stamp, document_id, version = key.split("|")
            after = (datetime.fromisoformat(stamp), document_id, int(version))
        rows, last = await self._store.list_documents(
            scope.case_id, all_versions=request.all_versions, size=page_size(request.page_size), after=after
        )
        token_key = f"{last[0].isoformat()}|{last[1]}|{last[2]}" if last is not None else None
        return c.ListCaseDocumentsResponse(
            documents=[views.document(scope.name, r) for r in rows],
            next_page_token=next_page_token(token_key, filters),
        )

    async def ListCaseEvents(
        self, request: c.ListCaseEventsRequest, context: grpc.aio.ServicerContext
    ) -> c.ListCaseEventsResponse:
        _, scope = await self._scope(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        rows, last = await self._store.list_events(
            scope.case_id, size=page_size(request.page_size), after=int(key) if key else 0
        )
        return c.ListCaseEventsResponse(
            events=[views.event(scope.name, r) for r in rows], next_page_token=next_page_token(last, filters)
        )

    # ========================================================================================================
    # Decisions

    async def _decision_content(
        self, scope: Scope, row: Any, kind: str, motivation: str, reference: str
    ) -> decisions.DecisionContent:
        state = views.state_of(row)
        core: CaseCore = state.core
        zone = core.time_zone
        region = await self._regions.get(scope.region) if scope.region else None
        if scope.kind == CaseKind.INTERMEDIARY_CONTRACT_REVIEW:
            territory = scope.ordre_territory
            issuer = (
                "Conseil national de l'Ordre des médecins"
                if territory == "FR"
                else f"Conseil départemental de l'Ordre des médecins ({territory})"
            )
        else:
            issuer = (
                f"Agence régionale de santé {region.display_name}" if region else "Agence régionale de santé"
            )
        promoter = await self._promoter_words(core.promoter)
        resource_title = str(row["title"])
        valid_from = valid_until = None
        items: tuple[str, ...] = ()
        if isinstance(state, ArsContractCase):
            subject = resource_title
            if kind == decisions.DecisionKind.CONTRACT_APPROVAL and state.requested_valid_from:
                assert state.requested_valid_until is not None
                valid_from = clock.local_date(state.requested_valid_from, zone)
                valid_until = clock.local_date(state.requested_valid_until, zone) - timedelta(days=1)
            if kind == decisions.DecisionKind.CONTRACT_RENEWAL and state.pending_change is not None:
                assert state.valid_from is not None
                assert state.pending_change.new_valid_until is not None
                valid_from = clock.local_date(state.valid_from, zone)
                valid_until = clock.local_date(state.pending_change.new_valid_until, zone) - timedelta(days=1)
        elif isinstance(state, OperatorDeclarationCase):
            subject = f"Télésurveillance — {state.dmn} (niveau {state.operator_level.removeprefix('LEVEL_')})"
        elif isinstance(state, IntermediaryReviewCase):
            subject = f"Contrat avec {resource_title}"
            if kind == decisions.DecisionKind.INTERMEDIARY_VISA_REFUSAL:
                items = tuple(
                    _CLAUSE_WORDS[m.clause] + (f" : {m.note}" if m.note else "")
                    for m in state.clauses
                    if m.status == "NOT_SATISFIED"
                )
        else:
            subject = resource_title
        return decisions.DecisionContent(
            kind=kind,
            reference=reference,
            case_name=scope.name,
            issuer=issuer,
            promoter=promoter,
            subject=subject,
            motivation=motivation,
            items=items,
            valid_from=valid_from,
            valid_until=valid_until,
            place=region.display_name if region else "Paris",
            decided_on=_today(zone),
        )

    async def _promoter_words(self, promoter: str) -> str:
        if promoter.startswith("establishments/"):
            found = await self._directory.establishment(promoter)
            finess = promoter.removeprefix("establishments/")
            return f"{found.display_name} (FINESS {finess})" if found is not None else f"FINESS {finess}"
        if promoter.startswith("practitioners/"):
            return f"Praticien RPPS {promoter.removeprefix('practitioners/')}"
        if promoter.startswith("teleconsultationCompanies/"):
            siren = promoter.removeprefix("teleconsultationCompanies/")
            company = await self._store.company(siren)
            return f"{company['legal_name']} (SIREN {siren})" if company is not None else f"SIREN {siren}"
        return promoter

    async def PreviewCaseDecision(
        self, request: c.PreviewCaseDecisionRequest, context: grpc.aio.ServicerContext
    ) -> c.PreviewCaseDecisionResponse:
        principal, scope = await self._scope(request.parent, "parent")
        call = Call.of(request, "preview_decision", principal)
        done = await self._store.applied(call)
        if done is not None:
            decision_id = names.CASE_DECISION.parse_uuid(done.resource, "name")
        else:
            kind = c.DecisionKind.Name(request.kind).removeprefix("DECISION_KIND_")
            if kind not in DECISIONS[scope.kind]:
                raise InvalidArgument.one("kind", f"is not a decision a {scope.kind} case takes")
            row = await self._row(scope.case_id)
            if row["case_state"] is None:
                raise FailedPrecondition(Reason.NO_OPEN_STEP, "the case is not opened yet")
            prefix = (
                f"ORDRE{scope.ordre_territory}"
                if scope.kind == CaseKind.INTERMEDIARY_CONTRACT_REVIEW
                else f"ARS{scope.region}"
            )
            reference = await self._store.next_reference(prefix, _today().year)
            content = await self._decision_content(scope, row, kind, request.motivation, reference)
            try:
                preview = await self._document_process.render(content)
            except decisions.DecisionError as bad:
                raise InvalidArgument.one("motivation", str(bad)) from None
            except DocumentProcessFailed:
                raise Unavailable(DOCUMENT_UNAVAILABLE, "the decision cannot be rendered right now") from None
            digest = await self._documents.put(preview)
            decision_id = await self._store.create_decision(
                decision_id=uuid.uuid4(),
                case_id=scope.case_id,
                kind=kind,
                reference=reference,
                step=str(row["step"]),
                motivation=request.motivation,
                preview_sha256=digest,
                call=call,
                creator=person(principal),
                case_name=scope.name,
            )
        return c.PreviewCaseDecisionResponse(decision=await self._decision(scope, decision_id))

    async def _decision(self, scope: Scope, decision_id: uuid.UUID) -> c.CaseDecision:
        row = await self._store.decision(decision_id)
        if row is None or row["case_id"] != scope.case_id:
            raise NotFound(Reason.DECISION_NOT_FOUND, "the case has no such decision")
        signed = row["signed_sha256"] is not None
        content = await self._documents.get(str(row["signed_sha256"] if signed else row["preview_sha256"]))
        if content is None:
            raise Unavailable(DOCUMENT_UNAVAILABLE, "the decision's content cannot be read right now")
        if not signed:
            return views.decision(scope.name, row, content)
        try:
            verified = await self._document_process.verify(content, self._trust_roots)
        except DocumentProcessFailed:
            problem = "the decision's signature cannot be checked right now"
            raise Unavailable(DOCUMENT_UNAVAILABLE, problem) from None
        return views.decision(
            scope.name,
            row,
            content,
            signer=verified.signer if verified.ok else "",
            sign_time=verified.signed_at if verified.ok else None,
        )

    async def GetCaseDecision(
        self, request: c.GetCaseDecisionRequest, context: grpc.aio.ServicerContext
    ) -> c.GetCaseDecisionResponse:
        collection, case, decision = names.CASE_DECISION.parse_ids(request.name, "name")
        principal, scope = await self._scope(f"{collection}/{case}", "name")
        found = await self._decision(scope, uuid.UUID(decision))
        await self._view(principal, scope, request.name)
        return c.GetCaseDecisionResponse(decision=found)

    # ========================================================================================================
    # Motivation templates

    async def CreateMotivationTemplate(
        self, request: c.CreateMotivationTemplateRequest, context: grpc.aio.ServicerContext
    ) -> c.CreateMotivationTemplateResponse:
        principal = await self._caller()
        region = names.REGION.parse(request.parent, "parent")
        if principal.region != region:
            raise PermissionDenied(Reason.REGION_NOT_CALLERS, "officers write their own region's templates")
        given = request.motivation_template
        call = Call.of(request, "create_template", principal)
        taken = lambda: AlreadyExists(  # noqa: E731
            "TEMPLATE_TITLE_TAKEN", "the region has a template of this title already"
        )
        async with constraint_errors({"motivation_templates_region_title_key": taken}):
            template_id = await self._store.create_template(
                template_id=uuid.uuid4(),
                region=region,
                title=given.title,
                text=given.text,
                kinds=[views.KIND_OF_ENUM[k] for k in given.kinds],
                call=call,
                creator=person(principal),
                create_time=datetime.now(UTC),
            )
        row = await self._store.template(template_id)
        assert row is not None
        return c.CreateMotivationTemplateResponse(motivation_template=views.template(row))

    async def ListMotivationTemplates(
        self, request: c.ListMotivationTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> c.ListMotivationTemplatesResponse:
        principal = await self._caller()
        region = names.REGION.parse(request.parent, "parent")
        if principal.region != region:
            raise PermissionDenied(Reason.REGION_NOT_CALLERS, "officers read their own region's templates")
        filters: dict[str, object] = {"parent": request.parent}
        key = decode_token(request.page_token, filters)
        rows, last = await self._store.list_templates(
            region, size=page_size(request.page_size), after=key or ""
        )
        return c.ListMotivationTemplatesResponse(
            motivation_templates=[views.template(r) for r in rows],
            next_page_token=next_page_token(last, filters),
        )


# --- text PostgreSQL can hold -------------------------------------------------------------------------------


def _nul_fields(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The paths of the request's strings holding a NUL byte (PostgreSQL's text holds none)."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        values = list(value) if field.is_repeated else [value]
        for index, item in enumerate(values):
            at = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                found.append(FieldViolation(at, "must not contain a NUL character"))
            elif isinstance(item, Message):
                found += _nul_fields(item, f"{at}.")
    return found


def _refusing_nul(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(self: ContractsServicer, request: Message, context: grpc.aio.ServicerContext) -> Any:
        violations = _nul_fields(request)
        if violations:
            raise InvalidArgument(violations)
        return await method(self, request, context)

    checked.__name__ = method.__name__
    checked.__doc__ = method.__doc__
    return checked


for _method in c.DESCRIPTOR.services_by_name["ContractService"].methods:
    setattr(ContractsServicer, _method.name, _refusing_nul(getattr(ContractsServicer, _method.name)))
