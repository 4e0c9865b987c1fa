"""The environment the chart gives each component is a configuration that component accepts.

Every PARCOURS_* variable a Deployment sets is a setting of the component's own settings class (a typo would
be ignored by pydantic-settings, so the chart would silently configure nothing), and loading the class from
that environment succeeds: every required setting is there and every value has the right type. The workers'
notification files, materialised as the kubelet would mount them, load into the real notifier, and an e-mail
goes through a relay that authenticates the hub by its certificate, as an MSSanté operator's does.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import os
import re
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.devstack import free_port
from services.kit.notify import EMAIL, WEBHOOK, Notice, Notifier, Route, notification_key
from services.kit.pki import DevPki
from services.scheduling.join import JoinLinks
from tests.helm.conftest import Rendered

ENV_PREFIX = "PARCOURS_"
VARIANTS = ["region", "ght", "region-roles", "region-cert-manager", "region-console", "region-relay-login"]
NOTIFY_MOUNT = "/etc/parcours/notify"


def settings_class(module: str) -> type[BaseSettings]:
    """The settings class a component's module loads: the one defined in its settings.py or worker.py."""
    for candidate in (f"{module}.settings", f"{module}.worker"):
        try:
            found = importlib.import_module(candidate)
        except ModuleNotFoundError:
            continue
        classes = [
            cls
            for _, cls in inspect.getmembers(found, inspect.isclass)
            if issubclass(cls, BaseSettings) and cls.__module__ == candidate
        ]
        if len(classes) == 1:
            return classes[0]
    raise AssertionError(f"no settings class for {module}")


def setting_names(cls: type[BaseSettings]) -> set[str]:
    names = set()
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper() for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{ENV_PREFIX}{field_name}".upper())
    return names


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


_CONSOLE_KEY = _pem()
JOIN_KEY = base64.urlsafe_b64encode(b"\x02" * 32).rstrip(b"=").decode()
# The key ids of the site's address book (tests/helm/site.yaml), each with its secret.
WEBHOOK_SECRETS = {"forez-1": b"\x03" * 32, "chuse-1": b"\x04" * 32}
WEBHOOK_KEYS = ",".join(
    f"{key_id}:{base64.urlsafe_b64encode(secret).rstrip(b'=').decode()}"
    for key_id, secret in WEBHOOK_SECRETS.items()
)


def container_env(deployment: dict[str, Any], secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet would give it, Secrets replaced by plausible values."""
    key = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    plausible = {
        "PARCOURS_PAYLOAD_KEYS": f"k1:{key}",
        "PARCOURS_PAGE_TOKEN_KEY": key,
        "PARCOURS_AUDIT_KEYS": f"a1:{key}",
        "PARCOURS_CONSOLE_TOKEN_SIGNING_KEY": _CONSOLE_KEY,
        "PARCOURS_JOIN_TOKEN_KEY": JOIN_KEY,
        "PARCOURS_NOTIFY_WEBHOOK_KEYS": WEBHOOK_KEYS,
        "PARCOURS_SMTP_PASSWORD": "relay-password",
        **(secrets or {}),
    }
    env: dict[str, str] = {}
    for entry in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in entry:
            # $(VAR) references to earlier variables are expanded by the kubelet.
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            env[entry["name"]] = plausible.get(entry["name"], "secret")
        else:
            env[entry["name"]] = "from-the-downward-api"
    return env


def deployment_module(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["command"][-1])


def deployments(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{v}:{d['metadata']['name']}", d) for v in VARIANTS for d in rendered[v].of_kind("Deployment")]


def test_every_setting_the_chart_sets_exists_and_loads(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for label, deployment in deployments(rendered):
        cls = settings_class(deployment_module(deployment))
        env = container_env(deployment)
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - setting_names(cls) - {"PARCOURS_LOG_LEVEL"}
        assert unknown == set(), f"{label}: {cls.__name__} has no setting {sorted(unknown)}"
        settings = load(cls, env, monkeypatch)
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert settings.component == component, label  # type: ignore[attr-defined]
        assert settings.insecure_dev_mode is False, label  # type: ignore[attr-defined]
        assert str(settings.tls_cert_file) == "/etc/parcours/tls/tls.crt", label  # type: ignore[attr-defined]
        checked += 1
    # Eight components in each variant, and the console in region-console.
    assert checked == 8 * len(VARIANTS) + 1


def test_the_log_level_setting_is_the_one_the_kit_reads() -> None:
    # PARCOURS_LOG_LEVEL is read by services.kit.telemetry.configure_logging, not by a settings class.
    source = inspect.getsource(importlib.import_module("services.kit.telemetry"))
    assert '"PARCOURS_LOG_LEVEL"' in source


# -- notifications and join links: the files the chart mounts and the keys it passes work for real ----------


def load(cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return cls()


def mounted(
    r: Rendered, deployment: dict[str, Any], folder: Path, secrets: dict[str, bytes]
) -> dict[str, str]:
    """The kubelet's part for the `notify` volume: its files written into `folder`, ConfigMap items from the
    render and Secret items from `secrets` (by the name they are mounted as); the container's environment
    with the mount point moved there. Every file the environment names must be one the volume provides."""
    pod = deployment["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "notify")
    assert mount == {"name": "notify", "mountPath": NOTIFY_MOUNT, "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "notify")
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = r.get("ConfigMap", source["configMap"]["name"])["data"]
            for item in source["configMap"]["items"]:
                (folder / item["path"]).write_text(data[item["key"]])
        else:
            for item in source["secret"]["items"]:
                (folder / item["path"]).write_bytes(secrets[item["path"]])
    env = container_env(deployment)
    for key, value in env.items():
        if value.startswith(NOTIFY_MOUNT + "/"):
            env[key] = str(folder / value.removeprefix(NOTIFY_MOUNT + "/"))
            assert Path(env[key]).is_file(), f"{key} names {value}, which the notify volume does not provide"
    return env


def relay_material(pki: DevPki) -> dict[str, bytes]:
    """What the site's Secrets hold: the CA of the relay's certificate and the hub's client certificate."""
    return {
        "smtp-ca.crt": pki.ca_file.read_bytes(),
        "smtp-client.crt": pki.cert_file("workflows").read_bytes(),
        "smtp-client.key": pki.key_file("workflows").read_bytes(),
    }


def notify_workers(r: Rendered) -> list[dict[str, Any]]:
    found = [
        d
        for d in r.of_kind("Deployment")
        if any(
            e["name"] == "PARCOURS_WEBHOOK_TIMEOUT_SECONDS"
            for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
        )
    ]
    assert {d["metadata"]["name"] for d in found} == {
        "parcours-workflows-teleconsultation",
        "parcours-workflows-teleexpertise",
    }
    return found


def test_each_workers_address_book_and_keys_load_into_the_real_notifier(
    rendered: dict[str, Rendered], pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for deployment in notify_workers(rendered["region"]):
        folder = tmp_path / deployment["metadata"]["name"]
        folder.mkdir()
        env = mounted(rendered["region"], deployment, folder, relay_material(pki))
        settings = load(settings_class(deployment_module(deployment)), env, monkeypatch)
        notifier = Notifier.from_settings(settings)
        # The site's practitioners by MSSanté, its hospitals by their signed webhooks, anyone else recorded.
        assert notifier.route("practitioners/10000000101") == Route(
            EMAIL, address="jeanne.martin@ch-forez.mssante.fr"
        )
        route = notifier.route("patients/4f1c", ("establishments/420000017",))
        assert route is not None and route.channel == WEBHOOK and route.endpoint is not None
        assert route.endpoint.url == "https://dpi.ch-forez.fr/parcours/evenements"
        assert route.endpoint.secret == WEBHOOK_SECRETS["forez-1"]
        assert notifier.route("patients/4f1c", ("establishments/420000033",)) is None

    # An address book kept in a Secret (patients' addresses), behind a relay that wants a login.
    relay_login = rendered["region-relay-login"]
    for deployment in notify_workers(relay_login):
        folder = tmp_path / f"login-{deployment['metadata']['name']}"
        folder.mkdir()
        book = {"emails": {"patients/4f1c": "patient@exemple.fr"}}
        secrets = {"smtp-ca.crt": pki.ca_file.read_bytes(), "address-book.json": json.dumps(book).encode()}
        env = mounted(relay_login, deployment, folder, secrets)
        assert {k: env[k] for k in ("PARCOURS_SMTP_TLS", "PARCOURS_SMTP_PORT", "PARCOURS_SMTP_USERNAME")} == {
            "PARCOURS_SMTP_TLS": "implicit",
            "PARCOURS_SMTP_PORT": "465",
            "PARCOURS_SMTP_USERNAME": "parcours-ght-loire",
        }
        settings = load(settings_class(deployment_module(deployment)), env, monkeypatch)
        assert settings.smtp_password.get_secret_value() == "relay-password"
        assert settings.smtp_cert_file is None
        notifier = Notifier.from_settings(settings)
        assert notifier.route("patients/4f1c") == Route(EMAIL, address="patient@exemple.fr")


class CertificateRelay:
    """An SMTP relay as an MSSanté operator runs one: STARTTLS required, mail accepted only from a client
    that presented a certificate of the CA it trusts."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        peer = (session.ssl or {}).get("peercert")
        if not peer:
            return "530 5.7.0 a client certificate is required"
        subject = dict(item[0] for item in peer["subject"])
        self.received.append((subject["commonName"], list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 accepted"


async def test_an_email_leaves_through_a_relay_that_authenticates_the_hub_by_its_certificate(
    region: Rendered, pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = region.get("Deployment", "parcours-workflows-teleconsultation")
    env = mounted(region, deployment, tmp_path, relay_material(pki))
    assert env["PARCOURS_SMTP_TLS"] == "starttls"
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.cert_file("directory"), pki.key_file("directory"))
    tls.load_verify_locations(pki.ca_file)
    tls.verify_mode = ssl.CERT_OPTIONAL
    relay = CertificateRelay()
    controller = Controller(
        relay, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True
    )
    controller.start()
    try:
        # The relay's name resolves here, as the cluster's DNS would resolve smtp.mssante-operateur.example.
        env |= {"PARCOURS_SMTP_HOST": "127.0.0.1", "PARCOURS_SMTP_PORT": str(controller.port)}
        notifier = Notifier.from_settings(
            load(settings_class(deployment_module(deployment)), env, monkeypatch)
        )
        recipient = "practitioners/10000000101"
        route = notifier.route(recipient)
        assert route is not None
        notice = Notice(
            key=notification_key("appointments/0b6c", "reminder", "P1D", recipient),
            case="appointments/0b6c",
            event_type="parcours.teleconsultation.reminder",
            kind="reminder",
            label="P1D",
            recipient=recipient,
            subject="Rappel de téléconsultation",
            text="Téléconsultation demain.",
            occur_time=datetime(2026, 3, 11, 8, 0, tzinfo=UTC),
        )
        await notifier.deliver(route, notice)
        await notifier.close()
    finally:
        controller.stop()
    assert len(relay.received) == 1
    common_name, recipients, content = relay.received[0]
    assert common_name == "parcours-workflows"
    assert recipients == ["jeanne.martin@ch-forez.mssante.fr"]
    assert b"From: Parcours GHT Loire <parcours@ght-loire.mssante.fr>" in content


def test_every_teleconsultation_worker_signs_join_links_with_the_secrets_key(
    region: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = region.get("Deployment", "parcours-workflows-teleconsultation")
    env = container_env(deployment)
    settings = load(settings_class(deployment_module(deployment)), env, monkeypatch)
    links = settings.join_links()
    appointment, expiry = uuid.UUID(int=7), datetime(2026, 3, 11, 15, 0, tzinfo=UTC)
    # Not a key of its own: the Secret's, so another replica (or a retried delivery) makes the same link.
    from_secret = JoinLinks.with_key(
        "https://visio.chu-exemple.fr/rejoindre", base64.urlsafe_b64decode(JOIN_KEY + "=")
    )
    token = links.token(appointment, "patient", expiry)
    assert token == from_secret.token(appointment, "patient", expiry)
    assert links.url(token) == f"https://visio.chu-exemple.fr/rejoindre/{token}"
    # Only that worker signs links.
    for other in region.of_kind("Deployment"):
        if other is not deployment:
            assert not {k for k in container_env(other) if k.startswith("PARCOURS_JOIN_")}, other["metadata"][
                "name"
            ]
