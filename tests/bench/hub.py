"""The hub under load: started as `make run` starts it (services/devstack), or an existing one named by its
data folder; and what each of its processes uses (CPU seconds, peak RSS) and how many statements PostgreSQL
ran for it.

Started here, the hub is exactly `make run`'s stack (every service, worker, the console, the OpenID provider
and the mail sink, the demo region) in a temporary folder on free ports, with two bench-only settings of the
embedded PostgreSQL, stated in the report: fsync off (as in the test suite; never a product setting) and
`pg_stat_statements` loaded, whose call counts are the database round trips.

Pointed at a deployment (`--hub DIR`, a folder holding `hub.json` and `pki/` as `make run` writes them), the
bench needs that hub's PKI (establishment certificates, the token signing key) and its payload keys; CPU and
RSS are measured only for the hub processes running on this machine (none for a remote deployment: said so).
"""

from __future__ import annotations

import compileall
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from services.devstack import free_port
from services.devstack.postgres import start_postgres
from services.kit.pki import DevPki
from tests.support import repo_root

# Process groups, by how each process is recognised (command line or name).
GROUPS = (
    ("directory", "services.directory"),
    ("scheduling", "services.scheduling"),
    ("expertise", "services.expertise"),
    ("billing", "services.billing"),
    ("contracts", "services.contracts"),
    # The contracts service's child that renders and verifies decisions, while it runs.
    ("contracts-documents", "services.contracts.document_process"),
    ("console", "services.console"),
    ("workflows-teleconsultation", "workflows.teleconsultation"),
    ("workflows-teleexpertise", "workflows.teleexpertise"),
    ("workflows-contracts", "workflows.contracts"),
    ("mail-sink", "services.devstack.mailsink"),
)
SERVICE_PROCESSES = ("directory", "scheduling", "expertise", "billing", "contracts", "console")
# Children a service starts for rare work, and ends when idle.
HELPER_PROCESSES = ("contracts-documents",)


@dataclass
class Hub:
    """Where the hub is and what the bench needs to call it."""

    pki: DevPki
    database_url: str
    temporal_address: str
    payload_keys: str
    addresses: dict[str, str]
    local: bool = True
    description: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def load_hub(data_dir: Path) -> Hub:
    """An existing hub (`make run`'s data folder, or one laid out the same way)."""
    settings = json.loads((data_dir / "hub.json").read_text())
    pki_dir = Path(settings["pki_dir"])
    kid = json.loads((pki_dir / "jwks.json").read_text())["keys"][0]["kid"]
    return Hub(
        pki=DevPki(pki_dir, kid),
        database_url=settings["database_url"],
        temporal_address=settings["temporal_address"],
        payload_keys=(pki_dir / "payload-keys").read_text().strip(),
        addresses={
            k.removesuffix("_address"): v for k, v in settings.items() if k.endswith("_address") and v
        },
        local=False,
        description=f"the hub described by {data_dir / 'hub.json'}",
    )


# What the bench's hub runs with beyond make run's environment: quieter logs. Every product setting (the
# relay's rate cap, reminders, join window, timeouts) stays at its default; only the bench's own data differs
# (its practitioners' 5-minute slots round the clock, so that it finds appointments starting now whenever it
# runs).
BENCH_ENVIRONMENT: dict[str, str] = {
    "PARCOURS_LOG_LEVEL": "WARNING",
}


def compile_bytecode() -> None:
    """Compile the hub's own modules (services/, workflows/) to bytecode, as the image does (`compileall` in
    the Dockerfile): the hub then runs from bytecode like a deployment, even where PYTHONDONTWRITEBYTECODE is
    set. It matters beyond start-up: the workflow sandbox imports a workflow's module afresh for every
    workflow instance, so without bytecode each new case compiles that module from its source again (about
    2 ms of the workflow worker's CPU per case on the reference machine)."""
    for package in ("services", "workflows"):
        compileall.compile_dir(repo_root() / package, quiet=1, workers=1)


@contextmanager
def started_hub(work_dir: Path) -> Iterator[Hub]:
    """`make run`'s stack in `work_dir`, on free ports; stopped on exit."""
    from services.devstack.__main__ import PORT_DEFAULTS, Ports, Stack, _Signals

    data_dir = work_dir / "hub"
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: str(free_port()) for name in PORT_DEFAULTS}
    # The embedded PostgreSQL, started first with the bench's settings; the stack then reuses it.
    postgres = start_postgres(data_dir / "postgres", port=int(ports["PARCOURS_PG_PORT"]), fast=True)
    _load_statement_statistics(postgres.url)
    postgres.stop()
    postgres = start_postgres(data_dir / "postgres", port=int(ports["PARCOURS_PG_PORT"]), fast=True)
    saved = dict(os.environ)
    os.environ.update({**ports, **BENCH_ENVIRONMENT, "PARCOURS_DATA_DIR": str(data_dir)})
    stack = Stack(data_dir, Ports.from_env(os.environ), _Signals())
    try:
        stack.start()
        assert stack.pki is not None and stack.postgres is not None and stack.temporal is not None
        hub = Hub(
            pki=stack.pki,
            database_url=stack.postgres.url,
            temporal_address=stack.temporal.address,
            payload_keys=(stack.pki.directory / "payload-keys").read_text().strip(),
            addresses={s: f"127.0.0.1:{p}" for s, p in stack.ports.grpc.items()},
            description="make run's stack (services/devstack) on free ports",
            settings={"postmaster_pid": (data_dir / "postgres" / "postmaster.pid").read_text().split()[0]},
        )
        yield hub
    finally:
        stack.stop()
        postgres.stop()
        os.environ.clear()
        os.environ.update(saved)


def _load_statement_statistics(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        connection.execute("ALTER SYSTEM SET pg_stat_statements.track_utility = on")


async def enable_statements(pool: asyncpg.Pool) -> bool:
    """Whether pg_stat_statements counts this database's statements (created if the server loads it)."""
    try:
        await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await pool.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError:
        return False
    return True


async def statements(pool: asyncpg.Pool) -> int:
    """Statements the hub's processes have run so far (each one a round trip; the bench's own excluded)."""
    try:
        value = await pool.fetchval(
            """
        SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
        JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'
          AND s.query NOT LIKE '%bench:%'
        """
        )
    except asyncpg.PostgresError:
        return 0  # not loaded on this server: round trips are not counted (the report says so)
    return int(value)


# --- processes ------------------------------------------------------------------------------------------


def group_of(process: psutil.Process, temporal_port: int | None = None) -> str | None:
    try:
        name = process.name()
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    line = " ".join(command)
    if process.pid == os.getpid():
        return "bench client"
    for group, module in GROUPS:
        if module in command and command[command.index(module) - 1] == "-m":
            return group
    if name.startswith("postgres"):
        return "postgres"
    if name.startswith("temporal") and "start-dev" in command:
        # Only the hub's dev server (the benchmark harness may run another one beside it).
        port = command[command.index("--port") + 1] if "--port" in command else ""
        return "temporal" if temporal_port is None or port == str(temporal_port) else None
    if "oidc_provider" in line:
        return "oidc-provider (dev)"
    return None


@dataclass
class Usage:
    cpu_seconds: dict[str, float]
    at: float


class Processes:
    """The hub's local processes by group: CPU seconds used so far and resident memory now.

    Only this hub's: the descendants of the roots given (this process, which started the hub's children, and
    the PostgreSQL postmaster, which runs detached); other hubs on the machine are never counted. A process
    that has exited keeps the CPU time last seen (PostgreSQL backends come and go).
    """

    def __init__(self, roots: list[int], temporal_port: int | None = None) -> None:
        self._roots = roots
        self._temporal_port = temporal_port
        self._known: dict[int, tuple[str, psutil.Process]] = {}
        self._last_cpu: dict[int, float] = {}
        self.refresh()

    def refresh(self) -> None:
        candidates: list[psutil.Process] = []
        for pid in self._roots:
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                root = psutil.Process(pid)
                candidates += [root, *root.children(recursive=True)]
        for process in candidates:
            if process.pid in self._known:
                continue
            group = group_of(process, self._temporal_port)
            if group is not None:
                self._known[process.pid] = (group, process)

    def pids(self, group: str) -> list[int]:
        return [pid for pid, (g, p) in self._known.items() if g == group and p.is_running()]

    def usage(self) -> Usage:
        self.refresh()
        found: dict[str, float] = {}
        for pid, (group, process) in list(self._known.items()):
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                times = process.cpu_times()
                self._last_cpu[pid] = times.user + times.system
            found[group] = found.get(group, 0.0) + self._last_cpu.get(pid, 0.0)
        return Usage(found, time.monotonic())

    def rss_mb(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for group, process in list(self._known.values()):
            with suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                found[group] = found.get(group, 0.0) + process.memory_info().rss / 2**20
        return found

    def rss_per_process_mb(self, group: str) -> list[float]:
        found: list[float] = []
        for g, process in list(self._known.values()):
            if g == group:
                with suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    found.append(process.memory_info().rss / 2**20)
        return found


def hub_roots(hub: Hub) -> list[int]:
    """Where the hub's local processes hang: this process and the postmaster (a started hub); for another
    hub, the processes listening on its ports and their descendants (its workers are then not seen)."""
    if hub.local:
        roots = [os.getpid()]
        postmaster = hub.settings.get("postmaster_pid")
        if postmaster:
            roots.append(int(postmaster))
        return roots
    from urllib.parse import urlsplit

    ports = {int(a.rsplit(":", 1)[1]) for a in [*hub.addresses.values(), hub.temporal_address]}
    ports.add(urlsplit(hub.database_url).port or 5432)
    found: set[int] = {os.getpid()}
    with suppress(psutil.AccessDenied):
        for connection in psutil.net_connections(kind="tcp"):
            listening = connection.status == psutil.CONN_LISTEN and connection.laddr
            if listening and connection.laddr.port in ports and connection.pid:
                found.add(connection.pid)
    return sorted(found)


def cpu_between(before: Usage, after: Usage) -> dict[str, float]:
    return {k: round(v - before.cpu_seconds.get(k, 0.0), 3) for k, v in sorted(after.cpu_seconds.items())}
