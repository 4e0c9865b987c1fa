"""What the kit's outbox relay sends for a booking: its Teleconsultation workflow's start, or a cancellation.

A booking writes, in its own transaction, an outbox command `start`; a cancellation (or an entry in error)
writes `cancel`. The kit's relay (services/kit/cases.py) sends them after the commit — exactly one workflow
`teleconsultation-<appointment id>` per booking, none without its booking — and asks this module how:

- `start` starts the workflow with the durations the service's settings give (`WorkflowPlan`);
- `cancel` is a signal-with-start: it reaches a running workflow, starts one (already cancelled) in the
  unlikely case the start was lost, and counts as done when the workflow has already closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.kit.cases import Command, StartCase
from services.kit.notify import DeliveryPolicy
from services.scheduling import store
from services.scheduling.models import (
    TELECONSULTATION,
    CancelNotice,
    CaseState,
    Reminder,
    TeleconsultationInput,
    case_attributes,
)


def iso_duration(value: timedelta) -> str:
    """`P1D`, `PT1H`, `PT15M`, `PT90S` (the label of a reminder)."""
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    time_part = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "") if value else "PT0S"


@dataclass(frozen=True)
class WorkflowPlan:
    """The durations each workflow gets in its input (from the service's settings)."""

    reminder_offsets: Sequence[timedelta]
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)

    def input(self, appointment: asyncpg.Record) -> TeleconsultationInput:
        start: datetime = appointment["start_time"]
        return TeleconsultationInput(
            appointment_id=str(appointment["appointment_id"]),
            start_time=start,
            end_time=appointment["end_time"],
            join_open_time=appointment["join_open_time"],
            no_show_time=appointment["no_show_time"],
            reminders=[Reminder(label=iso_duration(o), send_time=start - o) for o in self.reminder_offsets],
            ght=appointment["ght_id"] or "",
            specialty=appointment["specialty"],
            region=appointment["region_code"],
            delivery=self.delivery,
        )

    async def __call__(self, conn: Any, commands: Sequence[Command]) -> Mapping[int, StartCase]:
        """The relay's planner: each command's start (or signal-with-start)."""
        appointments = await store.outbox_appointments(conn, [c.case_id for c in commands])
        plans: dict[int, StartCase] = {}
        for command in commands:
            appointment = appointments.get(command.case_id)
            if appointment is None:
                continue
            case = self.input(appointment)
            signal: dict[str, Any] = {}
            if command.command == "cancel":
                notice = CancelNotice(status=appointment["status"], reason=appointment["cancel_reason"] or "")
                signal = {"signal": "cancel", "signal_arg": notice}
            plans[command.event_id] = StartCase(
                workflow_id=TELECONSULTATION.workflow_id(command.case_id),
                workflow_type=TELECONSULTATION.workflow_type,
                task_queue=TELECONSULTATION.task_queue,
                arg=case,
                attributes=case_attributes(case, CaseState.BOOKED),
                **signal,
            )
        return plans
