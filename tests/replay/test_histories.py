"""Every golden history (tests/support/golden.py) replays with today's workflow code.

They were recorded once from real runs (real services, PostgreSQL and Temporal) and are committed: replaying
them here fails when a change to a workflow's command sequence is not guarded by `workflow.patched(...)`.
"""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from services.kit.codec import Keyring, data_converter
from services.kit.temporal import sandboxed_runner
from tests.support import PAYLOAD_KEYS
from tests.support.golden import HISTORIES
from workflows.teleconsultation.workflows import TeleconsultationWorkflow
from workflows.teleexpertise.workflows import TeleexpertiseWorkflow

EXPECTED = {
    "teleconsultation-billed",
    "teleconsultation-billing-refused",
    "teleconsultation-no-show",
    "teleconsultation-cancelled",
    "teleconsultation-consent-refused",
    "teleconsultation-reminder-after-join",
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
