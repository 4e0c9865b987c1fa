"""The commands the chart runs, run here against the suite's real PostgreSQL, Temporal and a kit server.

The hook Jobs and the `helm test` pods execute exactly the rendered command; the scripts they mount come from
the ConfigMap the chart builds from helm/parcours/files/. Re-running a hook must change nothing.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from services.devstack.postgres import PostgresHandle
from services.devstack.temporal import TemporalHandle
from services.kit.pki import DevPki
from services.kit.roles import without_password
from services.kit.search_attributes import ALL
from services.kit.server import build_server
from services.kit.settings import KitSettings
from tests.helm.conftest import CHART, ROOT, Rendered
from tests.support import DB_PASSWORDS, kit_settings, role_url

SCRIPTS_MOUNT = "/etc/parcours/scripts"


def container(r: Rendered, kind: str, name: str) -> dict[str, Any]:
    obj = r.get(kind, name)
    spec = obj["spec"]["template"]["spec"] if kind == "Job" else obj["spec"]
    return dict(spec["containers"][0])


def local_command(r: Rendered, command: list[str]) -> list[str]:
    """The rendered command with this interpreter, and the mounted scripts read from the ConfigMap's source.

    The ConfigMap must carry each script unchanged (what is tested here is what the pod runs)."""
    assert command[0] == "python"
    scripts = r.get("ConfigMap", "parcours-scripts")["data"]
    out = [sys.executable]
    for arg in command[1:]:
        if arg.startswith(SCRIPTS_MOUNT + "/"):
            source = CHART / "files" / Path(arg).name
            assert scripts[source.name].strip() == source.read_text().strip()
            arg = str(source)
        out.append(arg)
    return out


async def run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


# -- migrations Job -----------------------------------------------------------------------------------------


async def test_the_migrations_job_is_safe_to_re_run(region: Rendered, database_url: str) -> None:
    job = container(region, "Job", "parcours-migrations")
    assert job["command"] == ["python", "-m", "services.kit.migrate"]
    env = {e["name"]: e for e in job["env"]}
    # The URL points libpq/asyncpg at the CA file the Job mounts.
    url = env["PARCOURS_DATABASE_URL"]["value"]
    mount = next(m for m in job["volumeMounts"] if m["name"] == "postgresql-ca")["mountPath"]
    assert f"sslrootcert={mount}/ca.crt" in url
    assert "sslmode=verify-full" in url
    # The suite's database already has every migration: the Job's command, run again, applies nothing.
    code, output = await run(local_command(region, job["command"]), {"PARCOURS_DATABASE_URL": database_url})
    assert code == 0, output
    lines = [line for line in output.splitlines() if ": " in line and "applied" in line]
    assert {line.split(":")[0] for line in lines} >= {
        "kit",
        "directory",
        "billing",
        "expertise",
        "scheduling",
    }
    assert all(line.endswith(": 0 applied") for line in lines), output


# -- database roles Job -------------------------------------------------------------------------------------


async def test_the_database_roles_job_makes_the_roles_and_re_runs_safely(
    rendered: dict[str, Rendered], postgres: PostgresHandle, database_url: str
) -> None:
    job = container(rendered["region-roles"], "Job", "parcours-database-roles")
    assert job["command"] == ["python", "-m", "services.kit.roles", "provision"]
    env = {e["name"] for e in job["env"]}
    assert {"PARCOURS_DB_ADMIN_URL", "PGPASSWORD", "PARCOURS_DB_PASSWORD_OWNER"} <= env
    # As the Job runs it: an administrator's URL without its password (PGPASSWORD), each role's password in
    # PARCOURS_DB_PASSWORD_<ROLE> (the suite's own, so its services keep connecting). Twice: nothing changes.
    admin = urlsplit(postgres.url)
    local = {
        "PARCOURS_DB_ADMIN_URL": without_password(postgres.url),
        "PGPASSWORD": admin.password or "",
        "PARCOURS_DB_NAME": "parcours",
        **{f"PARCOURS_DB_PASSWORD_{r.removeprefix('parcours_').upper()}": p for r, p in DB_PASSWORDS.items()},
    }
    for _ in range(2):
        code, output = await run(local_command(rendered["region-roles"], job["command"]), local)
        assert code == 0, output
        assert "roles ready in parcours" in output
    conn = await asyncpg.connect(role_url(database_url, "parcours_billing"))
    try:
        assert await conn.fetchval("SELECT current_user") == "parcours_billing"
    finally:
        await conn.close()


# -- Temporal registration Job ------------------------------------------------------------------------------


async def registered(address: str, namespace: str) -> dict[str, int]:
    client = await Client.connect(address)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    return dict(response.custom_attributes)


async def test_the_temporal_job_creates_the_namespace_and_attributes_then_changes_nothing(
    region: Rendered, temporal: TemporalHandle
) -> None:
    job = container(region, "Job", "parcours-temporal-setup")
    namespace = f"helm-{uuid.uuid4().hex[:12]}"
    env = {"PARCOURS_TEMPORAL_ADDRESS": temporal.address, "PARCOURS_TEMPORAL_NAMESPACE": namespace}
    command = local_command(region, job["command"])

    code, first = await run(command, env)
    assert code == 0, first
    assert f"namespace {namespace} created" in first
    assert "registered ParcoursBreached, ParcoursDueTime" in first
    attributes = await registered(temporal.address, namespace)
    for key in ALL:
        assert attributes[key.name] == int(key.indexed_value_type), key.name

    code, again = await run(command, env)
    assert code == 0, again
    assert f"namespace {namespace} already exists" in again
    assert "all present" in again
    assert await registered(temporal.address, namespace) == attributes


async def test_the_temporal_job_stops_on_an_attribute_of_another_type(
    region: Rendered, temporal: TemporalHandle
) -> None:
    job = container(region, "Job", "parcours-temporal-setup")
    namespace = f"helm-{uuid.uuid4().hex[:12]}"
    env = {"PARCOURS_TEMPORAL_ADDRESS": temporal.address, "PARCOURS_TEMPORAL_NAMESPACE": namespace}
    command = local_command(region, job["command"])
    only_namespace = [a for a in command if a != "--register-search-attributes"]
    code, output = await run(only_namespace, env)
    assert code == 0, output
    client = await Client.connect(temporal.address)
    request = AddSearchAttributesRequest(
        namespace=namespace, search_attributes={"ParcoursState": IndexedValueType.INDEXED_VALUE_TYPE_TEXT}
    )
    # A new namespace reaches the frontend's cache within seconds; Temporal offers nothing to await for it.
    for _ in range(100):
        try:
            await client.operator_service.add_search_attributes(request)
            break
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.1)
    else:
        pytest.fail(f"namespace {namespace} never became visible")

    code, output = await run(command, env)
    assert code != 0
    assert "ParcoursState is registered as INDEXED_VALUE_TYPE_TEXT" in output
    assert "INDEXED_VALUE_TYPE_KEYWORD" in output
    # Nothing else was registered behind the operator's back.
    assert "ParcoursKind" not in await registered(temporal.address, namespace)


# -- helm test pods -----------------------------------------------------------------------------------------


@pytest.fixture
async def kit_server_with_health_port(pki: DevPki, database_url: str, pool: asyncpg.Pool) -> Any:
    settings = KitSettings(**kit_settings(pki, database_url, "directory", health_port=0))  # type: ignore[arg-type]
    kit = await build_server(settings, pool=pool, services=[])
    await kit.start()
    try:
        yield kit
    finally:
        await kit.stop(0.1)


async def test_the_helm_test_pod_passes_only_on_serving(
    region: Rendered, kit_server_with_health_port: Any
) -> None:
    kit = kit_server_with_health_port
    pod = container(region, "Pod", "parcours-test-directory")
    command = [*local_command(region, pod["command"][:-1]), f"127.0.0.1:{kit.health_port}"]

    await kit.set_serving(True)
    code, output = await run(command, {})
    assert (code, output.strip()) == (0, f"127.0.0.1:{kit.health_port}: SERVING")

    await kit.set_serving(False)
    code, output = await run(command, {})
    assert (code, output.strip()) == (1, f"127.0.0.1:{kit.health_port}: NOT_SERVING")

    await kit.stop(0.1)
    code, output = await run([*command, "--timeout", "0.5"], {})
    assert code == 1
    assert output.strip() == f"127.0.0.1:{kit.health_port}: DEADLINE_EXCEEDED"
