"""`python -m workflows.teleexpertise`: run the teleexpertise worker until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.settings import load_settings
from workflows.teleexpertise.worker import TeleexpertiseWorkerSettings, run


def main() -> None:
    asyncio.run(run(load_settings(TeleexpertiseWorkerSettings)))


if __name__ == "__main__":
    main()
