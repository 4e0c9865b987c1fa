"""The environment the chart gives each component is a configuration that component accepts.

Every PARCOURS_* variable a Deployment sets is a setting of the component's own settings class (a typo would
be ignored by pydantic-settings, so the chart would silently configure nothing), and loading the class from
that environment succeeds: every required setting is there and every value has the right type.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import os
import re
from typing import Any

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from tests.helm.conftest import Rendered

ENV_PREFIX = "PARCOURS_"
VARIANTS = ["region", "ght", "region-roles", "region-cert-manager"]


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


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would give it, Secrets replaced by plausible values."""
    key = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    plausible = {"PARCOURS_PAYLOAD_KEYS": f"k1:{key}", "PARCOURS_PAGE_TOKEN_KEY": key}
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


def deployments(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{v}:{d['metadata']['name']}", d) for v in VARIANTS for d in rendered[v].of_kind("Deployment")]


def test_every_setting_the_chart_sets_exists_and_loads(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for label, deployment in deployments(rendered):
        module = deployment["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        cls = settings_class(module)
        env = container_env(deployment)
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - setting_names(cls) - {"PARCOURS_LOG_LEVEL"}
        assert unknown == set(), f"{label}: {cls.__name__} has no setting {sorted(unknown)}"
        with monkeypatch.context() as patch:
            for key in list(os.environ):
                if key.startswith(ENV_PREFIX):
                    patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
            settings = cls()
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert settings.component == component, label  # type: ignore[attr-defined]
        assert settings.insecure_dev_mode is False, label  # type: ignore[attr-defined]
        assert str(settings.tls_cert_file) == "/etc/parcours/tls/tls.crt", label  # type: ignore[attr-defined]
        checked += 1
    assert checked == 8 * len(VARIANTS)


def test_the_log_level_setting_is_the_one_the_kit_reads() -> None:
    # PARCOURS_LOG_LEVEL is read by services.kit.telemetry.configure_logging, not by a settings class.
    source = inspect.getsource(importlib.import_module("services.kit.telemetry"))
    assert '"PARCOURS_LOG_LEVEL"' in source
