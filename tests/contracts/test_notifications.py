"""ListNotifications: what a case's events told the caller, by name or through a role it holds in the case's
scope, read with the same visibility as the inbox and paginated by id for a poller asking "since N"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts import clock
from tests.contracts.conftest import ALICE, BOB, CHIEF, PACA_OFFICER, PROMOTER, Hub, Who, new_contract, rid
from tests.support.calls import call, details

TODAY = clock.local_date(datetime.now(UTC), "Europe/Paris")


async def told(hub: Hub, who: Who, after: int = 0, page_size: int = 0) -> list[c.Notification]:
    """Every notification of `who` after `after`, page by page."""
    found: list[c.Notification] = []
    token = ""
    while True:
        reply = await hub.stub(who).ListNotifications(
            c.ListNotificationsRequest(after_notification_id=after, page_size=page_size, page_token=token)
        )
        found += reply.notifications
        token = reply.next_page_token
        if not token:
            return found


async def latest(hub: Hub, who: Who) -> int:
    seen = await told(hub, who, page_size=1000)
    return seen[-1].notification_id if seen else 0


async def test_the_assignee_and_the_role_hear_of_their_case_and_another_region_does_not(hub: Hub) -> None:
    since = {who.name: await latest(hub, who) for who in (ALICE, BOB, PACA_OFFICER)}
    created = (
        await hub.stub(PROMOTER).CreateArsContract(
            new_contract(start=TODAY + timedelta(days=20), end=TODAY + timedelta(days=700))
        )
    ).ars_contract
    await hub.stub(PROMOTER).SubmitArsContract(
        c.SubmitArsContractRequest(request_id=rid(), name=created.name)
    )
    await hub.stub(ALICE).ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=created.name))
    await hub.stub(BOB).GetArsContract(c.GetArsContractRequest(name=created.name))  # Bob is known as staff
    reassigned = await hub.stub(CHIEF).ReassignCaseSteps(
        c.ReassignCaseStepsRequest(request_id=rid(), names=[created.name], assignee=BOB.name)
    )
    assert [r.ok for r in reassigned.results] == [True]

    bobs = [n for n in await told(hub, BOB, since[BOB.name]) if n.case == created.name]
    # The officers' group heard of the step opening (a role); Bob, by name, of the step given to him.
    assert ("STEP_OPENED", False) in [(n.event, n.personal) for n in bobs]
    assert [(n.event, n.personal) for n in bobs if n.personal] == [("REASSIGNED", True)]
    assert all(n.case_kind == c.CASE_KIND_ARS_CONTRACT for n in bobs)
    assert all(n.name == f"notifications/{n.notification_id}" for n in bobs)
    ids = [n.notification_id for n in bobs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Alice lost the step: she is told too; one item per event, though she is told by name and by role.
    alices = [n for n in await told(hub, ALICE, since[ALICE.name]) if n.case == created.name]
    assert [n.event for n in alices if n.event == "REASSIGNED"] == ["REASSIGNED"]
    assert len({(n.event, n.create_time.ToDatetime()) for n in alices}) == len(alices)
    # An officer of region 93 holds the same role, but never hears of region 84's cases.
    assert [
        n for n in await told(hub, PACA_OFFICER, since[PACA_OFFICER.name]) if n.case == created.name
    ] == []
    # The promoter's establishment was told nothing of the staff's reassignment.
    assert "REASSIGNED" not in [n.event for n in await told(hub, PROMOTER) if n.case == created.name]


async def test_pages_follow_the_ids_and_a_poller_asks_since_the_last_one(hub: Hub) -> None:
    before = await latest(hub, ALICE)
    names = []
    for _ in range(3):
        created = (
            await hub.stub(PROMOTER).CreateArsContract(
                new_contract(start=TODAY + timedelta(days=20), end=TODAY + timedelta(days=700))
            )
        ).ars_contract
        await hub.stub(PROMOTER).SubmitArsContract(
            c.SubmitArsContractRequest(request_id=rid(), name=created.name)
        )
        names.append(created.name)
    whole = await told(hub, ALICE, before)
    assert {n.case for n in whole} >= set(names)
    paged = await told(hub, ALICE, before, page_size=1)
    assert [n.notification_id for n in paged] == [n.notification_id for n in whole]
    # "Since N": only what came after.
    middle = whole[len(whole) // 2].notification_id
    assert [n.notification_id for n in await told(hub, ALICE, middle)] == [
        n.notification_id for n in whole if n.notification_id > middle
    ]
    first = await hub.stub(ALICE).ListNotifications(
        c.ListNotificationsRequest(after_notification_id=before, page_size=1)
    )
    # A token is bound to its query: reused with another `after`, it is refused.
    mismatched = await call(
        hub.stub(ALICE).ListNotifications(
            c.ListNotificationsRequest(after_notification_id=before + 1, page_token=first.next_page_token)
        )
    )
    assert mismatched.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(mismatched)[1]] == ["page_token"]


async def test_bad_input_is_refused_naming_the_field(hub: Hub) -> None:
    for request, field in (
        (c.ListNotificationsRequest(page_size=-1), "page_size"),
        (c.ListNotificationsRequest(page_size=1001), "page_size"),
        (c.ListNotificationsRequest(after_notification_id=-5), "after_notification_id"),
        (c.ListNotificationsRequest(page_token="not-a-token"), "page_token"),
    ):
        error = await call(hub.stub(ALICE).ListNotifications(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in details(error)[1]] == [field]
