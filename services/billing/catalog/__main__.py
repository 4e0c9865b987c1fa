"""`python -m services.billing.catalog check|load`: validate the catalog data file, or load it.

`check` parses and validates the data file and prints what it holds; `load` loads it into the database of
PARCOURS_DATABASE_URL (idempotent; what the migrations do) and makes it the current version.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

from services.billing.catalog import DATA_FILE, CatalogError, load, read_data_file


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The billing catalog data file.")
    parser.add_argument("command", choices=("check", "load"))
    parser.add_argument("--file", type=Path, default=DATA_FILE)
    parser.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    args = parser.parse_args(argv)
    try:
        catalog = read_data_file(args.file)
    except CatalogError as exc:
        sys.stderr.write(f"{args.file}: {exc}\n")
        return 1
    unconfirmed = sum(not e.confirmed for e in catalog.entries) + sum(
        not p.confirmed for p in catalog.parameters
    )
    print(
        f"{catalog.catalog} {catalog.version}: {len(catalog.entries)} entries, {len(catalog.parameters)} "
        f"parameters ({unconfirmed} unconfirmed), sha256 {catalog.sha256[:12]}"
    )
    if args.command == "check":
        return 0
    if not args.database_url:
        parser.error("missing required setting PARCOURS_DATABASE_URL (or --database-url)")
    try:
        with psycopg.connect(args.database_url) as conn, conn.cursor() as cursor:
            loaded = load(cursor, catalog)
    except CatalogError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    print("loaded" if loaded else "already loaded: nothing to do")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
