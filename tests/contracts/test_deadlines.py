"""Deadlines that matter to people, with shortened durations: a late step is reminded, then overdue, then
escalated to the supervisors, in the timeline, the inbox and the Temporal Web UI's search attributes; an
opinion's expert is reminded before its due time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts.models import DAY
from tests.contracts.conftest import ALICE, PROMOTER, HubFactory, eventually, new_contract, rid

SECOND = 1 / DAY  # a second, in the settings' days


async def test_a_late_step_is_reminded_then_overdue_then_escalated(make_hub: HubFactory) -> None:
    hub = await make_hub(
        step_due_days={"COMPLETENESS_CHECK": 3 * SECOND},
        reminder_before_days=2 * SECOND,
        escalate_after_days=1 * SECOND,
    )
    today = datetime.now(UTC).date()
    created = (
        await hub.stub(PROMOTER).CreateArsContract(
            new_contract(start=today + timedelta(days=30), end=today + timedelta(days=400))
        )
    ).ars_contract
    submitted = (
        await hub.stub(PROMOTER).SubmitArsContract(
            c.SubmitArsContractRequest(request_id=rid(), name=created.name)
        )
    ).ars_contract
    step = submitted.progress.current_step
    assert step.due_time.ToDatetime(tzinfo=UTC) - step.open_time.ToDatetime(tzinfo=UTC) == timedelta(
        seconds=3
    )

    alice = hub.stub(ALICE)

    async def timeline() -> list[int]:
        events = (
            await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=created.name, page_size=500))
        ).events
        return [e.kind for e in events]

    kinds = await eventually(timeline, lambda k: c.EVENT_KIND_ESCALATED in k)
    late = [k for k in kinds if k in (c.EVENT_KIND_REMINDED, c.EVENT_KIND_OVERDUE, c.EVENT_KIND_ESCALATED)]
    assert late == [c.EVENT_KIND_REMINDED, c.EVENT_KIND_OVERDUE, c.EVENT_KIND_ESCALATED]
    step = (
        await alice.GetArsContract(c.GetArsContractRequest(name=created.name))
    ).ars_contract.progress.current_step
    assert step.reminded and step.overdue and step.escalated
    # The officers see it late in their inbox; the supervisors were told.
    overdue = (await alice.ListCases(c.ListCasesRequest(overdue_only=True, page_size=500))).cases
    assert created.name in {x.name for x in overdue}
    assert (await alice.CountCases(c.CountCasesRequest())).counts.overdue >= 1
    escalated = await hub.pool.fetch(
        "SELECT role FROM contracts.notifications n JOIN contracts.events e "
        "ON e.case_id = n.case_id AND e.workflow_sequence = n.event_sequence "
        "WHERE n.case_id = $1 AND e.kind = 'ESCALATED'",
        uuid.UUID(created.name.removeprefix("arsContracts/")),
    )
    assert [r["role"] for r in escalated] == ["ARS_SUPERVISOR"]
    # The Web UI filters it as overdue.
    handle = hub.client.get_workflow_handle(f"ars-contract-{created.name.removeprefix('arsContracts/')}")
    attributes = (await handle.describe()).search_attributes
    assert attributes["ParcoursOverdue"] == [True]


async def test_an_opinion_s_expert_is_reminded_before_its_due_time(make_hub: HubFactory) -> None:
    hub = await make_hub(opinion_reminder_before_days=2 * SECOND)
    today = datetime.now(UTC).date()
    created = (
        await hub.stub(PROMOTER).CreateArsContract(
            new_contract(start=today + timedelta(days=30), end=today + timedelta(days=400))
        )
    ).ars_contract
    await hub.stub(PROMOTER).SubmitArsContract(
        c.SubmitArsContractRequest(request_id=rid(), name=created.name)
    )
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    alice = hub.stub(ALICE)
    opinion = (
        await alice.RequestCaseOpinion(
            c.RequestCaseOpinionRequest(
                request_id=rid(), parent=created.name, expert="staff/bob", question="Avis ?", due_time=due
            )
        )
    ).opinion

    async def reminded() -> bool:
        listed = (await alice.ListCaseOpinions(c.ListCaseOpinionsRequest(parent=created.name))).opinions
        return bool(listed and listed[0].reminded)

    assert await eventually(reminded, bool)
    events = (await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=created.name, page_size=500))).events
    assert [e.detail for e in events if e.kind == c.EVENT_KIND_OPINION_REMINDED] == [
        opinion.name.rsplit("/", 1)[1]
    ]
