"""Versioned migrations per service schema, applied with yoyo-migrations.

Each service keeps plain SQL files in `services/<name>/migrations/`; the kit's own (the audit log) are in
`services/kit/migrations/`. yoyo records what ran (`_yoyo_migration`, keyed by file name, so names are unique
across folders: `0001.directory-schema.sql`), takes a lock so two runners never apply the same step twice, and
applies each file in a transaction. Folders are applied one after another, the kit's first.

Run by `make run`, by the test suite and by the Helm hook Job (`python -m services.kit.migrate`); never
implicitly at service start.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)

SERVICES_DIR = Path(__file__).resolve().parent.parent
# The kit's schema first: services' tables may reference it.
KIT = "kit"


def migration_sets() -> list[tuple[str, Path]]:
    """(name, folder) of every migration folder, the kit's first, then services in name order."""
    found = [(KIT, SERVICES_DIR / "kit" / "migrations")]
    for folder in sorted(SERVICES_DIR.glob("*/migrations")):
        name = folder.parent.name
        if name != KIT and any(folder.glob("*.sql")):
            found.append((name, folder))
    return found


def _yoyo_uri(database_url: str) -> str:
    # yoyo picks its driver from the scheme; psycopg 3 is the one we ship.
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    return database_url


def apply_all(database_url: str, only: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Apply every pending migration; returns the ids applied per set."""
    sets = [(name, read_migrations(str(folder))) for name, folder in migration_sets()]
    owners: dict[str, str] = {}
    for name, migrations in sets:
        for migration in migrations:
            if migration.id in owners:
                raise RuntimeError(
                    f"migration {migration.id} exists in both {owners[migration.id]} and {name}"
                )
            owners[migration.id] = name
    backend = get_backend(_yoyo_uri(database_url))
    applied: dict[str, list[str]] = {}
    with backend.lock():
        for name, migrations in sets:
            if only and name not in only:
                continue
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
            applied[name] = [m.id for m in pending]
            log.info("migrations %s: applied %d", name, len(pending))
    return applied


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Apply Parcours database migrations.")
    parser.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    parser.add_argument("--only", nargs="*", help="only these sets (kit, directory, ...)")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("missing required setting PARCOURS_DATABASE_URL (or --database-url)")
    result = apply_all(args.database_url, args.only)
    for name, ids in result.items():
        print(f"{name}: {len(ids)} applied" + (f" ({', '.join(ids)})" if ids else ""))


if __name__ == "__main__":
    main()
