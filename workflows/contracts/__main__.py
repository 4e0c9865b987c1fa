"""`python -m workflows.contracts`: run the contracts worker until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.settings import load_settings
from services.kit.temporal import run_worker
from workflows.contracts.worker import ContractsWorkerSettings, build


def main() -> None:
    settings = load_settings(ContractsWorkerSettings)
    asyncio.run(run_worker(settings, build, settings.channels()))


if __name__ == "__main__":
    main()
