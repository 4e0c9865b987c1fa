"""Activities of the Teleconsultation workflow.

They persist the workflow's steps into the scheduling service's tables (this worker is the scheduling
domain's own process for its long-running cases: nobody outside the domain reads those tables), call billing
and the directory over gRPC with the `workflows` component certificate (ROLE_HUB_SERVICE, no token), and are
idempotent: every database change is conditional on the appointment's current status, notifications are keyed
by (appointment, kind, label, recipient), and billing is called with an act id and a request id derived from
the appointment, so a retried activity never writes twice.

Business refusals are non-retryable ApplicationErrors whose type is the stable reason (CONSENT_REQUIRED,
INVALID_TRANSITION, or billing's own reason such as TELECONSULTATION_NOT_REIMBURSABLE); the transition and
consent rules are the service's own (`services/scheduling/appointments.py`), asked on the row each activity
locks. A step an RPC asked for (start, completion) records the RPC's request id in the service's idempotency
ledger in the same transaction as the change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import json_format
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2
from parcours.type.v1 import practice_pb2
from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.kit import names
from services.kit.directory import practitioner_or_none
from services.kit.errors import DomainError, reason_of
from services.kit.idempotency import Call
from services.kit.notify import DELIVERED, FAILED, PENDING, RECORDED, DeliveryFailed, Notifier
from services.kit.records import DmpPublisher, RecordingDmpPublisher, RecordStore, keep_and_publish
from services.kit.regions import age_on, local_date
from services.kit.temporal import heartbeating
from services.scheduling import appointments, documents, notices, store
from services.scheduling.join import JoinLinks, token_hash
from services.scheduling.models import (
    TELECONSULTATION,
    AppointmentState,
    ArrivalInput,
    BillingInput,
    BillingOutcomeInput,
    BillingResult,
    CompletionInput,
    DeliveryInput,
    DeliveryResult,
    NotificationInput,
    NotificationResult,
    OutcomeAndReportInput,
    PrescriptionRefusal,
    Reason,
    RecordInput,
    RecordResult,
)
from services.scheduling.resources import circumstances_json, record_json

# The scheduling schema's record documents and what the DMP adapter was given (services/kit/records.py).
RECORDS = RecordStore("scheduling")

log = logging.getLogger(__name__)
T = TypeVar("T")

# Billing request ids are uuid5(this namespace, "<appointment id>/record-act"): the same on every retry.
BILLING_REQUEST_NAMESPACE = uuid.UUID("0c7f3b0a-96a1-4a53-8f1e-2b7d4e1c9a55")
CALL_TIMEOUT_SECONDS = 10.0


def _refusal(reason: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=reason, non_retryable=True)


def _refused(error: DomainError) -> ApplicationError:
    return _refusal(error.reason, error.message)


async def _record_call(tx: asyncpg.Connection, call: Call | None, appointment_id: uuid.UUID) -> None:
    """The RPC that asked for this step, applied with it (a retried activity finds it there already)."""
    if call is not None:
        await store.LEDGER.record(tx, call, [names.APPOINTMENT.format(appointment_id)], if_absent=True)


class TeleconsultationActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        billing: billing_pb2_grpc.BillingServiceStub,
        directory: directory_pb2_grpc.DirectoryServiceStub,
        component: str,
        *,
        notifier: Notifier | None = None,
        join_links: JoinLinks | None = None,
        publisher: DmpPublisher | None = None,
    ) -> None:
        self._pool = pool
        self._billing = billing
        self._directory = directory
        self._actor = f"component/{component}"
        self._notifier = notifier or Notifier.recording_only()
        self._join = join_links or JoinLinks.with_key("https://visio.parcours.invalid/join", None)
        self._publisher = publisher or RecordingDmpPublisher(RECORDS)

    async def _appointment(self, appointment_id: str) -> asyncpg.Record:
        row = await store.get_appointment(self._pool, uuid.UUID(appointment_id))
        if row is None:
            raise _refusal(Reason.APPOINTMENT_NOT_FOUND, "the appointment does not exist")
        return row

    async def _notify(
        self, request: NotificationInput, kind: str, label: str, recipients: list[str]
    ) -> NotificationResult:
        """Record the notifications (once per key); the workflow delivers them (`deliver_notifications`)."""
        for recipient in recipients:
            await store.add_notification(
                self._pool, uuid.UUID(request.appointment_id), kind, label, recipient, deliver=request.deliver
            )
        log.info(
            "%s %s recorded for appointment %s (%d recipients)",
            kind,
            label,
            request.appointment_id,
            len(recipients),
        )
        return NotificationResult(recipients=recipients)

    @activity.defn(name="send_reminder")
    @heartbeating
    async def send_reminder(self, request: NotificationInput) -> NotificationResult:
        row = await self._appointment(request.appointment_id)
        if (
            row["effective_status"] != "booked"
            or row["patient_id"] is None
            or row["refusal_kind"] is not None
        ):
            # Nothing to remind a patient of a teleconsultation they refused (unless they withdraw it).
            return NotificationResult()
        return await self._notify(
            request, "KIND_REMINDER", request.label, [names.PATIENT.format(row["patient_id"])]
        )

    @activity.defn(name="send_join_link")
    @heartbeating
    async def send_join_link(self, request: NotificationInput) -> NotificationResult:
        row = await self._appointment(request.appointment_id)
        if row["effective_status"] != "booked" or row["refusal_kind"] is not None:
            return NotificationResult()
        recipients = [names.PRACTITIONER.format(row["rpps"])]
        if row["patient_id"] is not None:
            recipients.insert(0, names.PATIENT.format(row["patient_id"]))
        return await self._notify(request, "KIND_JOIN_LINK", "join", recipients)

    @activity.defn(name="mark_arrived")
    @heartbeating
    async def mark_arrived(self, request: ArrivalInput) -> AppointmentState:
        appointment_id = uuid.UUID(request.appointment_id)
        async with store.transaction(self._pool) as tx:
            row = await store.lock_appointment(tx, appointment_id)
            if row is None:
                raise _refusal(Reason.APPOINTMENT_NOT_FOUND, "the appointment does not exist")
            status = row["effective_status"]
            if status == appointments.ARRIVED:
                return AppointmentState(status=status)  # a retry of an attempt that committed
            try:
                appointments.check_start(
                    appointments.Appointment(
                        status=status,
                        start_time=row["start_time"],
                        consented=row["consent_time"] is not None,
                        lapsed=row["lapsed"],
                        refused=row["refusal_kind"] is not None,
                    )
                )
            except DomainError as error:
                raise _refused(error) from None
            await store.transition(
                tx, appointment_id, appointments.ARRIVED, [appointments.BOOKED], request.practitioner
            )
            if request.assistant:
                await store.record_assistant(
                    tx,
                    appointment_id,
                    names.PRACTITIONER.parse(request.assistant, "assistant"),
                    request.assistance_setting,
                )
            await _record_call(tx, request.call, appointment_id)
        return AppointmentState(status=appointments.ARRIVED, changed=True)

    @activity.defn(name="mark_no_show")
    @heartbeating
    async def mark_no_show(self, request: NotificationInput) -> AppointmentState:
        """At the no-show deadline: a patient who refused the teleconsultation (and did not withdraw it) is
        not a no-show: the appointment is cancelled (CONSENT_REFUSED), its workflow told by the outbox like
        any cancellation, and nothing is billed (seed 004). Otherwise `noshow`."""
        appointment_id = uuid.UUID(request.appointment_id)
        async with store.transaction(self._pool) as tx:
            row = await store.lock_appointment(tx, appointment_id)
            if row is not None and row["effective_status"] == appointments.BOOKED and row["refusal_kind"]:
                await store.cancel(
                    tx,
                    row,
                    status=appointments.CANCELLED,
                    initiator="PARTY_PATIENT",
                    reason="CANCELLATION_REASON_CONSENT_REFUSED",
                    note="",
                    actor=self._actor,
                )
                return AppointmentState(status=appointments.CANCELLED, changed=True)
        if await store.transition(
            self._pool,
            appointment_id,
            appointments.NOSHOW,
            sorted(appointments.ALLOWED[appointments.Change.NO_SHOW]),
            self._actor,
            "NO_SHOW_GRACE_ELAPSED",
        ):
            return AppointmentState(status=appointments.NOSHOW, changed=True)
        row = await self._appointment(request.appointment_id)
        return AppointmentState(status=row["effective_status"])

    @activity.defn(name="record_completion")
    @heartbeating
    async def record_completion(self, request: CompletionInput) -> AppointmentState:
        appointment_id = uuid.UUID(request.appointment_id)
        async with store.transaction(self._pool) as tx:
            if await store.record_completion(
                tx,
                appointment_id,
                record_json(request.record),
                circumstances_json(request.circumstances),
                request.practitioner,
                json.dumps(dataclasses.asdict(request.performer_activity))
                if request.performer_activity is not None
                else None,
            ):
                await _record_call(tx, request.call, appointment_id)
                return AppointmentState(status=appointments.FULFILLED, changed=True)
        status = (await self._appointment(request.appointment_id))["effective_status"]
        if status == appointments.FULFILLED:
            return AppointmentState(status=status)  # a retry of an attempt that committed
        raise _refused(appointments.invalid_transition(status, appointments.Change.COMPLETE))

    @activity.defn(name="record_billable_act")
    @heartbeating
    async def record_billable_act(self, request: BillingInput) -> BillingResult:
        row = await self._appointment(request.appointment_id)
        call = await self._record_act_request(row)
        try:
            reply = await self._billing.RecordAct(call, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise _refusal(reason_of(error) or "BILLING_REFUSED", error.details() or "") from None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # The act as described is malformed: retrying would only repeat it.
                raise _refusal("BILLING_INVALID_ACT", error.details() or "") from None
            raise  # billing unreachable or failing: retried by the workflow's policy
        return BillingResult(
            charges=[c.name for c in reply.charges],
            # §7.16: an arrêt refused while the act is billed (kept on the appointment with its reason).
            prescription_refusals=[
                PrescriptionRefusal(
                    reason=f.reason, message=f.message, reference=f.reference, source=f.source
                )
                for f in reply.quote.prescription_refusals
            ],
        )

    async def _record_act_request(self, row: asyncpg.Record) -> billing_pb2.RecordActRequest:
        record = scheduling_pb2.TeleconsultationRecord()
        json_format.ParseDict(_json(row["record"]), record)
        circumstances = billing_pb2.Circumstances()
        json_format.ParseDict(_json(row["billing_circumstances"] or {}), circumstances)
        practitioner = await self._directory_get(
            self._directory.GetPractitioner(
                directory_pb2.GetPractitionerRequest(name=names.PRACTITIONER.format(row["rpps"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        )
        patient = await self._directory_get(
            self._directory.GetPatient(
                directory_pb2.GetPatientRequest(name=names.PATIENT.format(row["patient_id"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        )
        establishment = await self._directory_get(
            self._directory.GetEstablishment(
                directory_pb2.GetEstablishmentRequest(name=names.ESTABLISHMENT.format(row["finess"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        )
        act_time: datetime = record.act_start_time.ToDatetime(tzinfo=UTC)
        birth = patient.patient.ins.birth_date
        act = billing_pb2.Act(
            type=_act_type(practitioner.practitioner.profession),
            act_time=record.act_start_time,
            establishment=names.ESTABLISHMENT.format(row["finess"]),
            region=names.REGION.format(row["region_code"]),
            overseas=establishment.establishment.overseas,
            performer=billing_pb2.Participant(
                practitioner=practitioner.practitioner.name,
                profession=practitioner.practitioner.profession,
                specialty=practitioner.practitioner.specialty,
                sector=practitioner.practitioner.sector,
            ),
            # On the act's civil date where it took place, as billing dates it (§7.14).
            patient_age=age_on(
                date(birth.year, birth.month, birth.day), local_date(act_time, row["region_code"])
            ),
            circumstances=circumstances,
        )
        activity = _json(row["billing_performer_activity"])
        if activity:
            # §7.12: the teleconsultant's figures; billing counts at least the hub's own recorded TLCs.
            act.performer_activity.CopyFrom(billing_pb2.ActivityToDate(**activity))
        for prescription in record.prescriptions:
            if (
                prescription.kind == scheduling_pb2.Prescription.KIND_SICK_LEAVE
                and prescription.sick_leave_days
            ):
                act.sick_leave.CopyFrom(
                    billing_pb2.SickLeave(
                        days=prescription.sick_leave_days,
                        ongoing_days=prescription.ongoing_sick_leave_days,
                        in_person_impossible_justified=prescription.in_person_impossible_justified,
                    )
                )
                break
        if row["assistant_rpps"] is not None:
            # §7.18: the nurse's or pharmacist's line (billed at the act's establishment); billing puts the
            # teleconsultant in its prescriber field.
            assistant = await self._directory_get(
                self._directory.GetPractitioner(
                    directory_pb2.GetPractitionerRequest(
                        name=names.PRACTITIONER.format(row["assistant_rpps"])
                    ),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            )
            act.assistant.CopyFrom(
                billing_pb2.Participant(
                    practitioner=assistant.practitioner.name,
                    profession=assistant.practitioner.profession,
                    specialty=assistant.practitioner.specialty,
                    sector=assistant.practitioner.sector,
                )
            )
            act.assistance_setting = billing_pb2.AssistanceSetting.Value(row["assistance_setting"])
        appointment_id = row["appointment_id"]
        return billing_pb2.RecordActRequest(
            request_id=str(uuid.uuid5(BILLING_REQUEST_NAMESPACE, f"{appointment_id}/record-act")),
            act_id=TELECONSULTATION.workflow_id(appointment_id),
            patient=names.PATIENT.format(row["patient_id"]),
            act=act,
        )

    @staticmethod
    async def _directory_get(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                raise _refusal(
                    "DIRECTORY_RECORD_MISSING", "the directory no longer knows a party of the act"
                ) from None
            raise

    @activity.defn(name="record_billing_outcome")
    @heartbeating
    async def record_billing_outcome(self, request: BillingOutcomeInput) -> None:
        await self._record_billing_outcome(request)

    async def _record_billing_outcome(self, request: BillingOutcomeInput) -> None:
        await store.record_billing(
            self._pool,
            uuid.UUID(request.appointment_id),
            request.state,
            request.charges,
            request.reason or None,
            request.message or None,
            [
                {"reason": f.reason, "message": f.message, "reference": f.reference, "source": f.source}
                for f in request.prescription_refusals
            ],
        )

    @activity.defn(name="deliver_report")
    @heartbeating
    async def deliver_report(self, request: NotificationInput) -> NotificationResult:
        return await self._report(request)

    @activity.defn(name="record_outcome_and_report")
    async def record_outcome_and_report(self, request: OutcomeAndReportInput) -> NotificationResult:
        """`record_billing_outcome` then `deliver_report` in one (local) activity: both only write our own
        tables, both are idempotent, and the report always follows the outcome."""
        await self._record_billing_outcome(request.outcome)
        return await self._report(request.report)

    async def _report(self, request: NotificationInput) -> NotificationResult:
        """The compte rendu goes to the médecin traitant and to the requesting doctor (§7 rule 9)."""
        row = await self._appointment(request.appointment_id)
        recipients: list[str] = []
        for rpps in (row["treating_rpps"], row["requester_rpps"]):
            if rpps and rpps != row["rpps"] and names.PRACTITIONER.format(rpps) not in recipients:
                recipients.append(names.PRACTITIONER.format(rpps))
        return await self._notify(request, "KIND_REPORT", "compte-rendu", recipients)

    # --- notifications that leave the hub ----------------------------------------------------------------

    @activity.defn(name="deliver_notifications")
    async def deliver_notifications(self, request: DeliveryInput) -> DeliveryResult:
        """Deliver each recorded notification still pending: by e-mail to its recipient, else by the webhook
        of the establishment that reaches them (the booking one for the patient and the report's readers, the
        practice place for the teleconsultant), else it stays recorded. Delivered ones are skipped on a retry;
        a transient failure fails the activity (Temporal retries it with backoff), a permanent one settles
        that recipient as FAILED."""
        appointment_id = uuid.UUID(request.appointment_id)
        row = await self._appointment(request.appointment_id)
        place = await self._directory_get(
            self._directory.GetEstablishment(
                directory_pb2.GetEstablishmentRequest(name=names.ESTABLISHMENT.format(row["finess"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        )
        facts = notices.AppointmentFacts(
            appointment=names.APPOINTMENT.format(appointment_id),
            start_time=row["start_time"],
            time_zone=row["time_zone"],
            place=place.establishment.display_name,
        )
        practice_place = names.ESTABLISHMENT.format(row["finess"])
        booking = names.ESTABLISHMENT.format_optional(row["booked_by_finess"])
        result = DeliveryResult()
        transient: list[str] = []
        for recipient in request.recipients:
            key = (appointment_id, request.kind, request.label, recipient)
            recorded = await store.notification_delivery_state(self._pool, *key)
            if recorded is None or recorded["delivery_state"] != PENDING:
                continue
            teleconsultant = recipient == names.PRACTITIONER.format(row["rpps"])
            reaching = (practice_place, booking) if teleconsultant else (booking, practice_place)
            route = self._notifier.route(recipient, reaching)
            if route is None:
                await store.mark_delivery(self._pool, *key, channel=None, state=RECORDED, attempted=False)
                continue
            extra: dict[str, Any] = {}
            if request.kind == notices.JOIN_LINK:
                extra = await self._join_link(row, recipient)
            notice = notices.notice(
                request.kind, request.label, recipient, facts, occur_time=recorded["send_time"], **extra
            )
            try:
                await self._notifier.deliver(route, notice)
            except DeliveryFailed as failure:
                state = FAILED if failure.permanent else PENDING
                await store.mark_delivery(
                    self._pool, *key, channel=route.channel, state=state, attempted=True, error=failure.reason
                )
                (result.failed if failure.permanent else transient).append(recipient)
                continue
            await store.mark_delivery(
                self._pool, *key, channel=route.channel, state=DELIVERED, attempted=True
            )
            result.delivered.append(recipient)
        if transient:
            # Retried by the workflow's policy; the delivered ones are not sent again.
            raise ApplicationError(
                f"{len(transient)} notification(s) could not be delivered yet", type="DELIVERY_PENDING"
            )
        return result

    async def _join_link(self, row: asyncpg.Record, participant: str) -> dict[str, Any]:
        """The participant's link, its token kept hashed; valid until the end plus the no-show grace."""
        expire_time: datetime = row["end_time"] + (row["no_show_time"] - row["start_time"])
        token = self._join.token(row["appointment_id"], participant, expire_time)
        await store.keep_join_token(
            self._pool, token_hash(token), row["appointment_id"], participant, expire_time
        )
        return {"join_url": self._join.url(token), "join_expire_time": expire_time}

    @activity.defn(name="record_delivery_failure")
    async def record_delivery_failure(self, request: DeliveryInput) -> None:
        """The retries are spent: what is still pending is FAILED (the case goes on)."""
        await store.mark_delivery_failed(
            self._pool,
            uuid.UUID(request.appointment_id),
            request.kind,
            request.label,
            request.recipients,
        )
        log.warning(
            "%s %s of appointment %s: delivery given up", request.kind, request.label, request.appointment_id
        )

    # --- the record as a FHIR document -------------------------------------------------------------------

    @activity.defn(name="publish_record")
    async def publish_record(self, request: RecordInput) -> RecordResult:
        """Keep the R.6316-4 record as a FHIR document (once) and hand it to the DMP adapter."""
        appointment_id = uuid.UUID(request.appointment_id)

        async def build() -> tuple[dict[str, Any], bool]:
            row = await self._appointment(request.appointment_id)
            record = scheduling_pb2.TeleconsultationRecord()
            json_format.ParseDict(_json(row["record"]), record)
            patient = await self._directory_get(
                self._directory.GetPatient(
                    directory_pb2.GetPatientRequest(name=names.PATIENT.format(row["patient_id"])),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            )
            place = await self._directory.GetEstablishment(
                directory_pb2.GetEstablishmentRequest(name=names.ESTABLISHMENT.format(row["finess"])),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            teleconsultant = names.PRACTITIONER.format(row["rpps"])
            practitioners = {
                name: await practitioner_or_none(self._directory, name)
                for name in {teleconsultant, *(p.practitioner for p in record.participants)}
            }
            bundle = documents.record_bundle(
                appointment=names.APPOINTMENT.format(appointment_id),
                time_zone=row["time_zone"],
                record=record,
                teleconsultant=teleconsultant,
                establishment=names.ESTABLISHMENT.format(row["finess"]),
                patient=patient.patient,
                practitioners=practitioners,
                place=place.establishment,
            )
            return bundle, patient.patient.identity_status == directory_pb2.IDENTITY_STATUS_QUALIFIED

        document, submission = await keep_and_publish(
            self._pool, RECORDS, self._publisher, appointment_id, build
        )
        return RecordResult(
            document_id=str(document.document_id), dmp_state=submission.state, dmp_reason=submission.reason
        )

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.deliver_notifications,
            self.record_delivery_failure,
            self.publish_record,
            self.send_reminder,
            self.send_join_link,
            self.mark_arrived,
            self.mark_no_show,
            self.record_completion,
            self.record_billable_act,
            self.record_billing_outcome,
            self.deliver_report,
            self.record_outcome_and_report,
        ]


def _json(value: object) -> dict[str, Any]:
    found = json.loads(value) if isinstance(value, str) else value
    return found if isinstance(found, dict) else {}


# Télésoin (L.6316-2 CSP): a pharmacist's or an auxiliaire médical's remote act; a medical professional's is a
# téléconsultation (scheduling lets no other profession keep an agenda).
MEDICAL_PROFESSIONS = frozenset(
    {practice_pb2.PROFESSION_PHYSICIAN, practice_pb2.PROFESSION_MIDWIFE, practice_pb2.PROFESSION_DENTIST}
)


def _act_type(profession: int) -> billing_pb2.ActType.ValueType:
    if profession in MEDICAL_PROFESSIONS:
        return billing_pb2.ACT_TYPE_TELECONSULTATION
    return billing_pb2.ACT_TYPE_TELESOIN
