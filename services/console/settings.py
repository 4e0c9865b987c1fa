"""The console's settings: where it listens, its OpenID provider, the services it calls, its sessions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator

from services.kit.notify import NotifySettings
from services.kit.settings import KitSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConsoleSettings(KitSettings, NotifySettings):
    """`PARCOURS_*` variables of the console (see the README's console section); the SMTP relay's are the
    workers' (`PARCOURS_SMTP_*`, services/kit/notify.py), for the officers' e-mail notifications."""

    component: str = "console"

    # HTTP listener (the console speaks plain HTTP behind the TLS-terminating Ingress, or on loopback).
    http_host: str = "127.0.0.1"
    console_http_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        validation_alias=AliasChoices(
            "PARCOURS_CONSOLE_HTTP_PORT", "PARCOURS_HTTP_PORT", "console_http_port"
        ),
    )
    # The console's external address, as the browser sees it (the OIDC redirect URI is built from it).
    console_public_url: str = "http://127.0.0.1:8080"

    # OpenID Connect: any provider, by its issuer URL (discovery at
    # {issuer}/.well-known/openid-configuration).
    oidc_issuer: str
    oidc_client_id: str
    oidc_client_secret: SecretStr
    oidc_scopes: str = "openid profile email parcours"
    # Where the provider puts the hub roles, the region and the Ordre territory (mapped claims in Keycloak).
    oidc_roles_claim: str = "parcours_roles"
    oidc_region_claim: str = "parcours_region"
    oidc_territory_claim: str = "parcours_territory"

    # Sessions (server-side, in the console schema): signed out after this long without a request, and in
    # any case after the absolute lifetime.
    session_idle_timeout: timedelta = Field(default=timedelta(minutes=30), gt=timedelta(0))
    session_max_age: timedelta = Field(default=timedelta(hours=10), gt=timedelta(0))
    # `Secure` cookies: on everywhere but a plain-HTTP development machine.
    cookie_secure: bool = True

    # The officer's delegate tokens: signed with the hub's token key (its public half is in the services'
    # JWKS), valid this long, re-minted before they expire. The key as a PEM file, or (from a Secret) its PEM.
    console_token_signing_key_file: Path | None = None
    console_token_signing_key: SecretStr | None = None
    delegate_token_ttl: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))

    # The gRPC services (`host:port`); a service left empty is shown as unavailable, never guessed.
    contracts_address: str = ""
    directory_address: str = ""
    billing_address: str = ""
    expertise_address: str = ""
    scheduling_address: str = ""
    rpc_timeout_seconds: float = Field(default=10.0, gt=0)

    # The Temporal Web UI (links from a case, and the only origin its codec endpoint answers) and the
    # keyring the codec decrypts with; without payload keys the codec endpoint is off.
    temporal_ui_url: str = ""
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    payload_keys: SecretStr | None = None
    # How long opening a case in the Temporal UI from the console lets its payloads be decoded.
    codec_grant_ttl: timedelta = Field(default=timedelta(minutes=30), gt=timedelta(0))

    # Built assets (DSFR, Chart.js), installed by `make console-assets`; in the image, baked in.
    console_assets_dir: Path = REPO_ROOT / "build" / "console" / "node_modules"
    # Background exports are kept this long.
    export_retention: timedelta = Field(default=timedelta(hours=32), gt=timedelta(0))
    # Local hour (Europe/Paris) of the daily digest of cases coming due.
    digest_hour: int = Field(default=7, ge=0, le=23)
    # How often the officers' case notifications are read from the contracts service (0: never, the tests
    # run the pass themselves). E-mail goes through the hub's SMTP relay (`PARCOURS_SMTP_*`); without
    # `PARCOURS_SMTP_HOST` the console sends none.
    notification_poll_seconds: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _urls(self) -> ConsoleSettings:
        if not self.console_public_url.startswith(("http://", "https://")):
            raise ValueError("PARCOURS_CONSOLE_PUBLIC_URL must be an http(s) URL")
        if not self.oidc_issuer.startswith(("http://", "https://")):
            raise ValueError("PARCOURS_OIDC_ISSUER must be an http(s) URL")
        if (self.console_token_signing_key_file is None) == (self.console_token_signing_key is None):
            raise ValueError(
                "set one of PARCOURS_CONSOLE_TOKEN_SIGNING_KEY_FILE and PARCOURS_CONSOLE_TOKEN_SIGNING_KEY"
            )
        return self

    @property
    def public_url(self) -> str:
        return self.console_public_url.rstrip("/")
