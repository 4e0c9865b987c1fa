"""`python -m workflows.teleconsultation`: run the Teleconsultation worker until SIGTERM."""

from __future__ import annotations

import asyncio

from services.kit.db import open_pool
from services.kit.server import open_channel
from services.kit.settings import load_settings
from services.kit.telemetry import configure_telemetry
from services.kit.temporal import connect_client, run_worker_until_signalled
from workflows.teleconsultation.worker import TeleconsultationWorkerSettings, teleconsultation_worker


async def run(settings: TeleconsultationWorkerSettings) -> None:
    configure_telemetry(settings.component)
    pool = await open_pool(settings)
    billing = open_channel(settings, settings.billing_address)
    directory = open_channel(settings, settings.directory_address)
    try:
        client = await connect_client(settings)
        worker = teleconsultation_worker(
            client,
            pool,
            billing=billing,
            directory=directory,
            component=settings.component,
            max_concurrent_activities=settings.max_concurrent_activities,
        )
        await run_worker_until_signalled(worker)
    finally:
        await billing.close()
        await directory.close()
        await pool.close()


def main() -> None:
    asyncio.run(run(load_settings(TeleconsultationWorkerSettings)))


if __name__ == "__main__":
    main()
