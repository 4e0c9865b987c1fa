"""`python -m services.contracts`: run the contracts service until SIGTERM."""

from __future__ import annotations

import asyncio

from services.contracts.server import run
from services.contracts.settings import ContractsSettings
from services.kit.settings import load_settings


def main() -> None:
    asyncio.run(run(load_settings(ContractsSettings)))


if __name__ == "__main__":
    main()
