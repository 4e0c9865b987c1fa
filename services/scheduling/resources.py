"""Database rows → `parcours.scheduling.v1` messages, and the names of resources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

# googleapis-common-protos ships .pyi stubs for google.type but no py.typed marker.
from google.type import date_pb2, datetime_pb2, interval_pb2, timeofday_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.scheduling.v1 import scheduling_pb2
from parcours.type.v1 import practice_pb2

from services.kit import names, reports
from services.kit.errors import InvalidArgument
from services.kit.records import StoredDocument, Submission
from services.scheduling import models

Appointment = scheduling_pb2.Appointment
# FHIR Appointment.status code → API state.
STATES: Mapping[str, Appointment.State.ValueType] = {
    "proposed": Appointment.STATE_PROPOSED,
    "pending": Appointment.STATE_PENDING,
    "booked": Appointment.STATE_BOOKED,
    "arrived": Appointment.STATE_ARRIVED,
    "fulfilled": Appointment.STATE_FULFILLED,
    "cancelled": Appointment.STATE_CANCELLED,
    "noshow": Appointment.STATE_NOSHOW,
    "entered-in-error": Appointment.STATE_ENTERED_IN_ERROR,
}
FHIR_STATUS = {state: code for code, state in STATES.items()}
HOLD_EXPIRED = "HOLD_EXPIRED"
_NO_CHANNEL = "NOTIFICATION_CHANNEL_UNSPECIFIED"


# --- names ----------------------------------------------------------------------------------------------


def practitioner_name(rpps: str | None) -> str:
    return names.PRACTITIONER.format_optional(rpps)


def establishment_name(finess: str | None) -> str:
    return names.ESTABLISHMENT.format_optional(finess)


def ght_name(ght_id: str | None) -> str:
    return names.GHT.format_optional(ght_id)


def patient_name(patient_id: uuid.UUID | None) -> str:
    return names.PATIENT.format_optional(patient_id)


# --- values ---------------------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def set_instant(stamp: Timestamp, instant: datetime) -> None:
    """Set `stamp` to an aware instant, as Timestamp.FromDatetime does (whole seconds since the epoch,
    floored, and the microseconds as nanos) without its time tuples: SearchSlots sets two per slot."""
    seconds, rest = divmod(instant - _EPOCH, _SECOND)
    stamp.seconds = seconds
    stamp.nanos = rest.microseconds * 1000


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    set_instant(stamp, value.astimezone(UTC))
    return stamp


def duration(value: timedelta) -> Duration:
    found = Duration()
    found.FromTimedelta(value)
    return found


def to_timedelta(value: Duration, field: str = "(request)") -> timedelta:
    """A request's Duration; one outside protobuf's range is the client's error on `field`, never INTERNAL
    (the kit's validation refuses those first: this holds for any other caller)."""
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError):
        raise InvalidArgument.one(field, "is not a duration of at most 10,000 years") from None


def to_datetime(value: Timestamp, field: str = "(request)") -> datetime:
    """A request's Timestamp as an aware UTC datetime; one outside 0001-9999 is the client's error on
    `field`."""
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.one(field, "is not an instant between years 1 and 9999") from None


def later(instant: datetime, span: timedelta, field: str) -> datetime:
    """`instant + span`, or INVALID_ARGUMENT on `field` when that falls past the last instant of year 9999
    (Python's datetime, like protobuf's Timestamp, ends there)."""
    try:
        return instant + span
    except OverflowError:
        raise InvalidArgument.one(field, "leaves no room before the end of year 9999") from None


def proto_date(value: date | None) -> date_pb2.Date | None:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day) if value is not None else None


def to_date(value: date_pb2.Date, field: str) -> date:
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        raise InvalidArgument.one(field, "is not a calendar date") from None


def time_of_day(value: time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=value.hour, minutes=value.minute)


def to_time(value: timeofday_pb2.TimeOfDay) -> time:
    return time(value.hours, value.minutes)


def set_local_datetime(wall: datetime_pb2.DateTime, instant: datetime, zone_name: str) -> None:
    """Set `wall` to the wall clock of `instant` in a zone, carrying the zone's id (the UTC offset of that day
    follows)."""
    local = instant.astimezone(ZoneInfo(zone_name))
    wall.year, wall.month, wall.day = local.year, local.month, local.day
    wall.hours, wall.minutes, wall.seconds = local.hour, local.minute, local.second
    wall.time_zone.id = zone_name


def local_datetime(instant: datetime, zone_name: str) -> datetime_pb2.DateTime:
    """A wall-clock DateTime in a zone (see `set_local_datetime`)."""
    wall = datetime_pb2.DateTime()
    set_local_datetime(wall, instant, zone_name)
    return wall


def _instant(value: str | datetime) -> datetime:
    """A timestamptz read from a jsonb aggregate (ISO text) or a column."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value).astimezone(UTC)


# --- resources ------------------------------------------------------------------------------------------


def schedule_resource(row: Any) -> scheduling_pb2.Schedule:
    return scheduling_pb2.Schedule(
        name=names.SCHEDULE.format(row["schedule_id"]),
        practitioner=practitioner_name(row["rpps"]),
        establishment=establishment_name(row["finess"]),
        time_zone=row["time_zone"],
        ght=ght_name(row["ght_id"]),
        region=names.REGION.format(row["region_code"]),
        specialty=practice_pb2.Specialty.Value(row["specialty"]),
        profession=practice_pb2.Profession.Value(row["profession"]),
        service_types=[
            scheduling_pb2.ServiceTypeDuration(
                service_type=scheduling_pb2.ServiceType.Value(kind), slot_duration=duration(length)
            )
            for kind, length in zip(row["service_types"], row["slot_durations"], strict=True)
        ],
        buffer=duration(row["buffer"]),
        minimum_notice=duration(row["minimum_notice"]),
        cancellation_cutoff=duration(row["cancellation_cutoff"]),
        booking_horizon_days=row["booking_horizon_days"],
        active=row["active"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
    )


def rule_resource(row: Any) -> scheduling_pb2.AvailabilityRule:
    return scheduling_pb2.AvailabilityRule(
        name=names.AVAILABILITY_RULE.format(row["schedule_id"], row["rule_id"]),
        day_of_week=row["day_of_week"],
        start_time_of_day=time_of_day(row["start_local"]),
        end_time_of_day=time_of_day(row["end_local"]),
        service_type=scheduling_pb2.ServiceType.Value(row["service_type"]),
        valid_from=proto_date(row["valid_from"]),
        valid_until=proto_date(row["valid_until"]),
        create_time=timestamp(row["create_time"]),
    )


def exception_resource(row: Any) -> scheduling_pb2.AvailabilityException:
    found = scheduling_pb2.AvailabilityException(
        name=names.AVAILABILITY_EXCEPTION.format(row["exception_id"]),
        kind=scheduling_pb2.ExceptionKind.Value(row["kind"]),
        note=row["note"],
        create_time=timestamp(row["create_time"]),
    )
    if row["schedule_id"] is not None:
        found.schedule = names.SCHEDULE.format(row["schedule_id"])
    elif row["rpps"] is not None:
        found.practitioner = practitioner_name(row["rpps"])
    elif row["finess"] is not None:
        found.establishment = establishment_name(row["finess"])
    else:
        found.region = names.REGION.format(row["region_code"])
    if row["period"] is not None:
        found.interval.CopyFrom(
            interval_pb2.Interval(
                start_time=timestamp(row["period"].lower), end_time=timestamp(row["period"].upper)
            )
        )
    else:
        days = row["days"]  # canonical [first, last + 1)
        found.dates.CopyFrom(
            scheduling_pb2.LocalDateRange(
                start_date=proto_date(days.lower), end_date=proto_date(days.upper - timedelta(days=1))
            )
        )
    return found


def slot_resource(
    row: Any, state: scheduling_pb2.Slot.State.ValueType = scheduling_pb2.Slot.STATE_FREE
) -> scheduling_pb2.Slot:
    # A search answers up to 500 slots per call (issue 15: SearchSlots at 8 in flight): the instants are set
    # in place rather than built as messages and copied in.
    slot = scheduling_pb2.Slot(
        name=names.SLOT.format(row["slot_id"]),
        schedule=names.SCHEDULE.format(row["schedule_id"]),
        practitioner=practitioner_name(row["rpps"]),
        establishment=establishment_name(row["finess"]),
        ght=ght_name(row["ght_id"]),
        region=names.REGION.format(row["region_code"]),
        specialty=practice_pb2.Specialty.Value(row["specialty"]),
        service_type=scheduling_pb2.ServiceType.Value(row["service_type"]),
        state=state,
    )
    set_instant(slot.start_time, row["start_time"])
    set_instant(slot.end_time, row["end_time"])
    set_local_datetime(slot.local_start, row["start_time"], row["time_zone"])
    return slot


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _json_list(value: Any) -> list[Any]:
    found = _json(value)
    return found if isinstance(found, list) else []


def appointment_resource(row: Any, first_change: tuple[str, str] | None = None) -> Appointment:
    """An appointment row (with its `history` and `notifications` aggregates), or a row just written, whose
    only history entry is `first_change` = (actor, reason) at its creation."""
    status: str = row["effective_status"]
    found = Appointment(
        name=names.APPOINTMENT.format(row["appointment_id"]),
        state=STATES[status],
        fhir_status=status,
        slot=names.SLOT.format_optional(row["slot_id"]),
        schedule=names.SCHEDULE.format(row["schedule_id"]),
        practitioner=practitioner_name(row["rpps"]),
        establishment=establishment_name(row["finess"]),
        time_zone=row["time_zone"],
        service_type=scheduling_pb2.ServiceType.Value(row["service_type"]),
        start_time=timestamp(row["start_time"]),
        end_time=timestamp(row["end_time"]),
        patient=patient_name(row["patient_id"]),
        requester=practitioner_name(row["requester_rpps"]),
        treating_physician=practitioner_name(row["treating_rpps"]),
        booked_by=establishment_name(row["booked_by_finess"]),
        hold_expire_time=timestamp(row["hold_expire_time"]),
        rescheduled_from=names.APPOINTMENT.format_optional(row["rescheduled_from"]),
        rescheduled_to=names.APPOINTMENT.format_optional(row["rescheduled_to"]),
        join_open_time=timestamp(row["join_open_time"]),
        no_show_time=timestamp(row["no_show_time"]),
        workflow_id=row["workflow_id"] or "",
        ght=ght_name(row["ght_id"]),
        region=names.REGION.format(row["region_code"]),
        specialty=practice_pb2.Specialty.Value(row["specialty"]),
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        appointment_series=names.APPOINTMENT_SERIES.format_optional(row.get("series_id")),
    )
    if row["consent_time"] is not None:
        found.consent.CopyFrom(
            scheduling_pb2.Consent(
                method=scheduling_pb2.ConsentMethod.Value(row["consent_method"]),
                record_time=timestamp(row["consent_time"]),
                recorded_by=row["consent_recorded_by"] or "",
            )
        )
    if row["cancel_time"] is not None:
        found.cancellation.CopyFrom(
            scheduling_pb2.Cancellation(
                initiator=scheduling_pb2.Party.Value(row["cancel_initiator"]),
                reason=scheduling_pb2.CancellationReason.Value(row["cancel_reason"]),
                note=row["cancel_note"] or "",
                cancel_time=timestamp(row["cancel_time"]),
                cancelled_by=row["cancelled_by"] or "",
            )
        )
    elif row["lapsed"]:
        found.cancellation.CopyFrom(
            scheduling_pb2.Cancellation(
                initiator=scheduling_pb2.PARTY_SYSTEM,
                reason=scheduling_pb2.CANCELLATION_REASON_HOLD_EXPIRED,
                cancel_time=timestamp(row["hold_expire_time"]),
                cancelled_by="component/scheduling",
            )
        )
    history = (
        [
            {
                "status": row["status"],
                "time": row["create_time"],
                "actor": first_change[0],
                "reason": first_change[1],
            }
        ]
        if first_change is not None
        else _json(row["history"])
    )
    for change in history:
        found.history.append(
            scheduling_pb2.StateChange(
                state=STATES[change["status"]],
                change_time=timestamp(_instant(change["time"])),
                actor=change["actor"],
                reason=change["reason"],
            )
        )
    if row["lapsed"]:
        # A lapsed hold is not rewritten: its cancellation is read from its expiry.
        found.history.append(
            scheduling_pb2.StateChange(
                state=Appointment.STATE_CANCELLED,
                change_time=timestamp(row["hold_expire_time"]),
                actor="component/scheduling",
                reason=HOLD_EXPIRED,
            )
        )
    if row["record"] is not None:
        json_format.ParseDict(_json(row["record"]), found.record)
    if row["billing_state"] is not None:
        found.billing.CopyFrom(
            scheduling_pb2.BillingOutcome(
                state=scheduling_pb2.BillingOutcome.State.Value(row["billing_state"]),
                charges=list(row["billing_charges"]),
                refusal_reason=row["billing_reason"] or "",
                refusal_message=row["billing_message"] or "",
                act_id=f"teleconsultation-{row['appointment_id']}",
                update_time=timestamp(row["billing_update_time"]),
                prescription_refusals=[
                    json_format.ParseDict(f, billing_pb2.Finding())
                    for f in _json_list(row.get("billing_prescription_refusals"))
                ],
            )
        )
    if row.get("refusal_kind") is not None:
        found.consent_refusal.CopyFrom(
            scheduling_pb2.ConsentRefusal(
                kind=scheduling_pb2.RefusalKind.Value(row["refusal_kind"]),
                record_time=timestamp(row["refusal_time"]),
                recorded_by=row["refusal_recorded_by"],
            )
        )
    if row.get("assistant_rpps") is not None:
        found.assistant = names.PRACTITIONER.format(row["assistant_rpps"])
        found.assistance_setting = billing_pb2.AssistanceSetting.Value(row["assistance_setting"])
    for sent in _json(row["notifications"]) if first_change is None else ():
        found.notifications.append(
            scheduling_pb2.Notification(
                kind=scheduling_pb2.Notification.Kind.Value(sent["kind"]),
                label=sent["label"],
                recipient=sent["recipient"],
                send_time=timestamp(_instant(sent["time"])),
                channel=scheduling_pb2.NotificationChannel.Value(sent.get("channel") or _NO_CHANNEL),
                delivery_state=scheduling_pb2.DeliveryState.Value(
                    sent.get("delivery_state") or "DELIVERY_STATE_RECORDED"
                ),
            )
        )
    return found


# --- the teleconsultation record and billing circumstances, between the API and the workflow's payloads ---


def record_model(record: scheduling_pb2.TeleconsultationRecord) -> models.TeleconsultationRecord:
    """The API's record as the typed payload of the `complete` Update."""
    return models.TeleconsultationRecord(
        report=record.report,
        acts=[models.RecordedAct(code=a.code, description=a.description) for a in record.acts],
        prescriptions=[
            models.Prescription(
                kind=scheduling_pb2.Prescription.Kind.Name(p.kind),
                description=p.description,
                sick_leave_days=p.sick_leave_days,
                ongoing_sick_leave_days=p.ongoing_sick_leave_days,
                in_person_impossible_justified=p.in_person_impossible_justified,
            )
            for p in record.prescriptions
        ],
        participants=[
            models.RecordParticipant(
                practitioner=p.practitioner, role=scheduling_pb2.RecordParticipant.Role.Name(p.role)
            )
            for p in record.participants
        ],
        act_start_time=record.act_start_time.ToDatetime(UTC) if record.HasField("act_start_time") else None,
        act_end_time=record.act_end_time.ToDatetime(UTC) if record.HasField("act_end_time") else None,
        technical_incidents=[
            models.TechnicalIncident(
                description=i.description,
                occur_time=i.occur_time.ToDatetime(UTC) if i.HasField("occur_time") else None,
            )
            for i in record.technical_incidents
        ],
        no_technical_incident=record.no_technical_incident,
    )


def record_message(record: models.TeleconsultationRecord) -> scheduling_pb2.TeleconsultationRecord:
    """The typed record back as the API's message (what is stored and shown)."""
    return scheduling_pb2.TeleconsultationRecord(
        report=record.report,
        acts=[scheduling_pb2.RecordedAct(code=a.code, description=a.description) for a in record.acts],
        prescriptions=[
            scheduling_pb2.Prescription(
                kind=scheduling_pb2.Prescription.Kind.Value(p.kind),
                description=p.description,
                sick_leave_days=p.sick_leave_days,
                ongoing_sick_leave_days=p.ongoing_sick_leave_days,
                in_person_impossible_justified=p.in_person_impossible_justified,
            )
            for p in record.prescriptions
        ],
        participants=[
            scheduling_pb2.RecordParticipant(
                practitioner=p.practitioner, role=scheduling_pb2.RecordParticipant.Role.Value(p.role)
            )
            for p in record.participants
        ],
        act_start_time=timestamp(record.act_start_time),
        act_end_time=timestamp(record.act_end_time),
        technical_incidents=[
            scheduling_pb2.TechnicalIncident(description=i.description, occur_time=timestamp(i.occur_time))
            for i in record.technical_incidents
        ],
        no_technical_incident=record.no_technical_incident,
    )


def record_json(record: models.TeleconsultationRecord) -> str:
    """The record as stored (the API message's JSON, read back by `appointment_resource`)."""
    return json_format.MessageToJson(record_message(record), indent=None)


def circumstances_flags(circumstances: billing_pb2.Circumstances) -> list[str]:
    """The circumstances that hold: a flag's name, or `name=YYYY-MM-DD` for a dated one (§7.11: the last
    in-person visit, a hospital discharge). The workflow carries them as they are; billing reads them."""
    found: list[str] = []
    for f, value in circumstances.ListFields():
        if f.type == f.TYPE_BOOL and value:
            found.append(f.name)
        elif f.message_type is not None and f.message_type.full_name == "google.type.Date":
            try:
                day = date(value.year, value.month, value.day)
            except ValueError:
                raise InvalidArgument.one(f"circumstances.{f.name}", "is not a calendar date") from None
            found.append(f"{f.name}={day.isoformat()}")
    return found


def circumstances_message(flags: list[str]) -> billing_pb2.Circumstances:
    found = billing_pb2.Circumstances()
    for flag in flags:
        name, _, value = flag.partition("=")
        if value:
            day = date.fromisoformat(value)
            getattr(found, name).CopyFrom(date_pb2.Date(year=day.year, month=day.month, day=day.day))
        else:
            setattr(found, name, True)
    return found


def circumstances_json(flags: list[str]) -> str:
    """The circumstances as stored (billing's message as JSON)."""
    return json_format.MessageToJson(circumstances_message(flags), indent=None)


# --- record documents, activity reports, téléconseils ---------------------------------------------------


def document_resource(
    document: StoredDocument, submission: Submission | None, media_type: str
) -> scheduling_pb2.RecordDocument:
    found = scheduling_pb2.RecordDocument(
        document_id=f"urn:uuid:{document.document_id}",
        media_type=media_type,
        content=json.dumps(document.bundle, ensure_ascii=False).encode(),
        create_time=timestamp(document.create_time),
    )
    if submission is not None:
        found.dmp_submission.CopyFrom(
            scheduling_pb2.DmpSubmission(
                state=scheduling_pb2.DmpSubmission.State.Value(submission.state),
                reason=submission.reason,
                submit_time=timestamp(submission.submit_time),
            )
        )
    return found


def activity_resource(row: Any) -> scheduling_pb2.TeleconsultationActivity:
    came_due = row["fulfilled"] + row["no_shows"]
    return scheduling_pb2.TeleconsultationActivity(
        region=names.REGION.format(row["region_code"]),
        ght=ght_name(row["ght"] or None),
        specialty=practice_pb2.Specialty.Value(row["specialty"]),
        month=reports.month_message(row["month"]),
        appointments=row["appointments"],
        fulfilled=row["fulfilled"],
        no_shows=row["no_shows"],
        cancelled=row["cancelled"],
        no_show_rate=reports.rate(row["no_shows"], came_due),
        slots_offered=row["slots_offered"],
        slots_used=row["slots_used"],
        slot_utilisation=reports.rate(row["slots_used"], row["slots_offered"]),
    )


def teleconseil_resource(row: Any) -> scheduling_pb2.Teleconseil:
    return scheduling_pb2.Teleconseil(
        name=names.TELECONSEIL.format(row["teleconseil_id"]),
        patient=patient_name(row["patient_id"]),
        practitioner=practitioner_name(row["rpps"]),
        establishment=establishment_name(row["finess"]),
        ght=ght_name(row["ght_id"]),
        advice_time=timestamp(row["advice_time"]),
        channel=scheduling_pb2.Teleconseil.Channel.Value(row["channel"]),
        summary=row["summary"],
        create_time=timestamp(row["create_time"]),
    )


def series_resource(row: Any) -> scheduling_pb2.AppointmentSeries:
    """A series row with its `occurrences` (ids in time order) and `remaining` count (see store)."""
    return scheduling_pb2.AppointmentSeries(
        name=names.APPOINTMENT_SERIES.format(row["series_id"]),
        patient=patient_name(row["patient_id"]),
        practitioner=practitioner_name(row["rpps"]),
        schedule=names.SCHEDULE.format(row["schedule_id"]),
        establishment=establishment_name(row["finess"]),
        occurrence_count=row["occurrence_count"],
        interval_days=row["interval_days"],
        appointments=[names.APPOINTMENT.format(i) for i in row["occurrences"]],
        remaining_count=row["remaining"],
        cancel_time=timestamp(row["cancel_time"]),
        create_time=timestamp(row["create_time"]),
    )


def waitlist_entry_resource(row: Any) -> scheduling_pb2.WaitlistEntry:
    """An entry row with its open offer (store.ENTRY_COLUMNS)."""
    return scheduling_pb2.WaitlistEntry(
        name=names.WAITLIST_ENTRY.format(row["entry_id"]),
        patient=patient_name(row["patient_id"]),
        ght=ght_name(row["ght_id"]),
        specialty=practice_pb2.Specialty.Value(row["specialty"]),
        state=scheduling_pb2.WaitlistEntry.State.Value(row["state"]),
        offered_appointment=names.APPOINTMENT.format_optional(row["offered_appointment_id"]),
        offer_expire_time=timestamp(row["offer_expire_time"]),
        booked_appointment=names.APPOINTMENT.format_optional(row["booked_appointment_id"]),
        lapsed_offer_count=row["lapsed_offers"],
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
    )
