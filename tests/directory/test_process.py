"""The directory as a process: start-up refuses missing settings by name; SERVING once ready; SIGTERM stops
it cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack import free_port
from services.kit.pki import DevPki
from tests.support import LOIRE, establishment_channel, process_env, repo_root


def test_a_missing_setting_stops_the_start_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    result = subprocess.run(
        [sys.executable, "-m", "services.directory"],
        env=env,
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "missing required setting PARCOURS_DATABASE_URL" in result.stderr


def test_without_tls_material_the_start_is_refused_unless_in_development_mode() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env["PARCOURS_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    result = subprocess.run(
        [sys.executable, "-m", "services.directory"],
        env=env,
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "PARCOURS_TLS_CERT_FILE" in result.stderr and "PARCOURS_TOKEN_JWKS_FILE" in result.stderr


async def test_the_process_serves_then_stops_cleanly_on_sigterm(pki: DevPki, database_url: str) -> None:
    port = free_port()
    env = process_env(
        pki, "directory", database_url=database_url, directory_grpc_port=port, shutdown_grace_seconds=2
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.directory",
        env=env,
        cwd=repo_root(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with establishment_channel(pki, f"127.0.0.1:{port}", LOIRE) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # wait_for_ready: the call waits for the listener instead of failing while the process starts.
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=30
            )
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                async for update in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30):
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        break
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
        assert '"message": "directory stopping' in log
        # What it built to start is out of the collector's reach once it serves (kit.server.settle_heap).
        settled = re.search(r'"message": "directory serving on port \d+ \((\d+) objects settled\)"', log)
        assert settled is not None and int(settled.group(1)) > 10_000, log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
