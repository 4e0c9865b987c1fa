"""A case as the console shows it, and the decisions an officer may take on it now.

Every decision is the contracts service's RPC of that name (a Temporal Update behind it): the console offers
only the actions that the case's state, its open step, the step's candidate group and the officer's roles
allow, and the service decides in the end (its refusal is shown in French).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from google.protobuf.message import Message
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.contracts.v1 import contracts_pb2

from services.console.french import COLLECTIONS, KIND_OF_COLLECTION
from services.console.hub import Hub, ServiceError
from services.console.security import Officer

# Kind → (Get RPC, its response field, the proto message's State enum).
GETTERS = {
    "CASE_KIND_ARS_CONTRACT": ("GetArsContract", "ars_contract", contracts_pb2.ArsContract.State),
    "CASE_KIND_OPERATOR_DECLARATION": (
        "GetOperatorDeclaration",
        "operator_declaration",
        contracts_pb2.OperatorDeclaration.State,
    ),
    "CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW": (
        "GetIntermediaryContractReview",
        "intermediary_contract_review",
        contracts_pb2.IntermediaryContractReview.State,
    ),
    "CASE_KIND_AGREMENT_APPLICATION": (
        "GetAgrementApplication",
        "agrement_application",
        contracts_pb2.AgrementApplication.State,
    ),
}
# Workflow id prefix per kind (`{kind}-{case id}`, contracts.proto).
WORKFLOW_PREFIXES = {
    "CASE_KIND_ARS_CONTRACT": "ars-contract-",
    "CASE_KIND_OPERATOR_DECLARATION": "operator-declaration-",
    "CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW": "intermediary-contract-review-",
    "CASE_KIND_AGREMENT_APPLICATION": "agrement-application-",
}


@dataclass(frozen=True)
class Action:
    """A decision button: the RPC, when it is offered, and what its form asks."""

    key: str
    rpc: str
    label: str
    kind: str
    states: frozenset[str]
    steps: frozenset[str]
    role: str
    # Form fields: motivation (required / optional), items, effective_date, start/end dates.
    motivation: str = ""  # "required" | "optional" | ""
    items: bool = False
    effective_date: bool = False
    period: bool = False
    danger: bool = False
    # A pending amendment or renewal must be (un)approved for this action.
    change: str = ""  # "" | "to_review" | "to_sign"


def _a(key: str, rpc: str, label: str, kind: str, states: str, steps: str, role: str, **kw: Any) -> Action:
    return Action(key, rpc, label, kind, frozenset(states.split()), frozenset(steps.split()), role, **kw)


_C, _D, _I = (
    "CASE_KIND_ARS_CONTRACT",
    "CASE_KIND_OPERATOR_DECLARATION",
    "CASE_KIND_INTERMEDIARY_CONTRACT_REVIEW",
)
ACTIONS: tuple[Action, ...] = (
    _a(
        "mark-complete",
        "MarkArsContractComplete",
        "Déclarer le dossier complet",
        _C,
        "SUBMITTED",
        "STEP_COMPLETENESS_CHECK",
        "ars_officer",
    ),
    _a(
        "request-documents",
        "RequestArsContractDocuments",
        "Demander des pièces",
        _C,
        "SUBMITTED",
        "STEP_COMPLETENESS_CHECK",
        "ars_officer",
        motivation="required",
        items=True,
    ),
    _a(
        "reject",
        "RejectArsContract",
        "Rejeter",
        _C,
        "SUBMITTED UNDER_REVIEW",
        "STEP_COMPLETENESS_CHECK STEP_ARS_REVIEW",
        "ars_officer",
        motivation="required",
        danger=True,
    ),
    _a(
        "approve",
        "ApproveArsContract",
        "Approuver",
        _C,
        "UNDER_REVIEW",
        "STEP_ARS_REVIEW",
        "ars_officer",
        motivation="optional",
    ),
    _a(
        "request-changes",
        "RequestArsContractChanges",
        "Demander des modifications",
        _C,
        "UNDER_REVIEW",
        "STEP_ARS_REVIEW",
        "ars_officer",
        motivation="required",
        items=True,
    ),
    _a(
        "give-visa",
        "GiveArsContractVisa",
        "Accorder le visa de l'Ordre",
        _C,
        "AWAITING_VISA",
        "STEP_ORDINAL_VISA",
        "ordre_reviewer",
        motivation="optional",
    ),
    _a(
        "refuse-visa",
        "RefuseArsContractVisa",
        "Refuser le visa de l'Ordre",
        _C,
        "AWAITING_VISA",
        "STEP_ORDINAL_VISA",
        "ordre_reviewer",
        motivation="required",
        danger=True,
    ),
    _a(
        "sign",
        "SignArsContract",
        "Signer le contrat",
        _C,
        "AWAITING_SIGNATURE",
        "STEP_SIGNATURE",
        "ars_signatory",
        period=True,
    ),
    _a(
        "approve-change",
        "ApproveArsContractChange",
        "Approuver l'avenant ou le renouvellement",
        _C,
        "ACTIVE",
        "STEP_CHANGE_REVIEW",
        "ars_officer",
        motivation="optional",
    ),
    _a(
        "reject-change",
        "RejectArsContractChange",
        "Rejeter l'avenant ou le renouvellement",
        _C,
        "ACTIVE",
        "STEP_CHANGE_REVIEW",
        "ars_officer",
        motivation="required",
        danger=True,
    ),
    _a(
        "sign-change",
        "SignArsContractChange",
        "Signer l'avenant ou le renouvellement",
        _C,
        "ACTIVE",
        "STEP_CHANGE_SIGNATURE",
        "ars_signatory",
    ),
    _a(
        "terminate",
        "TerminateArsContract",
        "Résilier le contrat",
        _C,
        "ACTIVE",
        "",
        "ars_officer",
        motivation="required",
        danger=True,
    ),
    _a(
        "acknowledge",
        "AcknowledgeOperatorDeclaration",
        "Accuser réception de la déclaration",
        _D,
        "DECLARED",
        "STEP_ACKNOWLEDGEMENT",
        "ars_officer",
        effective_date=True,
    ),
    _a(
        "request-declaration-documents",
        "RequestOperatorDeclarationDocuments",
        "Demander des pièces",
        _D,
        "DECLARED",
        "STEP_ACKNOWLEDGEMENT",
        "ars_officer",
        motivation="required",
        items=True,
    ),
    _a(
        "reject-declaration",
        "RejectOperatorDeclaration",
        "Rejeter la déclaration",
        _D,
        "DECLARED",
        "STEP_ACKNOWLEDGEMENT",
        "ars_officer",
        motivation="required",
        danger=True,
    ),
    _a(
        "lapse",
        "LapseOperatorDeclaration",
        "Constater la caducité",
        _D,
        "ACKNOWLEDGED EFFECTIVE",
        "",
        "ars_officer",
        motivation="required",
        danger=True,
    ),
    _a(
        "give-intermediary-visa",
        "GiveIntermediaryContractVisa",
        "Accorder le visa",
        _I,
        "UNDER_REVIEW",
        "STEP_ORDRE_REVIEW",
        "ordre_reviewer",
        motivation="optional",
    ),
    _a(
        "refuse-intermediary-visa",
        "RefuseIntermediaryContractVisa",
        "Refuser le visa",
        _I,
        "UNDER_REVIEW",
        "STEP_ORDRE_REVIEW",
        "ordre_reviewer",
        motivation="required",
        danger=True,
    ),
    _a(
        "request-intermediary-changes",
        "RequestIntermediaryContractChanges",
        "Demander des modifications",
        _I,
        "UNDER_REVIEW",
        "STEP_ORDRE_REVIEW",
        "ordre_reviewer",
        motivation="required",
        items=True,
    ),
)
ACTIONS_BY_KEY = {a.key: a for a in ACTIONS}
# Which decision document the signature previews (PreviewCaseDecision).
PREVIEWS = {
    "sign": contracts_pb2.DECISION_KIND_CONTRACT_APPROVAL,
    "sign-change": contracts_pb2.DECISION_KIND_CONTRACT_AMENDMENT,
}


@dataclass
class CaseView:
    """Everything the case page shows."""

    kind: str
    collection: str
    case_id: str
    name: str
    case: Any
    state: str
    events: list[contracts_pb2.CaseEvent] = field(default_factory=list)
    opinions: list[contracts_pb2.Opinion] = field(default_factory=list)
    messages: list[contracts_pb2.CaseMessage] = field(default_factory=list)
    comments: list[contracts_pb2.CaseComment] = field(default_factory=list)
    documents: list[contracts_pb2.CaseDocument] = field(default_factory=list)
    # Sections the service refused to this officer (e.g. opinions to an Ordre reviewer): name → reason.
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def step(self) -> contracts_pb2.CaseStep | None:
        progress = self.case.progress
        return progress.current_step if progress.HasField("current_step") else None

    @property
    def workflow_id(self) -> str:
        return WORKFLOW_PREFIXES[self.kind] + self.case_id


def case_name(collection: str, case_id: str) -> tuple[str, str]:
    """(kind, resource name) of a case URL; KeyError/ValueError when it is not one."""
    kind = KIND_OF_COLLECTION[collection]
    return kind, f"{collection}/{uuid.UUID(case_id)}"


def url_of(name: str) -> str:
    collection, _, case_id = name.partition("/")
    return f"/dossiers/{collection}/{case_id}"


async def load_case(hub: Hub, officer: Officer, collection: str, case_id: str) -> CaseView:
    """The case and its timeline, opinions, messages, comments and documents; ServiceError when refused
    (a hidden case answers as a missing one: `ServiceError.hidden`)."""
    hub.require("contracts")
    assert hub.contracts is not None
    kind, name = case_name(collection, case_id)
    getter, field_name, states = GETTERS[kind]
    request_class = getattr(contracts_pb2, f"{getter}Request")
    response = await hub.call(officer, "contracts", getattr(hub.contracts, getter), request_class(name=name))
    case = getattr(response, field_name)
    view = CaseView(
        kind, collection, str(uuid.UUID(case_id)), name, case, states.Name(case.state).removeprefix("STATE_")
    )
    stub = hub.contracts

    async def section(key: str, rpc: str, request: Message, repeated: str) -> None:
        try:
            result = await hub.call(officer, "contracts", getattr(stub, rpc), request)
            setattr(view, key, list(getattr(result, repeated)))
        except ServiceError as error:
            view.unavailable[key] = error.reason or error.code.name

    await asyncio.gather(
        section(
            "events",
            "ListCaseEvents",
            contracts_pb2.ListCaseEventsRequest(parent=name, page_size=500),
            "events",
        ),
        section(
            "opinions",
            "ListCaseOpinions",
            contracts_pb2.ListCaseOpinionsRequest(parent=name, page_size=100),
            "opinions",
        ),
        section(
            "messages",
            "ListCaseMessages",
            contracts_pb2.ListCaseMessagesRequest(parent=name, page_size=200),
            "messages",
        ),
        section(
            "comments",
            "ListCaseComments",
            contracts_pb2.ListCaseCommentsRequest(parent=name, page_size=200),
            "comments",
        ),
        section(
            "documents",
            "ListCaseDocuments",
            contracts_pb2.ListCaseDocumentsRequest(parent=name, page_size=200),
            "documents",
        ),
    )
    return view


def available_actions(view: CaseView, officer: Officer) -> list[Action]:
    """The decisions the officer may take now: by the case's state and open step, the step's group and
    their role."""
    step = view.step
    step_name = contracts_pb2.Step.Name(step.step) if step is not None else ""
    held_by_other = step is not None and bool(step.claimant) and step.claimant != f"staff/{officer.staff_id}"
    offered = []
    for action in ACTIONS:
        if action.kind != view.kind or view.state not in action.states or not officer.has(action.role):
            continue
        if action.steps and (step_name not in action.steps or held_by_other):
            continue
        offered.append(action)
    return offered


def may_claim(view: CaseView, officer: Officer) -> bool:
    step = view.step
    if step is None or step.claimant:
        return False
    return _candidate(step, officer)


def may_release(view: CaseView, officer: Officer) -> bool:
    step = view.step
    if step is None or not step.claimant:
        return False
    return step.claimant == f"staff/{officer.staff_id}" or officer.has("ars_supervisor")


def _candidate(step: contracts_pb2.CaseStep, officer: Officer) -> bool:
    from parcours.options.v1 import options_pb2

    role = options_pb2.Role.Name(step.candidate_role).removeprefix("ROLE_").lower()
    return officer.has(role) or (role == "ars_officer" and officer.has("ars_supervisor"))


def action_request(action: Action, name: str, form: Mapping[str, str], version: int) -> Message:
    """The RPC's request from the submitted form (only the fields the request has)."""
    request_class = getattr(contracts_pb2, f"{action.rpc}Request")
    fields = {f.name for f in request_class.DESCRIPTOR.fields}
    values: dict[str, Any] = {"request_id": _request_id(form), "name": name}
    if "expected_version" in fields:
        values["expected_version"] = version
    if "motivation" in fields and form.get("motivation", "").strip():
        values["motivation"] = form["motivation"].strip()
    if "items" in fields:
        values["items"] = [line.strip() for line in form.get("items", "").splitlines() if line.strip()]
    if "effective_date" in fields and form.get("effective_date"):
        values["effective_date"] = proto_date(date.fromisoformat(form["effective_date"]))
    for key in ("start_date", "end_date"):
        if key in fields and form.get(key):
            values[key] = proto_date(date.fromisoformat(form[key]))
    request: Message = request_class(**values)
    return request


def _request_id(form: Mapping[str, str]) -> str:
    """The form's idempotency key (rendered with the page: a double submission applies once)."""
    value = form.get("request_id", "")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid4())


def request_id(form: Mapping[str, str]) -> str:
    return _request_id(form)


def proto_date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def py_date(value: date_pb2.Date) -> date | None:
    if not value.year:
        return None
    return date(value.year, value.month, value.day)


def collection_of(kind: str) -> str:
    return COLLECTIONS[kind]
