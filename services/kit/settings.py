"""Typed settings read once from environment variables.

Every component's settings class derives from `KitSettings`. A missing or malformed required value stops the
process at start with the variable's name (`load_settings`), never later at first use.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.kit.auth import DEFAULT_HUB_COMPONENTS

ENV_PREFIX = "PARCOURS_"
COMPONENT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class KitSettings(BaseSettings):
    """Settings every Parcours server shares."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    # The component's name: service name in spans, audit chain, logs and its client certificate's CN.
    component: str = "parcours"
    # PostgreSQL URI (postgresql://user@host:port/db).
    database_url: str
    db_pool_min_size: int = Field(default=2, ge=1)
    db_pool_max_size: int = Field(default=10, ge=1)
    # The gRPC listen host; the port is the component's own setting.
    grpc_host: str = "[::]"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    # Optional plaintext listener serving only grpc.health.v1 (kubelet's native gRPC probes speak no TLS).
    health_port: int | None = Field(default=None, ge=0, le=65535)

    # Mutual TLS. The server certificate also serves as this component's client identity towards other
    # services (it carries both serverAuth and clientAuth usages and CN=parcours-<component>).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    # Development only: plaintext gRPC, and calls without a token act as a development principal. Off by
    # default; never set in production (the Helm chart has no value for it).
    insecure_dev_mode: bool = False

    # Bearer tokens shaped like Pro Santé Connect access tokens.
    token_issuer: str = "https://auth.parcours.invalid/realms/dev"  # noqa: S105 (an issuer URL, not a secret)
    token_audience: str = "parcours-hub"  # noqa: S105
    # A JWKS file with the public keys tokens are verified against (kid → key).
    token_jwks_file: Path | None = None
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # The component identities (CN `parcours-<name>`) that act as the hub without a token, comma-separated
    # (services/kit/auth.py). Any other component certificate without a token is refused (TOKEN_MISSING).
    hub_components: Annotated[frozenset[str], NoDecode] = DEFAULT_HUB_COMPONENTS
    # HMAC key of the page tokens (base64url, at least 32 bytes), the same for every replica of a service so
    # a client pages through any of them (services/kit/pagination.py). Required of every gRPC server (checked
    # when it is built); development mode makes one up.
    page_token_key: SecretStr | None = None

    # The audit chains' HMAC keys (`key_id:base64url,...`, each at least 32 bytes): the first signs new rows
    # and anchors, every one verifies, so keys rotate (services/kit/audit.py). Required of every gRPC server
    # (checked when it is built); development mode makes one up.
    audit_keys: SecretStr | None = None
    # Where this process anchors its audit chain's head (a folder outside PostgreSQL, see
    # services/kit/anchors.py), and how often (seconds) when the head moved. Without a folder nothing is
    # anchored, and rows cut from the end of a chain would go unnoticed.
    audit_anchor_dir: Path | None = None
    audit_anchor_interval_seconds: float = Field(default=60.0, gt=0)

    # How long applied request ids (and the responses kept with them) stay in a service's idempotency ledger:
    # well past any client's retry horizon, not forever (services/kit/idempotency.py).
    idempotency_retention: timedelta = Field(default=timedelta(days=30), gt=timedelta(0))

    # Seconds in-flight RPCs get to finish after SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    @field_validator("hub_components", mode="before")
    @classmethod
    def _component_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        if isinstance(value, list | tuple | set | frozenset):
            for name in value:
                if not isinstance(name, str) or not COMPONENT_NAME_RE.match(name):
                    raise ValueError(f"not a component name (parcours-<name>): {name!r}")
        return value

    @model_validator(mode="after")
    def _security_material(self) -> KitSettings:
        if not self.insecure_dev_mode:
            missing = [
                ENV_PREFIX + name.upper()
                for name in ("tls_cert_file", "tls_key_file", "tls_ca_file", "token_jwks_file")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"required unless PARCOURS_INSECURE_DEV_MODE=true: {', '.join(missing)}")
        if self.page_token_key is not None:
            page_token_key_bytes(self.page_token_key)
        if self.audit_keys is not None:
            from services.kit.audit import AuditKeys

            try:
                AuditKeys.parse(self.audit_keys.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"PARCOURS_AUDIT_KEYS: {exc}") from None
        return self


def page_token_key_bytes(value: SecretStr) -> bytes:
    """The raw bytes of a base64url page-token key; ValueError (without the key) when malformed."""
    import base64
    import binascii

    text = value.get_secret_value().strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("PARCOURS_PAGE_TOKEN_KEY must be base64url") from None
    if len(key) < 32:
        raise ValueError("PARCOURS_PAGE_TOKEN_KEY must hold at least 32 bytes")
    return key


class TemporalSettings(BaseSettings):
    """Settings of components that talk to Temporal."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    # Payload encryption keyring: comma-separated `key_id:base64url(32 bytes)`; the first key encrypts,
    # every key decrypts, so keys can rotate.
    payload_keys: str


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment; exit with the offending variable names when one is wrong."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = ENV_PREFIX + loc.upper()
            if not loc:
                lines.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "missing":
                lines.append(f"missing required setting {name}")
            else:
                lines.append(f"invalid setting {name}: {err['msg']}")
        sys.stderr.write("parcours: cannot start:\n  " + "\n  ".join(lines) + "\n")
        raise SystemExit(2) from None
