"""The chart rendered once per session by the chart tools' own environment (build/helm-tools).

`make test` and `make helm-test` create that environment from helm/requirements-tools.lock first; the
suite's own environment never imports helm-python-sdk, kubernetes-validate or checkov (tests/helm/toolbox.py
does, in a subprocess), so their dependencies cannot move ours.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import repo_root

ROOT = repo_root()
TOOLS = ROOT / "build" / "helm-tools"
TOOLS_PYTHON = TOOLS / "bin" / "python"
CHECKOV = TOOLS / "bin" / "checkov"
CHART = ROOT / "helm" / "parcours"
RENDERED = ROOT / "build" / "helm" / "rendered"
RELEASE = NAMESPACE = "parcours"
# Kubernetes versions the manifests must be valid for: the newest kubernetes-validate knows, and the oldest
# the chart supports (Chart.yaml kubeVersion; native gRPC probes are GA since 1.27).
KUBE_VERSIONS = ["1.37.0", "1.27.0"]

SITE = "tests/helm/site.yaml"
GHT = "helm/parcours/values-ght.yaml"
REGION = "helm/parcours/values-region.yaml"

# The console as a site switches it on: its values block (helm/parcours/values.yaml) enabled with the
# site's provider, and the Ingress. It proves the shared templates carry a new component and that the
# Ingress renders.
CONSOLE = {
    "components": {
        "console": {
            "enabled": True,
            "env": {
                "PARCOURS_HTTP_HOST": "0.0.0.0",  # noqa: S104 (the pod's port, behind its NetworkPolicy)
                "PARCOURS_CONSOLE_HTTP_PORT": "8080",
                "PARCOURS_CONSOLE_PUBLIC_URL": "https://parcours.ars-exemple.fr",
                "PARCOURS_OIDC_ISSUER": "https://sso.ars-exemple.fr/realms/agents",
                "PARCOURS_OIDC_CLIENT_ID": "parcours-console",
                "PARCOURS_TEMPORAL_UI_URL": "https://temporal.ars-exemple.fr",
            },
        }
    },
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "host": "parcours.ars-exemple.fr",
        "tls": {"secretName": "parcours-console-tls"},
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
    },
}

RELAY_LOGIN: dict[str, Any] = {
    "smtp": {
        "host": "smtps.relais-ght.example",
        "port": 465,
        "tls": "implicit",
        "username": "parcours-ght-loire",
        "password": {"existingSecret": "parcours-smtp-login"},
        "clientCertificate": {"existingSecret": ""},
    },
    "addressBook": {"existingSecret": "parcours-address-book", "emails": None, "webhooks": None},
}

# What `make helm-test` renders, validates and scans: both profiles, the defaults, and the variants the brief
# names. Each is written to build/helm/rendered/<name>/manifests.yaml.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"files": [SITE]},
    "ght": {"files": [GHT, SITE]},
    "region": {"files": [REGION, SITE]},
    "region-no-networkpolicy": {"files": [REGION, SITE], "values": {"networkPolicy": {"enabled": False}}},
    "region-cert-manager": {
        "files": [REGION, SITE],
        "values": {
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "parcours-ca", "kind": "ClusterIssuer"},
                "establishments": ["420000017", "2A0000031"],
            }
        },
    },
    "region-console": {"files": [REGION, SITE], "values": CONSOLE},
    # Least-privilege database roles: directory and the migrations with a Secret of their own, billing with a
    # development password the chart turns into a Secret, the others the shared Secret's keys; the Job that
    # creates the roles, as an administrator.
    "region-roles": {
        "files": [REGION, SITE],
        "values": {
            "components": {
                "directory": {
                    "database": {
                        "username": "parcours_directory",
                        "existingSecret": "parcours-db-directory",
                        "passwordKey": "password",
                    }
                },
                "billing": {"database": {"username": "parcours_billing", "password": "dev-only"}},
            },
            "migrations": {
                "database": {
                    "username": "parcours_owner",
                    "existingSecret": "parcours-db-owner",
                    "passwordKey": "password",
                }
            },
            "databaseRoles": {
                "enabled": True,
                "admin": {
                    "username": "dbadmin",
                    "existingSecret": "parcours-db-admin",
                    "passwordKey": "password",
                },
            },
        },
    },
    "region-backlog": {
        "files": [REGION, SITE],
        "values": {
            "components": {
                "workflows-teleexpertise": {
                    "autoscaling": {"backlog": {"enabled": True, "selector": {"namespace": "parcours"}}}
                }
            }
        },
    },
    "region-digest": {
        "files": [REGION, SITE],
        "values": {"image": {"digest": "sha256:" + "ab" * 32}},
    },
    # A relay that wants a login over implicit TLS, and an address book kept in a Secret (the only place
    # for patients' addresses), instead of the site's certificate and inline book.
    "region-relay-login": {
        "files": [REGION, SITE],
        "values": {"notifications": RELAY_LOGIN},
    },
}


@dataclass
class Rendered:
    """One rendered variant: its objects (with the template each came from), NOTES and the tools' findings."""

    name: str
    docs: list[dict[str, Any]]
    notes: str
    lint: list[dict[str, Any]]
    kubernetes_validate: list[str]
    folder: Path
    objects: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.objects = [d["object"] for d in self.docs]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} objects in {self.name}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}


def run_toolbox(variants: dict[str, dict[str, Any]], tmp: Path) -> dict[str, Any]:
    if not TOOLS_PYTHON.exists():
        pytest.fail("the chart tools are missing: `make helm-test` (or `make test`) creates build/helm-tools")
    spec = {
        "root": str(ROOT),
        "chart": "helm/parcours",
        "out": str(RENDERED.relative_to(ROOT)),
        "kube_versions": KUBE_VERSIONS,
        "variants": variants,
    }
    spec_file, report_file = tmp / "spec.json", tmp / "report.json"
    spec_file.write_text(json.dumps(spec))
    subprocess.run(
        [str(TOOLS_PYTHON), str(ROOT / "tests" / "helm" / "toolbox.py"), str(spec_file), str(report_file)],
        check=True,
        cwd=ROOT,
    )
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report["variants"]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Every variant of VARIANTS, rendered, linted and validated once."""
    out: dict[str, Rendered] = {}
    for name, entry in run_toolbox(VARIANTS, tmp_path_factory.mktemp("helm")).items():
        assert entry["error"] is None, f"{name} does not render:\n{entry['error']}"
        out[name] = Rendered(
            name=name,
            docs=entry["docs"],
            notes=entry["notes"],
            lint=entry["lint"],
            kubernetes_validate=entry["kubernetes_validate"],
            folder=RENDERED / name,
        )
    return out


@pytest.fixture(scope="session")
def region(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["region"]


def quick_renders(cases: dict[str, dict[str, Any]], tmp: Path) -> dict[str, dict[str, Any]]:
    """Each case's render: its error (or None) and NOTES; nothing written, linted or validated."""
    variants = {
        name: {**case, "write": False, "lint": False, "kubernetes_validate": False}
        for name, case in cases.items()
    }
    return run_toolbox(variants, tmp)


@pytest.fixture(scope="session")
def checkov(rendered: dict[str, Rendered]) -> dict[str, dict[str, Any]]:
    """checkov's report on each rendered variant (one scan per variant: its graph checks must not see the
    NetworkPolicies of another variant) and on the Dockerfile."""
    targets = [(name, ["-d", str(r.folder), "--framework", "kubernetes"]) for name, r in rendered.items()]
    targets.append(("Dockerfile", ["-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile"]))

    def scan(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CHECKOV), *args, "--skip-download", "--output", "json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )

    # Two at a time: most of a scan is checkov starting up, and the machine has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([n for n, _ in targets], pool.map(scan, [a for _, a in targets]), strict=True))
    reports: dict[str, dict[str, Any]] = {}
    for name, result in results.items():
        assert result.stdout.strip(), f"checkov printed nothing for {name}:\n{result.stderr[-2000:]}"
        report = json.loads(result.stdout)
        reports[name] = report[0] if isinstance(report, list) else report
    return reports
