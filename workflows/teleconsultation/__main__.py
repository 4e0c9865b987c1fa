"""`python -m workflows.teleconsultation`: run the Teleconsultation worker until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.settings import load_settings
from services.kit.temporal import run_worker
from workflows.teleconsultation.worker import TeleconsultationWorkerSettings, build


def main() -> None:
    settings = load_settings(TeleconsultationWorkerSettings)
    asyncio.run(run_worker(settings, build, settings.channels()))


if __name__ == "__main__":
    main()
