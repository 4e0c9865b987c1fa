"""What a service process loads before it has any work (issue 15's idle RSS): the libraries only some requests
need — PDF rendering and signing, spreadsheets — are imported by the first request that needs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import repo_root

ON_FIRST_USE = ("pyhanko", "pyhanko_certvalidator", "reportlab", "asn1crypto", "xlsxwriter")


@pytest.mark.parametrize("server", ["services.contracts.server", "services.console.server"])
def test_a_service_starts_without_the_libraries_of_its_rare_requests(server: str) -> None:
    probe = (
        f"import json, sys; import {server}; "
        f"print(json.dumps(sorted(m for m in {ON_FIRST_USE!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
