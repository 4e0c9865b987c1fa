"""Activities of the `Teleexpertise` workflow: write the case's projection, record its billable acts.

Both are idempotent, so a retry (a worker killed mid-activity, a lost completion) never writes twice:
- `persist_teleexpertise_case` writes a `ProjectionWrite` keyed by the case's version and sequences;
- `record_teleexpertise_acts` calls billing's `RecordAct` with the act id `teleexpertise-{case}` and a request
  id derived from it: billing returns the lines it recorded the first time.

Billing's business refusals (the yearly quota: TELEEXPERTISE_QUOTA_EXCEEDED) are outcomes, kept on the case,
not errors; a request billing rejects as malformed is a non-retryable `BILLING_REJECTED`; anything else
(billing or the directory unreachable) is raised and retried by the workflow's retry policy.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.expertise.models import (
    BilledLine,
    BillingInput,
    BillingOutcome,
    BillingRefusal,
    BillingState,
    ProjectionWrite,
)
from services.expertise.store import ExpertiseStore
from services.kit.temporal import heartbeating

log = logging.getLogger(__name__)

# Request ids of billing calls are derived from the act id: stable across retries and workers.
BILLING_REQUEST_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/expertise/billing")
# Tariff dates and ages are counted in Europe/Paris (billing does the same for the tariff).
PARIS = ZoneInfo("Europe/Paris")
# Refusals that mean "this request will never be accepted as it is": do not retry.
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)
CALL_TIMEOUT_SECONDS = 10.0


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a refused call ('' if none)."""
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


class TeleexpertiseActivities:
    """The workflow's activities, with their dependencies (one pool and two channels per worker process)."""

    def __init__(
        self,
        store: ExpertiseStore,
        directory: directory_pb2_grpc.DirectoryServiceStub,
        billing: billing_pb2_grpc.BillingServiceStub,
    ) -> None:
        self._store = store
        self._directory = directory
        self._billing = billing

    @activity.defn(name="persist_teleexpertise_case")
    async def persist_case(self, write: ProjectionWrite) -> None:
        current = await self._store.apply(write)
        if not current:
            log.info("case %s: version %s already superseded", write.view.case_id, write.view.version)

    async def _participant(
        self, practitioner: str, establishment: directory_pb2.Establishment
    ) -> billing_pb2.Participant:
        found = (
            await self._directory.GetPractitioner(
                directory_pb2.GetPractitionerRequest(name=practitioner), timeout=CALL_TIMEOUT_SECONDS
            )
        ).practitioner
        return billing_pb2.Participant(
            practitioner=found.name,
            profession=found.profession,
            specialty=found.specialty,
            sector=found.sector,
            establishment=establishment.name,
            overseas=establishment.overseas,
        )

    async def _establishment(self, name: str) -> directory_pb2.Establishment:
        reply: directory_pb2.GetEstablishmentResponse = await self._directory.GetEstablishment(
            directory_pb2.GetEstablishmentRequest(name=name), timeout=CALL_TIMEOUT_SECONDS
        )
        return reply.establishment

    async def _act(self, case: BillingInput) -> billing_pb2.Act:
        try:
            patient = (
                await self._directory.GetPatient(
                    directory_pb2.GetPatientRequest(name=case.patient), timeout=CALL_TIMEOUT_SECONDS
                )
            ).patient
            performed_at = await self._establishment(case.expert_establishment)
            requested_at = await self._establishment(case.requester_establishment)
            performer = await self._participant(case.expert, performed_at)
            requester = await self._participant(case.requester, requested_at)
        except grpc.aio.AioRpcError as error:
            if error.code() in _REJECTED:
                raise ApplicationError(
                    f"the directory refused a lookup for billing: {error.code().name} {error_reason(error)}",
                    type="BILLING_DATA_MISSING",
                    non_retryable=True,
                ) from None
            raise
        born = patient.ins.birth_date
        act_day = case.act_time.astimezone(PARIS).date()
        act = billing_pb2.Act(
            type=billing_pb2.ACT_TYPE_TELEEXPERTISE,
            establishment=case.expert_establishment,
            region=performed_at.region,
            overseas=performed_at.overseas,
            performer=performer,
            requester=requester,
            patient_age=age_on(date(born.year, born.month, born.day), act_day),
        )
        act.act_time.FromDatetime(case.act_time.astimezone(UTC))
        return act

    @activity.defn(name="record_teleexpertise_acts")
    @heartbeating
    async def record_acts(self, case: BillingInput) -> BillingOutcome:
        request = billing_pb2.RecordActRequest(
            request_id=str(uuid.uuid5(BILLING_REQUEST_NAMESPACE, case.act_id)),
            act_id=case.act_id,
            patient=case.patient,
            act=await self._act(case),
        )
        try:
            reply = await self._billing.RecordAct(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            reason = error_reason(error)
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # A business refusal (e.g. the yearly quota): the outcome, kept on the case and shown to both.
                return BillingOutcome(
                    state=BillingState.REFUSED,
                    act_id=case.act_id,
                    refusals=[
                        BillingRefusal(
                            reason=reason or "BILLING_REFUSED", code="", message=error.details() or ""
                        )
                    ],
                    record_time=datetime.now(UTC),
                )
            if error.code() in _REJECTED:
                raise ApplicationError(
                    f"billing rejected the act: {error.code().name} {reason}",
                    type="BILLING_REJECTED",
                    non_retryable=True,
                ) from None
            raise
        lines = [BilledLine(charge=c.name, code=c.code, practitioner=c.practitioner) for c in reply.charges]
        refusals = [
            BillingRefusal(reason=f.reason, code=f.code, message=f.message) for f in reply.quote.refusals
        ]
        return BillingOutcome(
            state=BillingState.PARTIALLY_BILLED if refusals else BillingState.BILLED,
            act_id=case.act_id,
            lines=lines,
            refusals=refusals,
            record_time=datetime.now(UTC),
        )
