"""`python -m services.billing`: run the billing service until SIGTERM."""

from __future__ import annotations

import asyncio

from services.billing.server import run
from services.billing.settings import BillingSettings
from services.kit.settings import load_settings


def main() -> None:
    asyncio.run(run(load_settings(BillingSettings)))


if __name__ == "__main__":
    main()
