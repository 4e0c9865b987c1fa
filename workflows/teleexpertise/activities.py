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
from typing import Any

import grpc
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.expertise import documents, notices
from services.expertise.models import (
    BilledLine,
    BillingInput,
    BillingOutcome,
    BillingRefusal,
    BillingState,
    DeliveryInput,
    DeliveryResult,
    ProjectionWrite,
    RecordInput,
    RecordResult,
    ReportRecord,
)
from services.expertise.store import ExpertiseStore
from services.kit import names
from services.kit.directory import practitioner_or_none
from services.kit.errors import reason_of
from services.kit.notify import DELIVERED, FAILED, PENDING, RECORDED, DeliveryFailed, Notifier
from services.kit.records import DmpPublisher, RecordingDmpPublisher, RecordStore, keep_and_publish
from services.kit.regions import age_on, local_date, region_zone_name
from services.kit.temporal import heartbeating

# The expertise schema's record documents and what the DMP adapter was given (services/kit/records.py).
RECORDS = RecordStore("expertise")

log = logging.getLogger(__name__)

# Request ids of billing calls are derived from the act id: stable across retries and workers.
BILLING_REQUEST_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/expertise/billing")
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


class TeleexpertiseActivities:
    """The workflow's activities, with their dependencies (one pool and two channels per worker process)."""

    def __init__(
        self,
        store: ExpertiseStore,
        directory: directory_pb2_grpc.DirectoryServiceStub,
        billing: billing_pb2_grpc.BillingServiceStub,
        *,
        notifier: Notifier | None = None,
        publisher: DmpPublisher | None = None,
    ) -> None:
        self._store = store
        self._directory = directory
        self._billing = billing
        self._notifier = notifier or Notifier.recording_only()
        self._publisher = publisher or RecordingDmpPublisher(RECORDS)

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
                    f"the directory refused a lookup for billing: {error.code().name} {reason_of(error)}",
                    type="BILLING_DATA_MISSING",
                    non_retryable=True,
                ) from None
            raise
        born = patient.ins.birth_date
        # On the act's civil date where it took place, as billing dates it (§7.14).
        act_day = local_date(case.act_time, performed_at.region)
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
            reason = reason_of(error)
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

    # --- notifications that leave the hub ----------------------------------------------------------------

    @activity.defn(name="deliver_teleexpertise_notifications")
    async def deliver_notifications(self, request: DeliveryInput) -> DeliveryResult:
        """Deliver each notice still pending: by e-mail to the practitioner, else by the webhook of the
        establishment they act from in this request (the requester's, the assigned expert's; candidates of a
        pool have none), else it stays recorded. Delivered ones are skipped on a retry; a transient failure
        fails the activity (retried with backoff), a permanent one settles that notice as FAILED."""
        case_id = uuid.UUID(request.case_id)
        facts = await self._store.delivery_facts(case_id)
        if facts is None:
            return DeliveryResult()
        wording = notices.RequestFacts(
            request=names.TELEEXPERTISE_REQUEST.format(case_id),
            answer_due_time=facts["answer_due_time"],
            time_zone=region_zone_name(facts["region"]),
        )
        places = {
            names.PRACTITIONER.format(facts["requester"]): facts["requester_establishment"],
        }
        if facts["assigned_expert"]:
            places[names.PRACTITIONER.format(facts["assigned_expert"])] = facts["expert_establishment"]
        result = DeliveryResult()
        transient = 0
        for notice in request.notices:
            rpps = notice.recipient.removeprefix("practitioners/")
            key = (case_id, notice.event_sequence, rpps)
            recorded = await self._store.delivery_state(*key)
            if recorded is None or recorded["delivery_state"] != PENDING:
                continue
            place = places.get(notice.recipient)
            route = self._notifier.route(
                notice.recipient, (names.ESTABLISHMENT.format(place),) if place else ()
            )
            if route is None:
                await self._store.mark_delivery(*key, channel=None, state=RECORDED, attempted=False)
                continue
            message = notices.notice(
                notice.kind,
                notice.event_sequence,
                notice.recipient,
                wording,
                occur_time=recorded["create_time"],
            )
            try:
                await self._notifier.deliver(route, message)
            except DeliveryFailed as failure:
                state = FAILED if failure.permanent else PENDING
                await self._store.mark_delivery(
                    *key, channel=route.channel, state=state, attempted=True, error=failure.reason
                )
                if failure.permanent:
                    result.failed += 1
                else:
                    transient += 1
                continue
            await self._store.mark_delivery(*key, channel=route.channel, state=DELIVERED, attempted=True)
            result.delivered += 1
        if transient:
            raise ApplicationError(
                f"{transient} notification(s) could not be delivered yet", type="DELIVERY_PENDING"
            )
        return result

    @activity.defn(name="record_teleexpertise_delivery_failure")
    async def record_delivery_failure(self, request: DeliveryInput) -> None:
        """The retries are spent: what is still pending is FAILED (the case goes on)."""
        await self._store.mark_delivery_failed(
            uuid.UUID(request.case_id),
            [(n.event_sequence, n.recipient.removeprefix("practitioners/")) for n in request.notices],
        )
        log.warning("case %s: delivery of %d notification(s) given up", request.case_id, len(request.notices))

    # --- the record as a FHIR document -------------------------------------------------------------------

    @activity.defn(name="publish_teleexpertise_record")
    async def publish_record(self, request: RecordInput) -> RecordResult:
        """Keep the R.6316-4 record as a FHIR document (once) and hand it to the DMP adapter."""
        case_id = uuid.UUID(request.case_id)
        pool = self._store.pool

        async def build() -> tuple[dict[str, Any], bool]:
            case = await self._store.get_request(case_id)
            if case is None or not case.HasField("report"):
                raise ApplicationError(
                    "the request has no report", type="RECORD_INCOMPLETE", non_retryable=True
                )
            report = ReportRecord(
                summary=case.report.summary,
                acts_and_prescriptions=list(case.report.acts_and_prescriptions),
                participants=list(case.report.participants),
                act_time=case.report.act_time.ToDatetime(tzinfo=UTC),
                technical_incidents=case.report.technical_incidents,
                author=case.report.author,
            )
            try:
                patient = (
                    await self._directory.GetPatient(
                        directory_pb2.GetPatientRequest(name=case.patient), timeout=CALL_TIMEOUT_SECONDS
                    )
                ).patient
                place = await self._establishment(case.expert_establishment)
            except grpc.aio.AioRpcError as error:
                if error.code() in _REJECTED:
                    raise ApplicationError(
                        f"the directory refused a lookup for the record: {error.code().name}",
                        type="RECORD_DATA_MISSING",
                        non_retryable=True,
                    ) from None
                raise
            practitioners = {
                name: await practitioner_or_none(self._directory, name) for name in {*report.participants}
            }
            bundle = documents.record_bundle(
                request=case.name,
                report=report,
                requester=case.requester,
                expert_establishment=case.expert_establishment,
                time_zone=region_zone_name(case.region.removeprefix("regions/")),
                patient=patient,
                practitioners=practitioners,
                place=place,
            )
            return bundle, patient.identity_status == directory_pb2.IDENTITY_STATUS_QUALIFIED

        document, submission = await keep_and_publish(pool, RECORDS, self._publisher, case_id, build)
        return RecordResult(
            document_id=str(document.document_id), dmp_state=submission.state, dmp_reason=submission.reason
        )

    def all(self) -> list[Any]:
        return [
            self.persist_case,
            self.record_acts,
            self.deliver_notifications,
            self.record_delivery_failure,
            self.publish_record,
        ]
