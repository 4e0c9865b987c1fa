"""`make run`: the whole hub on this machine, with demo data, in one foreground process.

Order: development PKI → PostgreSQL and Temporal (with its Web UI) → migrations → demo data → every service
and worker that exists in the tree, each a child process with its log in `.data/logs/` → wait until every gRPC
server answers its health check over mTLS → print where everything is. Ctrl-C (or SIGTERM) stops the children
in reverse order, then Temporal, then PostgreSQL. Everything lives in `.data/` (PARCOURS_DATA_DIR) and a
second run picks up where the first stopped. Ports come from PARCOURS_*_PORT variables (see PORT_DEFAULTS).

Once running, a service or worker that dies is started again, after 1 s, then twice as long after each death
in a row (`RestartPolicy`), and the log says so; only a child that keeps dying (5 times within 2 minutes)
stops the stack, with the end of its log. PostgreSQL or Temporal dying still stops it: the services wait for
them rather than die, and their data is what a restart must not get wrong.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import importlib
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack import log_size, log_tail
from services.devstack.oidc import (
    CONSOLE_CLIENT_ID,
    DEMO_ACCOUNTS,
    DEMO_PASSWORD,
    OidcProviderHandle,
    RelyingParty,
    node_modules_ready,
    start_oidc_provider,
)
from services.devstack.postgres import DatabaseRoles, PostgresHandle, provision_roles, start_postgres
from services.devstack.temporal import TemporalHandle, start_temporal
from services.kit.pki import DEFAULT_COMPONENTS, DevPki, ensure_dev_pki
from services.kit.roles import AUDITOR, OWNER, component_role, service_role
from services.kit.server import ALLOCATOR_ENVIRONMENT

logger = logging.getLogger("services.devstack")

REPO_ROOT = Path(__file__).resolve().parents[2]
# Written in the data folder at each start: the running hub's addresses (services/kit/audit.py reads it).
HUB_SETTINGS = "hub.json"
GRPC_SERVICES = ("directory", "scheduling", "expertise", "billing", "contracts")
CONSOLE = "console"
PORT_DEFAULTS: Mapping[str, int] = {
    "PARCOURS_PG_PORT": 5432,
    "PARCOURS_TEMPORAL_PORT": 7233,
    "PARCOURS_TEMPORAL_UI_PORT": 8233,
    "PARCOURS_DIRECTORY_GRPC_PORT": 50051,
    "PARCOURS_SCHEDULING_GRPC_PORT": 50052,
    "PARCOURS_EXPERTISE_GRPC_PORT": 50053,
    "PARCOURS_BILLING_GRPC_PORT": 50054,
    "PARCOURS_CONTRACTS_GRPC_PORT": 50055,
    "PARCOURS_CONSOLE_HTTP_PORT": 8080,
    "PARCOURS_SMTP_PORT": 2525,
    # The development OpenID provider the console signs officers in with.
    "PARCOURS_OIDC_PORT": 8090,
}
# The SMTP sink the workers send their e-mail to (services/devstack/mailsink.py); messages in .data/mail/.
MAIL_SINK = "mail-sink"
# Five Python servers importing grpc, OpenTelemetry and protos at once on 2 cores take a while.
READY_TIMEOUT_SECONDS = float(os.environ.get("PARCOURS_READY_TIMEOUT_SECONDS", "120"))
# A child gets the servers' own shutdown grace (10 s by default) plus a margin before SIGKILL.
CHILD_STOP_TIMEOUT_SECONDS = 15.0
STEP_TIMEOUT_SECONDS = 300.0
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class StackFailure(Exception):
    """Something did not start or died: the message says what, with the end of its log."""


class ShutdownRequested(Exception):
    """SIGINT or SIGTERM: stop everything and exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Ports:
    postgres: int
    temporal: int
    temporal_ui: int
    grpc: Mapping[str, int]
    console: int
    oidc: int
    smtp: int = 2525

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        values: dict[str, int] = {}
        for name, default in PORT_DEFAULTS.items():
            raw = env.get(name, "")
            try:
                values[name] = int(raw) if raw else default
            except ValueError:
                raise StackFailure(f"{name}={raw!r} is not a port number") from None
        return cls(
            postgres=values["PARCOURS_PG_PORT"],
            temporal=values["PARCOURS_TEMPORAL_PORT"],
            temporal_ui=values["PARCOURS_TEMPORAL_UI_PORT"],
            grpc={s: values[f"PARCOURS_{s.upper()}_GRPC_PORT"] for s in GRPC_SERVICES},
            console=values["PARCOURS_CONSOLE_HTTP_PORT"],
            oidc=values["PARCOURS_OIDC_PORT"],
            smtp=values["PARCOURS_SMTP_PORT"],
        )


@dataclass
class RestartPolicy:
    """When to start again a child that died: after `first_delay`, then twice as long after each death in a
    row (at most `max_delay`); a child that dies `max_deaths` times within `window` seconds keeps dying, and
    is not restarted. Deaths older than the window are forgotten, so a child that ran well starts over."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    max_deaths: int = 5
    window: float = 120.0
    deaths: list[float] = field(default_factory=list)

    def after_death(self, now: float) -> float | None:
        """Record a death at `now` (monotonic seconds); the delay before the restart, or None: give up."""
        self.deaths = [t for t in self.deaths if now - t < self.window] + [now]
        if len(self.deaths) >= self.max_deaths:
            return None
        return float(min(self.first_delay * 2 ** (len(self.deaths) - 1), self.max_delay))


@dataclass
class Child:
    name: str
    module: str
    process: subprocess.Popen[bytes]
    log_file: Path
    # gRPC servers are ready when their health check says SERVING; the console when its port accepts.
    grpc_port: int | None = None
    http_port: int | None = None
    # Where this run's lines start in its log (each run appends).
    log_offset: int = 0
    # What it is started with again after a death, and when.
    env: Mapping[str, str] = field(default_factory=dict)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    restart_at: float | None = None
    restarts: int = 0


class _Signals:
    """SIGINT/SIGTERM become ShutdownRequested, except inside `deferred()` where they wait for its end.

    Deferring keeps a handle from being lost half-created (a server started but not yet recorded would
    outlive the stack). Signals are not blocked instead: a blocked mask is inherited by child processes.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferred = 0
        self._stopping = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def stopping(self) -> None:
        self._stopping = True

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        self.raise_if_requested()

    def raise_if_requested(self) -> None:
        if self.received is not None and not self._stopping and self._deferred == 0:
            raise ShutdownRequested(self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            logger.info("%s received: already stopping", signal.Signals(signum).name)
            return
        if self.received is None:
            self.received = signum
        self.raise_if_requested()


class Stack:
    def __init__(self, data_dir: Path, ports: Ports, signals: _Signals) -> None:
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.ports = ports
        self.signals = signals
        self.postgres: PostgresHandle | None = None
        self.temporal: TemporalHandle | None = None
        self.oidc: OidcProviderHandle | None = None
        self._console_secret = ""
        self.children: list[Child] = []
        self.pki: DevPki | None = None
        self.roles: DatabaseRoles | None = None
        self.demo_establishments: list[str] = []
        self.demo_gp_rpps: str | None = None
        # Who the demo reaches where (services/kit/notify.py's address book): written at each start.
        self.demo_addresses: dict[str, str] = {}

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphans()
        self._load_demo()
        pki = ensure_dev_pki(
            self.data_dir / "pki", components=DEFAULT_COMPONENTS, establishments=self.demo_establishments
        )
        self.pki = pki
        payload_keys = _ensure_payload_keys(pki.directory / "payload-keys")
        page_token_key = _ensure_secret(pki.directory / "page-token-key")
        audit_keys_file = pki.directory / "audit-keys"
        _ensure_secret(audit_keys_file, prefix="a1:")
        join_token_key = _ensure_secret(pki.directory / "join-token-key")
        address_book = self._write_address_book()

        logger.info("starting PostgreSQL on 127.0.0.1:%d", self.ports.postgres)
        with self.signals.deferred():
            self.postgres = postgres = start_postgres(
                self.data_dir / "postgres",
                port=self.ports.postgres,
                log_file=self.logs_dir / "postgres.log",
            )
        # Each process connects as its own role, with a password (services/kit/roles.py).
        self.roles = roles = provision_roles(postgres, pki.directory)
        logger.info("starting Temporal on 127.0.0.1:%d", self.ports.temporal)
        with self.signals.deferred():
            self.temporal = temporal = start_temporal(
                self.data_dir / "temporal",
                port=self.ports.temporal,
                ui_port=self.ports.temporal_ui,
                log_file=self.logs_dir / "temporal.log",
                ui_codec_endpoint=f"{self._console_url}/codec" if self._console_present else None,
            )
        console_secret = self._console_secret = _ensure_secret(pki.directory / "console-oidc-secret")
        if self._console_present:
            if not node_modules_ready():
                raise StackFailure(
                    "build/console has no node_modules: run `make console-assets` (make run does)"
                )
            logger.info("starting the development OpenID provider on 127.0.0.1:%d", self.ports.oidc)
            with self.signals.deferred():
                self.oidc = start_oidc_provider(
                    port=self.ports.oidc,
                    clients=[
                        RelyingParty(
                            CONSOLE_CLIENT_ID,
                            console_secret,
                            [f"{self._console_url}/connexion/retour"],
                            [f"{self._console_url}/connexion?au-revoir=1"],
                        )
                    ],
                    log_file=self.logs_dir / "oidc.log",
                )

        env = self._child_env(postgres, temporal, pki, payload_keys, page_token_key)
        env["PARCOURS_AUDIT_KEYS"] = audit_keys_file.read_text().strip()
        self._write_hub_settings(
            {
                **env,
                # The audit tools read the log as the auditor role, with the hub's keys and anchors.
                "PARCOURS_DATABASE_URL": roles.url(AUDITOR, with_password=True),
                "PARCOURS_AUDIT_KEYS_FILE": str(audit_keys_file),
            }
        )
        env.update(
            {
                # E-mail leaves the workers for the local sink (plain SMTP: it is on this machine only).
                "PARCOURS_SMTP_HOST": "127.0.0.1",
                "PARCOURS_SMTP_PORT": str(self.ports.smtp),
                "PARCOURS_SMTP_TLS": "none",
                "PARCOURS_MAIL_SINK_DIR": str(self.data_dir / "mail"),
                "PARCOURS_NOTIFY_ADDRESS_BOOK": str(address_book),
                "PARCOURS_JOIN_TOKEN_KEY": join_token_key,
            }
        )
        self._spawn(MAIL_SINK, "services.devstack.mailsink", env, pki)
        self._run_step("migrate", "services.kit.migrate", env)
        self._run_step("seed", "services.directory.seed", env)

        for name in (*GRPC_SERVICES, CONSOLE):
            if (REPO_ROOT / "services" / name / "__main__.py").exists():
                self._spawn(name, f"services.{name}", env, pki)
            else:
                logger.info("services/%s has no __main__.py yet: not started", name)
        workflows_dir = REPO_ROOT / "workflows"
        for package in sorted(p for p in workflows_dir.iterdir() if (p / "__main__.py").exists()):
            self._spawn(f"workflows-{package.name}", f"workflows.{package.name}", env, pki)
        self._wait_ready(pki)
        # Demo agendas go through the scheduling API (the service materialises the slots), so after readiness.
        if (REPO_ROOT / "services" / "scheduling" / "__main__.py").exists():
            self._run_step(
                "demo-agendas",
                "services.scheduling.demo",
                {**env, "PARCOURS_DEV_PKI_DIR": str(pki.directory)},
            )
        # Demo contracts cases go through the contracts API (their workflows open them), so after readiness.
        if (REPO_ROOT / "services" / "contracts" / "__main__.py").exists():
            self._run_step(
                "demo-contracts",
                "services.contracts.demo",
                {**env, "PARCOURS_DEV_PKI_DIR": str(pki.directory)},
            )

    @property
    def _console_present(self) -> bool:
        return (REPO_ROOT / "services" / CONSOLE / "__main__.py").exists()

    @property
    def _console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    def _load_demo(self) -> None:
        try:
            demo = importlib.import_module("services.directory.demo")
        except ModuleNotFoundError as exc:
            if exc.name != "services.directory.demo":
                raise
            logger.warning("services/directory/demo.py does not exist yet: no establishment certificates")
            return
        self.demo_establishments = [e.finess for e in demo.DEMO_ESTABLISHMENTS]
        practitioners: Sequence[Any] = demo.DEMO_PRACTITIONERS
        gps = [p for p in practitioners if p.specialty == "SPECIALTY_GENERAL_MEDICINE"]
        chosen = gps or list(practitioners)
        self.demo_gp_rpps = chosen[0].rpps if chosen else None
        # Demo mailboxes: practitioners at a made-up MSSanté domain, patients at a made-up one (the sink
        # keeps whatever is sent; nothing leaves this machine).
        for p in practitioners:
            name = unicodedata.normalize("NFKD", f"{p.given_name}.{p.family_name}").encode("ascii", "ignore")
            local = name.decode().lower().replace(" ", "-").replace("'", "")
            self.demo_addresses[f"practitioners/{p.rpps}"] = f"{local}@demo.mssante.parcours.invalid"
        for index, patient in enumerate(demo.DEMO_PATIENTS, start=1):
            self.demo_addresses[f"patients/{patient.patient_id}"] = f"patient-{index}@demo.parcours.invalid"

    def _write_address_book(self) -> Path:
        path = self.data_dir / "notify" / "address-book.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"emails": self.demo_addresses, "webhooks": {}}, indent=2) + "\n")
        return path

    def _child_env(
        self,
        postgres: PostgresHandle,
        temporal: TemporalHandle,
        pki: DevPki,
        payload_keys: str,
        page_token_key: str,
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PARCOURS_DATABASE_URL", "PGPASSWORD")}
        env.update(
            {
                "PARCOURS_TEMPORAL_ADDRESS": temporal.address,
                # Each service anchors its audit chain's head here (services/kit/anchors.py).
                "PARCOURS_AUDIT_ANCHOR_DIR": str(self.data_dir / "audit-anchors"),
                "PARCOURS_AUDIT_ANCHOR_INTERVAL_SECONDS": "10",
                "PARCOURS_TOKEN_JWKS_FILE": str(pki.jwks_file),
                "PARCOURS_PAYLOAD_KEYS": payload_keys,
                "PARCOURS_PAGE_TOKEN_KEY": page_token_key,
                "PARCOURS_GRPC_HOST": "127.0.0.1",
                # The `cli` identity for the one-shot steps (migrate, seed); servers get their own below.
                "PARCOURS_TLS_CERT_FILE": str(pki.cert_file("cli")),
                "PARCOURS_TLS_KEY_FILE": str(pki.key_file("cli")),
                "PARCOURS_TLS_CA_FILE": str(pki.ca_file),
                # Logs reach the files as they are written, not when a buffer fills.
                "PYTHONUNBUFFERED": "1",
                # The allocator's settings of the image (services/kit/server.py).
                **ALLOCATOR_ENVIRONMENT,
            }
        )
        for service, port in self.ports.grpc.items():
            env[f"PARCOURS_{service.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        return env

    def _write_hub_settings(self, env: Mapping[str, str]) -> None:
        """`.data/hub.json`: where the running hub is, for the command-line tools used next to it
        (`python -m services.kit.audit verify` reads its database URL from there)."""
        settings = {
            "database_url": env["PARCOURS_DATABASE_URL"],
            "temporal_address": env["PARCOURS_TEMPORAL_ADDRESS"],
            "pki_dir": str(self.data_dir / "pki"),
            **{f"{s}_address": env[f"PARCOURS_{s.upper()}_ADDRESS"] for s in self.ports.grpc},
            "audit_keys_file": env.get("PARCOURS_AUDIT_KEYS_FILE"),
            "audit_anchor_dir": env.get("PARCOURS_AUDIT_ANCHOR_DIR"),
        }
        # It may hold the auditor role's password: readable by this user only.
        path = self.data_dir / HUB_SETTINGS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(settings, indent=2) + "\n")
        path.chmod(0o600)

    def _database_env(self, name: str) -> dict[str, str]:
        """The database settings of a step or child: its own role's (nothing for one without)."""
        if self.roles is None:
            return {}
        steps = {"migrate": OWNER, "seed": service_role("directory")}
        role = steps.get(name)
        if role is None:
            try:
                role = component_role(name)
            except ValueError:
                return {}
        return self.roles.env(role)

    def _run_step(self, name: str, module: str, env: Mapping[str, str]) -> None:
        if importlib.util.find_spec(module) is None:
            logger.warning("%s does not exist yet: step %s skipped", module, name)
            return
        log_file = self.logs_dir / f"{name}.log"
        log_offset = log_size(log_file)
        logger.info("running %s (log %s)", module, _display(log_file))
        with log_file.open("ab") as log:
            result = subprocess.run(
                [sys.executable, "-m", module],
                env={**env, **self._database_env(name), "PARCOURS_COMPONENT": name},
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT_SECONDS,
                check=False,
            )
        if result.returncode != 0:
            raise StackFailure(
                f"{module} failed with exit code {result.returncode}:\n"
                f"--- {_display(log_file)} ---\n{log_tail(log_file, since=log_offset)}"
            )

    def _spawn(self, name: str, module: str, env: Mapping[str, str], pki: DevPki) -> None:
        # Workers have no certificate of their own: they share the `workflows` one (CN parcours-workflows).
        cert_name = "workflows" if name.startswith("workflows-") else name
        child_env = {
            **env,
            **self._database_env(name),
            "PARCOURS_COMPONENT": name,
            "PARCOURS_TLS_CERT_FILE": str(pki.cert_file(cert_name)),
            "PARCOURS_TLS_KEY_FILE": str(pki.key_file(cert_name)),
            "PARCOURS_TLS_CA_FILE": str(pki.ca_file),
        }
        child_env.update(self._component_env(name, pki))
        grpc_port: int | None = None
        http_port: int | None = None
        if name in self.ports.grpc:
            grpc_port = self.ports.grpc[name]
            child_env["PARCOURS_GRPC_PORT"] = str(grpc_port)
        elif name == MAIL_SINK:
            # Ready once it accepts connections (probed like the console's port).
            http_port = self.ports.smtp
        elif name == CONSOLE:
            http_port = self.ports.console
            assert self.oidc is not None
            assert self.temporal is not None
            child_env.update(
                {
                    "PARCOURS_HTTP_HOST": "127.0.0.1",
                    "PARCOURS_CONSOLE_HTTP_PORT": str(http_port),
                    "PARCOURS_CONSOLE_PUBLIC_URL": self._console_url,
                    "PARCOURS_OIDC_ISSUER": self.oidc.issuer,
                    "PARCOURS_OIDC_CLIENT_ID": CONSOLE_CLIENT_ID,
                    "PARCOURS_OIDC_CLIENT_SECRET": self._console_secret,
                    # Plain HTTP on loopback: a Secure cookie would never come back.
                    "PARCOURS_COOKIE_SECURE": "false",
                    "PARCOURS_CONSOLE_TOKEN_SIGNING_KEY_FILE": str(pki.signing_key_file),
                    "PARCOURS_TEMPORAL_UI_URL": self.temporal.ui_url or "",
                }
            )
        log_file = self.logs_dir / f"{name}.log"
        with self.signals.deferred():
            process, log_offset = _start_child(module, child_env, log_file)
            self.children.append(
                Child(name, module, process, log_file, grpc_port, http_port, log_offset, env=child_env)
            )
            self._record_children()
        logger.info("started %s (pid %d, log %s)", name, process.pid, _display(log_file))

    @staticmethod
    def _component_env(name: str, pki: DevPki) -> dict[str, str]:
        """Settings only some components take: the decision-signing identity (a development certificate under
        the hub's CA) for the contracts worker, and its trust roots for the contracts service."""
        if name == "workflows-contracts":
            from services.contracts.decisions import ensure_dev_signing_identity

            certificate, key = ensure_dev_signing_identity(pki.directory)
            return {
                "PARCOURS_DECISION_SIGNING_CERT_FILE": str(certificate),
                "PARCOURS_DECISION_SIGNING_KEY_FILE": str(key),
            }
        if name == "contracts":
            return {
                "PARCOURS_DECISION_TRUST_ROOTS_FILE": str(pki.ca_file),
                # The demo shows an overdue step at once: a promoter's missing documents are due within a
                # minute (`make run` only; every other step keeps its real due time).
                "PARCOURS_STEP_DUE_DAYS": os.environ.get("PARCOURS_STEP_DUE_DAYS", '{"DOCUMENTS": 0.0007}'),
            }
        return {}

    def _wait_ready(self, pki: DevPki) -> None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_file.read_bytes(),
            private_key=pki.key_file("cli").read_bytes(),
            certificate_chain=pki.cert_file("cli").read_bytes(),
        )
        pending = [c for c in self.children if c.grpc_port is not None or c.http_port is not None]
        channels = {
            c.name: grpc.secure_channel(f"127.0.0.1:{c.grpc_port}", credentials, options=_FAST_RECONNECT)
            for c in pending
            if c.grpc_port is not None
        }
        last_answer: dict[str, str] = {}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        try:
            while pending:
                for child in list(pending):
                    self._check_alive(child, "before it was ready")
                    channel = channels.get(child.name)
                    if channel is not None:
                        ready, last_answer[child.name] = _serving(channel)
                    else:
                        ready = _accepts(child.http_port)
                    if ready:
                        logger.info("%s is ready", child.name)
                        pending.remove(child)
                if pending and time.monotonic() > deadline:
                    details = "\n".join(
                        f"--- {c.name}: last health answer {last_answer.get(c.name, 'none')}; "
                        f"{_display(c.log_file)} ---\n{log_tail(c.log_file, since=c.log_offset)}"
                        for c in pending
                    )
                    raise StackFailure(
                        f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: "
                        f"{', '.join(c.name for c in pending)}\n{details}"
                    )
                if pending:
                    time.sleep(0.2)
        finally:
            for channel in channels.values():
                channel.close()
        # Workers have nothing to probe; one that fails at import has exited by now.
        for child in self.children:
            self._check_alive(child, "during start")

    def _check_alive(self, child: Child, when: str) -> None:
        code = child.process.poll()
        if code is not None:
            how = _exit_description(code)
            raise StackFailure(
                f"{child.name} {how} {when}:\n--- {_display(child.log_file)} ---\n"
                f"{log_tail(child.log_file, since=child.log_offset)}"
            )

    # -- run --------------------------------------------------------------------------------------------
    def watch(self) -> None:
        """Return never: restart the children that die; raise StackFailure when one keeps dying, or when
        PostgreSQL or Temporal dies (signals raise ShutdownRequested)."""
        while True:
            for child in self.children:
                self._supervise(child)
            if self.temporal is not None and not self.temporal.is_running():
                raise StackFailure(
                    f"Temporal exited unexpectedly:\n--- {_display(self.temporal.log_file)} ---\n"
                    f"{log_tail(self.temporal.log_file, since=self.temporal.log_offset)}"
                )
            if self.postgres is not None and not self.postgres.is_running():
                raise StackFailure(
                    f"PostgreSQL exited unexpectedly:\n--- {_display(self.postgres.log_file)} ---\n"
                    f"{log_tail(self.postgres.log_file)}"
                )
            time.sleep(0.5)

    def _supervise(self, child: Child) -> None:
        """Restart `child` when its delay has passed; notice its death and schedule its restart."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._restart(child)
            return
        code = child.process.poll()
        if code is None:
            return
        how = _exit_description(code)
        delay = child.policy.after_death(now)
        tail = f"--- {_display(child.log_file)} ---\n{log_tail(child.log_file, since=child.log_offset)}"
        if delay is None:
            raise StackFailure(
                f"{child.name} keeps dying ({len(child.policy.deaths)} times within "
                f"{child.policy.window:.0f} s; it {how} last): stopping the stack\n{tail}"
            )
        logger.warning(
            "%s %s; restarting it in %.0f s (restart %d; log %s)",
            child.name,
            how,
            delay,
            child.restarts + 1,
            _display(child.log_file),
        )
        child.restart_at = now + delay

    def _restart(self, child: Child) -> None:
        with self.signals.deferred():
            child.process, child.log_offset = _start_child(child.module, child.env, child.log_file)
            child.restart_at = None
            child.restarts += 1
            self._record_children()
        logger.info("restarted %s (pid %d)", child.name, child.process.pid)

    # -- stop -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        for child in reversed(self.children):
            _stop_process_group(child)
        self.children.clear()
        self._record_children()
        if self.oidc is not None:
            self.oidc.stop()
            self.oidc = None
        if self.temporal is not None:
            self.temporal.stop()
            self.temporal = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def _record_children(self) -> None:
        # So that a run killed with SIGKILL (children survive it) is cleaned up by the next one.
        record = {c.name: {"pid": c.process.pid, "module": c.module} for c in self.children}
        (self.data_dir / "children.json").write_text(json.dumps(record) + "\n")

    def _stop_orphans(self) -> None:
        try:
            record = json.loads((self.data_dir / "children.json").read_text())
        except (FileNotFoundError, ValueError):
            return
        for name, entry in record.items():
            try:
                process = psutil.Process(int(entry["pid"]))
                if entry["module"] not in process.cmdline():
                    continue  # the PID now belongs to something else
                logger.warning("stopping %s (pid %d) left running by a previous run", name, process.pid)
                process.terminate()
                process.wait(CHILD_STOP_TIMEOUT_SECONDS)
            except psutil.TimeoutExpired:
                process.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError, TypeError):
                continue

    # -- summary ----------------------------------------------------------------------------------------
    def summary(self, elapsed: float) -> str:
        if self.postgres is None or self.temporal is None or self.pki is None:
            raise RuntimeError("summary() before start()")
        pki_dir = _display(self.pki.directory)
        python = _display(Path(sys.executable))
        grpcurl_path = Path(sys.executable).parent / "grpcurl"
        grpcurl = _display(grpcurl_path) if grpcurl_path.exists() else "grpcurl"
        lines = [
            "",
            f"Parcours is running (ready in {elapsed:.1f} s). Ctrl-C stops everything.",
            "",
            f"  PostgreSQL     {self.postgres.display_url} (each component as its own role)",
            f"  Temporal       {self.temporal.address}   Web UI {self.temporal.ui_url}",
        ]
        for child in self.children:
            if child.grpc_port is not None:
                where = f"127.0.0.1:{child.grpc_port} (gRPC, mTLS)"
            elif child.name == MAIL_SINK:
                kept = _display(self.data_dir / "mail")
                where = f"127.0.0.1:{child.http_port} (SMTP sink, messages in {kept}/)"
            elif child.http_port is not None:
                where = f"http://127.0.0.1:{child.http_port}"
            else:
                where = "Temporal worker"
            lines.append(f"  {child.name:<14} {where}")
        missing = [s for s in (*GRPC_SERVICES, CONSOLE) if s not in {c.name for c in self.children}]
        if missing:
            lines.append(f"  (not in the tree yet: {', '.join(missing)})")
        if self.oidc is not None:
            lines.append(f"  OpenID (dev)   {self.oidc.issuer}")
        lines += [f"  Logs           {_display(self.logs_dir)}/", f"  PKI            {pki_dir}/", ""]
        console = next((c for c in self.children if c.name == CONSOLE), None)
        if console is not None and self.oidc is not None:
            lines += [
                f"The ARS console: open http://127.0.0.1:{console.http_port}/ and sign in at the development",
                f"provider with one of these accounts (password: {DEMO_PASSWORD}):",
                *[f"  {a.login:<10} {a.label}" for a in DEMO_ACCOUNTS],
                f"The Temporal Web UI ({self.temporal.ui_url}) decodes a case's payloads once it was opened",
                "from the console (« Voir l'historique technique dans Temporal »); in the UI's Data Encoder",
                "settings, tick « Include cross-origin credentials ».",
                "",
            ]

        directory_port = self.ports.grpc["directory"]
        if any(c.name == "directory" for c in self.children):
            cli_tls = f"-cacert {pki_dir}/ca.pem -cert {pki_dir}/cli.pem -key {pki_dir}/cli-key.pem"
            lines += [
                "Try it:",
                f"  {grpcurl} {cli_tls} 127.0.0.1:{directory_port} grpc.health.v1.Health/Check",
            ]
            if self.demo_establishments and self.demo_gp_rpps:
                finess = self.demo_establishments[0]
                establishment_tls = (
                    f"-cacert {pki_dir}/ca.pem -cert {pki_dir}/establishment-{finess}.pem "
                    f"-key {pki_dir}/establishment-{finess}-key.pem"
                )
                token = (
                    f'-H "authorization: Bearer $({python} -m services.devstack.tokens mint '
                    f'--pki-dir {pki_dir} --rpps {self.demo_gp_rpps})"'
                )
                lines += [
                    f"  {grpcurl} {establishment_tls} {token} 127.0.0.1:{directory_port} list",
                    f"  {grpcurl} {establishment_tls} {token} -d '{{\"page_size\": 5}}' "
                    f"127.0.0.1:{directory_port} parcours.directory.v1.DirectoryService/ListEstablishments",
                    f"  {python} -m services.devstack.tokens demo    # practitioners and their certificates",
                    f"  {python} -m services.kit.audit verify        # the audit chains of this hub",
                ]
            if any(c.name == "contracts" for c in self.children):
                officer = (
                    f'-H "authorization: Bearer $({python} -m services.devstack.tokens mint '
                    f'--pki-dir {pki_dir} --staff claire.ars84 --role ars_officer --region 84)"'
                )
                contracts_port = self.ports.grpc["contracts"]
                lines.append(  # the demo contracts cases an ARS officer of region 84 has to process
                    f'  {grpcurl} {cli_tls} {officer} -d \'{{"tab": "TAB_TO_PROCESS"}}\' '
                    f"127.0.0.1:{contracts_port} parcours.contracts.v1.ContractService/ListCases"
                )
            lines.append("")
        return "\n".join(lines)


def _start_child(module: str, env: Mapping[str, str], log_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m module`, its output appended to `log_file`; the process and where its lines start."""
    log_offset = log_size(log_file)
    with log_file.open("ab") as log:
        # Own session: the terminal's Ctrl-C reaches this orchestrator only, which then stops the children one
        # by one in reverse order.
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=dict(env),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log_offset


def _exit_description(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def _serving(channel: grpc.Channel) -> tuple[bool, str]:
    """Whether the server's overall health is SERVING, and if not, why (shown if it never becomes so)."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1.0
        )
    except grpc.RpcError as exc:
        return False, f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else str(exc)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def _accepts(port: int | None) -> bool:
    assert port is not None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _stop_process_group(child: Child) -> None:
    if child.process.poll() is not None:
        return
    logger.info("stopping %s", child.name)
    # The whole group: a server may have children of its own.
    _signal_group(child.process.pid, signal.SIGTERM)
    try:
        child.process.wait(CHILD_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s: killing it", child.name, CHILD_STOP_TIMEOUT_SECONDS)
        _signal_group(child.process.pid, signal.SIGKILL)
        child.process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _ensure_secret(path: Path, prefix: str = "") -> str:
    """A random 32-byte base64url secret of the dev stack, created once and kept (file mode 0600)."""
    if not path.exists():
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{prefix}{key}\n")
    return path.read_text().strip()


def _ensure_payload_keys(path: Path) -> str:
    """The payload encryption keyring of the dev stack: one key, created once (histories stay readable)."""
    return _ensure_secret(path, prefix="k1:")


def _display(path: Path) -> str:
    """A path relative to the current folder when it is inside it (shorter lines to paste)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    lock_file = data_dir / "devstack.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackFailure(f"another `make run` is already using {data_dir}") from None
        yield
    finally:
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devstack", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    started = time.monotonic()
    data_dir = Path(os.environ.get("PARCOURS_DATA_DIR") or REPO_ROOT / ".data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    signals = _Signals()
    signals.install()
    try:
        with _exclusive(data_dir):
            stack = Stack(data_dir, Ports.from_env(os.environ), signals)
            try:
                stack.start()
                print(stack.summary(time.monotonic() - started), flush=True)
                stack.watch()
            except ShutdownRequested as request:
                signals.stopping()
                logger.info("%s received: stopping", request)
            except _FAILURES as failure:
                signals.stopping()
                # Said first, before the shutdown's own lines bury it.
                logger.error("%s", failure)
                return 1
            finally:
                signals.stopping()
                logger.info("stopping the stack")
                stack.stop()
    except ShutdownRequested:
        pass  # arrived in the instant before the shutdown began; it has run
    except _FAILURES as failure:
        logger.error("%s", failure)
        return 1
    logger.info("stopped")
    return 0


# Failures whose message already says what failed (with the end of its log): no traceback needed.
_FAILURES = (StackFailure, RuntimeError, TimeoutError, OSError, subprocess.SubprocessError)


if __name__ == "__main__":
    raise SystemExit(main())
