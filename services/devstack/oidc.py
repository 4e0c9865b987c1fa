"""The development OpenID provider (npm `oidc-provider`, a certified implementation) with the demo accounts.

`make run` and the console's tests start it as a child process; in production the console is a relying party
of the ARS's own provider (Keycloak, AD FS...) and nothing here runs. Its Node modules are installed into
build/console by `make` (services/console/package.json); the script is copied next to them so that Node finds
them. Keys and sessions live in memory: a restart signs everyone out of the provider (not of the console).

The accounts carry the claims the console reads (`parcours_roles`, `parcours_region`, `parcours_territory`,
the names); every password is `DEMO_PASSWORD`.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from services.devstack import log_size, log_tail

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where `make` installs the console's Node modules (oidc-provider among them).
NODE_MODULES_PARENT = REPO_ROOT / "build" / "console"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
DEMO_PASSWORD = "parcours"  # noqa: S105 (the demo accounts' published development password)
CONSOLE_CLIENT_ID = "parcours-console"


@dataclass(frozen=True)
class DemoAccount:
    login: str
    label: str
    given_name: str
    family_name: str
    roles: tuple[str, ...]
    region: str | None = None
    territory: str | None = None

    def claims(self) -> dict[str, object]:
        claims: dict[str, object] = {
            "name": f"{self.given_name} {self.family_name}",
            "given_name": self.given_name,
            "family_name": self.family_name,
            "preferred_username": self.login,
            "email": f"{self.login}@ars.parcours.invalid",
            "parcours_roles": list(self.roles),
        }
        if self.region:
            claims["parcours_region"] = self.region
        if self.territory:
            claims["parcours_territory"] = self.territory
        return claims


# Region 84 (Auvergne-Rhône-Alpes) holds the demo GHTs; 93 (Provence-Alpes-Côte d'Azur) sees none of them.
DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(
        "agent84", "instructrice, ARS Auvergne-Rhône-Alpes (84)", "Camille", "Roche", ("ars_officer",), "84"
    ),
    DemoAccount(
        "agent93",
        "instructeur, ARS Provence-Alpes-Côte d'Azur (93)",
        "Karim",
        "Benali",
        ("ars_officer",),
        "93",
    ),
    DemoAccount(
        "cheffe84",
        "cheffe de service, ARS Auvergne-Rhône-Alpes (84)",
        "Hélène",
        "Marchand",
        ("ars_officer", "ars_supervisor"),
        "84",
    ),
    DemoAccount(
        "ordre42",
        "rapporteur, conseil départemental de l'Ordre de la Loire (42)",
        "Paul",
        "Vidal",
        ("ordre_reviewer",),
        territory="42",
    ),
    DemoAccount(
        "dg84",
        "directrice générale, ARS Auvergne-Rhône-Alpes (84)",
        "Anne",
        "Lefort",
        ("ars_signatory",),
        "84",
    ),
)


@dataclass
class OidcProviderHandle:
    """A running development provider. `stop()` (or leaving the `with` block) shuts it down."""

    process: subprocess.Popen[bytes]
    issuer: str
    log_file: Path
    log_offset: int = 0
    _workdir: Path | None = field(default=None, repr=False)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> OidcProviderHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class RelyingParty:
    """A client registered at the provider (the console)."""

    client_id: str
    client_secret: str
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()


def node_modules_ready(parent: Path = NODE_MODULES_PARENT) -> bool:
    return (parent / "node_modules" / "oidc-provider" / "package.json").exists()


def start_oidc_provider(
    *,
    port: int,
    clients: Sequence[RelyingParty],
    log_file: Path,
    host: str = "127.0.0.1",
    accounts: Sequence[DemoAccount] = DEMO_ACCOUNTS,
    modules_parent: Path = NODE_MODULES_PARENT,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> OidcProviderHandle:
    """Start the provider on host:port; returns once its discovery document answers."""
    if not node_modules_ready(modules_parent):
        raise FileNotFoundError(
            f"{modules_parent}/node_modules has no oidc-provider: run `make console-assets` (make run and "
            "make test do it)"
        )
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("no `node` on PATH: the development OpenID provider needs Node.js 20")
    issuer = f"http://{host}:{port}"
    # The script must sit beside the node_modules folder for Node to resolve `oidc-provider` from it.
    script = modules_parent / SCRIPT.name
    if not script.exists() or script.read_bytes() != SCRIPT.read_bytes():
        tmp = script.with_name(f".{script.name}.tmp")
        tmp.write_bytes(SCRIPT.read_bytes())
        tmp.replace(script)
    workdir = Path(tempfile.mkdtemp(prefix="parcours-oidc-"))
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(_config(issuer, host, port, clients, accounts)))
    config_file.chmod(0o600)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    offset = log_size(log_file)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [node, str(script), str(config_file)],
            cwd=modules_parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = OidcProviderHandle(process, issuer, log_file, offset, workdir)
    try:
        _wait_ready(handle, ready_timeout)
    except BaseException:
        handle.stop()
        raise
    logger.info("development OpenID provider at %s", issuer)
    return handle


def _config(
    issuer: str, host: str, port: int, clients: Sequence[RelyingParty], accounts: Sequence[DemoAccount]
) -> Mapping[str, object]:
    return {
        "issuer": issuer,
        "host": host,
        "port": port,
        "password_hint": DEMO_PASSWORD,
        "clients": [
            {
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": list(c.redirect_uris),
                "post_logout_redirect_uris": list(c.post_logout_redirect_uris),
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
            for c in clients
        ],
        "accounts": {
            a.login: {"password": DEMO_PASSWORD, "label": a.label, "claims": a.claims()} for a in accounts
        },
    }


def _wait_ready(handle: OidcProviderHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"{handle.issuer}/.well-known/openid-configuration"
    while True:
        if handle.process.poll() is not None:
            raise RuntimeError(
                f"the OpenID provider exited with code {handle.process.returncode} before it was ready:\n"
                f"--- {handle.log_file} ---\n{log_tail(handle.log_file, since=handle.log_offset)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (our own http URL)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the OpenID provider did not answer at {url} after {timeout:.0f} s:\n"
                f"--- {handle.log_file} ---\n{log_tail(handle.log_file, since=handle.log_offset)}"
            )
        time.sleep(0.05)
