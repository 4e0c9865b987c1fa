"""The database roles of a Parcours deployment: each process connects with the least it needs (issue 9.6).

- `parcours_owner`: the migrations (`python -m services.kit.migrate`) connect as it; it owns every schema and
  object, and is not a superuser.
- `parcours_<schema>` (directory, scheduling, expertise, billing, contracts, console): the service of that
  schema and its domain's workflow worker; it reads and writes the rows of its own schema, and appends to the
  audit log through `audit.append_events`.
- `parcours_auditor`: `python -m services.kit.audit verify` / `export`; it reads the audit log.

A service role owns nothing: it cannot alter a table, switch a trigger off (billing's append-only ledger, the
audit log's), read another service's schema or touch `audit.chain_heads`. Audit rows reach the database only
through two SECURITY DEFINER functions owned by `parcours_owner` (services/kit/migrations), granted to the
group role `parcours_audit_writer`, of which every service role is a member.

Roles are cluster-wide and are created once by an administrator (a role with CREATEROLE, not necessarily a
superuser): `python -m services.kit.roles provision` (`make run`, the test suite and the Helm chart's roles
Job do) or the script `python -m services.kit.roles sql` prints for a DBA. The privileges on objects come
with the migrations: each service's `…-roles` migration runs `grants_sql(schema)` as the owner.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

OWNER = "parcours_owner"
AUDITOR = "parcours_auditor"
AUDIT_WRITER = "parcours_audit_writer"
# One role per service schema.
SCHEMAS = ("directory", "scheduling", "expertise", "billing", "contracts", "console")
# Schemas whose objects the owner takes over from whoever created them before roles existed.
OWNED_SCHEMAS = ("audit", *SCHEMAS)
# yoyo's bookkeeping tables, in schema public.
YOYO_TABLES = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")

_SCHEMA_RE = re.compile(r"[a-z][a-z0-9_]{0,30}")


def service_role(schema: str) -> str:
    """The role of a service schema."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    return f"parcours_{schema}"


SERVICE_ROLES = tuple(service_role(s) for s in SCHEMAS)
LOGIN_ROLES = (OWNER, *SERVICE_ROLES, AUDITOR)


def component_role(component: str) -> str:
    """The role a component connects as: a service its schema's, a worker its domain's (the teleconsultation
    worker writes scheduling's projections, the teleexpertise worker expertise's)."""
    workers = {
        "workflows-teleconsultation": "scheduling",
        "workflows-teleexpertise": "expertise",
        "workflows-contracts": "contracts",
    }
    schema = workers.get(component, component)
    if schema not in SCHEMAS:
        raise ValueError(f"no database role for component {component!r}")
    return service_role(schema)


def grants_sql(schema: str, *, read_only: Sequence[str] = (), append_only: Sequence[str] = ()) -> str:
    """The privileges of a service's role on its own schema, for the service's roles migration (run as the
    owner). `read_only` tables are reference data the migrations load; `append_only` tables take no UPDATE,
    DELETE or TRUNCATE from the service (their triggers refuse them too; the missing privilege means the
    service cannot even try). Tables and sequences created later by the same owner get the same privileges
    (default privileges)."""
    role = service_role(schema)
    for table in (*read_only, *append_only):
        if not _SCHEMA_RE.fullmatch(table):
            raise ValueError(f"not a table name: {table!r}")
    lines = [
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;",
        f"GRANT USAGE ON SCHEMA {schema} TO {role};",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role};",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT EXECUTE ON FUNCTIONS TO {role};",
    ]
    lines += [f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{t} FROM {role};" for t in read_only]
    lines += [f"REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.{t} FROM {role};" for t in append_only]
    return "\n".join(lines) + "\n"


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """A SCRAM-SHA-256 verifier of the password (RFC 5802/7677, PostgreSQL's stored form): the server is
    given this, never the password itself, so no statement log can show it."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    salt_b64, stored_b64, server_b64 = (base64.b64encode(v).decode() for v in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def new_password() -> str:
    return secrets.token_urlsafe(24)


def provision(admin_url: str, database: str, passwords: Mapping[str, str]) -> None:
    """Create (or bring up to date) the roles and the database-level grants; hand the existing objects of our
    schemas to the owner. Idempotent. `admin_url` connects as a role with CREATEROLE (and, to take over
    objects created before roles existed, a superuser or their owner); `passwords` maps role → password (a
    role without one keeps the password it has)."""
    unknown = set(passwords) - set(LOGIN_ROLES)
    if unknown:
        raise ValueError(f"no such Parcours role: {', '.join(sorted(unknown))}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in (AUDIT_WRITER, *LOGIN_ROLES):
            login = role != AUDIT_WRITER
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            attributes = sql.SQL(
                "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                if login
                else "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            )
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            statement = sql.SQL("{} {} {}").format(verb, sql.Identifier(role), attributes)
            if role in passwords:
                statement = sql.SQL("{} PASSWORD {}").format(
                    statement, sql.Literal(scram_verifier(passwords[role]))
                )
            conn.execute(statement)
        for role in SERVICE_ROLES:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(AUDIT_WRITER), sql.Identifier(role)))
        db = sql.Identifier(database)
        conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(
            sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(db, sql.Identifier(OWNER))
        )
        for role in (*SERVICE_ROLES, AUDITOR):
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(role)))
    with psycopg.connect(_with_database(admin_url, database), autocommit=True) as conn:
        # yoyo keeps its tables in `public`, where (PostgreSQL 15+) nobody but the database owner creates.
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(OWNER)))
        adopt(conn)


def adopt(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Make `parcours_owner` the owner of our schemas and of everything in them (and of yoyo's tables), where
    they were created by someone else (a database migrated before these roles existed). Returns how many
    objects changed hands."""
    owner = sql.Identifier(OWNER)
    changed = 0
    for (name,) in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) AND nspowner <> %s::regrole",
        (list(OWNED_SCHEMAS), OWNER),
    ).fetchall():
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(str(name)), owner))
        changed += 1
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relowner <> %s::regrole
          AND (n.nspname = ANY(%s) OR (n.nspname = 'public' AND c.relname = ANY(%s)))
          -- a sequence owned by a column follows its table
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
                          AND c.relkind = 'S')
        """,
        (OWNER, list(OWNED_SCHEMAS), list(YOYO_TABLES)),
    ).fetchall()
    for schema, name, kind in rows:
        conn.execute(
            sql.SQL("ALTER {} {}.{} OWNER TO {}").format(
                sql.SQL(kinds[str(kind)]), sql.Identifier(str(schema)), sql.Identifier(str(name)), owner
            )
        )
        changed += 1
    for (signature,) in conn.execute(
        """
        SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%s) AND p.proowner <> %s::regrole
        """,
        (list(OWNED_SCHEMAS), OWNER),
    ).fetchall():
        # regprocedure's text is already a quoted, schema-qualified signature.
        conn.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(str(signature)), owner))
        changed += 1
    for schema, name in conn.execute(
        """
        SELECT n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY(%s) AND t.typowner <> %s::regrole
          AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND
               (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
        """,
        (list(OWNED_SCHEMAS), OWNER),
    ).fetchall():
        conn.execute(
            sql.SQL("ALTER TYPE {}.{} OWNER TO {}").format(
                sql.Identifier(str(schema)), sql.Identifier(str(name)), owner
            )
        )
        changed += 1
    if changed:
        log.info("handed %d existing objects to %s", changed, OWNER)
    return changed


def with_credentials(url: str, user: str, password: str | None = None) -> str:
    """The same database URL, connecting as `user` (with `password`, when given)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def without_password(url: str) -> str:
    """The URL as it may be shown (logs, summaries): its password left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return with_credentials(url, parts.username or "")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def dba_script(database: str) -> str:
    """What `provision` does, as a psql script for a DBA (passwords as psql variables:
    `psql -v owner_password=… -v directory_password=… -f roles.sql`)."""
    out = [
        "-- Parcours database roles (services/kit/roles.py). Run once as a role with CREATEROLE, with psql:",
        "-- psql -v owner_password=… -v auditor_password=… -v directory_password=… … -f this-file.sql",
        f"CREATE ROLE {AUDIT_WRITER} NOLOGIN;",
    ]
    for role in LOGIN_ROLES:
        variable = role.removeprefix("parcours_") + "_password"
        out.append(f"CREATE ROLE {role} LOGIN PASSWORD :'{variable}';")
    out += [f"GRANT {AUDIT_WRITER} TO {role};" for role in SERVICE_ROLES]
    out += [
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC;",
        f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {OWNER};",
        *(f"GRANT CONNECT ON DATABASE {database} TO {role};" for role in (*SERVICE_ROLES, AUDITOR)),
        f"\\connect {database}",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {OWNER};",
    ]
    return "\n".join(out) + "\n"


def passwords_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Role passwords from PARCOURS_DB_PASSWORD_<ROLE> (`…_OWNER`, `…_AUDITOR`, `…_DIRECTORY`, …)."""
    found: dict[str, str] = {}
    for role in LOGIN_ROLES:
        value = env.get("PARCOURS_DB_PASSWORD_" + role.removeprefix("parcours_").upper())
        if value:
            found[role] = value
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Parcours database roles (least privilege).")
    sub = parser.add_subparsers(dest="command", required=True)
    provision_cmd = sub.add_parser(
        "provision",
        help="create or update the roles (passwords from PARCOURS_DB_PASSWORD_<ROLE>); idempotent",
    )
    provision_cmd.add_argument(
        "--admin-url",
        default=os.environ.get("PARCOURS_DB_ADMIN_URL"),
        help="a role with CREATEROLE (PARCOURS_DB_ADMIN_URL; its password may come from PGPASSWORD)",
    )
    provision_cmd.add_argument("--database", default=os.environ.get("PARCOURS_DB_NAME", "parcours"))
    sql_cmd = sub.add_parser("sql", help="print the same as a psql script for a DBA")
    sql_cmd.add_argument("--database", default="parcours")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "sql":
        sys.stdout.write(dba_script(args.database))
        return 0
    if not args.admin_url:
        parser.error("missing required setting PARCOURS_DB_ADMIN_URL (or --admin-url)")
    passwords = passwords_from_env(os.environ)
    provision(args.admin_url, args.database, passwords)
    print(f"roles ready in {args.database}: {', '.join(LOGIN_ROLES)} ({len(passwords)} passwords set)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
