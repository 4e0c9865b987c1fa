"""The chart as an SRE meets it: it lints clean, renders every profile into objects a current Kubernetes
accepts, passes checkov with every skip explained in the chart, refuses mistyped values, and each component
gets the same hardened objects from one set of templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helm.conftest import (
    GHT,
    REGION,
    SITE,
    VARIANTS,
    Rendered,
    quick_renders,
)

COMPONENTS = {
    "directory",
    "scheduling",
    "expertise",
    "billing",
    "contracts",
    "workflows-teleconsultation",
    "workflows-teleexpertise",
    "workflows-contracts",
}
SERVICES = {"directory": 50051, "scheduling": 50052, "expertise": 50053, "billing": 50054, "contracts": 50055}
WORKERS = COMPONENTS - set(SERVICES)
# The workers that send notifications out of the hub (the `notifications` block); contracts' stay recorded.
NOTIFYING_WORKERS = {"workflows-teleconsultation", "workflows-teleexpertise"}
# Who calls whom on main today (services/*/settings.py and workflows/*/worker.py *_address settings).
CALLS = {
    "scheduling": {"directory"},
    "expertise": {"directory"},
    "billing": {"directory", "contracts"},
    "contracts": {"directory"},
    "workflows-teleconsultation": {"billing", "directory"},
    "workflows-teleexpertise": {"billing", "directory"},
}
GOLDEN = Path(__file__).parent / "golden"


def name(component: str) -> str:
    return f"parcours-{component}"


def pod_specs(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every object that runs pods."""
    out = []
    for obj in r.objects:
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            out.append((label, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            out.append((label, obj["spec"]))
    return out


# -- lint, Kubernetes schemas, checkov ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_strict_has_nothing_to_say(rendered: dict[str, Rendered], variant: str) -> None:
    # Severity 1 is information ("icon is recommended"); warnings (2) and errors (3) fail strict lint.
    findings = [m for m in rendered[variant].lint if m["severity"] >= 2]
    assert findings == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_is_valid_for_current_and_oldest_supported_kubernetes(
    rendered: dict[str, Rendered], variant: str
) -> None:
    r = rendered[variant]
    assert r.kubernetes_validate == []
    assert len(r.objects) > 20


@pytest.mark.parametrize("target", [*sorted(VARIANTS), "Dockerfile"])
def test_checkov_finds_nothing_and_every_skip_says_why(
    checkov: dict[str, dict[str, Any]], target: str
) -> None:
    report = checkov[target]
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert len(results["passed_checks"]) > 90
    allowed = {"CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_8", "CKV_K8S_9", "CKV_DOCKER_2"}
    if target == "region-no-networkpolicy":
        allowed.add("CKV2_K8S_6")
    if target == "region-digest":
        allowed.discard("CKV_K8S_43")
    for skipped in results["skipped_checks"]:
        assert skipped["check_id"] in allowed, skipped["resource"]
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason) >= 40, (
            f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"
        )


def test_the_core_hardening_checks_did_run_and_pass(checkov: dict[str, dict[str, Any]]) -> None:
    passed = {c["check_id"] for c in checkov["region"]["results"]["passed_checks"]}
    # non-root, read-only root, no privilege escalation, capabilities, seccomp, limits, probes, token mount,
    # NetworkPolicy coverage
    for check in (
        "CKV_K8S_23",
        "CKV_K8S_22",
        "CKV_K8S_20",
        "CKV_K8S_37",
        "CKV_K8S_31",
        "CKV_K8S_11",
        "CKV_K8S_13",
        "CKV_K8S_8",
        "CKV_K8S_9",
        "CKV_K8S_38",
        "CKV2_K8S_6",
        "CKV_K8S_40",
    ):
        assert check in passed


# -- values the schema or the templates refuse --------------------------------------------------------------

REFUSED = {
    "unknown top-level key": ({"postgress": {"host": "x"}}, "postgress"),
    "mistyped nested key": ({"postgresql": {"hots": "db"}}, "hots"),
    "mistyped component key": ({"components": {"directory": {"grpcport": 50051}}}, "grpcport"),
    "wrong type": ({"components": {"directory": {"replicaCount": "two"}}}, "replicaCount"),
    "value outside its enum": ({"postgresql": {"tls": {"sslMode": "required"}}}, "sslMode"),
    "weakened hardening": ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
    "component without a module": (
        {
            "components": {
                "notifications": {
                    "resources": {
                        "requests": {"cpu": "1", "memory": "1Gi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }
                }
            }
        },
        "module",
    ),
    "resources without limits": (
        {
            "components": {
                "billing": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": None}}
            }
        },
        "limits",
    ),
    "not a FINESS": ({"certManager": {"establishments": ["12345"]}}, "establishments"),
    # Checks across values, made by the templates:
    "no PostgreSQL host": ({"postgresql": {"host": ""}}, "postgresql.host is required"),
    "verify-full without the CA": (
        {"postgresql": {"tls": {"caSecret": {"name": ""}}}},
        "postgresql.tls.caSecret.name is required",
    ),
    "no payload keyring": ({"temporal": {"payloadKeys": {"existingSecret": ""}}}, "temporal.payloadKeys"),
    "a call to a component that does not exist": (
        {"components": {"scheduling": {"calls": ["directory", "notifications"]}}},
        '"notifications", which is not an enabled component',
    ),
    "an Ingress without its component": (
        {"ingress": {"enabled": True, "host": "h.example", "tls": {"secretName": "s"}}},
        'ingress.component "console" is not an enabled component',
    ),
    "decision signing without its Secret": (
        {"decisionSigning": {"existingSecret": ""}},
        "decisionSigning.existingSecret is required",
    ),
    "a decision-signing role that does not exist": (
        {"components": {"contracts": {"decisionSigning": "notary"}}},
        "decisionSigning",
    ),
    "HPA bounds upside down": (
        {"components": {"billing": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}},
        "minReplicas > maxReplicas",
    ),
    # Join links and notifications:
    "no join-token key": (
        {"joinLinks": {"tokenKey": {"existingSecret": ""}}},
        "joinLinks.tokenKey.existingSecret is required",
    ),
    "no video bridge": ({"joinLinks": {"baseUrl": ""}}, "joinLinks.baseUrl is required"),
    "a video bridge in clear": ({"joinLinks": {"baseUrl": "http://visio.example"}}, "baseUrl"),
    "plaintext SMTP without the development flag": (
        {"notifications": {"smtp": {"tls": "none"}}},
        "notifications.smtp.tls none sends e-mail in clear",
    ),
    "an SMTP TLS mode that does not exist": ({"notifications": {"smtp": {"tls": "ssl"}}}, "tls"),
    "a mistyped notifications key": ({"notifications": {"smtp": {"hots": "relay"}}}, "hots"),
    "an SMTP login without its password": (
        {"notifications": {"smtp": {"username": "parcours"}}},
        "notifications.smtp.password.existingSecret is required",
    ),
    "inline webhooks without their keys": (
        {"notifications": {"webhooks": {"keys": {"existingSecret": ""}}}},
        "notifications.webhooks.keys.existingSecret is required",
    ),
    "a webhook in clear": (
        {
            "notifications": {
                "addressBook": {
                    "webhooks": {
                        "establishments/420000017": {"url": "http://dpi.example", "keyId": "forez-1"}
                    }
                }
            }
        },
        "must be https://",
    ),
    "a patient's address in values": (
        {"notifications": {"addressBook": {"emails": {"patients/4f1c": "patient@exemple.fr"}}}},
        "patients/4f1c",
    ),
    "two address books": (
        {"notifications": {"addressBook": {"existingConfigMap": "parcours-address-book"}}},
        "give one of existingConfigMap, existingSecret or inline emails/webhooks",
    ),
    "a setting the chart sets, set again": (
        {"components": {"workflows-teleexpertise": {"env": {"PARCOURS_SMTP_TLS": "none"}}}},
        "PARCOURS_SMTP_TLS is set twice",
    ),
    # The console:
    "the console without its provider": (
        {"components": {"console": {"enabled": True}}},
        "components.console.env.PARCOURS_CONSOLE_PUBLIC_URL is required",
    ),
    "the console in clear": (
        {
            "components": {
                "console": {
                    "enabled": True,
                    "env": {
                        "PARCOURS_CONSOLE_PUBLIC_URL": "http://parcours.ars-exemple.fr",
                        "PARCOURS_OIDC_ISSUER": "https://sso.ars-exemple.fr/realms/agents",
                    },
                }
            }
        },
        "PARCOURS_CONSOLE_PUBLIC_URL must be https://",
    ),
}


NO_CLIENTS = "no clients named"
# A site that configures no notification at all (the chart's defaults), and a development cluster with an
# SMTP sink in clear.
NO_NOTIFICATIONS = "no notifications"
DEV_SINK = "a development sink"
ANOTHER_BOOK = "another address book"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One tools process for the refused values and the renders that need no validation."""
    cases = {case: {"files": [REGION, SITE], "values": values} for case, (values, _) in REFUSED.items()}
    cases[NO_CLIENTS] = {"files": [REGION, SITE], "values": {"networkPolicy": {"clients": []}}}
    cases[NO_NOTIFICATIONS] = {
        "files": [REGION, SITE],
        "values": {
            "notifications": {
                "smtp": {
                    "host": "",
                    "ca": {"existingSecret": ""},
                    "clientCertificate": {"existingSecret": ""},
                },
                "addressBook": {"emails": None, "webhooks": None},
                "webhooks": {"keys": {"existingSecret": ""}},
            }
        },
    }
    cases[DEV_SINK] = {
        "files": [GHT, SITE],
        "values": {
            "notifications": {
                "allowPlaintext": True,
                "smtp": {
                    "host": "mailsink.parcours-dev.svc",
                    "port": 2525,
                    "tls": "none",
                    "ca": {"existingSecret": ""},
                    "clientCertificate": {"existingSecret": ""},
                },
            }
        },
    }
    cases[ANOTHER_BOOK] = {
        "files": [REGION, SITE],
        "values": {
            "notifications": {
                "addressBook": {"emails": {"practitioners/10000000101": "j.martin@ch-forez.mssante.fr"}}
            }
        },
    }
    return quick_renders(cases, tmp_path_factory.mktemp("quick"))


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_wrong_value_is_refused_with_its_name(quick: dict[str, dict[str, Any]], case: str) -> None:
    error = quick[case]["error"]
    assert error is not None, f"{case}: rendered anyway"
    assert REFUSED[case][1] in error


def test_only_the_contracts_worker_holds_the_decision_signing_key(region: Rendered) -> None:
    def signing(component: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        spec = region.get("Deployment", name(component))["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        volumes = [v for v in spec["volumes"] if v["name"] == "decision-signing"]
        return env, [item for v in volumes for item in v["secret"]["items"]]

    env, items = signing("workflows-contracts")
    assert env["PARCOURS_DECISION_SIGNING_CERT_FILE"] == "/etc/parcours/decision-signing/tls.crt"
    assert env["PARCOURS_DECISION_SIGNING_KEY_FILE"] == "/etc/parcours/decision-signing/tls.key"
    assert {i["key"] for i in items} == {"tls.crt", "tls.key"}
    env, items = signing("contracts")
    assert env["PARCOURS_DECISION_TRUST_ROOTS_FILE"] == "/etc/parcours/decision-signing/ca.crt"
    assert "PARCOURS_DECISION_SIGNING_KEY_FILE" not in env
    assert [i["key"] for i in items] == ["ca.crt"]
    for component in COMPONENTS - {"contracts", "workflows-contracts"}:
        assert signing(component) == (signing(component)[0], [])


# -- every component, from the same templates ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "ght", "region"])
def test_each_component_gets_its_objects(rendered: dict[str, Rendered], variant: str) -> None:
    r = rendered[variant]
    expected = {name(c) for c in COMPONENTS}
    assert r.names("Deployment") == expected
    assert r.names("ServiceAccount") >= expected
    assert r.names("PodDisruptionBudget") == expected
    assert {n for n in r.names("NetworkPolicy") if n in expected} == expected
    assert r.names("Service") == {name(s) for s in SERVICES}
    for sa in r.of_kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    for component, port in SERVICES.items():
        ports = {p["name"]: p["port"] for p in r.get("Service", name(component))["spec"]["ports"]}
        assert ports == {"grpc": port, "health": 8081}
    if variant == "region":
        assert r.names("HorizontalPodAutoscaler") == expected
    else:
        assert r.names("HorizontalPodAutoscaler") == set()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_hardened(rendered: dict[str, Rendered], variant: str) -> None:
    specs = pod_specs(rendered[variant])
    assert len(specs) >= len(COMPONENTS) + 2  # the components and both hook Jobs
    for label, spec in specs:
        assert spec["automountServiceAccountToken"] is False, label
        assert spec["securityContext"] == {
            "fsGroup": 10001,
            "runAsGroup": 10001,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, label
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsGroup": 10001,
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            }, label
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, label
            # The only writable paths are the /tmp emptyDir and the volume a service anchors its audit chain
            # in (outside PostgreSQL; services/kit/anchors.py).
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "/tmp" in mounts, label
            writable = {"/tmp", "/var/lib/parcours/audit-anchors"}
            assert all(m.get("readOnly") for path, m in mounts.items() if path not in writable), label


@pytest.mark.parametrize("component", sorted(SERVICES))
def test_services_have_native_grpc_probes_on_the_health_port(region: Rendered, component: str) -> None:
    container = region.get("Deployment", name(component))["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PARCOURS_HEALTH_PORT"] == "8081"
    assert env["PARCOURS_GRPC_PORT"] == str(SERVICES[component])
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": 8081}, probe
    # Liveness asks the kit's `liveness` health service (services/kit/server.py): a database outage makes the
    # pods unready without restarting them.
    assert container["livenessProbe"]["grpc"] == {"port": 8081, "service": "liveness"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": SERVICES[component],
        "health": 8081,
    }


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_workers_are_spread_and_budgeted_but_have_nothing_to_probe(region: Rendered, worker: str) -> None:
    deployment = region.get("Deployment", name(worker))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in container and "livenessProbe" not in container
    reasons = deployment["metadata"]["annotations"].values()
    assert any(r.startswith("CKV_K8S_8=A Temporal worker serves no endpoint") for r in reasons)
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_a_component_runs_its_own_module_from_the_one_image(region: Rendered) -> None:
    images = set()
    for deployment in region.of_kind("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        images.add(container["image"])
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        module = (
            component.replace("workflows-", "workflows.") if component in WORKERS else f"services.{component}"
        )
        assert container["command"] == ["python", "-m", module]
    assert images == {"registry.chu-exemple.fr/parcours/parcours:0.1.0"}


def test_a_digest_pins_the_image(rendered: dict[str, Rendered]) -> None:
    for _label, spec in pod_specs(rendered["region-digest"]):
        assert (
            spec["containers"][0]["image"] == "registry.chu-exemple.fr/parcours/parcours@sha256:" + "ab" * 32
        )


def test_region_profile_is_highly_available(region: Rendered) -> None:
    for component in COMPONENTS:
        hpa = region.get("HorizontalPodAutoscaler", name(component))["spec"]
        assert hpa["minReplicas"] >= 2
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"
        assert region.get("PodDisruptionBudget", name(component))["spec"] == {
            "minAvailable": 1,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "parcours",
                    "app.kubernetes.io/instance": "parcours",
                    "app.kubernetes.io/component": component,
                }
            },
        }
        deployment = region.get("Deployment", name(component))
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        node = [
            c
            for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
            if c["topologyKey"] == "kubernetes.io/hostname"
        ]
        assert node[0]["whenUnsatisfiable"] == "DoNotSchedule"


def test_region_database_connections_fit_the_documented_budget(region: Rendered) -> None:
    # docs/operations.md "Sizing": at the HPA maxima the pools need 188 connections.
    total = 0
    for component in COMPONENTS:
        container = region.get("Deployment", name(component))["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        maximum = region.get("HorizontalPodAutoscaler", name(component))["spec"]["maxReplicas"]
        total += maximum * int(env["PARCOURS_DB_POOL_MAX_SIZE"])
    assert total == 188


def test_ght_profile_runs_one_small_replica_of_each(rendered: dict[str, Rendered]) -> None:
    ght = rendered["ght"]
    for deployment in ght.of_kind("Deployment"):
        assert deployment["spec"]["replicas"] == 1
        requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert requests["cpu"] == "50m"


def test_workers_can_scale_on_their_task_queue_backlog(rendered: dict[str, Rendered]) -> None:
    hpa = rendered["region-backlog"].get("HorizontalPodAutoscaler", name("workflows-teleexpertise"))
    external = [m for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert external == [
        {
            "type": "External",
            "external": {
                "metric": {
                    "name": "temporal_approximate_backlog_count",
                    "selector": {"matchLabels": {"namespace": "parcours", "task_queue": "teleexpertise"}},
                },
                "target": {"type": "AverageValue", "averageValue": "200"},
            },
        }
    ]


def test_a_config_change_rolls_the_pods(rendered: dict[str, Rendered]) -> None:
    def checksum(r: Rendered, component: str) -> str:
        deployment = r.get("Deployment", name(component))
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    # The GHT profile changes the pool sizes: every component's pods are replaced.
    for component in COMPONENTS:
        assert checksum(rendered["default"], component) != checksum(rendered["ght"], component)
    # The digest is not configuration: the image change itself rolls them, the checksum stays.
    assert checksum(rendered["region"], "directory") == checksum(rendered["region-digest"], "directory")


# -- external PostgreSQL and Temporal, secrets by reference -------------------------------------------------


def env_of(r: Rendered, kind: str, object_name: str) -> dict[str, Any]:
    obj = r.get(kind, object_name)
    spec = obj["spec"]["template"]["spec"] if kind in ("Deployment", "Job") else obj["spec"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["containers"][0]["env"]}


def test_each_component_can_have_its_own_database_role(rendered: dict[str, Rendered]) -> None:
    r = rendered["region-roles"]
    url = (
        "parcours-rw.databases.svc:5432/parcours"
        "?sslmode=verify-full&sslrootcert=/etc/parcours/postgresql/ca.crt"
    )
    directory = env_of(r, "Deployment", name("directory"))
    assert directory["PARCOURS_DATABASE_URL"] == f"postgresql://parcours_directory@{url}"
    assert directory["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-db-directory", "key": "password"}}
    # By default each part is its own role, its password a key of the shared Secret; a worker is its
    # domain's service's role.
    scheduling = env_of(r, "Deployment", name("scheduling"))
    assert scheduling["PARCOURS_DATABASE_URL"] == f"postgresql://parcours_scheduling@{url}"
    assert scheduling["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-postgresql", "key": "scheduling"}}
    worker = env_of(r, "Deployment", name("workflows-teleexpertise"))
    assert worker["PARCOURS_DATABASE_URL"] == f"postgresql://parcours_expertise@{url}"
    billing = env_of(r, "Deployment", name("billing"))
    assert billing["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-db-billing", "key": "password"}}
    secret = r.get("Secret", "parcours-db-billing")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    migrations = env_of(r, "Job", "parcours-migrations")
    assert migrations["PARCOURS_DATABASE_URL"] == f"postgresql://parcours_owner@{url}"
    assert migrations["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-db-owner", "key": "password"}}
    # The roles Job, as the administrator, sets every role's password from the Secret its users read.
    roles = env_of(r, "Job", "parcours-database-roles")
    assert roles["PARCOURS_DB_ADMIN_URL"] == f"postgresql://dbadmin@{url}"
    assert roles["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-db-admin", "key": "password"}}
    passwords = {k: v["secretKeyRef"] for k, v in roles.items() if k.startswith("PARCOURS_DB_PASSWORD_")}
    assert passwords == {
        "PARCOURS_DB_PASSWORD_OWNER": {"name": "parcours-db-owner", "key": "password"},
        "PARCOURS_DB_PASSWORD_DIRECTORY": {"name": "parcours-db-directory", "key": "password"},
        "PARCOURS_DB_PASSWORD_BILLING": {"name": "parcours-db-billing", "key": "password"},
        "PARCOURS_DB_PASSWORD_SCHEDULING": {"name": "parcours-postgresql", "key": "scheduling"},
        "PARCOURS_DB_PASSWORD_EXPERTISE": {"name": "parcours-postgresql", "key": "expertise"},
        "PARCOURS_DB_PASSWORD_CONTRACTS": {"name": "parcours-postgresql", "key": "contracts"},
        "PARCOURS_DB_PASSWORD_AUDITOR": {"name": "parcours-postgresql", "key": "auditor", "optional": True},
    }


def test_no_secret_value_is_rendered_from_the_site_values(region: Rendered) -> None:
    # Everything secret is referenced: the chart writes no Secret of its own for the site's values.
    assert region.of_kind("Secret") == []
    for component in COMPONENTS:
        env = env_of(region, "Deployment", name(component))
        role = {
            "workflows-teleconsultation": "scheduling",
            "workflows-teleexpertise": "expertise",
            "workflows-contracts": "contracts",
        }.get(component, component)
        assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "parcours-postgresql", "key": role}}
        if component in SERVICES:
            assert env["PARCOURS_AUDIT_KEYS"] == {
                "secretKeyRef": {"name": "parcours-audit-keys", "key": "keys"}
            }
        if component != "directory" and component != "billing":
            assert env["PARCOURS_PAYLOAD_KEYS"] == {
                "secretKeyRef": {"name": "parcours-payload-keys", "key": "keys"}
            }
        else:
            assert "PARCOURS_PAYLOAD_KEYS" not in env  # directory and billing never talk to Temporal
        assert env["PARCOURS_TOKEN_JWKS_FILE"] == "/etc/parcours/tokens/jwks.json"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
        assert "deployment.environment.name=production" in env["OTEL_RESOURCE_ATTRIBUTES"]


@pytest.mark.parametrize(("caller", "callees"), sorted(CALLS.items()))
def test_callers_get_the_address_of_each_service_they_call(
    region: Rendered, caller: str, callees: set[str]
) -> None:
    env = env_of(region, "Deployment", name(caller))
    addresses = {k: v for k, v in env.items() if k.endswith("_ADDRESS") and k != "PARCOURS_TEMPORAL_ADDRESS"}
    assert addresses == {
        f"PARCOURS_{callee.upper()}_ADDRESS": f"{name(callee)}.parcours.svc:{SERVICES[callee]}"
        for callee in callees
    }


def test_hooks_run_before_the_services_in_order(region: Rendered) -> None:
    weights = {}
    for obj in region.objects:
        hook = obj["metadata"].get("annotations", {}).get("helm.sh/hook")
        if hook and hook != "test":
            assert hook == "pre-install,pre-upgrade", obj["metadata"]["name"]
            weights[f"{obj['kind']}/{obj['metadata']['name']}"] = int(
                obj["metadata"]["annotations"]["helm.sh/hook-weight"]
            )
    # What the Jobs use exists before them; Temporal is ready before the database changes.
    assert weights == {
        "ServiceAccount/parcours-hooks": -20,
        "ConfigMap/parcours-scripts": -20,
        "NetworkPolicy/parcours-hooks": -20,
        "Job/parcours-temporal-setup": -10,
        "Job/parcours-migrations": 0,
    }
    setup = region.get("Job", "parcours-temporal-setup")["spec"]["template"]["spec"]["containers"][0]
    assert setup["command"] == [
        "python",
        "/etc/parcours/scripts/temporal-setup.py",
        "--register-namespace",
        "--retention-days",
        "30",
        "--register-search-attributes",
    ]


# -- NetworkPolicy: deny all, then named allows -------------------------------------------------------------


def test_everything_is_denied_first(region: Rendered) -> None:
    deny = region.get("NetworkPolicy", "parcours-default-deny")["spec"]
    assert deny == {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "parcours", "app.kubernetes.io/instance": "parcours"}
        },
        "policyTypes": ["Ingress", "Egress"],
    }


def allowed_callers(r: Rendered, component: str) -> set[str]:
    """Components whose pods the NetworkPolicies let reach `component`'s gRPC port."""
    policy = r.get("NetworkPolicy", name(component))["spec"]
    callers: set[str] = set()
    for rule in policy["ingress"]:
        if {"port": "grpc", "protocol": "TCP"} not in rule["ports"]:
            continue
        for peer in rule["from"]:
            for expression in peer.get("podSelector", {}).get("matchExpressions", []):
                if expression["key"] == "app.kubernetes.io/component":
                    callers |= set(expression["values"])
    return callers


def allowed_callees(r: Rendered, component: str) -> set[str]:
    policy = r.get("NetworkPolicy", name(component))["spec"]
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policy["egress"]
        for peer in rule["to"]
    }


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_only_the_components_that_call_a_service_may_reach_it(region: Rendered, component: str) -> None:
    expected_callers = {caller for caller, callees in CALLS.items() if component in callees}
    assert allowed_callers(region, component) == expected_callers
    assert allowed_callees(region, component) == CALLS.get(component, set())
    policy = region.get("NetworkPolicy", name(component))["spec"]
    if component in SERVICES:
        # Hospital systems through the site's gateway namespace; the health port from the test pods only.
        grpc_peers = [
            p
            for rule in policy["ingress"]
            if {"port": "grpc", "protocol": "TCP"} in rule["ports"]
            for p in rule["from"]
        ]
        assert {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "hospital-gateway"}}
        } in grpc_peers
        health = [
            rule for rule in policy["ingress"] if {"port": "health", "protocol": "TCP"} in rule["ports"]
        ]
        assert health == [
            {
                "ports": [{"port": "health", "protocol": "TCP"}],
                "from": [
                    {
                        "podSelector": {
                            "matchLabels": {
                                "app.kubernetes.io/name": "parcours",
                                "app.kubernetes.io/instance": "parcours",
                                "app.kubernetes.io/component": "test",
                            }
                        }
                    }
                ],
            }
        ]
    else:
        assert policy["ingress"] == []


def test_named_allows_for_dns_postgresql_temporal_and_the_collector(region: Rendered) -> None:
    def selected(policy: str) -> set[str]:
        spec = region.get("NetworkPolicy", f"parcours-{policy}")["spec"]
        return {
            v
            for e in spec["podSelector"]["matchExpressions"]
            if e["key"] == "app.kubernetes.io/component"
            for v in e["values"]
        }

    assert selected("allow-postgresql") == COMPONENTS
    assert selected("allow-temporal") == COMPONENTS - {"directory", "billing"}
    assert selected("allow-otlp") == COMPONENTS
    temporal = region.get("NetworkPolicy", "parcours-allow-temporal")["spec"]["egress"]
    assert temporal == [
        {
            "ports": [{"port": 7233, "protocol": "TCP"}],
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "temporal"}}}],
        }
    ]
    dns = region.get("NetworkPolicy", "parcours-allow-dns")["spec"]
    assert dns["egress"][0]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def test_turning_networkpolicies_off_removes_them_all(rendered: dict[str, Rendered]) -> None:
    assert rendered["region-no-networkpolicy"].of_kind("NetworkPolicy") == []


def egress_of(objects: list[dict[str, Any]], policy: str) -> tuple[set[str], list[dict[str, Any]]] | None:
    """The components a named allow selects and its egress rules; None when it is not rendered."""
    found = [
        o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"parcours-{policy}"
    ]
    if not found:
        return None
    spec = found[0]["spec"]
    selected = {
        v
        for e in spec["podSelector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
        for v in e["values"]
    }
    return selected, spec["egress"]


def quick_objects(quick: dict[str, dict[str, Any]], case: str) -> list[dict[str, Any]]:
    assert quick[case]["error"] is None, quick[case]["error"]
    return [d["object"] for d in quick[case]["docs"]]


def test_workers_reach_the_relay_and_the_webhooks_only_when_configured(
    region: Rendered, quick: dict[str, dict[str, Any]]
) -> None:
    workers = {"workflows-teleconsultation", "workflows-teleexpertise"}
    assert egress_of(region.objects, "allow-smtp") == (
        workers,
        [{"ports": [{"port": 587, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "203.0.113.25/32"}}]}],
    )
    assert egress_of(region.objects, "allow-webhooks") == (
        workers,
        [{"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.42.0.0/16"}}]}],
    )
    # Nothing configured: no path out, and nothing to mount.
    nothing = quick_objects(quick, NO_NOTIFICATIONS)
    assert egress_of(nothing, "allow-smtp") is None
    assert egress_of(nothing, "allow-webhooks") is None
    for obj in nothing:
        if obj["kind"] == "Deployment":
            env = {e["name"] for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert not {n for n in env if n.startswith(("PARCOURS_SMTP_", "PARCOURS_NOTIFY_"))}
            assert "notify" not in {v["name"] for v in obj["spec"]["template"]["spec"]["volumes"]}
        assert obj["kind"] != "ConfigMap" or obj["metadata"]["name"] != "parcours-address-book"
    assert (
        "WARNING: no SMTP relay and no webhook keys: nothing leaves the hub"
        in quick[NO_NOTIFICATIONS]["notes"]
    )
    # Only the workers deliver: no service gets the relay's settings or a path to it.
    for deployment in region.of_kind("Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        env = env_of(region, "Deployment", deployment["metadata"]["name"])
        assert ("PARCOURS_SMTP_HOST" in env) == (component in workers), component


def test_plaintext_smtp_is_for_a_development_sink_that_says_so(quick: dict[str, dict[str, Any]]) -> None:
    objects = quick_objects(quick, DEV_SINK)
    worker = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == name("workflows-teleexpertise")
    )
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["PARCOURS_SMTP_HOST"], env["PARCOURS_SMTP_PORT"], env["PARCOURS_SMTP_TLS"]) == (
        "mailsink.parcours-dev.svc",
        "2525",
        "none",
    )
    assert "PARCOURS_SMTP_CA_FILE" not in env and "PARCOURS_SMTP_CERT_FILE" not in env
    assert egress_of(objects, "allow-smtp") == (
        {"workflows-teleconsultation", "workflows-teleexpertise"},
        [{"ports": [{"port": 2525, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "203.0.113.25/32"}}]}],
    )


def test_the_workers_mount_their_notification_files_read_only(region: Rendered) -> None:
    deployment = region.get("Deployment", name("workflows-teleconsultation"))
    pod = deployment["spec"]["template"]["spec"]
    assert {"name": "notify", "mountPath": "/etc/parcours/notify", "readOnly": True} in pod["containers"][0][
        "volumeMounts"
    ]
    volume = next(v for v in pod["volumes"] if v["name"] == "notify")
    assert volume["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {
                "configMap": {
                    "name": "parcours-address-book",
                    "items": [{"key": "address-book.json", "path": "address-book.json"}],
                }
            },
            {"secret": {"name": "parcours-mssante-ca", "items": [{"key": "ca.crt", "path": "smtp-ca.crt"}]}},
            {
                "secret": {
                    "name": "parcours-mssante-client",
                    "items": [
                        {"key": "tls.crt", "path": "smtp-client.crt"},
                        {"key": "tls.key", "path": "smtp-client.key"},
                    ],
                }
            },
        ],
    }
    env = env_of(region, "Deployment", name("workflows-teleconsultation"))
    assert env["PARCOURS_NOTIFY_WEBHOOK_KEYS"] == {
        "secretKeyRef": {"name": "parcours-webhook-keys", "key": "keys"}
    }
    # The relay authenticates the hub by its certificate: no login.
    assert "PARCOURS_SMTP_USERNAME" not in env and "PARCOURS_SMTP_PASSWORD" not in env
    assert env["PARCOURS_JOIN_TOKEN_KEY"] == {
        "secretKeyRef": {"name": "parcours-join-token-key", "key": "key"}
    }
    # The inline book holds practitioners' professional addresses and establishments' endpoints, no secret.
    book = json.loads(region.get("ConfigMap", "parcours-address-book")["data"]["address-book.json"])
    assert book["webhooks"]["establishments/420000017"] == {
        "url": "https://dpi.ch-forez.fr/parcours/evenements",
        "key_id": "forez-1",
    }
    assert set(book["emails"]) == {"practitioners/10000000101", "practitioners/10000000202"}


def test_editing_the_inline_address_book_rolls_the_workers_only(
    region: Rendered, quick: dict[str, dict[str, Any]]
) -> None:
    def annotations(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
        deployment = next(
            o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name(component)
        )
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    edited = quick_objects(quick, ANOTHER_BOOK)
    for worker in NOTIFYING_WORKERS:
        before, after = annotations(region.objects, worker), annotations(edited, worker)
        assert before["checksum/address-book"] != after["checksum/address-book"], worker
    for service in COMPONENTS - NOTIFYING_WORKERS:
        assert "checksum/address-book" not in annotations(region.objects, service)
        assert annotations(region.objects, service) == annotations(edited, service)


def test_notes_say_where_notifications_go(region: Rendered) -> None:
    relay = "smtp.mssante-operateur.example:587 (starttls, client certificate parcours-mssante-client)"
    assert f"e-mail       {relay}" in region.notes
    assert "webhooks     signed with the keys of Secret parcours-webhook-keys" in region.notes
    assert "join links   https://visio.chu-exemple.fr/rejoindre/<token>" in region.notes


# -- golden objects: a template change that drops a probe, a hardening setting or a policy fails here -------


def golden_selection(r: Rendered) -> dict[str, Any]:
    directory = r.get("Deployment", name("directory"))["spec"]["template"]["spec"]
    container = directory["containers"][0]
    return {
        "directory-pod-securityContext": directory["securityContext"],
        "directory-container": {
            k: container[k]
            for k in (
                "securityContext",
                "startupProbe",
                "readinessProbe",
                "livenessProbe",
                "ports",
                "volumeMounts",
            )
        },
        "networkpolicies": {o["metadata"]["name"]: o["spec"] for o in r.of_kind("NetworkPolicy")},
    }


def test_golden_objects_of_the_region_profile(region: Rendered) -> None:
    golden = GOLDEN / "region.json"
    actual = golden_selection(region)
    if not golden.exists():
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"{golden} was missing: written from this render, review and commit it")
    assert actual == json.loads(golden.read_text()), (
        f"the rendered objects differ from {golden}; if the change is intended, delete the file and re-run"
    )


# -- mTLS from cert-manager ---------------------------------------------------------------------------------


def test_cert_manager_issues_one_certificate_per_component(rendered: dict[str, Rendered]) -> None:
    r = rendered["region-cert-manager"]
    certificates = {c["metadata"]["name"]: c["spec"] for c in r.of_kind("Certificate")}
    for component in COMPONENTS:
        spec = certificates[name(component)]
        identity = "workflows" if component in WORKERS else component
        assert spec["commonName"] == f"parcours-{identity}"
        assert set(spec["usages"]) >= {"server auth", "client auth"}
        assert spec["issuerRef"] == {
            "name": "parcours-ca",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }
        # The Secret the pods mount is the one cert-manager writes.
        volumes = r.get("Deployment", name(component))["spec"]["template"]["spec"]["volumes"]
        tls = next(v for v in volumes if v["name"] == "tls")
        assert tls["secret"]["secretName"] == spec["secretName"]
    # Every address a caller dials is a name in the callee's certificate (the client checks it).
    for caller in CALLS:
        for key, value in env_of(r, "Deployment", name(caller)).items():
            if key.endswith("_ADDRESS") and key != "PARCOURS_TEMPORAL_ADDRESS":
                host, _ = value.rsplit(":", 1)
                callee = key.removeprefix("PARCOURS_").removesuffix("_ADDRESS").lower()
                assert host in certificates[name(callee)]["dnsNames"]
    establishments = {spec["commonName"]: spec for n, spec in certificates.items() if "establishment" in n}
    assert set(establishments) == {"420000017", "2A0000031"}
    assert establishments["2A0000031"]["usages"] == ["client auth", "digital signature"]


# -- a component that lands later: one values block (the console, behind the Ingress) -----------------------


def test_a_new_component_is_one_values_block_and_the_ingress_renders(rendered: dict[str, Rendered]) -> None:
    r = rendered["region-console"]
    for kind in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        assert name("console") in r.names(kind), kind
    ingress = r.get("Ingress", name("console"))["spec"]
    assert ingress["tls"] == [{"hosts": ["parcours.ars-exemple.fr"], "secretName": "parcours-console-tls"}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": name("console"), "port": {"name": "http"}}
    policy = r.get("NetworkPolicy", name("console"))["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
            ],
        }
    ]
    assert allowed_callees(r, "console") == {"billing", "contracts", "directory", "expertise", "scheduling"}
    # The services it calls now accept it.
    assert "console" in allowed_callers(r, "directory")
    container = r.get("Deployment", name("console"))["spec"]["template"]["spec"]["containers"][0]
    # Alive while the process runs; ready, hence behind the Ingress, once its gRPC channels are connected.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Its OpenID provider is reachable (discovery, token and keys endpoints), by the console alone.
    assert egress_of(r.objects, "allow-oidc") == (
        {"console"},
        [{"ports": [{"port": 443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "198.51.100.10/32"}}]}],
    )
    assert egress_of(rendered["region"].objects, "allow-oidc") is None
    env = env_of(r, "Deployment", name("console"))
    assert env["PARCOURS_OIDC_CLIENT_SECRET"] == {
        "secretKeyRef": {"name": "parcours-console-oidc", "key": "secret"}
    }
    assert "PARCOURS_PAYLOAD_KEYS" in env  # the codec endpoint decrypts
    assert r.names("Ingress") == {name("console")}
    assert rendered["region"].names("Ingress") == set()


# -- NOTES and helm test ------------------------------------------------------------------------------------


def test_notes_say_where_each_service_is_and_how_to_call_it(region: Rendered) -> None:
    for component, port in SERVICES.items():
        assert f"{name(component)}.parcours.svc:{port}" in region.notes
    for worker in WORKERS:
        assert re.search(rf"{worker}\s+Temporal worker", region.notes)
    assert "helm test parcours -n parcours" in region.notes
    assert "parcours.directory.v1.DirectoryService/ListRegions" in region.notes
    assert "-servername parcours-directory.parcours.svc" in region.notes


def test_notes_warn_when_no_hospital_system_may_reach_the_services(
    quick: dict[str, dict[str, Any]], region: Rendered
) -> None:
    notes = quick[NO_CLIENTS]["notes"]
    assert "WARNING: networkPolicy.clients is empty" in notes
    assert "(billing, contracts, directory, expertise, scheduling) from outside this release" in notes
    assert "WARNING" not in region.notes


def test_helm_test_calls_each_health_service(region: Rendered) -> None:
    tests = [p for p in region.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    targets = {p["spec"]["containers"][0]["command"][-1] for p in tests}
    assert targets == {f"{name(c)}.parcours.svc:8081" for c in SERVICES}
    for pod in tests:
        assert pod["spec"]["containers"][0]["command"][:2] == [
            "python",
            "/etc/parcours/scripts/grpc-health-check.py",
        ]
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"
    egress = region.get("NetworkPolicy", "parcours-tests")["spec"]["egress"]
    assert egress[0]["ports"] == [{"port": 8081, "protocol": "TCP"}]


def test_the_console_mails_officers_through_the_relay_and_nothing_else(rendered: dict[str, Rendered]) -> None:
    r = rendered["region-console"]
    workers = {"workflows-teleconsultation", "workflows-teleexpertise"}
    smtp = egress_of(r.objects, "allow-smtp")
    webhooks = egress_of(r.objects, "allow-webhooks")
    assert smtp is not None and smtp[0] == workers | {"console"}
    assert webhooks is not None and webhooks[0] == workers
    env = env_of(r, "Deployment", name("console"))
    assert (
        env["PARCOURS_SMTP_HOST"]
        == env_of(r, "Deployment", name("workflows-teleexpertise"))["PARCOURS_SMTP_HOST"]
    )
    assert not {n for n in env if n.startswith(("PARCOURS_NOTIFY_", "PARCOURS_WEBHOOK_"))}
    volumes = r.get("Deployment", name("console"))["spec"]["template"]["spec"]["volumes"]
    for volume in volumes:
        if volume["name"] == "notify":
            paths = {
                i["path"] for s in volume["projected"]["sources"] for i in next(iter(s.values()))["items"]
            }
            assert "address-book.json" not in paths
