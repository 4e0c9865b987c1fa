"""The scheduling service as a process: a missing setting stops the start, naming it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import repo_root


def test_a_missing_setting_stops_the_start_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env["PARCOURS_INSECURE_DEV_MODE"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "services.scheduling"],
        env=env,
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    for name in ("PARCOURS_DATABASE_URL", "PARCOURS_DIRECTORY_ADDRESS", "PARCOURS_PAYLOAD_KEYS"):
        assert f"missing required setting {name}" in result.stderr
