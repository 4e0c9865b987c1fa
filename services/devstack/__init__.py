"""Real components as child processes (PostgreSQL, Temporal) for `make run` and the test suite.

Nothing here is used in production: there, PostgreSQL and Temporal are managed services or Helm releases.
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller binds it soon after; good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_size(path: Path) -> int:
    """Where a log that is appended to ends now: `log_tail(path, since=...)` then shows this run only."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, lines: int = 40, *, since: int = 0) -> str:
    """The last lines written to a log after offset `since`: error messages say why a process failed."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(since, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"
