"""The waitlist (issue 13 item 15) over real gRPC, PostgreSQL and Temporal: a slot freed by a cancellation is
offered to the first patient waiting for its specialty in its GHT (a proposal holding it, with the hub's
notification); the offer lapses to the next in line (the service's own lapse job, run at the offer's expiry);
accepting books it and starts its Teleconsultation workflow; hidden from another GHT like a missing entry.

The waitlists use pulmonology in GHT Loire, which no other test books, and each test leaves no patient
waiting, so that other tests' cancellations offer nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
import temporalio.client
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.kit.cases import Relay
from services.kit.pki import DevPki
from services.kit.server import Runtime
from services.scheduling.waitlist import WaitlistLapser
from tests.conftest import Minter
from tests.directory.builders import register
from tests.scheduling.helpers import (
    Metadata,
    Stub,
    add_rules,
    book,
    every_day,
    first_free,
    new_practitioner,
    new_schedule,
    search,
    when,
)
from tests.support import DAUPHINE, LOIRE, bearer, establishment_channel, request_id
from tests.support.calls import call, details

Directory = directory_pb2_grpc.DirectoryServiceStub
A = s.Appointment
W = s.WaitlistEntry
PULMONOLOGY = p.SPECIALTY_PULMONOLOGY


@pytest.fixture(scope="module")
def front_desk(mint: Minter) -> Metadata:
    return bearer(mint(staff="front-desk-forez"))


@pytest.fixture(scope="module")
async def dauphine(pki: DevPki, scheduling_address: str) -> Stub:
    return scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, scheduling_address, DAUPHINE))


async def wait_for(loire: Stub, front_desk: Metadata, patient: str) -> W:
    reply = await loire.CreateWaitlistEntry(
        s.CreateWaitlistEntryRequest(
            request_id=request_id(),
            waitlist_entry=s.WaitlistEntryInput(patient=patient, specialty=PULMONOLOGY),
        ),
        metadata=front_desk,
    )
    return reply.waitlist_entry


async def entry(loire: Stub, front_desk: Metadata, name: str) -> W:
    return (
        await loire.GetWaitlistEntry(s.GetWaitlistEntryRequest(name=name), metadata=front_desk)
    ).waitlist_entry


async def appointment(loire: Stub, front_desk: Metadata, name: str) -> A:
    return (await loire.GetAppointment(s.GetAppointmentRequest(name=name), metadata=front_desk)).appointment


async def test_a_freed_slot_is_offered_in_line_lapses_to_the_next_and_is_booked_on_accept(
    loire: Stub,
    directory: Directory,
    operator: Metadata,
    front_desk: Metadata,
    scheduling: Runtime,
    temporal_client: temporalio.client.Client,
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE, specialty=PULMONOLOGY)
    schedule = await new_schedule(loire, operator, rpps, LOIRE)
    await add_rules(loire, operator, schedule.name, every_day())
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    holder, first, second = [(await register(directory, operator, LOIRE)).name for _ in range(3)]
    booked = await book(loire, front_desk, slot.name, holder)
    first_entry = await wait_for(loire, front_desk, first)
    second_entry = await wait_for(loire, front_desk, second)
    assert first_entry.state == W.STATE_WAITING and first_entry.ght == "ghts/ght-loire"

    # The booked patient cancels: the slot is offered to the first in line, in the same transaction.
    await loire.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=booked.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=front_desk,
    )
    offered = await entry(loire, front_desk, first_entry.name)
    assert offered.state == W.STATE_OFFERED
    offer = await appointment(loire, front_desk, offered.offered_appointment)
    assert (offer.state, offer.slot, offer.patient) == (A.STATE_PROPOSED, slot.name, first)
    assert offer.hold_expire_time == offered.offer_expire_time
    assert when(offered.offer_expire_time) - when(offer.create_time) == timedelta(hours=2)  # the hold time
    assert [(n.kind, n.recipient) for n in offer.notifications] == [
        (s.Notification.KIND_WAITLIST_OFFER, first)
    ]
    assert (await entry(loire, front_desk, second_entry.name)).state == W.STATE_WAITING
    assert slot.name not in [
        x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    ]

    # Nobody answers within the hold time: the lapse job passes the slot to the next in line.
    lapser = scheduling.task(WaitlistLapser)
    assert await lapser.lapse_due(as_of=when(offered.offer_expire_time) - timedelta(seconds=1)) == 0
    assert await lapser.lapse_due(as_of=when(offered.offer_expire_time)) == 1
    lapsed = await entry(loire, front_desk, first_entry.name)
    assert (lapsed.state, lapsed.lapsed_offer_count, lapsed.offered_appointment) == (W.STATE_WAITING, 1, "")
    released = await appointment(loire, front_desk, offered.offered_appointment)
    assert released.state == A.STATE_CANCELLED
    assert released.cancellation.reason == s.CANCELLATION_REASON_HOLD_EXPIRED
    next_offer = await entry(loire, front_desk, second_entry.name)
    assert next_offer.state == W.STATE_OFFERED
    assert (await appointment(loire, front_desk, next_offer.offered_appointment)).patient == second

    # The first patient's answer comes too late; the second accepts and is booked, with the workflow.
    late = await call(
        loire.AcceptWaitlistOffer(
            s.AcceptWaitlistOfferRequest(request_id=request_id(), name=first_entry.name), metadata=front_desk
        )
    )
    assert (late.code(), details(late)[0].reason) == (  # type: ignore[union-attr]
        grpc.StatusCode.FAILED_PRECONDITION,
        "WAITLIST_NO_OPEN_OFFER",
    )
    accept = s.AcceptWaitlistOfferRequest(
        request_id=request_id(), name=second_entry.name, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    accepted = await loire.AcceptWaitlistOffer(accept, metadata=front_desk)
    assert accepted.waitlist_entry.state == W.STATE_BOOKED
    assert (
        accepted.waitlist_entry.booked_appointment
        == accepted.appointment.name
        == next_offer.offered_appointment
    )
    assert (accepted.appointment.state, accepted.appointment.slot) == (A.STATE_BOOKED, slot.name)
    await scheduling.task(Relay).relay_now(uuid.UUID(accepted.appointment.name.removeprefix("appointments/")))
    described = await temporal_client.get_workflow_handle(accepted.appointment.workflow_id).describe()
    assert described.status == temporalio.client.WorkflowExecutionStatus.RUNNING
    again = await loire.AcceptWaitlistOffer(accept, metadata=front_desk)  # a retry: the same answer
    assert again.appointment.name == accepted.appointment.name

    # The first patient leaves the line.
    cancelled = await loire.CancelWaitlistEntry(
        s.CancelWaitlistEntryRequest(request_id=request_id(), name=first_entry.name), metadata=front_desk
    )
    assert cancelled.waitlist_entry.state == W.STATE_CANCELLED
    listed = await loire.ListWaitlistEntries(
        s.ListWaitlistEntriesRequest(patient=second), metadata=front_desk
    )
    assert [e.name for e in listed.waitlist_entries] == [second_entry.name]


async def test_cancelling_an_entry_with_an_open_offer_passes_the_slot_on(
    loire: Stub, directory: Directory, operator: Metadata, front_desk: Metadata
) -> None:
    rpps = await new_practitioner(directory, operator, LOIRE, specialty=PULMONOLOGY)
    schedule = await new_schedule(loire, operator, rpps, LOIRE)
    await add_rules(loire, operator, schedule.name, every_day())
    slot = await first_free(loire, front_desk, rpps, after=timedelta(hours=2))
    holder, first = [(await register(directory, operator, LOIRE)).name for _ in range(2)]
    booked = await book(loire, front_desk, slot.name, holder)
    waiting = await wait_for(loire, front_desk, first)
    await loire.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=booked.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=front_desk,
    )
    assert (await entry(loire, front_desk, waiting.name)).state == W.STATE_OFFERED
    # The patient leaves the line: the offer is withdrawn and, nobody else waiting, the slot is free again.
    await loire.CancelWaitlistEntry(
        s.CancelWaitlistEntryRequest(request_id=request_id(), name=waiting.name), metadata=front_desk
    )
    assert slot.name in [
        x.name for x in await search(loire, front_desk, practitioner=f"practitioners/{rpps}")
    ]


async def test_a_waitlist_entry_is_hidden_from_another_ght_like_a_missing_one(
    loire: Stub, dauphine: Stub, directory: Directory, operator: Metadata, front_desk: Metadata, mint: Minter
) -> None:
    patient = (await register(directory, operator, LOIRE)).name
    waiting = await wait_for(loire, front_desk, patient)
    outsider = bearer(mint(staff="front-desk-dauphine"))
    answers = []
    for name in (waiting.name, f"waitlistEntries/{uuid.uuid4()}"):
        for rpc in (
            dauphine.GetWaitlistEntry(s.GetWaitlistEntryRequest(name=name), metadata=outsider),
            dauphine.AcceptWaitlistOffer(
                s.AcceptWaitlistOfferRequest(request_id=request_id(), name=name), metadata=outsider
            ),
            dauphine.CancelWaitlistEntry(
                s.CancelWaitlistEntryRequest(request_id=request_id(), name=name), metadata=outsider
            ),
        ):
            error = await call(rpc)
            answers.append((error.code(), details(error)[0].reason))  # type: ignore[union-attr]
    assert (
        answers[:3] == answers[3:] == [(grpc.StatusCode.PERMISSION_DENIED, "WAITLIST_ENTRY_NOT_VISIBLE")] * 3
    )
    hidden = await call(
        dauphine.ListWaitlistEntries(s.ListWaitlistEntriesRequest(patient=patient), metadata=outsider)
    )
    missing = await call(
        dauphine.ListWaitlistEntries(
            s.ListWaitlistEntriesRequest(patient=f"patients/{uuid.uuid4()}"), metadata=outsider
        )
    )
    assert (hidden.code(), details(hidden)[0]) == (missing.code(), details(missing)[0])
    # Still waiting; leaves the line.
    assert (await entry(loire, front_desk, waiting.name)).state == W.STATE_WAITING
    await loire.CancelWaitlistEntry(
        s.CancelWaitlistEntryRequest(request_id=request_id(), name=waiting.name), metadata=front_desk
    )
