"""Every golden history (tests/support/golden.py) replays with today's workflow code.

They were recorded once from real runs (real services, PostgreSQL and Temporal) and are committed: replaying
them here fails when a change to a workflow's command sequence is not guarded by `workflow.patched(...)`.

A patch that changes a scenario's commands keeps that scenario's history from before it (never re-recorded:
it is what cases started by the older code replay) and records the new path beside it under a new name: the
teleconsultation scenarios before `local-projection-writes` are `teleconsultation-<scenario>`, after it
`teleconsultation-<scenario>-local-writes` (what the scenarios' tests keep now).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from services.kit.codec import Keyring, data_converter
from services.kit.temporal import sandboxed_runner
from tests.support import PAYLOAD_KEYS
from tests.support.golden import HISTORIES
from workflows.teleconsultation.workflows import TeleconsultationWorkflow
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

TELECONSULTATION_SCENARIOS = (
    "teleconsultation-billed",
    "teleconsultation-billing-refused",
    "teleconsultation-no-show",
    "teleconsultation-cancelled",
    "teleconsultation-consent-refused",
    "teleconsultation-reminder-after-join",
)
# What still goes through the server as an activity task since `local-projection-writes`: the calls to other
# services and the mail, which need their long retries.
REGULAR_ACTIVITIES = {
    "record_billable_act",
    "publish_record",
    "deliver_notifications",
    "record_delivery_failure",
}
EXPECTED = {
    *TELECONSULTATION_SCENARIOS,
    *(f"{scenario}-local-writes" for scenario in TELECONSULTATION_SCENARIOS),
    "teleexpertise-billed",
    "teleexpertise-escalated-breached-expired",
    "teleexpertise-paused-deadline",
}


def test_every_scenario_has_its_golden_history() -> None:
    assert {p.stem for p in HISTORIES.glob("*.json")} >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_a_golden_history_replays_with_todays_code(name: str) -> None:
    document = json.loads((HISTORIES / f"{name}.json").read_text())
    history = WorkflowHistory.from_json(document["workflow_id"], document["history"])
    replayer = Replayer(
        workflows=[TeleconsultationWorkflow, TeleexpertiseWorkflow],
        data_converter=data_converter(Keyring.parse(PAYLOAD_KEYS)),
        workflow_runner=sandboxed_runner(),  # the workers' sandbox, as they run
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{name}: {result.replay_failure}"


def _events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((HISTORIES / f"{name}.json").read_text())["history"]["events"]
    return events


def _scheduled(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]


@pytest.mark.parametrize("scenario", TELECONSULTATION_SCENARIOS)
def test_a_teleconsultation_writes_its_projection_without_activity_tasks(scenario: str) -> None:
    """The same scenario before and after `local-projection-writes`: the projection writes no longer
    schedule activity tasks, and the case takes no more workflow tasks (fewer as soon as it writes)."""
    before, after = _events(scenario), _events(f"{scenario}-local-writes")
    assert set(_scheduled(after)) <= REGULAR_ACTIVITIES
    written = [a for a in _scheduled(before) if a not in REGULAR_ACTIVITIES]
    # The older path scheduled each write as an activity (the comparison would prove nothing otherwise).
    assert written or scenario == "teleconsultation-cancelled"

    def tasks(events: list[dict[str, Any]]) -> int:
        return Counter(e["eventType"] for e in events)["EVENT_TYPE_WORKFLOW_TASK_COMPLETED"]

    assert tasks(after) <= tasks(before) - len(written)
