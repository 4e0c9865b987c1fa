"""`python -m services.expertise`: run the expertise service until SIGTERM."""

from __future__ import annotations

import asyncio

from services.expertise.server import run
from services.expertise.settings import ExpertiseSettings
from services.kit.settings import load_settings


def main() -> None:
    asyncio.run(run(load_settings(ExpertiseSettings)))


if __name__ == "__main__":
    main()
