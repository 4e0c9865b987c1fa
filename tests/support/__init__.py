"""Helpers the tests share (constants, channels, tokens); fixtures live in conftest.py."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from services.kit.audit import AuditKeys
from services.kit.pki import DevPki
from services.kit.roles import LOGIN_ROLES, component_role, with_credentials
from services.kit.settings import KitSettings

COMPONENTS = ("directory", "scheduling", "expertise", "billing", "contracts", "console", "workflows", "cli")
# Establishments the tests act as: one per demo GHT, the overseas one (no GHT) and a stranger unknown to the
# directory (a well-formed Corsican FINESS).
LOIRE, DAUPHINE, VAL_RHONE = "420000017", "380000024", "690000019"
REUNION, STRANGER = "974000013", "2A0000031"
TEST_ESTABLISHMENTS = (LOIRE, DAUPHINE, VAL_RHONE, REUNION, STRANGER)
ISSUER = KitSettings.model_fields["token_issuer"].default
# The payload keyring every test component shares: a fixed, test-only key (it guards synthetic data), so the
# golden histories recorded under tests/replay/histories/ decode in every later run.
PAYLOAD_KEYS = "k1:" + base64.urlsafe_b64encode(b"parcours test-only payload key!!").decode().rstrip("=")
# The page-token key every test server shares (as a service's replicas do).
PAGE_TOKEN_KEY = "cGFyY291cnMtdGVzdHMtcGFnZS10b2tlbi1rZXktMzJieXRlcyE"
AUDIENCE = KitSettings.model_fields["token_audience"].default
# The audit chains' keyring every test component shares (one key, random per run).
AUDIT_KEYS = AuditKeys.generate("t1")
# The password of each database role (services/kit/roles.py), random per run: the suite's PostgreSQL trusts
# no connection, and each service connects as its own role.
DB_PASSWORDS = {role: secrets.token_urlsafe(18) for role in LOGIN_ROLES}


def role_url(database_url: str, role: str) -> str:
    """The same database, connecting as one of the hub's roles."""
    return with_credentials(database_url, role, DB_PASSWORDS[role])


def as_component(database_url: str, component: str) -> str:
    """The database URL a component connects with: its own role's (the URL unchanged for a component
    without one, e.g. the `cli` identity)."""
    try:
        role = component_role(component)
    except ValueError:
        return database_url
    return role_url(database_url, role)


def database_of(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


def kit_settings(pki: DevPki, database_url: str, component: str, **overrides: object) -> dict[str, object]:
    """Keyword arguments for a component's settings: real mTLS material, a free port, the component's own
    database role."""
    values: dict[str, object] = {
        "component": component,
        "database_url": as_component(database_url, component),
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "tls_cert_file": pki.cert_file(component),
        "tls_key_file": pki.key_file(component),
        "tls_ca_file": pki.ca_file,
        "token_jwks_file": pki.jwks_file,
        "page_token_key": PAGE_TOKEN_KEY,
        "audit_keys": AUDIT_KEYS,
        "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return values


def establishment_channel(pki: DevPki, address: str, finess: str) -> grpc.aio.Channel:
    """A channel presenting an establishment's client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=pki.establishment_key_file(finess).read_bytes(),
        certificate_chain=pki.establishment_cert_file(finess).read_bytes(),
    )
    return grpc.aio.secure_channel(address, credentials)


def component_channel(pki: DevPki, address: str, component: str) -> grpc.aio.Channel:
    """A channel presenting a Parcours component's certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=pki.key_file(component).read_bytes(),
        certificate_chain=pki.cert_file(component).read_bytes(),
    )
    return grpc.aio.secure_channel(address, credentials)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def request_id() -> str:
    return str(uuid.uuid4())


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def process_env(pki: DevPki, certificate: str, **settings: object) -> dict[str, str]:
    """The environment of a Parcours process the test starts: this machine's environment without any
    PARCOURS_* variable, the mTLS material of the component `certificate`, the token keys, and `settings`
    as PARCOURS_<NAME>."""

    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        {
            "PARCOURS_GRPC_HOST": "127.0.0.1",
            "PARCOURS_TLS_CERT_FILE": str(pki.cert_file(certificate)),
            "PARCOURS_TLS_KEY_FILE": str(pki.key_file(certificate)),
            "PARCOURS_TLS_CA_FILE": str(pki.ca_file),
            "PARCOURS_TOKEN_JWKS_FILE": str(pki.jwks_file),
            "PARCOURS_PAGE_TOKEN_KEY": PAGE_TOKEN_KEY,
            "PARCOURS_AUDIT_KEYS": AUDIT_KEYS,
        }
    )
    env.update({f"PARCOURS_{name.upper()}": str(value) for name, value in settings.items()})
    return env
