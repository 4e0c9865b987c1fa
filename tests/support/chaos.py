"""`make chaos`: the scenarios that attack the real stack (the authorisation matrix, the fuzzer, the races and
outages), at full scale under `make chaos` and as a fast subset inside `make test`.

A scenario is a test marked `@pytest.mark.chaos` (anywhere under tests/; security's live in tests/security,
robustness's in tests/chaos). It asks `chaos.scale(fast, full)` how much to do, and reports its figures in one
line with `chaos.figures(name, "...")`; every line is printed at the end of the run (and kept in
build/chaos-figures.txt), whichever way the scenario ended. `make chaos` runs `pytest -m chaos --chaos`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES_FILE = ROOT / "build" / "chaos-figures.txt"


@dataclass
class Chaos:
    """How hard this run attacks (`full` under `make chaos`), and the figures the scenarios report."""

    full: bool
    lines: list[str] = field(default_factory=list)

    def scale(self, fast: int, full: int) -> int:
        return full if self.full else fast

    def figures(self, scenario: str, line: str) -> None:
        self.lines.append(f"{scenario}: {line}")


_CHAOS_KEY = pytest.StashKey[Chaos]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos",
        action="store_true",
        default=False,
        help="run the chaos scenarios at full scale (make chaos); without it they run their fast subset",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos scenario of `make chaos` (a fast subset in make test)")
    config.stash[_CHAOS_KEY] = Chaos(full=bool(config.getoption("--chaos")))


def chaos_of(config: pytest.Config) -> Chaos:
    """This run's chaos settings and figures (for a conftest whose own `chaos` fixture is something else)."""
    return config.stash[_CHAOS_KEY]


@pytest.fixture(scope="session")
def chaos(pytestconfig: pytest.Config) -> Chaos:
    return chaos_of(pytestconfig)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    found = config.stash.get(_CHAOS_KEY, None)
    if found is None or not found.lines:
        return
    scale = "full scale (make chaos)" if found.full else "fast subset (make test)"
    terminalreporter.section(f"chaos figures, {scale}")
    for line in found.lines:
        terminalreporter.write_line(line)
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(f"# {scale}\n" + "\n".join(found.lines) + "\n")
