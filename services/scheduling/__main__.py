"""`python -m services.scheduling`: run the scheduling service until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.settings import load_settings
from services.scheduling.server import run
from services.scheduling.settings import SchedulingSettings


def main() -> None:
    asyncio.run(run(load_settings(SchedulingSettings)))


if __name__ == "__main__":
    main()
