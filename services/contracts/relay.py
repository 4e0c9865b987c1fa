"""What the kit's outbox relay sends for a contracts case: the start of its workflow (one per kind).

A creation writes, in its own transaction, the case and an outbox command `start`; the handler then starts
the workflow itself with an update-with-start of `created` (one round trip, so the answer shows the case as
its workflow opened it), and the kit's relay starts it later if that could not happen (Temporal away, the
process killed, the client gone): no saved case is ever left without its workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.contracts.models import KINDS, CaseSummary, search_attributes
from services.contracts.store import STATE_TYPES, AnyCase, ContractsStore, from_json
from services.kit.cases import CaseAttributes, Command, StartCase


def start_attributes(state: AnyCase) -> CaseAttributes:
    """The search attributes a case's workflow starts with (its first change sets the rest)."""
    core = state.core
    return search_attributes(
        CaseSummary(
            case_id=core.case_id,
            kind=core.kind,
            version=core.version,
            state=core.state,
            region=core.region,
            departement=core.departement,
            ght=core.ght,
            promoter=core.promoter,
            step="",
            step_role="",
            claimant="",
            due_at=None,
            overdue=False,
            escalated=False,
        )
    )


class CasePlan:
    """The relay's planner for the four kinds of case."""

    def __init__(self, store: ContractsStore, task_queue: str) -> None:
        self._store = store
        self._task_queue = task_queue

    async def __call__(self, conn: Any, commands: Sequence[Command]) -> Mapping[int, StartCase]:
        found = await self._store.start_data(conn, list({c.case_id for c in commands}))
        plans: dict[int, StartCase] = {}
        for command in commands:
            data = found.get(command.case_id)
            if data is None:
                continue
            kind, start_state, _ = data
            state: AnyCase = from_json(start_state, STATE_TYPES[kind])
            plans[command.event_id] = StartCase(
                workflow_id=KINDS[kind].workflow_id(command.case_id),
                workflow_type=KINDS[kind].workflow_type,
                task_queue=self._task_queue,
                arg=state,
                attributes=start_attributes(state),
            )
        return plans
