"""`python -m services.console`: the ARS console (HTTP, PARCOURS_CONSOLE_HTTP_PORT, default 8080)."""

from __future__ import annotations

import asyncio

from services.console.server import serve
from services.console.settings import ConsoleSettings
from services.kit.settings import load_settings


def main() -> None:
    asyncio.run(serve(load_settings(ConsoleSettings)))


if __name__ == "__main__":
    main()
