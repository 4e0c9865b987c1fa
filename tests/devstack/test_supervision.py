"""`make run` keeps running when a child dies: a real devstack (`python -m services.devstack` on a data folder
and ports of its own) whose worker and directory service are SIGKILLed gets them back — the log says so, the
directory answers SERVING again — and Ctrl-C still stops everything cleanly. When to give up on a child that
keeps dying is the restart policy's, tested on its own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.devstack import free_port
from services.devstack.__main__ import PORT_DEFAULTS, RestartPolicy
from tests.support import repo_root

READY_SECONDS = 240.0


def test_a_child_is_restarted_later_and_later_then_given_up_when_it_keeps_dying() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=30.0, max_deaths=5, window=120.0)
    assert [policy.after_death(t) for t in (0.0, 2.0, 5.0, 10.0)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.after_death(19.0) is None  # a fifth death within two minutes: it keeps dying

    ran_well = RestartPolicy()
    assert ran_well.after_death(0.0) == 1.0
    assert ran_well.after_death(10.0) == 2.0
    assert ran_well.after_death(500.0) == 1.0  # the earlier deaths are forgotten: it starts over
    capped = RestartPolicy(max_deaths=100, max_delay=30.0)
    assert [capped.after_death(float(t)) for t in range(8)][-1] == 30.0


class Devstack:
    """`python -m services.devstack` as a developer runs it, with its output in a file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.output = data_dir / "make-run.log"
        self.ports = {name: free_port() for name in PORT_DEFAULTS}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
        env.update({name: str(port) for name, port in self.ports.items()})
        env["PARCOURS_DATA_DIR"] = str(self.data_dir)
        with self.output.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.devstack",
                env=env,
                cwd=repo_root(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    async def says(self, text: str, within: float, *, after: int = 0) -> int:
        """Returns once the output (from offset `after`) contains `text`; where it ends."""
        assert self.process is not None
        async with asyncio.timeout(within):
            while True:
                found = self.said().find(text, after)
                if found >= 0:
                    return found + len(text)
                if self.process.returncode is not None:
                    code = self.process.returncode
                    raise AssertionError(f"make run exited ({code}):\n{self.said()[-4000:]}")
                await asyncio.sleep(0.2)

    def children(self) -> dict[str, int]:
        record = json.loads((self.data_dir / "children.json").read_text())
        return {name: int(entry["pid"]) for name, entry in record.items()}

    async def serving(self, port: int) -> bool:
        pki = self.data_dir / "pki"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "cli-key.pem").read_bytes(),
            certificate_chain=(pki / "cli.pem").read_bytes(),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def devstack(tmp_path: Path) -> AsyncIterator[Devstack]:
    stack = Devstack(tmp_path / "data")
    stack.data_dir.mkdir()
    await stack.start()
    try:
        yield stack
    finally:
        if stack.process is not None and stack.process.returncode is None:
            stack.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(stack.process.wait(), 90)
            except TimeoutError:
                stack.process.kill()


async def test_make_run_restarts_a_dead_worker_and_service_and_ctrl_c_stops_everything(
    devstack: Devstack,
) -> None:
    ready = await devstack.says("Parcours is running", READY_SECONDS)
    before = devstack.children()
    assert {"directory", "workflows-teleconsultation"} <= set(before)

    # A worker killed: restarted after a second, and the log says so.
    os.kill(before["workflows-teleconsultation"], signal.SIGKILL)
    said = await devstack.says(
        "workflows-teleconsultation was killed by SIGKILL; restarting it in 1 s (restart 1", 30, after=ready
    )
    said = await devstack.says("restarted workflows-teleconsultation (pid ", 30, after=said)
    worker = devstack.children()["workflows-teleconsultation"]
    assert worker != before["workflows-teleconsultation"] and psutil.pid_exists(worker)

    # A service killed: restarted, and it answers SERVING again on its port.
    os.kill(before["directory"], signal.SIGKILL)
    said = await devstack.says("restarted directory (pid ", 30, after=said)
    port = devstack.ports["PARCOURS_DIRECTORY_GRPC_PORT"]
    async with asyncio.timeout(60):
        while True:
            if await devstack.serving(port):
                break
            await asyncio.sleep(0.2)
    # The rest of the stack never stopped.
    for name, pid in before.items():
        if name not in ("directory", "workflows-teleconsultation"):
            assert psutil.pid_exists(pid), f"{name} was stopped"

    # Ctrl-C: everything stops, in order, and the orchestrator exits 0.
    assert devstack.process is not None
    everything = [*devstack.children().values()]
    devstack.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(devstack.process.wait(), 90) == 0
    assert "stopped" in devstack.said()[said:]
    left = [pid for pid in everything if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not left
    assert not (devstack.data_dir / "postgres" / "postmaster.pid").exists()
    assert not (devstack.data_dir / "temporal" / "temporal.pid").exists()
