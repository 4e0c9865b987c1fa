"""Run the whole suite; the exit code is pytest's.

One known wrinkle: a process that used temporalio can abort at interpreter exit (SIGABRT, rc 134 —
temporalio/sdk-python#300) after every test has run. Only in that case, and only when the JUnit report
shows tests ran with no failure and no error, is the run counted as passed; it says so on its last line.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    report = ROOT / "build" / "test-report.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    # Our own temporary root: pytest prunes old `pytest-of-<user>/pytest-N` folders under the system's temp
    # folder, which would pull the data folder out from under this run's PostgreSQL when another checkout
    # runs its suite at the same time.
    basetemp = ROOT / "build" / "pytest-tmp"
    rc = subprocess.call(
        [sys.executable, "-m", "pytest", f"--junitxml={report}", f"--basetemp={basetemp}", *sys.argv[1:]],
        cwd=ROOT,
    )
    if rc in (134, -6) and report.exists():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
        tests = int(suite.get("tests", "0")) if suite is not None else 0
        bad = int(suite.get("failures", "0")) + int(suite.get("errors", "0")) if suite is not None else 1
        if tests > 0 and bad == 0:
            print(
                f"pytest aborted at interpreter exit (temporalio/sdk-python#300) after {tests} tests "
                "with no failure: counted as passed"
            )
            return 0
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
