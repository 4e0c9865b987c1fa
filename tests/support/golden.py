"""Golden histories: workflow histories recorded once, committed, and replayed by every run.

A test that drives a case through a scenario calls `await keep("teleconsultation-billed", handle)` at its
end. Normally that only checks the scenario has a committed history; with `PARCOURS_RECORD_HISTORIES=1`
(`make histories`) it (re)writes it. tests/replay/test_histories.py replays every committed history with
today's workflow code: a change to a workflow's command sequence fails the suite unless it is guarded by
`workflow.patched(...)` — or the histories are re-recorded on purpose, which a reviewer sees in the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import temporalio.client

from tests.support import repo_root

HISTORIES = repo_root() / "tests" / "replay" / "histories"
RECORD = os.environ.get("PARCOURS_RECORD_HISTORIES") == "1"


def history_file(name: str) -> Path:
    return HISTORIES / f"{name}.json"


async def keep(name: str, handle: temporalio.client.WorkflowHandle[object, object]) -> None:
    """Record (PARCOURS_RECORD_HISTORIES=1) or check the presence of the golden history `name`."""
    path = history_file(name)
    if RECORD:
        history = await handle.fetch_history()
        document = {"workflow_id": history.workflow_id, "history": json.loads(history.to_json())}
        path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        return
    assert path.exists(), f"no golden history {path.name}: run `make histories` and commit it"
