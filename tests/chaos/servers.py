"""Start the chaos stack's PostgreSQL or Temporal dev server from a process of its own, which leaves the
server running and exits, printing what the stack needs to reach it (JSON on the last line of stdout):

    python -m tests.chaos.servers postgres DATA_DIR PORT LOG → {"socket_dir", "os_user", "superuser_password"}
    python -m tests.chaos.servers temporal DATA_DIR PORT LOG → {"pid": ...}

Why a process of its own: the test process runs gRPC's threads, and starting PostgreSQL as its own OS user
forks a full copy of that process (no vfork with a user change), whose gRPC fork handlers can abort the child
before it executes pg_ctl. A fresh interpreter that never touched gRPC forks safely."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.devstack.postgres import start_postgres
from services.devstack.temporal import start_temporal


def main(argv: list[str]) -> int:
    kind, data_dir, port, log_file = argv[0], Path(argv[1]), int(argv[2]), Path(argv[3])
    if kind == "postgres":
        handle = start_postgres(data_dir, port=port, log_file=log_file)
        found = {
            "socket_dir": str(handle.socket_dir),
            "os_user": handle.os_user,
            "superuser_password": handle.superuser_password,
        }
        print(json.dumps(found))
    elif kind == "temporal":
        temporal = start_temporal(data_dir, port=port, ui_port=None, headless=True, log_file=log_file)
        print(json.dumps({"pid": temporal.process.pid}))
    else:
        raise SystemExit(f"unknown server {kind!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
