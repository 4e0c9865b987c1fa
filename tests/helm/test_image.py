"""The Dockerfile, read without a container builder (none runs here; `make image` builds where one does).

What an image review checks: a multi-stage build whose final stage installs nothing, has no pip, runs as the
fixed non-root UID the chart expects, never writes bytecode, and carries the generated protobuf code and every
module the chart runs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.kit.server import ALLOCATOR_ENVIRONMENT
from tests.helm.conftest import ROOT, Rendered


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for k, args in self.instructions if k == keyword]


def stages(dockerfile: Path) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += " " + line.removesuffix("\\").strip() if pending else line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            logical.append(pending)
            pending = ""
    out: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, line
            out.append(Stage(base=match.group(1), name=match.group(2) or ""))
        else:
            out[-1].instructions.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(ROOT / "Dockerfile")


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            env[key] = value
    return env


def test_multi_stage_on_one_pinned_base(dockerfile: list[Stage]) -> None:
    assert [s.name for s in dockerfile] == ["build", "runtime"]
    assert dockerfile[0].base == dockerfile[1].base
    assert re.fullmatch(r"python:3\.11-slim-\w+", dockerfile[1].base)


def test_final_stage_runs_as_the_chart_uid_with_nothing_installed(
    dockerfile: list[Stage], region: Rendered
) -> None:
    final = dockerfile[-1]
    assert final.all("USER") == ["10001:10001"]
    pod = region.get("Deployment", "parcours-directory")["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (10001, 10001)
    runs = " ".join(final.all("RUN"))
    for installer in ("pip install", "apt-get install", "apt install", "gcc", "build-essential", "uv pip"):
        assert installer not in runs
    # pip leaves the base image's interpreter; the venv copied in was built without it.
    assert "pip uninstall --yes pip setuptools wheel" in runs
    assert "rm -f /usr/local/bin/pip" in runs
    build_runs = " ".join(dockerfile[0].all("RUN"))
    assert "/opt/parcours/bin/pip uninstall --yes pip setuptools" in build_runs
    # Everything the final stage holds comes from the build stage, not the build context.
    assert sorted(final.all("COPY")) == [
        "--from=build /app /app",
        "--from=build /opt/parcours /opt/parcours",
    ]


def test_read_only_root_friendly(dockerfile: list[Stage]) -> None:
    env = env_of(dockerfile[-1])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"  # the chart's only writable mount
    assert env["PYTHONPATH"] == "/app:/app/gen"
    # Bytecode compiled at build time and valid whatever the files' mtimes.
    assert "compileall -q --invalidation-mode unchecked-hash /app" in " ".join(dockerfile[0].all("RUN"))


def test_every_process_of_the_image_runs_with_the_allocator_settings_of_make_run(
    dockerfile: list[Stage],
) -> None:
    env = env_of(dockerfile[-1])
    assert {key: env.get(key) for key in ALLOCATOR_ENVIRONMENT} == ALLOCATOR_ENVIRONMENT


def test_generated_code_is_baked_in(dockerfile: list[Stage]) -> None:
    build = " ".join(dockerfile[0].all("RUN"))
    assert "/opt/build/bin/python protos/generate.py" in build
    assert "cp -r build/gen/python /app/gen" in build
    assert "/app:/app/gen" in env_of(dockerfile[-1])["PYTHONPATH"]


def test_runtime_dependencies_are_pinned_by_the_lock(dockerfile: list[Stage]) -> None:
    build = " ".join(dockerfile[0].all("RUN"))
    assert "pip install --constraint requirements.lock --requirement runtime.txt" in build
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    locked = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in locked, f"{name} is not pinned in requirements.lock"


def test_the_build_context_is_only_what_the_image_needs() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line for line in lines if line.startswith("!")} == {
        "!pyproject.toml",
        "!requirements.lock",
        "!protos/",
        "!services/",
        "!workflows/",
    }


def test_every_module_the_chart_runs_is_in_the_image(dockerfile: list[Stage], region: Rendered) -> None:
    copied = {args.split()[0].rstrip("/") for args in dockerfile[0].all("COPY") if not args.startswith("--")}
    modules = set()
    for obj in region.of_kind("Deployment") + region.of_kind("Job"):
        command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
        if command[:2] == ["python", "-m"]:
            modules.add(command[2])
    assert "services.kit.migrate" in modules
    assert len(modules) == 9  # eight components and the migrations
    for module in modules:
        path = ROOT.joinpath(*module.split("."))
        assert path.parts[len(ROOT.parts)] in copied, module
        assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), module


def runtime_closure(requirements: list[str]) -> set[str]:
    """Distribution names installed by `pip install` of `requirements` (markers and extras evaluated)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    queue = [(Requirement(r), "") for r in requirements]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            children = requires(name) or []
        except PackageNotFoundError:
            continue  # a dependency of another platform, not installed here
        for child in children:
            for wanted in ["", *sorted(extras)]:
                queue.append((Requirement(child), wanted))
    return {key.split("[")[0] for key in seen}


def imported_top_level(paths: list[Path]) -> set[str]:
    import ast

    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_image_has_what_its_code_imports_and_not_the_development_stack() -> None:
    import sys
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"dev_only = \{([^}]*)\}", text)
    assert match
    dev_only = set(re.findall(r"'([^']+)'", match.group(1)))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = [r for r in pyproject if re.split(r"[^A-Za-z0-9._-]", r)[0].lower() not in dev_only]
    assert len(runtime) == len(pyproject) - len(dev_only)
    installed = runtime_closure(runtime)
    assert installed.isdisjoint(dev_only)

    code = [
        p
        for folder in ("services", "workflows")
        for p in (ROOT / folder).rglob("*.py")
        if "devstack" not in p.parts
    ] + sorted((ROOT / "helm" / "parcours" / "files").glob("*.py"))
    providers = packages_distributions()
    first_party = {"services", "workflows", "parcours", "buf"}  # ours, and the generated code in /app/gen
    missing = {}
    for module in imported_top_level(code) - set(sys.stdlib_module_names) - first_party - {"__future__"}:
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists)
    assert missing == {}, "imported by the code but not installed in the image"
