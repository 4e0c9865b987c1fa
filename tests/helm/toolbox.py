"""The chart tools' side of tests/helm, run by the Python of build/helm-tools (never imported by the suite).

helm-python-sdk, kubernetes-validate and checkov live in their own environment so that their dependencies
never move the product's pins; this script is the one place that imports them. Given a JSON spec of variants
(values files + overrides), it lints, schema-checks and renders each, writes every rendered manifest to
`<out>/<variant>/manifests.yaml`, validates each object with kubernetes-validate in strict mode against the
Kubernetes versions asked for, and writes one JSON report the tests read.

    build/helm-tools/bin/python tests/helm/toolbox.py SPEC.json REPORT.json
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml

RELEASE = "parcours"
NAMESPACE = "parcours"


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's -f semantics: maps merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_of(root: Path, variant: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in variant.get("files", []):
        values = deep_merge(values, yaml.safe_load((root / name).read_text()) or {})
    return deep_merge(values, variant.get("values", {}))


def render(chart: helm_python.Chart, values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            notes = rendered[path]
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                docs.append({"template": path, "object": doc})
    return docs, notes


def validate(docs: list[dict[str, Any]], versions: list[str]) -> list[str]:
    problems = []
    for entry in docs:
        obj = entry["object"]
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                # CRDs (cert-manager's Certificate) have no schema in Kubernetes' own: checked by the tests.
                if obj.get("apiVersion") != "cert-manager.io/v1":
                    problems.append(
                        f"{version} {label}: no schema for {obj.get('apiVersion')} {obj.get('kind')}"
                    )
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"{version} {label}: {where}: {exc.message}")
    return problems


def main(spec_file: str, report_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text())
    root = Path(spec["root"])
    chart_dir = root / spec["chart"]
    out = root / spec["out"]
    chart = helm_python.Chart.load(chart_dir)
    report: dict[str, Any] = {"variants": {}}
    for name, variant in spec["variants"].items():
        values = values_of(root, variant)
        entry: dict[str, Any] = {"error": None}
        try:
            docs, notes = render(chart, values)
        except helm_python.HelmError as exc:
            entry["error"] = str(exc)
            report["variants"][name] = entry
            continue
        entry["docs"] = docs
        entry["notes"] = notes
        if variant.get("lint", True):
            lint = helm_python.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
            entry["lint"] = lint["messages"] + [{"severity": 3, "error": e} for e in lint["errors"]]
        if variant.get("kubernetes_validate", True):
            entry["kubernetes_validate"] = validate(docs, spec["kube_versions"])
        if variant.get("write", True):
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifests.yaml").write_text(
                yaml.safe_dump_all([d["object"] for d in docs], sort_keys=False)
            )
        report["variants"][name] = entry
    Path(report_file).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
