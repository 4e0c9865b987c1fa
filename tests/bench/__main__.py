"""`make bench` = `python -m tests.bench [name ...]`: run the benchmarks against their own components.

Compiles the hub's modules to bytecode as the image does, starts a PostgreSQL (temporary data folder, free
port, durability traded for speed exactly as in the test suite) and a Temporal dev server, creates a
development PKI, applies every migration, then runs the `async def main(env)` of each
`tests/bench/bench_*.py` module (or only those named on the command line).
Each module prints a table and writes its figures with `env.write_results(...)` to build/bench/<name>.json;
at the end every result there is gathered into build/bench/report.md, report.json and the plots
(tests/bench/report.py). Nothing of `make run` is touched.

PARCOURS_BENCH_BYTECODE=0 leaves the modules as they are (from source where no bytecode was written, as on a
checkout run with PYTHONDONTWRITEBYTECODE): how the figures before bytecode were taken.

`--hub DIR` points the load replay (bench_load) at an existing hub instead of the one it starts: DIR holds
`hub.json` and `pki/` as `make run` writes them in its data folder.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from services.devstack import free_port
from services.devstack.postgres import start_postgres
from services.devstack.temporal import start_temporal
from services.kit.migrate import apply_all
from services.kit.pki import ensure_dev_pki
from services.kit.roles import OWNER, provision
from tests.bench import RESULTS_DIR, BenchEnv, shown
from tests.bench.hub import compile_bytecode
from tests.bench.report import write_report
from tests.support import COMPONENTS, DB_PASSWORDS, TEST_ESTABLISHMENTS, role_url

BENCH_DIR = Path(__file__).resolve().parent


def discover(names: Sequence[str]) -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))
    unknown = set(names) - set(found)
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(sorted(unknown))} (known: {', '.join(found)})")
    return [n for n in found if not names or n in names]


def run(names: Sequence[str]) -> None:
    """The benchmarks `names`, each against the PostgreSQL, Temporal and PKI started here."""
    if os.environ.get("PARCOURS_BENCH_BYTECODE", "1") != "0":
        compile_bytecode()  # every process started here runs from bytecode, as in the image
    with tempfile.TemporaryDirectory(prefix="parcours-bench-") as scratch:
        work = Path(scratch)
        print("bench: starting PostgreSQL and Temporal, creating a development PKI ...", flush=True)
        pki = ensure_dev_pki(work / "pki", components=COMPONENTS, establishments=TEST_ESTABLISHMENTS)
        postgres = start_postgres(work / "pg" / "data", port=free_port(), fast=True)
        try:
            temporal = start_temporal(None, port=free_port(), ui_port=None, headless=True)
            try:
                # The hub's roles exist before the migrations that grant to them (services/kit/roles.py),
                # and the migrations run as their owner, as in the suite; the benches connect as superuser.
                provision(postgres.url_for("postgres"), "parcours", DB_PASSWORDS)
                apply_all(role_url(postgres.url, OWNER))
                env = BenchEnv(
                    pki=pki,
                    database_url=postgres.url,
                    temporal_address=temporal.address,
                    work_dir=work,
                    results_dir=RESULTS_DIR,
                )
                for name in names:
                    module = importlib.import_module(f"tests.bench.bench_{name}")
                    asyncio.run(module.main(env))
            finally:
                temporal.stop()
        finally:
            postgres.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Parcours benchmarks.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--hub", type=Path, help="the load replay calls this hub (its data folder) instead")
    parser.add_argument("--report-only", action="store_true", help="only gather build/bench into the report")
    args = parser.parse_args(argv)
    names = discover(args.names)
    if args.report_only:
        names = []
    if args.hub is not None:
        os.environ["PARCOURS_BENCH_HUB"] = str(args.hub.resolve())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if names:
        run(names)
    written = write_report(RESULTS_DIR)
    print(
        f"bench: report in {', '.join(shown(p) for p in written)}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
