"""What an activity needs from the ARS before it is billed, behind one interface: the contracts service.

Some acts can only be billed when the ARS knows about them: the télésurveillance forfaits need the operator's
declaration to the ARS (décrets 2022-1767 / 2022-1769), a region's policy may require a contract (with the
Ordre's visa) for activities outside the parcours de soins, and a téléconsultation company's salaried doctors'
téléconsultations need the company's agrément (L.4081-1 CSP). The billing rules ask a `ContractPolicy`;
`GrpcContractPolicy` answers with the contracts service's CheckCoverage, called with billing's component
identity.

Caching, and how it is invalidated. Coverage answers are asked on every quote and record of such an act and
change rarely, so a covered answer is kept, with the contracts service's coverage version it was computed at
(CheckCoverage says it). That version moves, in the same transaction, whenever a contract, declaration or
agrément comes into force or leaves it, or a region publishes a policy version. Billing reads the version
(GetCoverageVersion, one small call) at most every `check_seconds`, and drops every kept answer older than the
version it reads; `max_age_seconds` bounds an answer's life anyway. A refused answer (not covered) is never
kept: the moment a declaration becomes effective, the next quote asks again and is accepted. So a covered
answer may outlive the case that covered it by at most `check_seconds` (a declaration lapsing today, a
contract terminated): acts are dated, and a lapse or termination takes effect from the next day, so that
window changes no answer for the act's own date in practice.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import grpc
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2, contracts_pb2_grpc

from services.kit.errors import Unavailable

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 5.0


class ActivityKind(enum.StrEnum):
    """Activities a contract policy is asked about."""

    TELESURVEILLANCE_OPERATOR = "TELESURVEILLANCE_OPERATOR"
    OUTSIDE_PARCOURS_TELECONSULTATION = "OUTSIDE_PARCOURS_TELECONSULTATION"
    # A téléconsultation by a salaried doctor of a téléconsultation company (in or out of the parcours).
    TELECONSULTATION_COMPANY = "TELECONSULTATION_COMPANY"


class Requirement(enum.StrEnum):
    NONE = "NONE"
    DECLARATION = "DECLARATION"
    CONTRACT = "CONTRACT"


@dataclass(frozen=True)
class Activity:
    """An activity to bill: what, where (ARS region code), by whom, on which act date."""

    kind: ActivityKind
    region: str  # INSEE region code, e.g. "84"
    practitioner: str  # practitioners/{rpps}
    establishment: str  # establishments/{finess}
    on: date
    # The téléconsultation company employing the practitioner, `teleconsultationCompanies/{siren}` ('' none).
    company: str = ""
    in_parcours: bool = True


@dataclass(frozen=True)
class ContractDecision:
    """What the activity needs and whether the holder has it."""

    activity: Activity
    requirement: Requirement
    satisfied: bool
    # The contract, declaration or agrément found ('' when none is needed or none is held).
    reference: str
    # Why, for a person.
    reason: str
    source: str
    # When not satisfied: the stable reason of the first obligation missing (REQUIRES_CONTRACT,
    # REQUIRES_ORDINAL_VISA, REQUIRES_OPERATOR_DECLARATION, REQUIRES_AGREMENT).
    refusal: str = ""


class ContractPolicy(Protocol):
    """Answers whether an activity needs a declaration or a contract, and whether one is held."""

    async def decide(self, activity: Activity) -> ContractDecision: ...


_WHAT = {
    ActivityKind.TELESURVEILLANCE_OPERATOR: "télésurveillance operator activity",
    ActivityKind.OUTSIDE_PARCOURS_TELECONSULTATION: "téléconsultation outside the parcours de soins",
    ActivityKind.TELECONSULTATION_COMPANY: "téléconsultation by a téléconsultation company's doctor",
}
_REQUIREMENT = {
    contracts_pb2.REQUIREMENT_NONE: Requirement.NONE,
    contracts_pb2.REQUIREMENT_DECLARATION_REQUIRED: Requirement.DECLARATION,
    contracts_pb2.REQUIREMENT_CONTRACT_REQUIRED: Requirement.CONTRACT,
    contracts_pb2.REQUIREMENT_CONTRACT_WITH_ORDINAL_VISA_REQUIRED: Requirement.CONTRACT,
}


def coverage_request(activity: Activity) -> contracts_pb2.CheckCoverageRequest:
    """The CheckCoverage question for a billed activity: who offers it follows from who bills it."""
    if activity.kind is ActivityKind.TELESURVEILLANCE_OPERATOR:
        act_type, in_parcours = billing_pb2.ACT_TYPE_TELESURVEILLANCE, True
    else:
        act_type = billing_pb2.ACT_TYPE_TELECONSULTATION
        in_parcours = activity.kind is ActivityKind.TELECONSULTATION_COMPANY and activity.in_parcours
    if activity.company:
        offerer = contracts_pb2.OFFERER_TELECONSULTATION_COMPANY
    elif activity.establishment:
        offerer = contracts_pb2.OFFERER_ESTABLISHMENT
    else:
        offerer = contracts_pb2.OFFERER_LIBERAL_PRACTITIONER
    day = activity.on
    return contracts_pb2.CheckCoverageRequest(
        activity=contracts_pb2.Activity(act_type=act_type, offerer=offerer, in_parcours=in_parcours),
        act_date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
        region=f"regions/{activity.region}",
        practitioner=activity.practitioner,
        establishment=activity.establishment,
        company=activity.company,
    )


def decision_of(activity: Activity, coverage: contracts_pb2.Coverage) -> ContractDecision:
    """The contracts service's answer as the billing rules read it."""
    what = _WHAT[activity.kind]
    evaluation = coverage.evaluation
    requirement = _REQUIREMENT.get(evaluation.requirement, Requirement.NONE)
    sources = "; ".join(dict.fromkeys(r.source for r in evaluation.reasons if r.source))
    why = " ".join(r.text for r in evaluation.reasons)
    if not coverage.obligations:
        return ContractDecision(
            activity=activity,
            requirement=requirement,
            satisfied=True,
            reference="",
            reason=f"{what} in region {activity.region}: {why}",
            source=sources,
        )
    held = [o.covered_by for o in coverage.obligations if o.satisfied and o.covered_by]
    missing = [o for o in coverage.obligations if not o.satisfied]
    if not missing:
        return ContractDecision(
            activity=activity,
            requirement=requirement,
            satisfied=True,
            reference=", ".join(dict.fromkeys(held)),
            reason=f"{what} in region {activity.region}: covered by {', '.join(dict.fromkeys(held))}",
            source=sources,
        )
    return ContractDecision(
        activity=activity,
        requirement=requirement,
        satisfied=False,
        reference="",
        reason=f"{what} in region {activity.region}: " + "; ".join(o.explanation for o in missing),
        source=sources,
        refusal=missing[0].reason,
    )


@dataclass
class _Kept:
    decision: ContractDecision
    version: int
    kept_at: float


class GrpcContractPolicy:
    """The contract policy answered by the contracts service, with covered answers kept (module docstring)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        check_seconds: float = 1.0,
        max_age_seconds: float = 300.0,
        max_entries: int = 100_000,
        timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> None:
        self._stub = contracts_pb2_grpc.ContractServiceStub(channel)
        self._check_seconds = check_seconds
        self._max_age = max_age_seconds
        self._max_entries = max_entries
        self._timeout = timeout
        # Covered answers by their request's bytes (protobuf messages are not hashable).
        self._kept: dict[bytes, _Kept] = {}
        # The coverage version last read, when; one reader at a time.
        self._version = 0
        self._checked_at = float("-inf")
        self._checking: asyncio.Lock | None = None

    async def version(self) -> int:
        """The contracts service's coverage version, read at most every `check_seconds`; older answers kept
        are dropped when it moved."""
        if time.monotonic() - self._checked_at < self._check_seconds:
            return self._version
        if self._checking is None:
            self._checking = asyncio.Lock()
        async with self._checking:
            if time.monotonic() - self._checked_at >= self._check_seconds:
                try:
                    reply = await self._stub.GetCoverageVersion(
                        contracts_pb2.GetCoverageVersionRequest(), timeout=self._timeout
                    )
                except grpc.aio.AioRpcError as error:
                    raise _unavailable(error) from None
                if reply.version != self._version:
                    self._kept = {k: v for k, v in self._kept.items() if v.version >= reply.version}
                    self._version = reply.version
                self._checked_at = time.monotonic()
        return self._version

    async def decide(self, activity: Activity) -> ContractDecision:
        request = coverage_request(activity)
        key = request.SerializeToString(deterministic=True)
        version = await self.version()
        kept = self._kept.get(key)
        if kept is not None and kept.version >= version and time.monotonic() - kept.kept_at < self._max_age:
            return ContractDecision(**{**kept.decision.__dict__, "activity": activity})
        try:
            reply: contracts_pb2.CheckCoverageResponse = await self._stub.CheckCoverage(
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # No regime in force at the act's date: nothing the ARS could have granted.
                return ContractDecision(
                    activity=activity,
                    requirement=Requirement.NONE,
                    satisfied=True,
                    reference="",
                    reason=f"no telemedicine regime was in force on {activity.on.isoformat()}",
                    source="",
                )
            raise _unavailable(error) from None
        decision = decision_of(activity, reply.coverage)
        if decision.satisfied:
            if len(self._kept) >= self._max_entries:
                self._kept.clear()
            self._kept[key] = _Kept(decision, reply.coverage_version, time.monotonic())
        return decision


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    log.warning("contracts coverage call failed: %s", error.code().name)
    return Unavailable("CONTRACTS_UNAVAILABLE", "the contracts service cannot answer right now; retry later")
