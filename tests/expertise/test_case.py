"""The case's rules as a plain state machine (no Temporal): routing when tiers run out, refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from services.expertise.models import (
    AcceptInput,
    CaseInput,
    DeclineInput,
    HandBackInput,
    State,
    Tier,
)
from workflows.teleexpertise.case import Case

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
A, B, GP = "practitioners/1", "practitioners/2", "practitioners/9"


def case(*tiers: list[str]) -> Case:
    new = Case(
        CaseInput(
            case_id=str(uuid.uuid4()),
            requester=GP,
            requester_establishment="establishments/420000025",
            patient=f"patients/{uuid.uuid4()}",
            specialty="DERMATOLOGY",
            ght="ght-loire",
            region="84",
            tiers=[Tier(source=f"tier-{i}", members=list(members)) for i, members in enumerate(tiers)],
            created_at=T0,
            answer_due=T0 + timedelta(hours=48),
        )
    )
    new.route(T0)
    return new


def reason(error: pytest.ExceptionInfo[ApplicationError]) -> str | None:
    return error.value.type


def test_when_every_tier_declined_the_case_waits_for_its_deadline_then_expires() -> None:
    c = case([A], [B])
    c.decline(T0, DeclineInput(request_id="r1", actor=A, reason="non"))
    assert c.level == 1 and c.candidates == [B]
    c.decline(T0, DeclineInput(request_id="r2", actor=B, reason="non"))
    assert c.candidates == [] and c.state == State.AWAITING_EXPERT
    # Nothing but the reminder, the breach and the expiry are left to wake up for.
    assert c.next_wake() == T0 + timedelta(hours=3)  # reminder halfway through the D/8 window
    c.on_time(T0 + timedelta(hours=48))
    assert c.breached and c.next_wake() == T0 + timedelta(hours=48, days=14)
    c.on_time(T0 + timedelta(hours=48, days=14))
    assert c.state == State.EXPIRED and c.closed


def test_a_handed_back_case_never_returns_to_who_handed_it_back() -> None:
    c = case([A, B])
    c.accept(T0, AcceptInput(request_id="r1", actor=A, establishment="establishments/420000017"))
    c.hand_back(T0 + timedelta(hours=1), HandBackInput(request_id="r2", actor=A, reason="absent"))
    assert c.state == State.AWAITING_EXPERT and c.candidates == [B]
    with pytest.raises(ApplicationError) as refused:
        c.accept(T0, AcceptInput(request_id="r3", actor=A, establishment="establishments/420000017"))
    assert reason(refused) == "NOT_A_CANDIDATE"
    c.accept(T0, AcceptInput(request_id="r4", actor=B, establishment="establishments/380000024"))
    with pytest.raises(ApplicationError) as refused:
        c.check_candidate(A)
    assert reason(refused) == "ALREADY_ASSIGNED"


def test_a_write_carries_each_event_once_and_notifies_nobody_of_their_own_act() -> None:
    c = case([A, B])
    first = c.take_write(None)
    assert [e.kind for e in first.events] == ["CREATED", "ROUTED"]
    c.accept(T0, AcceptInput(request_id="r1", actor=A, establishment="establishments/420000017"))
    second = c.take_write(None)
    assert [e.kind for e in second.events] == ["ACCEPTED"] and second.view.version == first.view.version + 1
    assert {n.recipient for n in second.notices} == {GP, B}
