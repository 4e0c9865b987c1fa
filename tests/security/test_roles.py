"""Least privilege in the database (issue 9.6): each service connects as its own role, which reads and
writes its own schema only, appends to the audit log only through `audit.append_events`, and can neither
change audit rows, move a chain's head, switch a trigger off nor read another service's schema. The
migrations' owner is not a superuser either. (Every other test of the suite runs its services as these roles:
that the grants are enough is proven there.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from services.kit.roles import AUDITOR, LOGIN_ROLES, OWNER, SCHEMAS, service_role
from tests.security.conftest import SecurityHub
from tests.support import role_url

SERVICES = ("directory", "scheduling", "expertise", "billing")
# One table of each service's schema.
TABLES = {
    "directory": "directory.patients",
    "scheduling": "scheduling.appointments",
    "expertise": "expertise.requests",
    "billing": "billing.charges",
}


@pytest.fixture
async def as_role(hub: SecurityHub) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    connections: dict[str, asyncpg.Connection] = {}
    for role in LOGIN_ROLES:
        connections[role] = await asyncpg.connect(role_url(hub.database_url, role))
    try:
        yield connections
    finally:
        for conn in connections.values():
            await conn.close()


async def test_no_role_of_the_hub_is_a_superuser_or_makes_roles(hub: SecurityHub) -> None:
    rows = await hub.admin.fetch(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
        " WHERE rolname = ANY($1)",
        list(LOGIN_ROLES),
    )
    assert {r["rolname"] for r in rows} == set(LOGIN_ROLES)
    assert not [r["rolname"] for r in rows if r["rolsuper"] or r["rolcreaterole"] or r["rolcreatedb"]]
    assert not [r["rolname"] for r in rows if r["rolbypassrls"]]


async def test_every_service_connects_as_its_own_role(hub: SecurityHub) -> None:
    # The security hub's services and workers have pools open on its database.
    rows = await hub.admin.fetch(
        "SELECT DISTINCT application_name, usename FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE 'parcours-%'"
    )
    seen = {r["application_name"]: r["usename"] for r in rows}
    for service in SERVICES:
        assert seen.get(f"parcours-{service}") == service_role(service), seen
    assert seen.get("parcours-workflows-teleconsultation") == service_role("scheduling")
    assert seen.get("parcours-workflows-teleexpertise") == service_role("expertise")
    superusers = {r["rolname"] for r in await hub.admin.fetch("SELECT rolname FROM pg_roles WHERE rolsuper")}
    assert not superusers & set(seen.values())


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_cannot_change_the_audit_log(
    service: str, as_role: dict[str, asyncpg.Connection]
) -> None:
    conn = as_role[service_role(service)]
    for statement in (
        "UPDATE audit.events SET outcome = 'OK'",
        "DELETE FROM audit.events",
        "TRUNCATE audit.events",
        "INSERT INTO audit.events SELECT * FROM audit.events LIMIT 1",
        "SELECT count(*) FROM audit.events",
        "UPDATE audit.chain_heads SET seq = 0",
        "SELECT count(*) FROM audit.chain_heads",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    for statement in (
        "ALTER TABLE audit.events DISABLE TRIGGER events_append_only",
        "DROP TRIGGER events_append_only ON audit.events",
        "ALTER FUNCTION audit.append_events(text, audit.event_input[]) SECURITY INVOKER",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await conn.execute(statement)


async def test_the_append_function_only_continues_a_chain(
    hub: SecurityHub, as_role: dict[str, asyncpg.Connection]
) -> None:
    """The one way in checks the chain: a row that does not follow the head is refused, so a service cannot
    overwrite or fork history through it either."""
    conn = as_role[service_role("billing")]
    chain = "roles-probe"
    async with conn.transaction():
        head = await conn.fetchrow("SELECT seq, hash FROM audit.lock_chain($1)", chain)
    assert head is not None
    row = (
        head["seq"],  # the head's own number again: an attempt to replace the newest row
        datetime.now(UTC),
        "",
        "component/billing",
        ["ROLE_HUB_SERVICE"],
        "R",
        "/probe",
        "",
        "",
        "OK",
        "",
        "",
        "t1",
        bytes(head["hash"]),
        bytes(32),
    )
    with pytest.raises(asyncpg.SerializationError, match="does not continue"):
        await conn.fetchval("SELECT audit.append_events($1, $2::audit.event_input[])", chain, [row])
    unkeyed = (head["seq"] + 1, *row[1:12], "", bytes(head["hash"]), bytes(32))
    with pytest.raises(asyncpg.InvalidParameterValueError, match="keyed"):
        await conn.fetchval("SELECT audit.append_events($1, $2::audit.event_input[])", chain, [unkeyed])


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_cannot_read_another_service_schema(
    service: str, as_role: dict[str, asyncpg.Connection]
) -> None:
    conn = as_role[service_role(service)]
    assert await conn.fetchval(f"SELECT count(*) >= 0 FROM {TABLES[service]}")  # noqa: S608 (fixed names)
    for other, table in TABLES.items():
        if other == service:
            continue
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"schema {other}"):
            await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 (fixed names)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(f"CREATE TABLE {service}.intruder (x int)")


async def test_the_ledger_and_the_catalog_are_not_the_billing_role_to_change(
    as_role: dict[str, asyncpg.Connection],
) -> None:
    conn = as_role[service_role("billing")]
    for statement in (
        "UPDATE billing.charges SET amount_cents = 0",
        "DELETE FROM billing.acts",
        "ALTER TABLE billing.charges DISABLE TRIGGER charges_append_only",
        "UPDATE billing.catalog_entries SET label = 'x'",
        "DELETE FROM billing.catalogs",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


async def test_the_auditor_reads_the_log_and_nothing_else(as_role: dict[str, asyncpg.Connection]) -> None:
    conn = as_role[AUDITOR]
    assert await conn.fetchval("SELECT count(*) >= 0 FROM audit.events")
    assert await conn.fetchval("SELECT count(*) >= 0 FROM audit.chain_heads")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM audit.events")
    for schema in SCHEMAS[:4]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval(f"SELECT count(*) FROM {TABLES[schema]}")  # noqa: S608 (fixed names)


async def test_the_owner_owns_everything_and_is_no_superuser(hub: SecurityHub) -> None:
    foreign = await hub.admin.fetch(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1) AND c.relowner <> $2::regrole
        """,
        ["audit", *SCHEMAS],
        OWNER,
    )
    assert not foreign
