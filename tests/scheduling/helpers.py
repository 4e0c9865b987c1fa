"""Agendas for the scheduling tests, set up as a hospital system would: a practitioner created in the
directory (each test gets its own, so that agendas never collide), a schedule at their practice place, weekly
rules; then the free slots."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, timeofday_pb2
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.directory.demo import DEMO_PATIENTS
from tests.support import request_id

Metadata = tuple[tuple[str, str], ...]
# Demo patients by the GHT that knows them (services/directory/demo.py).
PATIENT_LOIRE = f"patients/{DEMO_PATIENTS[0].patient_id}"  # CH des Monts du Forez (420000017), born 1948
PATIENT_VAL_RHONE = f"patients/{DEMO_PATIENTS[1].patient_id}"  # Hospices du Val de Rhône
PATIENT_DAUPHINE = f"patients/{DEMO_PATIENTS[2].patient_id}"  # CHU Dauphiné-Belledonne (380000024)
PATIENT_REUNION = f"patients/{DEMO_PATIENTS[4].patient_id}"  # CH du Sud Sauvage, outside any GHT
Stub = scheduling_pb2_grpc.SchedulingServiceStub
PARIS = ZoneInfo("Europe/Paris")
FOLLOW_UP = s.SERVICE_TYPE_FOLLOW_UP
FIRST_VISIT = s.SERVICE_TYPE_FIRST_VISIT


def duration(value: timedelta) -> Duration:
    found = Duration()
    found.FromTimedelta(value)
    return found


def stamp(value: datetime) -> Timestamp:
    found = Timestamp()
    found.FromDatetime(value.astimezone(UTC))
    return found


def when(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def proto_date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def new_rpps() -> str:
    # Demo practitioners are 100000xxx01; these start with 3 and never collide with them.
    return "3" + "".join(random.choices("0123456789", k=10))


async def new_practitioner(
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    *places: str,
    specialty: int = p.SPECIALTY_GENERAL_MEDICINE,
    profession: int = p.PROFESSION_PHYSICIAN,
    sector: int = p.CONVENTION_SECTOR_1,
) -> str:
    rpps = new_rpps()
    await directory.CreatePractitioner(
        directory_pb2.CreatePractitionerRequest(
            request_id=request_id(),
            practitioner=directory_pb2.PractitionerInput(
                rpps=rpps,
                family_name="Essai",
                given_name="Agenda",
                profession=profession,
                specialty=specialty if profession == p.PROFESSION_PHYSICIAN else p.SPECIALTY_NONE,
                sector=sector,
                practice_places=[
                    directory_pb2.PracticePlace(establishment=f"establishments/{f}") for f in places
                ],
                active=True,
            ),
        ),
        metadata=operator,
    )
    return rpps


async def new_schedule(
    stub: Stub,
    metadata: Metadata,
    rpps: str,
    finess: str,
    *,
    durations: dict[int, int] | None = None,
    buffer: timedelta = timedelta(0),
    minimum_notice: timedelta = timedelta(0),
    cancellation_cutoff: timedelta = timedelta(hours=24),
    horizon_days: int = 3,
) -> s.Schedule:
    reply = await stub.CreateSchedule(
        s.CreateScheduleRequest(
            request_id=request_id(),
            schedule=s.ScheduleInput(
                practitioner=f"practitioners/{rpps}",
                establishment=f"establishments/{finess}",
                service_types=[
                    s.ServiceTypeDuration(
                        service_type=kind, slot_duration=duration(timedelta(minutes=minutes))
                    )
                    for kind, minutes in (durations or {FOLLOW_UP: 20}).items()
                ],
                buffer=duration(buffer),
                minimum_notice=duration(minimum_notice),
                cancellation_cutoff=duration(cancellation_cutoff),
                booking_horizon_days=horizon_days,
            ),
        ),
        metadata=metadata,
    )
    return reply.schedule


def rule(
    day: int,
    start: tuple[int, int],
    end: tuple[int, int],
    service_type: int = FOLLOW_UP,
    valid_from: date | None = None,
) -> s.AvailabilityRuleInput:
    found = s.AvailabilityRuleInput(
        day_of_week=day,
        start_time_of_day=timeofday_pb2.TimeOfDay(hours=start[0], minutes=start[1]),
        end_time_of_day=timeofday_pb2.TimeOfDay(hours=end[0], minutes=end[1]),
        service_type=service_type,
    )
    if valid_from is not None:
        found.valid_from.CopyFrom(proto_date(valid_from))
    return found


async def add_rules(
    stub: Stub, metadata: Metadata, schedule: str, rules: Iterable[s.AvailabilityRuleInput]
) -> None:
    for given in rules:
        await stub.CreateAvailabilityRule(
            s.CreateAvailabilityRuleRequest(request_id=request_id(), parent=schedule, rule=given),
            metadata=metadata,
        )


def every_day(
    start: tuple[int, int] = (0, 0), end: tuple[int, int] = (23, 59), service_type: int = FOLLOW_UP
) -> list[s.AvailabilityRuleInput]:
    return [rule(day, start, end, service_type) for day in range(1, 8)]


async def search(stub: Stub, metadata: Metadata, **filters: object) -> list[s.Slot]:
    """Every free slot matching the filters, page after page."""
    found: list[s.Slot] = []
    token = ""
    while True:
        reply = await stub.SearchSlots(
            s.SearchSlotsRequest(page_size=500, page_token=token, **filters),
            metadata=metadata,  # type: ignore[arg-type]
        )
        found += reply.slots
        token = reply.next_page_token
        if not token:
            return found


async def first_free(stub: Stub, metadata: Metadata, rpps: str, after: timedelta = timedelta(0)) -> s.Slot:
    reply = await stub.SearchSlots(
        s.SearchSlotsRequest(
            practitioner=f"practitioners/{rpps}", page_size=1, start_time=stamp(datetime.now(UTC) + after)
        ),
        metadata=metadata,
    )
    assert reply.slots, "no free slot"
    return reply.slots[0]


async def book(stub: Stub, metadata: Metadata, slot: str, patient: str, **fields: object) -> s.Appointment:
    reply = await stub.BookAppointment(
        s.BookAppointmentRequest(request_id=request_id(), slot=slot, patient=patient, **fields),  # type: ignore[arg-type]
        metadata=metadata,
    )
    return reply.appointment


def local(slot: s.Slot) -> datetime:
    """The slot's start as wall-clock time in its practice place's zone (from the API's local_start)."""
    value = slot.local_start
    return datetime(
        value.year, value.month, value.day, value.hours, value.minutes, tzinfo=ZoneInfo(value.time_zone.id)
    )


def new_request_id() -> str:
    return str(uuid.uuid4())
