"""`python -m workflows.teleexpertise`: run the teleexpertise worker until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.settings import load_settings
from services.kit.temporal import run_worker
from workflows.teleexpertise.worker import TeleexpertiseWorkerSettings, build


def main() -> None:
    settings = load_settings(TeleexpertiseWorkerSettings)
    asyncio.run(run_worker(settings, build, settings.channels()))


if __name__ == "__main__":
    main()
