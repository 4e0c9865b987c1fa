"""RPC handlers of parcours.scheduling.v1.SchedulingService.

Who may do what (the proto's access options carry the roles; these handlers check the scope):

- privileged callers (hub components, hub operators) see and manage everything;
- a practitioner (token naming an RPPS) manages their own schedules and sees the appointments they are party
  to: as teleconsultant, requester, médecin traitant or booker;
- an establishment acting with a non-practitioner token (a booking front-end, a secretariat) manages the
  schedules of its own practice place and sees the appointments of its GHT (practice place or booking
  establishment in the GHT; itself only when outside any GHT).

Visibility is checked before existence: an appointment the caller may not see and one that does not exist
are the same PERMISSION_DENIED (APPOINTMENT_NOT_VISIBLE). A patient must be known in the caller's GHT (the
directory's rule) before an appointment is made for them.

Writes of appointments are database transactions (the exclusion constraint decides between concurrent
bookings) recorded in the kit's idempotency ledger; a booking's Teleconsultation workflow is started by the
kit's outbox relay. The teleconsultation's own steps (start, completion) are Temporal Updates on its workflow
(the kit's `CaseClient`), which validates the transition and persists it through an activity before
answering. The rules of the appointment's life are `appointments.py`, shared with the workflow's activities.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf.message import Message
from parcours.billing.v1 import billing_pb2
from parcours.options.v1 import options_pb2
from parcours.scheduling.v1 import scheduling_pb2, scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2

from services.kit import names, reports
from services.kit.audit import audit_patients, audit_target
from services.kit.auth import Principal, current_principal
from services.kit.cases import CaseClient, Relay
from services.kit.db import retry_conflicts
from services.kit.directory import DirectoryClient
from services.kit.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.kit.fhir import MEDIA_TYPE
from services.kit.idempotency import Call, actor_of
from services.kit.pagination import decode_token, next_page_token, page_size, split_page
from services.kit.records import RecordStore
from services.scheduling import appointments, join, store, waitlist
from services.scheduling.agenda import exception_blackout, materialise_schedule
from services.scheduling.availability import day_span
from services.scheduling.models import (
    CompletionRequest,
    CompletionResult,
    PerformerActivity,
    Reason,
    StartRequest,
    StartResult,
)
from services.scheduling.resources import (
    FHIR_STATUS,
    activity_resource,
    appointment_resource,
    circumstances_flags,
    document_resource,
    exception_resource,
    later,
    record_model,
    rule_resource,
    schedule_resource,
    series_resource,
    slot_resource,
    teleconseil_resource,
    timestamp,
    to_date,
    to_datetime,
    to_time,
    to_timedelta,
    waitlist_entry_resource,
)
from services.scheduling.settings import SchedulingSettings

log = logging.getLogger(__name__)

SERVICE_NAME = scheduling_pb2.DESCRIPTOR.services_by_name["SchedulingService"].full_name
# Only medical professionals teleconsult (L.6316-1: a téléconsultation always involves one; §7 rule 2).
MEDICAL_PROFESSIONS = frozenset(
    {practice_pb2.PROFESSION_PHYSICIAN, practice_pb2.PROFESSION_MIDWIFE, practice_pb2.PROFESSION_DENTIST}
)
# Who may assist a téléconsultation beside the patient and bill it (§7.18: TLS, TLL, TLD for a nurse; TLM
# for a pharmacist in the pharmacy).
ASSISTING_PROFESSIONS = frozenset({practice_pb2.PROFESSION_NURSE, practice_pb2.PROFESSION_PHARMACIST})

# Télésoin (L.6316-2 CSP; arrêté of 3 June 2021; §7 rule 2): pharmacists and auxiliaires médicaux keep agendas
# too; their remote acts are télésoin, billed as such by the Teleconsultation workflow.
TELESOIN_PROFESSIONS = frozenset(
    {
        practice_pb2.PROFESSION_PHARMACIST,
        practice_pb2.PROFESSION_NURSE,
        practice_pb2.PROFESSION_PHYSIOTHERAPIST,
        practice_pb2.PROFESSION_SPEECH_THERAPIST,
        practice_pb2.PROFESSION_ORTHOPTIST,
        practice_pb2.PROFESSION_PODIATRIST,
        practice_pb2.PROFESSION_OCCUPATIONAL_THERAPIST,
        practice_pb2.PROFESSION_PSYCHOMOTOR_THERAPIST,
        practice_pb2.PROFESSION_DIETITIAN,
        practice_pb2.PROFESSION_RADIOGRAPHER,
        practice_pb2.PROFESSION_LABORATORY_TECHNICIAN,
        practice_pb2.PROFESSION_AUDIOPROSTHETIST,
        practice_pb2.PROFESSION_OPTICIAN,
        practice_pb2.PROFESSION_ORTHOTIST_PROSTHETIST,
    }
)
DEFAULT_HORIZON_DAYS = 28
# The record documents written by the Teleconsultation workflow (services/kit/records.py).
RECORDS = RecordStore("scheduling")
MAX_SEARCH_SPAN = timedelta(days=400)
Appointment = scheduling_pb2.Appointment


@dataclass(frozen=True)
class Caller:
    principal: Principal
    privileged: bool
    rpps: str | None
    finess: str | None
    ght_id: str | None

    @property
    def actor(self) -> str:
        """Who, in history rows and cancellations: the practitioner, else the establishment, else the
        component or the staff subject."""
        return actor_of(self.principal)

    @property
    def operator(self) -> bool:
        return self.principal.has_any([options_pb2.ROLE_HUB_OPERATOR])

    def call(self, request: Message, method: str) -> Call:
        """The request as the idempotency ledger knows it."""
        return Call.of(request, method, self.principal)

    def scope(self) -> store.AppointmentScope:
        if self.privileged:
            return store.AppointmentScope(privileged=True)
        if self.rpps:
            return store.AppointmentScope(rpps=self.rpps)
        return store.AppointmentScope(finess=self.finess, ght_id=self.ght_id)

    def sees(self, row: Any) -> bool:
        if self.privileged:
            return True
        if self.rpps:
            return self.rpps in (
                row["rpps"],
                row["requester_rpps"],
                row["treating_rpps"],
                row["booked_by_rpps"],
            )
        if self.finess and self.finess in (row["finess"], row["booked_by_finess"]):
            return True
        return self.ght_id is not None and self.ght_id in (row["ght_id"], row["booked_by_ght"])

    def manages(self, rpps: str, finess: str) -> bool:
        """A schedule's own practitioner, its practice place's staff, or the hub."""
        if self.privileged or self.rpps == rpps:
            return True
        return self.rpps is None and self.finess == finess

    def acts_for_practitioner(self, row: Any) -> bool:
        """May act as the teleconsultant's side: the teleconsultant, their practice place's staff, the hub."""
        return self.manages(row["rpps"], row["finess"])


# The history's reason when the patient withdraws their refusal (the refusal's is CONSENT_REFUSED).
REFUSAL_WITHDRAWN = "REFUSAL_WITHDRAWN"


def _not_visible() -> PermissionDenied:
    return PermissionDenied(
        "APPOINTMENT_NOT_VISIBLE", "the appointment is not visible to the caller (or does not exist)"
    )


def _facts(row: Any) -> appointments.Appointment:
    """What the appointment rules read of a row."""
    return appointments.Appointment(
        status=row["effective_status"],
        start_time=row["start_time"],
        consented=row["consent_time"] is not None,
        lapsed=row["lapsed"],
        refused=row.get("refusal_kind") is not None,
    )


def _key_token(start: datetime, row_id: uuid.UUID) -> str:
    return f"{start.isoformat()}|{row_id}"


def _parse_key(key: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The keyset position in a page token (written by this service: signed, so well formed)."""
    if key is None:
        return None
    start, _, row_id = key.partition("|")
    return datetime.fromisoformat(start), uuid.UUID(row_id)


def _service_types(items: Sequence[scheduling_pb2.ServiceTypeDuration], field: str) -> dict[str, timedelta]:
    found: dict[str, timedelta] = {}
    for index, item in enumerate(items):
        name = scheduling_pb2.ServiceType.Name(item.service_type)
        if name in found:
            raise InvalidArgument.one(f"{field}[{index}].service_type", "is given twice")
        found[name] = to_timedelta(item.slot_duration, f"{field}[{index}].slot_duration")
    return found


class SchedulingServicer(scheduling_pb2_grpc.SchedulingServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        directory: DirectoryClient,
        cases: CaseClient,
        relay: Relay,
        settings: SchedulingSettings,
    ) -> None:
        self._pool = pool
        self._directory = directory
        self._cases = cases
        self._relay = relay
        self._settings = settings

    # --- helpers ---------------------------------------------------------------------------------------

    async def _caller(self) -> Caller:
        principal = current_principal()
        finess = names.ESTABLISHMENT.parse_optional(principal.establishment, "establishment")
        return Caller(
            principal=principal,
            privileged=principal.unrestricted,
            rpps=principal.rpps,
            finess=finess,
            ght_id=await self._ght_id(principal.establishment),
        )

    async def _ght_id(self, establishment: str) -> str | None:
        """The id of an establishment's GHT (None outside any GHT, or without an establishment)."""
        if not establishment:
            return None
        return names.GHT.parse_optional(await self._directory.ght_of(establishment) or "", "ght")

    async def _require_patient(self, caller: Caller, name: str) -> uuid.UUID:
        """A directory patient the caller may see: the directory's one visibility rule, asked on behalf of
        the caller (services/kit/directory.py); a hidden patient answers exactly like a missing one."""
        patient_id = names.PATIENT.parse_uuid(name, "patient")
        audit_target(patient=name)
        await self._directory.require_visible(name, caller.principal)
        return patient_id

    async def _require_practitioner(self, name: str, field: str) -> str | None:
        rpps = names.PRACTITIONER.parse_optional(name, field)
        if rpps is not None and await self._directory.practitioner(name) is None:
            raise InvalidArgument.one(field, "is not a practitioner of the directory")
        return rpps

    async def _visible_appointment(self, caller: Caller, row: Any | None) -> Any:
        if row is None:
            if caller.privileged:
                raise NotFound("APPOINTMENT_NOT_FOUND", "no such appointment")
            raise _not_visible()
        if not caller.sees(row):
            raise _not_visible()
        audit_target(
            resource=names.APPOINTMENT.format(row["appointment_id"]),
            patient=names.PATIENT.format_optional(row["patient_id"]),
        )
        return row

    async def _appointment(self, appointment_id: uuid.UUID) -> Appointment:
        row = await store.get_appointment(self._pool, appointment_id)
        assert row is not None
        return appointment_resource(row)

    async def _replayed_appointment(self, call: Call) -> Appointment | None:
        entry = await store.LEDGER.find(self._pool, call)
        if entry is None:
            return None
        return await self._appointment(names.APPOINTMENT.parse_uuid(entry.resource, "name"))

    async def _slot_refusal(self, slot_id: uuid.UUID) -> DomainError:
        """Why a slot could not be taken."""
        slot = await store.get_slot(self._pool, slot_id)
        if slot is None:
            return NotFound("SLOT_NOT_FOUND", "no such slot (it may have been removed from the agenda)")
        if not slot["active"]:
            return FailedPrecondition("SCHEDULE_INACTIVE", "the practitioner's schedule offers no slots now")
        if not slot["bookable"]:
            return FailedPrecondition(
                "MINIMUM_NOTICE", "the slot starts too soon to be booked (the schedule's minimum notice)"
            )
        return FailedPrecondition("SLOT_ALREADY_BOOKED", "the slot is already held or booked")

    async def _schedule_for_change(self, caller: Caller, name: str, field: str = "name") -> Any:
        schedule = await store.get_schedule(self._pool, names.SCHEDULE.parse_uuid(name, field))
        if schedule is None:
            raise NotFound("SCHEDULE_NOT_FOUND", f"no schedule {name}")
        if not caller.manages(schedule["rpps"], schedule["finess"]):
            raise PermissionDenied(
                "SCHEDULE_NOT_MANAGED",
                "only the practitioner, their practice place or the hub manage this schedule",
            )
        return schedule

    def _new_appointment(
        self,
        caller: Caller,
        status: str,
        claim: timedelta | None,
        patient_id: uuid.UUID | None,
        requester: str | None,
        treating: str | None,
        consent_method: str | None,
    ) -> store.NewAppointment:
        return store.NewAppointment(
            appointment_id=uuid.uuid4(),
            status=status,
            claim=claim,
            patient_id=patient_id,
            requester_rpps=requester,
            treating_rpps=treating,
            booked_by_finess=caller.finess,
            booked_by_ght=caller.ght_id,
            booked_by_rpps=caller.rpps,
            consent_method=consent_method,
            actor=caller.actor,
            join_window_before=self._settings.join_window_before,
            no_show_grace=self._settings.no_show_grace,
        )

    async def _take_slot(self, slot_name: str, new: store.NewAppointment, call: Call) -> Appointment:
        """Hold, propose or book a free slot in one statement; a retried request gets its first answer."""
        slot_id = names.SLOT.parse_uuid(slot_name, "slot")
        try:
            row = await retry_conflicts(
                lambda: store.insert_appointment_on_slot(self._pool, slot_id, new, call)
            )
        except asyncpg.IntegrityConstraintViolationError as exc:
            replayed = await self._replayed_appointment(call)
            if replayed is not None:
                return replayed
            error = store.constraint_error(exc)
            if error is None:
                raise
            raise error from None
        if row is None:
            replayed = await self._replayed_appointment(call)
            if replayed is not None:
                return replayed
            raise await self._slot_refusal(slot_id)
        audit_target(resource=names.APPOINTMENT.format(row["appointment_id"]))
        if row["workflow_id"] is not None:
            self._relay.notify(row["appointment_id"])
        return appointment_resource(row, first_change=(new.actor, new.reason))

    async def _in_transaction(
        self, call: Call, work: Callable[[asyncpg.Connection], Awaitable[list[str]]]
    ) -> list[str]:
        """Run `work` in a transaction with its request id; a retry returns the resources written first. A
        transaction PostgreSQL aborted for a conflict with a concurrent one is run again (bounded)."""

        async def attempt() -> list[str]:
            async with store.transaction(self._pool) as tx:
                done = await store.LEDGER.claim(tx, call)
                if done is not None:
                    return done.resources
                resources = await work(tx)
                await store.LEDGER.record(tx, call, resources)
                return resources

        try:
            return await retry_conflicts(attempt)
        except asyncpg.IntegrityConstraintViolationError as exc:
            error = store.constraint_error(exc)
            if error is None:
                raise
            raise error from None

    # --- schedules -------------------------------------------------------------------------------------

    async def CreateSchedule(
        self, request: scheduling_pb2.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CreateScheduleResponse:
        given = request.schedule
        caller = await self._caller()
        rpps = names.PRACTITIONER.parse(given.practitioner, "schedule.practitioner")
        finess = names.ESTABLISHMENT.parse(given.establishment, "schedule.establishment")
        if not caller.manages(rpps, finess):
            raise PermissionDenied(
                "SCHEDULE_NOT_MANAGED",
                "only the practitioner, their practice place or the hub create a schedule",
            )
        service_types = _service_types(given.service_types, "schedule.service_types")
        practitioner = await self._directory.practitioner(given.practitioner)
        if practitioner is None:
            raise InvalidArgument.one("schedule.practitioner", "is not a practitioner of the directory")
        if given.establishment not in {p.establishment for p in practitioner.practice_places}:
            raise InvalidArgument.one(
                "schedule.establishment", "is not one of the practitioner's practice places"
            )
        if not practitioner.active:
            raise FailedPrecondition("PRACTITIONER_INACTIVE", "the practitioner is not active in the hub")
        if practitioner.profession not in MEDICAL_PROFESSIONS | TELESOIN_PROFESSIONS:
            raise FailedPrecondition(
                "NOT_A_MEDICAL_PROFESSIONAL",
                "a téléconsultation is given by a physician, a midwife or a dentist (L.6316-1 CSP), "
                "télésoin by a pharmacist or an auxiliaire médical (L.6316-2 CSP)",
            )
        establishment = await self._directory.establishment(given.establishment)
        if establishment is None:
            raise InvalidArgument.one("schedule.establishment", "is not an establishment of the directory")
        values = store.ScheduleValues(
            rpps=rpps,
            profession=practice_pb2.Profession.Name(practitioner.profession),
            specialty=practice_pb2.Specialty.Name(practitioner.specialty),
            finess=finess,
            ght_id=names.GHT.parse_optional(establishment.ght, "ght"),
            region_code=names.REGION.parse(establishment.region, "region"),
            time_zone=establishment.time_zone,
            buffer=to_timedelta(given.buffer, "schedule.buffer"),
            minimum_notice=to_timedelta(given.minimum_notice, "schedule.minimum_notice"),
            cancellation_cutoff=to_timedelta(given.cancellation_cutoff, "schedule.cancellation_cutoff"),
            booking_horizon_days=given.booking_horizon_days or DEFAULT_HORIZON_DAYS,
            service_types=service_types,
        )

        async def work(tx: asyncpg.Connection) -> list[str]:
            schedule_id = uuid.uuid4()
            await store.insert_schedule(tx, schedule_id, values)
            return [names.SCHEDULE.format(schedule_id)]

        [name] = await self._in_transaction(caller.call(request, "CreateSchedule"), work)
        schedule = await store.get_schedule(self._pool, names.SCHEDULE.parse_uuid(name, "name"))
        return scheduling_pb2.CreateScheduleResponse(schedule=schedule_resource(schedule))

    async def GetSchedule(
        self, request: scheduling_pb2.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetScheduleResponse:
        schedule = await store.get_schedule(self._pool, names.SCHEDULE.parse_uuid(request.name, "name"))
        if schedule is None:
            raise NotFound("SCHEDULE_NOT_FOUND", f"no schedule {request.name}")
        return scheduling_pb2.GetScheduleResponse(schedule=schedule_resource(schedule))

    async def ListSchedules(
        self, request: scheduling_pb2.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListSchedulesResponse:
        filters: dict[str, object] = {
            "practitioner": request.practitioner,
            "establishment": request.establishment,
        }
        after = decode_token(request.page_token, filters)
        size = page_size(request.page_size)
        rows = await store.list_schedules(
            self._pool,
            size + 1,
            uuid.UUID(after) if after else None,
            names.PRACTITIONER.parse_optional(request.practitioner, "practitioner"),
            names.ESTABLISHMENT.parse_optional(request.establishment, "establishment"),
        )
        page, last = split_page(rows, size)
        return scheduling_pb2.ListSchedulesResponse(
            schedules=[schedule_resource(r) for r in page],
            next_page_token=next_page_token(last["schedule_id"] if last is not None else None, filters),
        )

    async def UpdateSchedule(
        self, request: scheduling_pb2.UpdateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.UpdateScheduleResponse:
        caller = await self._caller()
        schedule = await self._schedule_for_change(caller, request.name)
        patch = request.schedule
        paths = set(request.update_mask.paths) or {
            "service_types",
            "buffer",
            "minimum_notice",
            "cancellation_cutoff",
            "booking_horizon_days",
            "active",
        }
        service_types = None
        if "service_types" in paths:
            if not patch.service_types:
                raise InvalidArgument.one("schedule.service_types", "is in update_mask but empty")
            service_types = _service_types(patch.service_types, "schedule.service_types")

        async def work(tx: asyncpg.Connection) -> list[str]:
            await store.update_schedule(
                tx,
                schedule["schedule_id"],
                buffer=to_timedelta(patch.buffer, "schedule.buffer") if "buffer" in paths else None,
                minimum_notice=(
                    to_timedelta(patch.minimum_notice, "schedule.minimum_notice")
                    if "minimum_notice" in paths
                    else None
                ),
                cancellation_cutoff=(
                    to_timedelta(patch.cancellation_cutoff, "schedule.cancellation_cutoff")
                    if "cancellation_cutoff" in paths
                    else None
                ),
                booking_horizon_days=(
                    (patch.booking_horizon_days or DEFAULT_HORIZON_DAYS)
                    if "booking_horizon_days" in paths
                    else None
                ),
                active=patch.active if "active" in paths else None,
                service_types=service_types,
            )
            await materialise_schedule(tx, schedule["schedule_id"])
            return [request.name]

        await self._in_transaction(caller.call(request, "UpdateSchedule"), work)
        updated = await store.get_schedule(self._pool, schedule["schedule_id"])
        return scheduling_pb2.UpdateScheduleResponse(schedule=schedule_resource(updated))

    # --- rules -----------------------------------------------------------------------------------------

    async def CreateAvailabilityRule(
        self, request: scheduling_pb2.CreateAvailabilityRuleRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CreateAvailabilityRuleResponse:
        caller = await self._caller()
        schedule = await self._schedule_for_change(caller, request.parent, "parent")
        given = request.rule
        valid_from = to_date(given.valid_from, "rule.valid_from") if given.HasField("valid_from") else None
        valid_until = (
            to_date(given.valid_until, "rule.valid_until") if given.HasField("valid_until") else None
        )
        if valid_from and valid_until and valid_until < valid_from:
            raise InvalidArgument.one("rule.valid_until", "is before valid_from")
        service_type = scheduling_pb2.ServiceType.Name(given.service_type)
        if service_type not in schedule["service_types"]:
            raise FailedPrecondition(
                "SERVICE_TYPE_NOT_OFFERED", "the schedule has no slot length for this service type"
            )

        async def work(tx: asyncpg.Connection) -> list[str]:
            rule = await store.insert_rule(
                tx,
                uuid.uuid4(),
                schedule["schedule_id"],
                int(given.day_of_week),
                to_time(given.start_time_of_day),
                to_time(given.end_time_of_day),
                service_type,
                valid_from,
                valid_until,
            )
            await materialise_schedule(tx, schedule["schedule_id"])
            return [rule_resource(rule).name]

        [name] = await self._in_transaction(caller.call(request, "CreateAvailabilityRule"), work)
        rule = await store.get_rule(self._pool, uuid.UUID(name.rsplit("/", 1)[1]))
        if rule is None:
            raise NotFound("RULE_NOT_FOUND", "the rule was removed since")
        return scheduling_pb2.CreateAvailabilityRuleResponse(rule=rule_resource(rule))

    async def ListAvailabilityRules(
        self, request: scheduling_pb2.ListAvailabilityRulesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListAvailabilityRulesResponse:
        schedule_id = names.SCHEDULE.parse_uuid(request.parent, "parent")
        filters: dict[str, object] = {"parent": request.parent}
        after = decode_token(request.page_token, filters)
        size = page_size(request.page_size)
        rows = await store.list_rules(self._pool, schedule_id, size + 1, uuid.UUID(after) if after else None)
        page, last = split_page(rows, size)
        return scheduling_pb2.ListAvailabilityRulesResponse(
            rules=[rule_resource(r) for r in page],
            next_page_token=next_page_token(last["rule_id"] if last is not None else None, filters),
        )

    async def DeleteAvailabilityRule(
        self, request: scheduling_pb2.DeleteAvailabilityRuleRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.DeleteAvailabilityRuleResponse:
        caller = await self._caller()
        schedule_id, rule = names.AVAILABILITY_RULE.parse_ids(request.name, "name")
        schedule = await self._schedule_for_change(caller, names.SCHEDULE.format(schedule_id))
        rule_id = uuid.UUID(rule)

        async def work(tx: asyncpg.Connection) -> list[str]:
            if not await store.delete_rule(tx, rule_id, schedule["schedule_id"]):
                raise NotFound("RULE_NOT_FOUND", f"no rule {request.name}")
            await materialise_schedule(tx, schedule["schedule_id"])
            return [request.name]

        await self._in_transaction(caller.call(request, "DeleteAvailabilityRule"), work)
        return scheduling_pb2.DeleteAvailabilityRuleResponse()

    # --- exceptions ------------------------------------------------------------------------------------

    async def _exception_scope(
        self, caller: Caller, given: scheduling_pb2.AvailabilityExceptionInput, field: str
    ) -> store.ExceptionScope:
        which = given.WhichOneof("scope")
        denied = PermissionDenied(
            "EXCEPTION_SCOPE_NOT_MANAGED", "the caller does not manage the schedules this exception covers"
        )
        if which == "schedule":
            schedule = await self._schedule_for_change(caller, given.schedule, f"{field}.schedule")
            return store.ExceptionScope(schedule_id=schedule["schedule_id"])
        if which == "practitioner":
            rpps = names.PRACTITIONER.parse(given.practitioner, f"{field}.practitioner")
            if not (caller.privileged or caller.rpps == rpps):
                raise denied
            return store.ExceptionScope(rpps=rpps)
        if which == "establishment":
            finess = names.ESTABLISHMENT.parse(given.establishment, f"{field}.establishment")
            if not (caller.privileged or (caller.rpps is None and caller.finess == finess)):
                raise denied
            return store.ExceptionScope(finess=finess)
        if not caller.operator and not caller.privileged:
            raise PermissionDenied("ROLE_REQUIRED", "region-wide exceptions are set by hub operators")
        return store.ExceptionScope(region_code=names.REGION.parse(given.region, f"{field}.region"))

    @staticmethod
    def _exception_period(
        given: scheduling_pb2.AvailabilityExceptionInput, field: str
    ) -> tuple[asyncpg.Range | None, asyncpg.Range | None]:
        if given.WhichOneof("period") == "interval":
            start = to_datetime(given.interval.start_time, f"{field}.interval.start_time")
            end = to_datetime(given.interval.end_time, f"{field}.interval.end_time")
            return asyncpg.Range(start, end), None
        first = to_date(given.dates.start_date, f"{field}.dates.start_date")
        last = to_date(given.dates.end_date, f"{field}.dates.end_date")
        if last < first:
            raise InvalidArgument.one(f"{field}.dates.end_date", "is before start_date")
        if (last - first).days > 366:
            raise InvalidArgument.one(f"{field}.dates.end_date", "is more than a year after start_date")
        return None, asyncpg.Range(first, last + timedelta(days=1))

    async def _create_exceptions(
        self, tx: asyncpg.Connection, items: Sequence[tuple[store.ExceptionScope, Any]]
    ) -> tuple[list[str], list[str]]:
        created: list[str] = []
        conflicts: list[str] = []
        for scope, (given, period, days) in items:
            row = await store.insert_exception(
                tx,
                uuid.uuid4(),
                scope,
                scheduling_pb2.ExceptionKind.Name(given.kind),
                period,
                days,
                given.note,
            )
            created.append(names.AVAILABILITY_EXCEPTION.format(row["exception_id"]))
            conflicts += await self._apply_exception(tx, scope, row)
        return created, sorted(set(conflicts))

    @staticmethod
    async def _apply_exception(tx: asyncpg.Connection, scope: store.ExceptionScope, row: Any) -> list[str]:
        """Remove the free slots an exception covers (per time zone of the schedules in scope); return the
        live appointments it overlaps."""
        from zoneinfo import ZoneInfo

        by_zone: dict[str, list[uuid.UUID]] = {}
        for schedule in await store.schedules_in_scope(tx, scope):
            by_zone.setdefault(schedule["time_zone"], []).append(schedule["schedule_id"])
        conflicts: list[str] = []
        for zone_name, schedule_ids in by_zone.items():
            span = exception_blackout(row, ZoneInfo(zone_name))
            await store.delete_slots_in_period(tx, schedule_ids, span.start, span.end)
            conflicts += [
                names.APPOINTMENT.format(a)
                for a in await store.live_appointments_in_period(tx, schedule_ids, span.start, span.end)
            ]
        return conflicts

    async def CreateAvailabilityException(
        self, request: scheduling_pb2.CreateAvailabilityExceptionRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CreateAvailabilityExceptionResponse:
        caller = await self._caller()
        scope = await self._exception_scope(caller, request.exception, "exception")
        period, days = self._exception_period(request.exception, "exception")
        conflicts: list[str] = []

        async def work(tx: asyncpg.Connection) -> list[str]:
            created, found = await self._create_exceptions(tx, [(scope, (request.exception, period, days))])
            conflicts.extend(found)
            return created

        [name] = await self._in_transaction(caller.call(request, "CreateAvailabilityException"), work)
        row = await store.get_exception(self._pool, names.AVAILABILITY_EXCEPTION.parse_uuid(name, "name"))
        if row is None:
            raise NotFound("EXCEPTION_NOT_FOUND", "the exception was removed since")
        return scheduling_pb2.CreateAvailabilityExceptionResponse(
            exception=exception_resource(row), conflicting_appointments=conflicts
        )

    async def BatchCreateAvailabilityExceptions(
        self,
        request: scheduling_pb2.BatchCreateAvailabilityExceptionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> scheduling_pb2.BatchCreateAvailabilityExceptionsResponse:
        caller = await self._caller()
        items = []
        for index, given in enumerate(request.exceptions):
            field = f"exceptions[{index}]"
            scope = await self._exception_scope(caller, given, field)
            items.append((scope, (given, *self._exception_period(given, field))))
        conflicts: list[str] = []

        async def work(tx: asyncpg.Connection) -> list[str]:
            created, found = await self._create_exceptions(tx, items)
            conflicts.extend(found)
            return created

        created = await self._in_transaction(caller.call(request, "BatchCreateAvailabilityExceptions"), work)
        rows = [
            await store.get_exception(self._pool, names.AVAILABILITY_EXCEPTION.parse_uuid(n, "name"))
            for n in created
        ]
        return scheduling_pb2.BatchCreateAvailabilityExceptionsResponse(
            exceptions=[exception_resource(r) for r in rows if r is not None],
            conflicting_appointments=conflicts,
        )

    async def ListAvailabilityExceptions(
        self, request: scheduling_pb2.ListAvailabilityExceptionsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListAvailabilityExceptionsResponse:
        filters: dict[str, object] = {"schedule": request.schedule, "region": request.region}
        after = decode_token(request.page_token, filters)
        size = page_size(request.page_size)
        rows = await store.list_exceptions(
            self._pool,
            size + 1,
            uuid.UUID(after) if after else None,
            names.SCHEDULE.parse_uuid(request.schedule, "schedule") if request.schedule else None,
            names.REGION.parse_optional(request.region, "region"),
        )
        page, last = split_page(rows, size)
        return scheduling_pb2.ListAvailabilityExceptionsResponse(
            exceptions=[exception_resource(r) for r in page],
            next_page_token=next_page_token(last["exception_id"] if last is not None else None, filters),
        )

    async def DeleteAvailabilityException(
        self, request: scheduling_pb2.DeleteAvailabilityExceptionRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.DeleteAvailabilityExceptionResponse:
        caller = await self._caller()
        exception_id = names.AVAILABILITY_EXCEPTION.parse_uuid(request.name, "name")
        row = await store.get_exception(self._pool, exception_id)
        if row is None:
            if await store.LEDGER.find(self._pool, caller.call(request, "DeleteAvailabilityException")):
                return scheduling_pb2.DeleteAvailabilityExceptionResponse()
            raise NotFound("EXCEPTION_NOT_FOUND", f"no exception {request.name}")
        given = exception_resource(row)
        as_input = scheduling_pb2.AvailabilityExceptionInput()
        scope_field = given.WhichOneof("scope")
        if scope_field is not None:
            setattr(as_input, scope_field, getattr(given, scope_field))
        scope = await self._exception_scope(caller, as_input, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            await store.delete_exception(tx, exception_id)
            for schedule in await store.schedules_in_scope(tx, scope):
                await materialise_schedule(tx, schedule["schedule_id"])
            return [request.name]

        await self._in_transaction(caller.call(request, "DeleteAvailabilityException"), work)
        return scheduling_pb2.DeleteAvailabilityExceptionResponse()

    # --- slots -----------------------------------------------------------------------------------------

    async def SearchSlots(
        self, request: scheduling_pb2.SearchSlotsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.SearchSlotsResponse:
        start = (
            to_datetime(request.start_time, "start_time")
            if request.HasField("start_time")
            else datetime.now(UTC)
        )
        end = (
            to_datetime(request.end_time, "end_time")
            if request.HasField("end_time")
            else later(start, MAX_SEARCH_SPAN, "start_time")
        )
        if end <= start:
            raise InvalidArgument.one("end_time", "must be after start_time")
        if end - start > MAX_SEARCH_SPAN:
            raise InvalidArgument.one("end_time", "must be at most 400 days after start_time")
        slot_filters = store.SlotFilters(
            specialty=practice_pb2.Specialty.Name(request.specialty) if request.specialty else None,
            ght_id=names.GHT.parse_optional(request.ght, "ght"),
            region_code=names.REGION.parse_optional(request.region, "region"),
            rpps=names.PRACTITIONER.parse_optional(request.practitioner, "practitioner"),
            finess=names.ESTABLISHMENT.parse_optional(request.establishment, "establishment"),
            service_type=scheduling_pb2.ServiceType.Name(request.service_type)
            if request.service_type
            else None,
        )
        filters: dict[str, object] = {
            "specialty": request.specialty,
            "ght": request.ght,
            "region": request.region,
            "practitioner": request.practitioner,
            "establishment": request.establishment,
            "service_type": request.service_type,
            "start": start.isoformat() if request.HasField("start_time") else "",
            "end": end.isoformat() if request.HasField("end_time") else "",
        }
        after = _parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await store.search_slots(self._pool, slot_filters, start, end, size + 1, after)
        page, last = split_page(rows, size)
        return scheduling_pb2.SearchSlotsResponse(
            slots=[slot_resource(r) for r in page],
            next_page_token=next_page_token(
                _key_token(last["start_time"], last["slot_id"]) if last is not None else None, filters
            ),
        )

    # --- holds, proposals, bookings -------------------------------------------------------------------

    async def HoldSlot(
        self, request: scheduling_pb2.HoldSlotRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.HoldSlotResponse:
        caller = await self._caller()
        patient_id = await self._require_patient(caller, request.patient) if request.patient else None
        longest = self._settings.hold_duration
        ttl = min(to_timedelta(request.ttl, "ttl"), longest) if request.HasField("ttl") else longest
        new = self._new_appointment(caller, "pending", ttl, patient_id, None, None, None)
        held = await self._take_slot(request.slot, new, caller.call(request, "HoldSlot"))
        return scheduling_pb2.HoldSlotResponse(appointment=held)

    async def ProposeAppointment(
        self, request: scheduling_pb2.ProposeAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ProposeAppointmentResponse:
        caller = await self._caller()
        patient_id = await self._require_patient(caller, request.patient)
        requester = await self._require_practitioner(request.requester, "requester") or caller.rpps
        longest = self._settings.proposal_duration
        ttl = min(to_timedelta(request.ttl, "ttl"), longest) if request.HasField("ttl") else longest
        new = self._new_appointment(caller, "proposed", ttl, patient_id, requester, None, None)
        proposed = await self._take_slot(request.slot, new, caller.call(request, "ProposeAppointment"))
        return scheduling_pb2.ProposeAppointmentResponse(appointment=proposed)

    async def BookAppointment(
        self, request: scheduling_pb2.BookAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.BookAppointmentResponse:
        caller = await self._caller()
        patient_id = await self._require_patient(caller, request.patient)
        requester = await self._require_practitioner(request.requester, "requester") or caller.rpps
        treating = await self._require_practitioner(request.treating_physician, "treating_physician")
        consent = (
            scheduling_pb2.ConsentMethod.Name(request.consent.method) if request.HasField("consent") else None
        )
        if request.HasField("slot"):
            new = self._new_appointment(caller, "booked", None, patient_id, requester, treating, consent)
            booked = await self._take_slot(request.slot, new, caller.call(request, "BookAppointment"))
            return scheduling_pb2.BookAppointmentResponse(appointment=booked)
        appointment_id = names.APPOINTMENT.parse_uuid(request.appointment, "appointment")

        async def work(tx: asyncpg.Connection) -> list[str]:
            held = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            appointments.check_book_held(_facts(held))
            if held["patient_id"] is not None and held["patient_id"] != patient_id:
                raise FailedPrecondition(
                    "HOLD_PATIENT_MISMATCH", "the hold or proposal is for another patient"
                )
            booked = await store.book_held(
                tx,
                appointment_id,
                patient_id=patient_id,
                requester_rpps=requester,
                treating_rpps=treating,
                booked_by_finess=caller.finess,
                booked_by_ght=caller.ght_id,
                booked_by_rpps=caller.rpps,
                consent_method=consent,
                actor=caller.actor,
            )
            if not booked:
                raise FailedPrecondition(
                    "HOLD_EXPIRED", "the hold or proposal has lapsed; book the slot again"
                )
            return [names.APPOINTMENT.format(appointment_id)]

        [name] = await self._in_transaction(caller.call(request, "BookAppointment"), work)
        audit_target(resource=name)
        self._relay.notify(appointment_id)
        return scheduling_pb2.BookAppointmentResponse(
            appointment=await self._appointment(names.APPOINTMENT.parse_uuid(name, "name"))
        )

    # --- reads -----------------------------------------------------------------------------------------

    async def GetAppointment(
        self, request: scheduling_pb2.GetAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetAppointmentResponse:
        caller = await self._caller()
        row = await store.get_appointment(self._pool, names.APPOINTMENT.parse_uuid(request.name, "name"))
        await self._visible_appointment(caller, row)
        return scheduling_pb2.GetAppointmentResponse(appointment=appointment_resource(row))

    async def ListAppointments(
        self, request: scheduling_pb2.ListAppointmentsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListAppointmentsResponse:
        caller = await self._caller()
        audit_target(resource="appointments", patient=request.patient)
        list_filters = store.AppointmentFilters(
            rpps=names.PRACTITIONER.parse_optional(request.practitioner, "practitioner"),
            patient_id=names.PATIENT.parse_uuid(request.patient, "patient") if request.patient else None,
            finess=names.ESTABLISHMENT.parse_optional(request.establishment, "establishment"),
            statuses=tuple(FHIR_STATUS[s] for s in request.states),
            start=to_datetime(request.start_time, "start_time") if request.HasField("start_time") else None,
            end=to_datetime(request.end_time, "end_time") if request.HasField("end_time") else None,
        )
        filters: dict[str, object] = {
            "practitioner": request.practitioner,
            "patient": request.patient,
            "establishment": request.establishment,
            "states": sorted(request.states),
            "start": list_filters.start.isoformat() if list_filters.start else "",
            "end": list_filters.end.isoformat() if list_filters.end else "",
        }
        after = _parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await store.list_appointments(self._pool, caller.scope(), list_filters, size + 1, after)
        page, last = split_page(rows, size)
        audit_patients(names.PATIENT.format_optional(r["patient_id"]) for r in page)
        return scheduling_pb2.ListAppointmentsResponse(
            appointments=[appointment_resource(r) for r in page],
            next_page_token=next_page_token(
                _key_token(last["start_time"], last["appointment_id"]) if last is not None else None, filters
            ),
        )

    # --- changes ---------------------------------------------------------------------------------------

    async def _check_initiator(
        self, tx: asyncpg.Connection, caller: Caller, row: Any, initiator: scheduling_pb2.Party.ValueType
    ) -> None:
        schedule = await store.get_schedule(tx, row["schedule_id"])
        appointments.check_initiator(
            _facts(row),
            appointments.Party(scheduling_pb2.Party.Name(initiator)),
            acts_for_practitioner=caller.acts_for_practitioner(row),
            cutoff=schedule["cancellation_cutoff"] if schedule is not None else timedelta(0),
            now=datetime.now(UTC),
        )

    async def CancelAppointment(
        self, request: scheduling_pb2.CancelAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CancelAppointmentResponse:
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            appointments.check(appointments.Change.CANCEL, _facts(row))
            await self._check_initiator(tx, caller, row, request.initiator)
            await store.cancel(
                tx,
                row,
                status="cancelled",
                initiator=scheduling_pb2.Party.Name(request.initiator),
                reason=scheduling_pb2.CancellationReason.Name(request.reason),
                note=request.note,
                actor=caller.actor,
            )
            await self._offer_freed(tx, row)
            return [request.name]

        await self._in_transaction(caller.call(request, "CancelAppointment"), work)
        self._relay.notify(appointment_id)
        return scheduling_pb2.CancelAppointmentResponse(appointment=await self._appointment(appointment_id))

    async def RescheduleAppointment(
        self, request: scheduling_pb2.RescheduleAppointmentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.RescheduleAppointmentResponse:
        caller = await self._caller()
        old_id = names.APPOINTMENT.parse_uuid(request.name, "name")
        slot_id = names.SLOT.parse_uuid(request.slot, "slot")

        async def work(tx: asyncpg.Connection) -> list[str]:
            old = await self._visible_appointment(caller, await store.lock_appointment(tx, old_id))
            appointments.check(appointments.Change.RESCHEDULE, _facts(old))
            await self._check_initiator(tx, caller, old, request.initiator)
            # The new appointment is booked before the old one is cancelled; both overlap for a moment when
            # the move is by less than a slot, so the overlap check waits for the commit.
            await tx.execute("SET CONSTRAINTS scheduling.appointments_no_overlap DEFERRED")
            new = store.NewAppointment(
                appointment_id=uuid.uuid4(),
                status="booked",
                claim=None,
                patient_id=old["patient_id"],
                requester_rpps=old["requester_rpps"],
                treating_rpps=old["treating_rpps"],
                booked_by_finess=old["booked_by_finess"],
                booked_by_ght=old["booked_by_ght"],
                booked_by_rpps=old["booked_by_rpps"],
                consent_method=old["consent_method"],
                actor=caller.actor,
                join_window_before=self._settings.join_window_before,
                no_show_grace=self._settings.no_show_grace,
                rescheduled_from=old_id,
                reason="RESCHEDULED",
            )
            row = await store.insert_appointment_on_slot(tx, slot_id, new, call)
            if row is None:
                raise await self._slot_refusal(slot_id)
            await store.cancel(
                tx,
                old,
                status="cancelled",
                initiator=scheduling_pb2.Party.Name(request.initiator),
                reason="CANCELLATION_REASON_RESCHEDULED",
                note=request.note,
                actor=caller.actor,
                rescheduled_to=new.appointment_id,
            )
            return [names.APPOINTMENT.format(new.appointment_id)]

        # The new appointment's own insert records the request in the ledger (see insert_appointment_on_slot).
        call = caller.call(request, "RescheduleAppointment")

        async def attempt() -> list[str]:
            async with store.transaction(self._pool) as tx:
                done = await store.LEDGER.claim(tx, call)
                return done.resources if done is not None else await work(tx)

        try:
            written = await retry_conflicts(attempt)
        except asyncpg.IntegrityConstraintViolationError as exc:
            error = store.constraint_error(exc)
            if error is None:
                raise
            raise error from None
        new_id = names.APPOINTMENT.parse_uuid(written[0], "name")
        self._relay.notify(new_id, old_id)
        current = await self._appointment(new_id)
        previous = await self._appointment(names.APPOINTMENT.parse_uuid(current.rescheduled_from, "name"))
        return scheduling_pb2.RescheduleAppointmentResponse(appointment=current, previous=previous)

    async def RecordConsent(
        self, request: scheduling_pb2.RecordConsentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.RecordConsentResponse:
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            appointments.check_consent(_facts(row))
            await store.record_consent(
                tx, appointment_id, scheduling_pb2.ConsentMethod.Name(request.consent.method), caller.actor
            )
            return [request.name]

        await self._in_transaction(caller.call(request, "RecordConsent"), work)
        return scheduling_pb2.RecordConsentResponse(appointment=await self._appointment(appointment_id))

    async def RefuseTeleconsultation(
        self, request: scheduling_pb2.RefuseTeleconsultationRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.RefuseTeleconsultationResponse:
        """The patient refuses telemedicine or asks to be seen in person (seed 004; L.1111-4 CSP). The
        workflow needs no message: the start is refused on the row, and at the no-show deadline its
        activity cancels a refused appointment (CONSENT_REFUSED) instead of marking it a no-show."""
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            appointments.check_refuse(_facts(row))
            await store.record_refusal(
                tx,
                appointment_id,
                scheduling_pb2.RefusalKind.Name(request.kind),
                caller.actor,
                Reason.CONSENT_REFUSED,
            )
            return [request.name]

        await self._in_transaction(caller.call(request, "RefuseTeleconsultation"), work)
        return scheduling_pb2.RefuseTeleconsultationResponse(
            appointment=await self._appointment(appointment_id)
        )

    async def WithdrawTeleconsultationRefusal(
        self,
        request: scheduling_pb2.WithdrawTeleconsultationRefusalRequest,
        context: grpc.aio.ServicerContext,
    ) -> scheduling_pb2.WithdrawTeleconsultationRefusalResponse:
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            appointments.check_withdraw_refusal(_facts(row))
            await store.withdraw_refusal(tx, appointment_id, caller.actor, REFUSAL_WITHDRAWN)
            return [request.name]

        await self._in_transaction(caller.call(request, "WithdrawTeleconsultationRefusal"), work)
        return scheduling_pb2.WithdrawTeleconsultationRefusalResponse(
            appointment=await self._appointment(appointment_id)
        )

    async def MarkAppointmentEnteredInError(
        self, request: scheduling_pb2.MarkAppointmentEnteredInErrorRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.MarkAppointmentEnteredInErrorResponse:
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await self._visible_appointment(caller, await store.lock_appointment(tx, appointment_id))
            if not caller.acts_for_practitioner(row):
                raise PermissionDenied(
                    "PRACTITIONER_ONLY", "only the teleconsultant's side or the hub may do this"
                )
            appointments.check(appointments.Change.ENTER_IN_ERROR, _facts(row))
            await store.cancel(
                tx,
                row,
                status="entered-in-error",
                initiator="PARTY_PRACTITIONER",
                reason="CANCELLATION_REASON_OTHER",
                note=request.note,
                actor=caller.actor,
            )
            return [request.name]

        await self._in_transaction(caller.call(request, "MarkAppointmentEnteredInError"), work)
        self._relay.notify(appointment_id)
        return scheduling_pb2.MarkAppointmentEnteredInErrorResponse(
            appointment=await self._appointment(appointment_id)
        )

    # --- the teleconsultation itself (Temporal Updates) ------------------------------------------------

    async def _for_teleconsultant(
        self, request: Message, method: str, name: str
    ) -> tuple[Caller, Any, Call, bool]:
        """The appointment, checked visible and the caller its teleconsultant; the call as the ledger knows
        it, and True when it was already applied (the workflow's activity recorded it with the change)."""
        caller = await self._caller()
        row = await self._visible_appointment(
            caller, await store.get_appointment(self._pool, names.APPOINTMENT.parse_uuid(name, "name"))
        )
        if caller.rpps != row["rpps"]:
            raise PermissionDenied(
                "TELECONSULTANT_ONLY", "only the teleconsultant (their own token) may do this"
            )
        call = caller.call(request, method)
        done = await store.LEDGER.find(self._pool, call) is not None
        return caller, row, call, done

    async def _update(self, row: Any, update: str, argument: Any, result_type: type, request_id: str) -> None:
        async def closed() -> DomainError:
            # The workflow has closed (no-show, cancellation): say what the appointment is now.
            current = await store.get_appointment(self._pool, row["appointment_id"])
            change = appointments.Change.START if update == "start" else appointments.Change.COMPLETE
            return appointments.invalid_transition(
                current["effective_status"] if current else "unknown", change
            )

        await self._cases.update(
            row["appointment_id"],
            update,
            argument,
            request_id=request_id,
            closed=closed,
            result_type=result_type,
        )

    async def StartTeleconsultation(
        self, request: scheduling_pb2.StartTeleconsultationRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.StartTeleconsultationResponse:
        caller, row, call, done = await self._for_teleconsultant(
            request, "StartTeleconsultation", request.name
        )
        if not done:
            appointments.check_start(_facts(row))
            setting = ""
            if request.assistant:
                await self._require_assistant(request.assistant)
                setting = billing_pb2.AssistanceSetting.Name(request.assistance_setting)
            await self._update(
                row,
                "start",
                StartRequest(
                    request_id=request.request_id,
                    practitioner=caller.actor,
                    call=call,
                    assistant=request.assistant,
                    assistance_setting=setting,
                ),
                StartResult,
                request.request_id,
            )
        return scheduling_pb2.StartTeleconsultationResponse(
            appointment=await self._appointment(row["appointment_id"])
        )

    async def _require_assistant(self, name: str) -> None:
        """The assistant is a nurse or a pharmacist of the directory (§7.18)."""
        assistant = await self._directory.practitioner(name)
        if assistant is None:
            raise InvalidArgument.one("assistant", "is not a practitioner of the directory")
        if assistant.profession not in ASSISTING_PROFESSIONS:
            raise InvalidArgument.one("assistant", "must be a nurse or a pharmacist (§7.18)")

    async def CompleteTeleconsultation(
        self, request: scheduling_pb2.CompleteTeleconsultationRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CompleteTeleconsultationResponse:
        caller, row, call, done = await self._for_teleconsultant(
            request, "CompleteTeleconsultation", request.name
        )
        if not done:
            appointments.check(appointments.Change.COMPLETE, _facts(row))
            participants = {p.practitioner for p in request.record.participants}
            if caller.actor not in participants:
                raise InvalidArgument(
                    [FieldViolation("record.participants", "must name the teleconsultant (R.6316-4 3°)")]
                )
            circumstances = set(circumstances_flags(request.circumstances))
            treating = row["treating_rpps"]
            if treating is not None:
                if treating == row["rpps"]:
                    circumstances.add("performer_is_treating_physician")
                if treating == row["requester_rpps"]:
                    circumstances.add("oriented_by_treating_physician")
            await self._update(
                row,
                "complete",
                CompletionRequest(
                    request_id=request.request_id,
                    practitioner=caller.actor,
                    record=record_model(request.record),
                    circumstances=sorted(circumstances),
                    call=call,
                    performer_activity=(
                        PerformerActivity(
                            conventioned_acts=request.performer_activity.conventioned_acts,
                            teleconsultations=request.performer_activity.teleconsultations,
                            teleexpertises=request.performer_activity.teleexpertises,
                            own_patient_teleconsultations=request.performer_activity.own_patient_teleconsultations,
                        )
                        if request.HasField("performer_activity")
                        else None
                    ),
                ),
                CompletionResult,
                request.request_id,
            )
        return scheduling_pb2.CompleteTeleconsultationResponse(
            appointment=await self._appointment(row["appointment_id"])
        )

    # --- the record as a FHIR document -----------------------------------------------------------------

    async def GetTeleconsultationDocument(
        self, request: scheduling_pb2.GetTeleconsultationDocumentRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetTeleconsultationDocumentResponse:
        caller = await self._caller()
        appointment_id = names.APPOINTMENT.parse_uuid(request.name, "name")
        row = await store.get_appointment(self._pool, appointment_id)
        if row is not None and caller.rpps and not caller.sees(row) and row["record"] is not None:
            # A professional the record names as a participant (an assistant beside the patient) keeps it too.
            participants = _record_dict(row["record"]).get("participants", [])
            if caller.actor in {p.get("practitioner") for p in participants}:
                audit_target(resource=request.name, patient=names.PATIENT.format_optional(row["patient_id"]))
                return await self._document(row)
        await self._visible_appointment(caller, row)
        return await self._document(row)

    async def _document(self, row: Any) -> scheduling_pb2.GetTeleconsultationDocumentResponse:
        found = await RECORDS.get(self._pool, row["appointment_id"])
        if found is None:
            raise FailedPrecondition(
                "RECORD_NOT_AVAILABLE",
                "the record document is written once the teleconsultation is fulfilled and its report sent",
                {"state": row["effective_status"]},
            )
        document, submission = found
        return scheduling_pb2.GetTeleconsultationDocumentResponse(
            document=document_resource(document, submission, MEDIA_TYPE)
        )

    # --- join links ------------------------------------------------------------------------------------

    async def CheckJoinToken(
        self, request: scheduling_pb2.CheckJoinTokenRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CheckJoinTokenResponse:
        caller = await self._caller()
        row = await store.find_join_token(self._pool, join.token_hash(request.token))
        if row is not None and not caller.privileged:
            # An establishment only learns about the appointments it sees (others answer as unknown).
            appointment = await store.get_appointment(self._pool, row["appointment_id"])
            if appointment is None or not caller.sees(appointment):
                row = None
        reason = join.check(row, datetime.now(UTC))
        if reason:
            return scheduling_pb2.CheckJoinTokenResponse(valid=False, reason=reason)
        assert row is not None
        name = names.APPOINTMENT.format(row["appointment_id"])
        audit_target(resource=name, patient=names.PATIENT.format_optional(row["patient_id"]))
        return scheduling_pb2.CheckJoinTokenResponse(
            valid=True,
            appointment=name,
            participant=row["participant"],
            expire_time=timestamp(row["expire_time"]),
        )

    # --- activity reports ------------------------------------------------------------------------------

    async def GetTeleconsultationActivityReport(
        self,
        request: scheduling_pb2.GetTeleconsultationActivityReportRequest,
        context: grpc.aio.ServicerContext,
    ) -> scheduling_pb2.GetTeleconsultationActivityReportResponse:
        caller = await self._caller()
        region = names.REGION.parse_optional(request.region, "region")
        ght = names.GHT.parse_optional(request.ght, "ght")
        scope = reports.scope_of(caller.principal, caller.ght_id, region, ght)
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
        rows = await store.activity_report(
            self._pool,
            scope,
            reports.first_day(request.start_month),
            reports.first_day(request.end_month),
            ght_id=ght,
            specialty=practice_pb2.Specialty.Name(request.specialty) if request.specialty else None,
            limit=size + 1,
            after=after,
        )
        page, last = split_page(rows, size)
        return scheduling_pb2.GetTeleconsultationActivityReportResponse(
            rows=[activity_resource(r) for r in page],
            next_page_token=next_page_token(
                reports.key_token(last["month"], last["region_code"], last["ght"], last["specialty"])
                if last is not None
                else None,
                filters,
            ),
        )

    # --- téléconseils ----------------------------------------------------------------------------------

    async def RecordTeleconseil(
        self, request: scheduling_pb2.RecordTeleconseilRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.RecordTeleconseilResponse:
        caller = await self._caller()
        given = request.teleconseil
        if caller.rpps is None or caller.finess is None:
            raise PermissionDenied(
                "PRACTITIONER_AT_ESTABLISHMENT_REQUIRED",
                "a téléconseil is recorded by the doctor who gave it, through their establishment's system",
            )
        practitioner = await self._directory.practitioner(caller.principal.practitioner)
        if (
            practitioner is None
            or not practitioner.active
            or practitioner.profession not in MEDICAL_PROFESSIONS
        ):
            raise PermissionDenied(
                "NOT_A_MEDICAL_PROFESSIONAL",
                "a téléconseil personnalisé is given by the patient's doctor (a medical professional)",
            )
        patient_id = await self._require_patient(caller, given.patient)
        establishment = await self._directory.establishment(caller.principal.establishment)
        if establishment is None:
            raise PermissionDenied(
                "ESTABLISHMENT_UNKNOWN", "the calling establishment is not in the directory"
            )
        new = store.NewTeleconseil(
            teleconseil_id=uuid.uuid4(),
            patient_id=patient_id,
            rpps=caller.rpps,
            finess=caller.finess,
            ght_id=caller.ght_id,
            region_code=establishment.region.removeprefix("regions/"),
            advice_time=to_datetime(given.advice_time),
            channel=scheduling_pb2.Teleconseil.Channel.Name(given.channel),
            summary=given.summary,
        )

        async def work(tx: asyncpg.Connection) -> list[str]:
            row = await store.insert_teleconseil(tx, new)
            return [names.TELECONSEIL.format(row["teleconseil_id"])]

        [name] = await self._in_transaction(caller.call(request, "RecordTeleconseil"), work)
        audit_target(resource=name)
        row = await store.get_teleconseil(self._pool, names.TELECONSEIL.parse_uuid(name, "name"))
        return scheduling_pb2.RecordTeleconseilResponse(teleconseil=teleconseil_resource(row))

    def _sees_teleconseil(self, caller: Caller, row: Any) -> bool:
        if caller.privileged:
            return True
        if row["ght_id"] is not None:
            return bool(row["ght_id"] == caller.ght_id)
        return bool(row["finess"] == caller.finess)

    async def GetTeleconseil(
        self, request: scheduling_pb2.GetTeleconseilRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetTeleconseilResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        row = await store.get_teleconseil(self._pool, names.TELECONSEIL.parse_uuid(request.name, "name"))
        if row is None or not self._sees_teleconseil(caller, row):
            if caller.privileged:
                raise NotFound("TELECONSEIL_NOT_FOUND", "no such téléconseil")
            raise PermissionDenied(
                "TELECONSEIL_NOT_VISIBLE", "the téléconseil is not visible to the caller (or does not exist)"
            )
        audit_target(patient=names.PATIENT.format(row["patient_id"]))
        return scheduling_pb2.GetTeleconseilResponse(teleconseil=teleconseil_resource(row))

    async def ListTeleconseils(
        self, request: scheduling_pb2.ListTeleconseilsRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListTeleconseilsResponse:
        caller = await self._caller()
        patient_id = await self._require_patient(caller, request.patient)
        filters: dict[str, object] = {"patient": request.patient}
        after = _parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await store.list_teleconseils(
            self._pool,
            patient_id,
            privileged=caller.privileged,
            ght_id=caller.ght_id,
            finess=caller.finess,
            limit=size + 1,
            after=after,
        )
        page, last = split_page(rows, size)
        return scheduling_pb2.ListTeleconseilsResponse(
            teleconseils=[teleconseil_resource(r) for r in page],
            next_page_token=next_page_token(
                _key_token(last["advice_time"], last["teleconseil_id"]) if last is not None else None, filters
            ),
        )

    # --- recurring series (issue 13 item 14) -------------------------------------------------------------

    def _series_not_visible(self, caller: Caller) -> DomainError:
        if caller.privileged:
            return NotFound("APPOINTMENT_SERIES_NOT_FOUND", "no such appointment series")
        return PermissionDenied(
            "APPOINTMENT_SERIES_NOT_VISIBLE",
            "the appointment series is not visible to the caller (or does not exist)",
        )

    def _visible_series(self, caller: Caller, row: Any | None) -> Any:
        """A series is seen by whoever sees its appointments (the same columns, the same rule)."""
        if row is None or not caller.sees(row):
            raise self._series_not_visible(caller)
        audit_target(
            resource=names.APPOINTMENT_SERIES.format(row["series_id"]),
            patient=names.PATIENT.format(row["patient_id"]),
        )
        return row

    async def _series(self, series_id: uuid.UUID) -> scheduling_pb2.AppointmentSeries:
        row = await store.get_series(self._pool, series_id)
        assert row is not None
        return series_resource(row)

    async def _occurrence_refusal(self, index: int, slot_id: uuid.UUID | None) -> DomainError:
        """Why occurrence `index` (0: the first) could not be booked; the series books nothing then."""
        cause = (
            await self._slot_refusal(slot_id)
            if slot_id is not None
            else NotFound("SLOT_NOT_FOUND", "the agenda offers no slot at that time")
        )
        return self._occurrence_error(index, cause.reason)

    @staticmethod
    def _occurrence_error(index: int, reason: str) -> DomainError:
        return FailedPrecondition(
            "SERIES_OCCURRENCE_UNAVAILABLE",
            f"occurrence {index + 1} of the series cannot be booked ({reason}); nothing was booked",
            {"occurrence": str(index + 1), "slot_reason": reason},
        )

    async def _book_occurrence(
        self, tx: asyncpg.Connection, index: int, slot_id: uuid.UUID | None, new: store.NewAppointment
    ) -> Any:
        """Occurrence `index` booked on its slot, or the series' refusal naming it (and why its slot)."""
        if slot_id is None:
            raise await self._occurrence_refusal(index, None)
        try:
            async with tx.transaction():  # a savepoint: the overlap constraint's refusal names the occurrence
                row = await store.insert_appointment_on_slot(tx, slot_id, new, None)
        except asyncpg.IntegrityConstraintViolationError as exc:
            error = store.constraint_error(exc)
            if error is None:
                raise
            raise self._occurrence_error(index, error.reason) from None
        if row is None:
            raise await self._occurrence_refusal(index, slot_id)
        return row

    async def CreateAppointmentSeries(
        self, request: scheduling_pb2.CreateAppointmentSeriesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CreateAppointmentSeriesResponse:
        caller = await self._caller()
        given = request.appointment_series
        first_slot = names.SLOT.parse_uuid(given.first_slot, "appointment_series.first_slot")
        patient_id = await self._require_patient(caller, given.patient)
        requester = (
            await self._require_practitioner(given.requester, "appointment_series.requester") or caller.rpps
        )
        treating = await self._require_practitioner(
            given.treating_physician, "appointment_series.treating_physician"
        )
        consent = (
            scheduling_pb2.ConsentMethod.Name(given.consent.method) if given.HasField("consent") else None
        )
        series = store.NewSeries(
            series_id=uuid.uuid4(),
            patient_id=patient_id,
            occurrence_count=given.occurrence_count,
            interval_days=given.interval_days,
        )

        async def work(tx: asyncpg.Connection) -> list[str]:
            # All or nothing: every occurrence is written in this one transaction, or none is.
            new = self._new_appointment(caller, "booked", None, patient_id, requester, treating, consent)
            first = await self._book_occurrence(tx, 0, first_slot, new)
            await store.insert_series(tx, series, first, new)
            await store.set_occurrence(tx, first["appointment_id"], series.series_id, 0)
            for index in range(1, series.occurrence_count):
                slot_id = await store.occurrence_slot(
                    tx,
                    first["schedule_id"],
                    first["service_type"],
                    first["start_time"],
                    index * series.interval_days,
                )
                occurrence = self._new_appointment(
                    caller, "booked", None, patient_id, requester, treating, consent
                )
                row = await self._book_occurrence(tx, index, slot_id, occurrence)
                await store.set_occurrence(tx, row["appointment_id"], series.series_id, index)
            return [names.APPOINTMENT_SERIES.format(series.series_id)]

        [name] = await self._in_transaction(caller.call(request, "CreateAppointmentSeries"), work)
        audit_target(resource=name)
        found = await self._series(names.APPOINTMENT_SERIES.parse_uuid(name, "name"))
        occurrences = [names.APPOINTMENT.parse_uuid(a, "name") for a in found.appointments]
        self._relay.notify(*occurrences)
        return scheduling_pb2.CreateAppointmentSeriesResponse(
            appointment_series=found, appointments=[await self._appointment(i) for i in occurrences]
        )

    async def _patient_page(
        self,
        caller: Caller,
        request: Any,
        fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
        id_column: str,
    ) -> tuple[Sequence[asyncpg.Record], str]:
        """One page of a patient's series or waitlist entries the caller may see, newest first, and the
        next page's token (bound to the patient)."""
        patient_id = await self._require_patient(caller, request.patient)
        filters: dict[str, object] = {"patient": request.patient}
        after = _parse_key(decode_token(request.page_token, filters))
        size = page_size(request.page_size)
        rows = await fetch(self._pool, patient_id, caller.scope(), size + 1, after)
        page, last = split_page(rows, size)
        key = _key_token(last["create_time"], last[id_column]) if last is not None else None
        return page, next_page_token(key, filters)

    async def GetAppointmentSeries(
        self, request: scheduling_pb2.GetAppointmentSeriesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetAppointmentSeriesResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        row = await store.get_series(self._pool, names.APPOINTMENT_SERIES.parse_uuid(request.name, "name"))
        return scheduling_pb2.GetAppointmentSeriesResponse(
            appointment_series=series_resource(self._visible_series(caller, row))
        )

    async def ListAppointmentSeries(
        self, request: scheduling_pb2.ListAppointmentSeriesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListAppointmentSeriesResponse:
        page, token = await self._patient_page(await self._caller(), request, store.list_series, "series_id")
        return scheduling_pb2.ListAppointmentSeriesResponse(
            appointment_series=[series_resource(r) for r in page], next_page_token=token
        )

    async def CancelAppointmentSeries(
        self, request: scheduling_pb2.CancelAppointmentSeriesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CancelAppointmentSeriesResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        series_id = names.APPOINTMENT_SERIES.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            self._visible_series(caller, await store.lock_series(tx, series_id))
            cancelled: list[str] = []
            for appointment_id in await store.remaining_occurrences(tx, series_id):
                row = await store.lock_appointment(tx, appointment_id)
                assert row is not None
                appointments.check(appointments.Change.CANCEL, _facts(row))
                await self._check_initiator(tx, caller, row, request.initiator)
                await store.cancel(
                    tx,
                    row,
                    status="cancelled",
                    initiator=scheduling_pb2.Party.Name(request.initiator),
                    reason=scheduling_pb2.CancellationReason.Name(request.reason),
                    note=request.note,
                    actor=caller.actor,
                )
                await self._offer_freed(tx, row)
                cancelled.append(names.APPOINTMENT.format(appointment_id))
            await store.set_series_cancelled(tx, series_id)
            return [request.name, *cancelled]

        _, *cancelled = await self._in_transaction(caller.call(request, "CancelAppointmentSeries"), work)
        ids = [names.APPOINTMENT.parse_uuid(a, "name") for a in cancelled]
        self._relay.notify(*ids)
        return scheduling_pb2.CancelAppointmentSeriesResponse(
            appointment_series=await self._series(series_id),
            cancelled=[await self._appointment(i) for i in ids],
        )

    # --- waitlist (issue 13 item 15; the design is waitlist.py's) ------------------------------------------

    def _waitlist_durations(self) -> dict[str, timedelta]:
        return {
            "hold": self._settings.waitlist_offer_hold,
            "join_window_before": self._settings.join_window_before,
            "no_show_grace": self._settings.no_show_grace,
        }

    async def _offer_freed(self, tx: asyncpg.Connection, row: Any) -> None:
        """A booked appointment was cancelled: its slot goes to the first in line, in the same transaction."""
        if row["effective_status"] == "booked" and row["slot_id"] is not None:
            await waitlist.offer_freed_slot(tx, row["slot_id"], **self._waitlist_durations())

    def _visible_entry(self, caller: Caller, row: Any | None) -> Any:
        if row is None or not caller.sees(row):
            if caller.privileged:
                raise NotFound("WAITLIST_ENTRY_NOT_FOUND", "no such waitlist entry")
            raise PermissionDenied(
                "WAITLIST_ENTRY_NOT_VISIBLE",
                "the waitlist entry is not visible to the caller (or does not exist)",
            )
        audit_target(
            resource=names.WAITLIST_ENTRY.format(row["entry_id"]),
            patient=names.PATIENT.format(row["patient_id"]),
        )
        return row

    async def _entry(self, entry_id: uuid.UUID) -> scheduling_pb2.WaitlistEntry:
        row = await store.get_entry(self._pool, entry_id)
        assert row is not None
        return waitlist_entry_resource(row)

    async def CreateWaitlistEntry(
        self, request: scheduling_pb2.CreateWaitlistEntryRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CreateWaitlistEntryResponse:
        caller = await self._caller()
        given = request.waitlist_entry
        patient_id = await self._require_patient(caller, given.patient)
        named = names.GHT.parse_optional(given.ght, "waitlist_entry.ght")
        if caller.ght_id is not None and named not in (None, caller.ght_id):
            raise InvalidArgument.one("waitlist_entry.ght", "must be the caller's GHT (or left empty)")
        ght_id = caller.ght_id or (named if caller.privileged else None)
        if ght_id is None:
            raise InvalidArgument.one("waitlist_entry.ght", "is required: the caller is outside any GHT")
        requester = (
            await self._require_practitioner(given.requester, "waitlist_entry.requester") or caller.rpps
        )
        entry_id = uuid.uuid4()

        async def work(tx: asyncpg.Connection) -> list[str]:
            await store.insert_entry(
                tx,
                entry_id,
                patient_id,
                ght_id,
                practice_pb2.Specialty.Name(given.specialty),
                requester,
                (caller.finess, caller.ght_id, caller.rpps),
            )
            return [names.WAITLIST_ENTRY.format(entry_id)]

        [name] = await self._in_transaction(caller.call(request, "CreateWaitlistEntry"), work)
        audit_target(resource=name)
        return scheduling_pb2.CreateWaitlistEntryResponse(
            waitlist_entry=await self._entry(names.WAITLIST_ENTRY.parse_uuid(name, "name"))
        )

    async def GetWaitlistEntry(
        self, request: scheduling_pb2.GetWaitlistEntryRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.GetWaitlistEntryResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        row = await store.get_entry(self._pool, names.WAITLIST_ENTRY.parse_uuid(request.name, "name"))
        return scheduling_pb2.GetWaitlistEntryResponse(
            waitlist_entry=waitlist_entry_resource(self._visible_entry(caller, row))
        )

    async def ListWaitlistEntries(
        self, request: scheduling_pb2.ListWaitlistEntriesRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.ListWaitlistEntriesResponse:
        page, token = await self._patient_page(await self._caller(), request, store.list_entries, "entry_id")
        return scheduling_pb2.ListWaitlistEntriesResponse(
            waitlist_entries=[waitlist_entry_resource(r) for r in page], next_page_token=token
        )

    async def CancelWaitlistEntry(
        self, request: scheduling_pb2.CancelWaitlistEntryRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.CancelWaitlistEntryResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        entry_id = names.WAITLIST_ENTRY.parse_uuid(request.name, "name")

        async def work(tx: asyncpg.Connection) -> list[str]:
            entry = self._visible_entry(caller, await store.lock_entry(tx, entry_id))
            if entry["state"] == "STATE_BOOKED":
                raise FailedPrecondition(
                    "WAITLIST_ENTRY_BOOKED", "the entry's offer was accepted: cancel the appointment instead"
                )
            if entry["state"] != "STATE_CANCELLED":
                offer = await store.open_offer(tx, entry_id)
                await store.set_entry_state(tx, entry_id, "STATE_CANCELLED")
                if offer is not None:
                    await waitlist.close_offer(tx, offer, "WITHDRAWN", **self._waitlist_durations())
            return [request.name]

        await self._in_transaction(caller.call(request, "CancelWaitlistEntry"), work)
        return scheduling_pb2.CancelWaitlistEntryResponse(waitlist_entry=await self._entry(entry_id))

    async def AcceptWaitlistOffer(
        self, request: scheduling_pb2.AcceptWaitlistOfferRequest, context: grpc.aio.ServicerContext
    ) -> scheduling_pb2.AcceptWaitlistOfferResponse:
        caller = await self._caller()
        audit_target(resource=request.name)
        entry_id = names.WAITLIST_ENTRY.parse_uuid(request.name, "name")
        consent = (
            scheduling_pb2.ConsentMethod.Name(request.consent.method) if request.HasField("consent") else None
        )

        async def work(tx: asyncpg.Connection) -> list[str]:
            entry = self._visible_entry(caller, await store.lock_entry(tx, entry_id))
            offer = await store.open_offer(tx, entry_id)
            if offer is None:
                raise FailedPrecondition("WAITLIST_NO_OPEN_OFFER", "no slot is offered to this entry now")
            booked = await store.book_held(
                tx,
                offer["appointment_id"],
                patient_id=entry["patient_id"],
                requester_rpps=entry["requester_rpps"],
                treating_rpps=None,
                booked_by_finess=caller.finess or entry["booked_by_finess"],
                booked_by_ght=caller.ght_id or entry["booked_by_ght"],
                booked_by_rpps=caller.rpps,
                consent_method=consent,
                actor=caller.actor,
            )
            if not booked:
                raise FailedPrecondition(
                    "WAITLIST_OFFER_LAPSED",
                    "the offer's hold time has passed; the slot goes to the next in line",
                )
            await store.set_offer_state(tx, offer["offer_id"], "ACCEPTED")
            await store.set_entry_state(tx, entry_id, "STATE_BOOKED", offer["appointment_id"])
            return [request.name, names.APPOINTMENT.format(offer["appointment_id"])]

        _, appointment = await self._in_transaction(caller.call(request, "AcceptWaitlistOffer"), work)
        appointment_id = names.APPOINTMENT.parse_uuid(appointment, "name")
        self._relay.notify(appointment_id)
        return scheduling_pb2.AcceptWaitlistOfferResponse(
            waitlist_entry=await self._entry(entry_id), appointment=await self._appointment(appointment_id)
        )


def _record_dict(value: object) -> dict[str, Any]:
    import json

    found = json.loads(value) if isinstance(value, str) else value
    return found if isinstance(found, dict) else {}


__all__ = ["SERVICE_NAME", "SchedulingServicer", "day_span", "timestamp"]
