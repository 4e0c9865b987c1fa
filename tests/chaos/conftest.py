"""The robustness scenarios of `make chaos` (and their fast subset inside `make test`): they break the real
stack on purpose and count what a user would notice.

Every test here is a chaos scenario (marked `chaos` at collection; tests/support/chaos.py runs them all: at
full scale under `make chaos`, a fast subset otherwise). A scenario sizes itself with `scale(test=3,
full=20)` and reports one line with `figures(line)`, printed with every other scenario's at the end of the run
(and kept in build/chaos-figures.txt), so the README's table is the last run's output.

They run on their own stack (`chaos`, tests/chaos/stack.py): a PostgreSQL and a Temporal dev server of their
own that they kill and restart, the services in-process on them, and the workers as real processes that they
SIGKILL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from services.kit.pki import DevPki
from tests.chaos.stack import ChaosStack, start_chaos_stack
from tests.support.chaos import chaos_of

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)


Scale = Callable[..., int]


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> Scale:
    """scale(test=n, full=m) → the size of a scenario at this run's scale."""

    def pick(*, test: int, full: int) -> int:
        return chaos_of(pytestconfig).scale(test, full)

    return pick


@pytest.fixture
def figures(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """figures(line) → the scenario's one line of figures, printed at the end of the run."""
    scenario = request.node.originalname

    def report(line: str) -> None:
        chaos_of(pytestconfig).figures(scenario, line)

    return report


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
