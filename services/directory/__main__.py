"""`python -m services.directory`: run the directory service until SIGTERM."""

from __future__ import annotations

import asyncio

from services.directory.server import run
from services.directory.settings import DirectorySettings
from services.kit.settings import load_settings


def main() -> None:
    asyncio.run(run(load_settings(DirectorySettings)))


if __name__ == "__main__":
    main()
