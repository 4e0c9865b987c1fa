"""What a fresh interpreter loads: probes run in a subprocess, so that nothing this test process imported
counts (issue 15's idle RSS: libraries only some requests need are loaded by those requests)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support import repo_root

# The libraries of a service's rare requests: PDF rendering and signing, spreadsheets.
ON_FIRST_USE = ("pyhanko", "pyhanko_certvalidator", "reportlab", "asn1crypto", "xlsxwriter")


def probe(code: str) -> Any:
    """Run `code` in a fresh interpreter at the repository's root; what its last line printed, as JSON."""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def which_loaded(candidates: tuple[str, ...]) -> str:
    """A probe's expression: which of `candidates` the interpreter has loaded, sorted."""
    return f"sorted(m for m in {candidates!r} if m in sys.modules)"
