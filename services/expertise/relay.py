"""What the kit's outbox relay sends for a téléexpertise request: the start of its `Teleexpertise` workflow.

A creation writes, in its own transaction, the request and an outbox command `start`; the handler then
starts the workflow itself with an update-with-start of `routed` (one round trip, so the answer shows the
routed request), and the kit's relay starts it later if that could not happen (Temporal away, the process
killed, the client gone): no saved request ever stays without its workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.expertise.models import CaseInput, State, Tier, Timeline, case_attributes
from services.expertise.store import ExpertiseStore, StartData
from services.kit import names
from services.kit.cases import CaseKind, Command, StartCase


def case_input(data: StartData) -> CaseInput:
    """The workflow's input, from what the creation saved (routing, deadlines; no free text)."""
    return CaseInput(
        case_id=str(data.case_id),
        requester=names.PRACTITIONER.format(data.requester),
        requester_establishment=names.ESTABLISHMENT.format(data.requester_establishment),
        patient=names.PATIENT.format(data.patient),
        specialty=data.specialty,
        ght=data.ght,
        region=data.region,
        tiers=[Tier(source=t["source"], members=list(t["members"])) for t in data.routing],
        created_at=data.create_time,
        answer_due=data.requested_answer_time,
        timeline=Timeline.of(data.timeline),
    )


class CasePlan:
    """The relay's planner for téléexpertise requests."""

    def __init__(self, store: ExpertiseStore, kind: CaseKind) -> None:
        self._store = store
        self._kind = kind

    async def __call__(self, conn: Any, commands: Sequence[Command]) -> Mapping[int, StartCase]:
        found = await self._store.start_data(conn, list({c.case_id for c in commands}))
        plans: dict[int, StartCase] = {}
        for command in commands:
            data = found.get(command.case_id)
            if data is None:
                continue
            case = case_input(data)
            plans[command.event_id] = StartCase(
                workflow_id=self._kind.workflow_id(command.case_id),
                workflow_type=self._kind.workflow_type,
                task_queue=self._kind.task_queue,
                arg=case,
                attributes=case_attributes(case, state=State.REQUESTED, due=case.answer_due, breached=False),
            )
        return plans
