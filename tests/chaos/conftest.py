"""`make chaos` and its fast subset inside `make test`: scenarios that break the real stack on purpose and
count what a user would notice.

How a scenario is registered: it is a test in a `tests/chaos/test_*.py` module (one module per concern, so
that several engineers add theirs without touching each other's), sized with the `scale` fixture
(`scale(test=3, full=20)`: the first inside `make test`, the second under `make chaos`, which passes
`--chaos-scale=full`), and it reports its outcome with the `figures` fixture: one line, printed with every
other scenario's at the end of the run (and written to `build/chaos/figures-<scale>.txt`), so the README's
table is the last run's output. The runner is pytest itself: `make chaos` is `tests/run.py tests/chaos
--chaos-scale=full`.

The robustness scenarios run on their own stack (`chaos`, tests/chaos/stack.py): a PostgreSQL and a Temporal
dev server of their own that they kill and restart, the services in-process on them, and the workers as real
processes that they SIGKILL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.kit.pki import DevPki
from tests.chaos.stack import ChaosStack, start_chaos_stack
from tests.support import repo_root

SCALES = ("test", "full")
_FIGURES: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-scale",
        choices=SCALES,
        default="test",
        help="size of the chaos scenarios: 'test' (the fast subset of make test) or 'full' (make chaos)",
    )


Scale = Callable[..., int]


@pytest.fixture(scope="session")
def chaos_scale(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--chaos-scale"))


@pytest.fixture(scope="session")
def scale(chaos_scale: str) -> Scale:
    """scale(test=n, full=m) → the size of a scenario at this run's scale."""

    def pick(*, test: int, full: int) -> int:
        return full if chaos_scale == "full" else test

    return pick


@pytest.fixture(scope="session")
def figures() -> Callable[[str], None]:
    """figures(line) → a scenario's one line of figures, printed at the end of the run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not _FIGURES:
        return
    chaos_scale = config.getoption("--chaos-scale")
    terminalreporter.section(f"chaos figures ({chaos_scale} scale)")
    for line in _FIGURES:
        terminalreporter.write_line(line)
    out = repo_root() / "build" / "chaos" / f"figures-{chaos_scale}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{line}\n" for line in _FIGURES))


@pytest.fixture(scope="session")
async def chaos(
    pki: DevPki, tmp_path_factory: pytest.TempPathFactory, mint: Callable[..., str]
) -> AsyncIterator[ChaosStack]:
    """The robustness scenarios' own stack (tests/chaos/stack.py), shared by them and stopped at the end."""
    root: Path = tmp_path_factory.mktemp("chaos")
    stack = await start_chaos_stack(root, pki, mint)
    try:
        yield stack
    finally:
        await stack.stop()
