"""Recurring appointment series (issue 13 item 14) over real gRPC, PostgreSQL and Temporal: a chronic
patient's weekly follow-up booked as one request, each occurrence its own appointment and workflow at the same
local time; all or nothing when one occurrence's slot is taken or not offered; cancel one occurrence, then all
the remaining ones; idempotent retries; hidden from another GHT like a missing series."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
import temporalio.client
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.api.enums.v1 import EventType

from services.kit.cases import Relay
from services.kit.pki import DevPki
from services.kit.server import Runtime
from tests.conftest import Minter
from tests.scheduling.helpers import (
    PATIENT_DAUPHINE,
    PATIENT_LOIRE,
    Metadata,
    Stub,
    add_rules,
    book,
    every_day,
    first_free,
    local,
    new_practitioner,
    new_schedule,
    search,
    stamp,
    when,
)
from tests.support import DAUPHINE, LOIRE, bearer, establishment_channel, request_id
from tests.support.calls import call, details

Directory = directory_pb2_grpc.DirectoryServiceStub
A = s.Appointment


@pytest.fixture(scope="module")
def front_desk(mint: Minter) -> Metadata:
    """GHT Loire's booking front-end: the establishment's certificate and a non-practitioner token."""
    return bearer(mint(staff="front-desk-forez"))


@pytest.fixture(scope="module")
async def dauphine(pki: DevPki, scheduling_address: str) -> Stub:
    return scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, scheduling_address, DAUPHINE))


async def weekly_agenda(loire: Stub, directory: Directory, operator: Metadata) -> str:
    """A GP whose agenda offers 20-minute follow-ups every morning for the next 30 days."""
    rpps = await new_practitioner(directory, operator, LOIRE)
    schedule = await new_schedule(loire, operator, rpps, LOIRE, horizon_days=30)
    await add_rules(loire, operator, schedule.name, every_day((8, 0), (12, 0)))
    return rpps


def series_request(first_slot: str, count: int = 3, *, patient: str = PATIENT_LOIRE, rid: str = "") -> object:
    return s.CreateAppointmentSeriesRequest(
        request_id=rid or request_id(),
        appointment_series=s.AppointmentSeriesInput(
            first_slot=first_slot,
            occurrence_count=count,
            interval_days=7,
            patient=patient,
            consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL),
        ),
    )


def uuid_of(appointment: A) -> uuid.UUID:
    return uuid.UUID(appointment.name.removeprefix("appointments/"))


async def signals(client: temporalio.client.Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


async def test_a_weekly_series_books_each_occurrence_with_its_own_workflow_at_the_same_local_time(
    loire: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    scheduling: Runtime,
    temporal_client: temporalio.client.Client,
) -> None:
    rpps = await weekly_agenda(loire, directory, operator)
    first = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    rid = request_id()
    created = await loire.CreateAppointmentSeries(series_request(first.name, 3, rid=rid), metadata=front_desk)
    series = created.appointment_series
    occurrences = list(created.appointments)

    assert series.occurrence_count == 3 and series.interval_days == 7 and series.remaining_count == 3
    assert list(series.appointments) == [a.name for a in occurrences]
    assert series.patient == PATIENT_LOIRE and series.practitioner == f"practitioners/{rpps}"
    assert occurrences[0].slot == first.name
    starts = [when(a.start_time).astimezone(local(first).tzinfo) for a in occurrences]
    assert [t - starts[0] for t in starts] == [timedelta(0), timedelta(days=7), timedelta(days=14)]
    assert {t.time() for t in starts} == {local(first).time()}  # the same wall-clock time every week
    for occurrence in occurrences:
        assert occurrence.state == A.STATE_BOOKED and occurrence.appointment_series == series.name
        assert occurrence.consent.method == s.CONSENT_METHOD_ORAL
        assert occurrence.workflow_id == f"teleconsultation-{uuid_of(occurrence)}"
        await scheduling.task(Relay).relay_now(uuid_of(occurrence))
        described = await temporal_client.get_workflow_handle(occurrence.workflow_id).describe()
        assert described.status == temporalio.client.WorkflowExecutionStatus.RUNNING
    assert len({a.workflow_id for a in occurrences}) == 3

    # A retry of the request gets the same series and books nothing more.
    again = await loire.CreateAppointmentSeries(series_request(first.name, 3, rid=rid), metadata=front_desk)
    assert again.appointment_series.name == series.name
    booked = await loire.ListAppointments(
        s.ListAppointmentsRequest(practitioner=f"practitioners/{rpps}", states=[A.STATE_BOOKED]),
        metadata=front_desk,
    )
    assert sorted(a.name for a in booked.appointments) == sorted(series.appointments)

    # Read back and listed for the patient.
    got = await loire.GetAppointmentSeries(
        s.GetAppointmentSeriesRequest(name=series.name), metadata=front_desk
    )
    assert got.appointment_series == series
    listed = await loire.ListAppointmentSeries(
        s.ListAppointmentSeriesRequest(patient=PATIENT_LOIRE, page_size=500), metadata=front_desk
    )
    assert series.name in [x.name for x in listed.appointment_series]


async def test_cancel_one_occurrence_then_all_the_remaining_ones(
    loire: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    scheduling: Runtime,
    temporal_client: temporalio.client.Client,
) -> None:
    rpps = await weekly_agenda(loire, directory, operator)
    first = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    created = await loire.CreateAppointmentSeries(series_request(first.name, 4), metadata=front_desk)
    series, occurrences = created.appointment_series, list(created.appointments)
    for occurrence in occurrences:
        await scheduling.task(Relay).relay_now(uuid_of(occurrence))

    # One occurrence: the practitioner is away that week; the others stay booked.
    await loire.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=occurrences[1].name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=front_desk,
    )
    after_one = await loire.GetAppointmentSeries(
        s.GetAppointmentSeriesRequest(name=series.name), metadata=front_desk
    )
    assert after_one.appointment_series.remaining_count == 3
    assert not after_one.appointment_series.HasField("cancel_time")

    # The patient side cannot cancel the rest once the next occurrence is within the schedule's 24-hour
    # cut-off (as CancelAppointment): nothing is cancelled.
    late = await call(
        loire.CancelAppointmentSeries(
            s.CancelAppointmentSeriesRequest(
                request_id=request_id(),
                name=series.name,
                initiator=s.PARTY_PATIENT,
                reason=s.CANCELLATION_REASON_PATIENT_REQUEST,
            ),
            metadata=front_desk,
        )
    )
    info, _ = details(late)
    assert info is not None and info.reason == "CANCELLATION_CUTOFF_PASSED"
    unchanged = await loire.GetAppointmentSeries(
        s.GetAppointmentSeriesRequest(name=series.name), metadata=front_desk
    )
    assert unchanged.appointment_series.remaining_count == 3

    # All the remaining ones, by the practitioner's side: the follow-up ends.
    cancel = s.CancelAppointmentSeriesRequest(
        request_id=request_id(),
        name=series.name,
        initiator=s.PARTY_PRACTITIONER,
        reason=s.CANCELLATION_REASON_OTHER,
        note="fin du suivi",
    )
    cancelled = await loire.CancelAppointmentSeries(cancel, metadata=front_desk)
    assert [a.name for a in cancelled.cancelled] == [occurrences[i].name for i in (0, 2, 3)]
    assert cancelled.appointment_series.remaining_count == 0
    assert cancelled.appointment_series.HasField("cancel_time")
    for occurrence in occurrences:
        got = await loire.GetAppointment(s.GetAppointmentRequest(name=occurrence.name), metadata=front_desk)
        assert got.appointment.state == A.STATE_CANCELLED
        await scheduling.task(Relay).relay_now(uuid_of(occurrence))
        assert await signals(temporal_client, occurrence.workflow_id) == ["cancel"]
    first_cancel = (
        await loire.GetAppointment(s.GetAppointmentRequest(name=occurrences[0].name), metadata=front_desk)
    ).appointment
    assert first_cancel.cancellation.reason == s.CANCELLATION_REASON_OTHER
    # The slots are free again.
    assert first.name in [
        x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    ]
    # A retry answers the same, and cancels nothing twice.
    again = await loire.CancelAppointmentSeries(cancel, metadata=front_desk)
    assert [a.name for a in again.cancelled] == [a.name for a in cancelled.cancelled]


async def test_a_series_is_all_or_nothing_when_one_occurrence_is_taken_or_not_offered(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps = await weekly_agenda(loire, directory, operator)
    first = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    # Another patient already has the third week's slot.
    third_start = local(first) + timedelta(days=14)
    found = await loire.SearchSlots(
        s.SearchSlotsRequest(
            practitioner=f"practitioners/{rpps}", page_size=1, start_time=stamp(third_start)
        ),
        metadata=front_desk,
    )
    third = found.slots[0]
    assert when(third.start_time) == third_start
    await book(loire, front_desk, third.name, PATIENT_LOIRE)

    refused = await call(loire.CreateAppointmentSeries(series_request(first.name, 4), metadata=front_desk))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(refused)
    assert info is not None and info.reason == "SERIES_OCCURRENCE_UNAVAILABLE"
    assert dict(info.metadata) == {"occurrence": "3", "slot_reason": "SLOT_ALREADY_BOOKED"}
    # Nothing was booked: the first two weeks' slots are still free.
    free = [x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")]
    assert first.name in free
    booked = await loire.ListAppointments(
        s.ListAppointmentsRequest(practitioner=f"practitioners/{rpps}", states=[A.STATE_BOOKED]),
        metadata=front_desk,
    )
    assert [a.slot for a in booked.appointments] == [third.name]
    # Two weeks only: the taken third week is not part of it.
    two = await loire.CreateAppointmentSeries(series_request(first.name, 2), metadata=front_desk)
    assert [a.state for a in two.appointments] == [A.STATE_BOOKED, A.STATE_BOOKED]


async def test_a_series_not_offered_far_enough_names_the_first_missing_occurrence(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps = await weekly_agenda(loire, directory, operator)
    first = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    # Slots are offered for 30 days: the sixth weekly occurrence (35 days on) is not.
    refused = await call(loire.CreateAppointmentSeries(series_request(first.name, 6), metadata=front_desk))
    info, _ = details(refused)
    assert info is not None and info.reason == "SERIES_OCCURRENCE_UNAVAILABLE"
    assert dict(info.metadata) == {"occurrence": "6", "slot_reason": "SLOT_NOT_FOUND"}
    assert first.name in [
        x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    ]


async def test_a_series_is_hidden_from_another_ght_like_a_missing_one(
    loire: Stub, dauphine: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    rpps = await weekly_agenda(loire, directory, operator)
    first = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    created = await loire.CreateAppointmentSeries(series_request(first.name, 2), metadata=front_desk)
    outsider = bearer(mint(staff="front-desk-dauphine"))
    answers = []
    for name in (created.appointment_series.name, f"appointmentSeries/{uuid.uuid4()}"):
        refused = await call(
            dauphine.GetAppointmentSeries(s.GetAppointmentSeriesRequest(name=name), metadata=outsider)
        )
        info, _ = details(refused)
        answers.append((refused.code(), info.reason if info else None))
    assert answers[0] == answers[1] == (grpc.StatusCode.PERMISSION_DENIED, "APPOINTMENT_SERIES_NOT_VISIBLE")
    # Dauphine's own patient lists nothing of Loire's; Loire's patient is unknown to Dauphine.
    listed = await dauphine.ListAppointmentSeries(
        s.ListAppointmentSeriesRequest(patient=PATIENT_DAUPHINE), metadata=outsider
    )
    assert created.appointment_series.name not in [x.name for x in listed.appointment_series]
    hidden = await call(
        dauphine.ListAppointmentSeries(
            s.ListAppointmentSeriesRequest(patient=PATIENT_LOIRE), metadata=outsider
        )
    )
    missing = await call(
        dauphine.ListAppointmentSeries(
            s.ListAppointmentSeriesRequest(patient=f"patients/{uuid.uuid4()}"), metadata=outsider
        )
    )
    assert (hidden.code(), details(hidden)[0]) == (missing.code(), details(missing)[0])
    refused = await call(
        dauphine.CancelAppointmentSeries(
            s.CancelAppointmentSeriesRequest(
                request_id=request_id(),
                name=created.appointment_series.name,
                initiator=s.PARTY_PATIENT,
                reason=s.CANCELLATION_REASON_PATIENT_REQUEST,
            ),
            metadata=outsider,
        )
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    still = await loire.GetAppointmentSeries(
        s.GetAppointmentSeriesRequest(name=created.appointment_series.name), metadata=front_desk
    )
    assert still.appointment_series.remaining_count == 2
