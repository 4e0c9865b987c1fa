"""Idle memory of the hub's service processes (issue 15: idle RSS ≤ 120 MB per service process), and what it
is made of.

`python -m tests.bench.rss` starts `make run`'s stack on free ports (tests/bench/hub.py) and prints each
service process's VmRSS (/proc/PID/status) twice: once every service serves (what a freshly started replica
holds at rest, before any request but the health checks), and after `make run` has loaded its demo data
through the services' APIs and the processes have settled (what the load bench reports as `idle_rss_mb`: by
then the demo contracts have had their decisions previewed and signed, rare requests whose libraries load in
the contracts service's document process, reported beside the services while it runs).

`python -m tests.bench.rss --imports [services.contracts ...]` says where that memory comes from without a
hub: in a fresh interpreter per service it imports what `python -m services.<name>` imports before it serves
(its `__main__` module) and charges each module's import with the resident memory it added itself (the
growth of VmRSS while it loaded, less what the modules it imported in turn added), summed by top-level
package. Figures are approximate (the allocator keeps freed pages, a page is charged to whoever touched it
first), but they add up to the process's import cost and rank the packages reliably.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.devstack.__main__ import Stack
from services.kit.pki import DevPki
from tests.bench.hub import (
    HELPER_PROCESSES,
    SERVICE_PROCESSES,
    Processes,
    compile_bytecode,
    hub_roots,
    started_hub,
)
from tests.support import repo_root

# How long the processes get after the demo data is loaded before they are measured (the bench's load
# replay waits as long): late imports and caches of the first requests, first health checks.
SETTLE_SECONDS = 5.0


def vm_rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"process {pid} has no VmRSS")


@dataclass(frozen=True)
class IdleRss:
    """VmRSS (MB) of each service process: once every service serves; after the demo data, settled."""

    serving: dict[str, float]
    after_demo: dict[str, float]


def idle_rss(settle: float = SETTLE_SECONDS) -> IdleRss:
    """VmRSS of every service process of a freshly started hub; the second figure `settle` seconds after
    the demo data."""
    serving: dict[str, float] = {}
    wait_ready = Stack._wait_ready

    def measured(stack: Stack, pki: DevPki) -> None:
        # make run loads its demo data right after every service is ready: measured in between.
        wait_ready(stack, pki)
        for child in stack.children:
            if child.name in SERVICE_PROCESSES:
                serving[child.name] = round(vm_rss_mb(child.process.pid), 1)

    with tempfile.TemporaryDirectory(prefix="parcours-rss-") as scratch:
        Stack._wait_ready = measured  # type: ignore[method-assign,assignment]
        try:
            with started_hub(Path(scratch)) as hub:
                processes = Processes(hub_roots(hub))
                time.sleep(settle)
                after_demo = {
                    g: round(vm_rss_mb(pid), 1)
                    for g in (*SERVICE_PROCESSES, *HELPER_PROCESSES)
                    for pid in processes.pids(g)
                }
        finally:
            Stack._wait_ready = wait_ready  # type: ignore[method-assign]
    return IdleRss(serving=serving, after_demo=after_demo)


# Run in a fresh interpreter: charges every module's import with the VmRSS it added itself, then prints the
# sums by top-level package as JSON. `_load_unlocked` is where importlib creates and executes a module (the
# frozen bootstrap looks it up by name at each import, so replacing it sees every import).
_IMPORT_PROBE = """
import importlib, json, sys
import _frozen_importlib as bootstrap

def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

charged, stack = {}, []
load = bootstrap._load_unlocked

def measured(spec):
    stack.append(0)
    before = rss_kb()
    try:
        return load(spec)
    finally:
        grown = rss_kb() - before
        nested = stack.pop()
        top = spec.name.partition(".")[0]
        charged[top] = charged.get(top, 0) + grown - nested
        if stack:
            stack[-1] += grown

bootstrap._load_unlocked = measured
start = rss_kb()
importlib.import_module(sys.argv[1])
print(json.dumps({"start_kb": start, "end_kb": rss_kb(), "charged_kb": charged}))
"""


@dataclass(frozen=True)
class ImportCosts:
    """VmRSS (MB) of the bare interpreter and after the imports; the MB each top-level package added, largest
    first (those under 0.25 MB left out)."""

    interpreter_mb: float
    after_imports_mb: float
    packages_mb: dict[str, float]


def import_costs(module: str) -> ImportCosts:
    """What importing `module` costs, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _IMPORT_PROBE, module],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    charged = sorted(found["charged_kb"].items(), key=lambda item: -item[1])
    return ImportCosts(
        interpreter_mb=round(found["start_kb"] / 1024, 1),
        after_imports_mb=round(found["end_kb"] / 1024, 1),
        packages_mb={name: round(kb / 1024, 1) for name, kb in charged if abs(kb) >= 256},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Idle RSS of the hub's service processes.")
    parser.add_argument(
        "--imports",
        nargs="*",
        metavar="MODULE",
        help="instead, what importing each module costs by package (default: every service's __main__)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_SECONDS,
        metavar="SECONDS",
        help="how long after the demo data to take the second figure (asyncpg closes a pool's extra "
        "connections after 300 s idle)",
    )
    args = parser.parse_args(argv)
    compile_bytecode()  # as the image runs (compileall in the Dockerfile)
    if args.imports is not None:
        modules = args.imports or [f"services.{name}.__main__" for name in SERVICE_PROCESSES]
        for module in modules:
            costs = import_costs(module)
            print(f"{module}: {costs.interpreter_mb} MB → {costs.after_imports_mb} MB after its imports")
            print("  " + ", ".join(f"{name} {mb}" for name, mb in costs.packages_mb.items()))
        return 0
    measured = idle_rss(args.settle)
    print(f"{'VmRSS (MB)':<12} {'serving':>8} {'after demo':>11}")
    for name in SERVICE_PROCESSES:
        print(f"{name:<12} {measured.serving.get(name, 0):>8.1f} {measured.after_demo.get(name, 0):>11.1f}")
    for name in HELPER_PROCESSES:
        if name in measured.after_demo:
            print(f"{name} (a service's child while it runs): {measured.after_demo[name]:.1f}")
    print(json.dumps({"serving_rss_mb": measured.serving, "idle_rss_mb": measured.after_demo}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
