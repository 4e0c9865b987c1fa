"""Benchmarks: `make bench` (python -m tests.bench) runs every `bench_*.py` module of this folder.

A benchmark module defines `async def main(env: BenchEnv) -> None`: it prints a table of its figures and
writes them with `env.write_results(name, figures)`.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.kit.pki import DevPki
from tests.support import repo_root

# PARCOURS_BENCH_RESULTS_DIR writes a run elsewhere (a before/after comparison keeps the report's run).
RESULTS_DIR = Path(os.environ.get("PARCOURS_BENCH_RESULTS_DIR") or repo_root() / "build" / "bench")


def shown(path: Path) -> str:
    """A results path as a run prints it: from the repository's root when under it (the default), else whole
    (PARCOURS_BENCH_RESULTS_DIR may point anywhere)."""
    return str(path.relative_to(repo_root())) if path.is_relative_to(repo_root()) else str(path)


@dataclass(frozen=True)
class BenchEnv:
    """What a benchmark gets: its own database, Temporal, PKI and a scratch folder."""

    pki: DevPki
    database_url: str
    temporal_address: str
    work_dir: Path
    results_dir: Path

    def write_results(self, name: str, results: dict[str, Any]) -> Path:
        """Write a benchmark's figures, with when and where they were measured, to build/bench/<name>.json."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": name,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": {
                "cpus": os.cpu_count(),
                # What this run could use (`taskset -c 0 make bench` measures the hub on one core).
                "cpus_usable": len(os.sched_getaffinity(0)),
                "python": platform.python_version(),
                "platform": platform.platform(),
                # Other work on the machine (other engineers' suites) moves absolute figures: said with them.
                "load_average_1m_at_write": round(os.getloadavg()[0], 2),
            },
            **results,
        }
        path = self.results_dir / f"{name}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path
