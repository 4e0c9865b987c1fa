"""A worker killed in the middle of a case: another one finishes it, and billing is charged once.

The worker runs as a real process (`python -m workflows.teleexpertise`, as `make run` and the Helm chart
start it), killed with SIGKILL: no graceful shutdown, activities and the workflow cache lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2

from services.expertise.models import BillingInput
from services.expertise.store import ExpertiseStore
from tests.expertise.conftest import DERM_LOIRE, GP, Stack
from tests.support import PAYLOAD_KEYS, component_channel, process_env, repo_root
from workflows.teleexpertise.activities import TeleexpertiseActivities

Request = expertise_pb2.TeleexpertiseRequest
NewPatient = Callable[..., Awaitable[str]]


@asynccontextmanager
async def worker_process(stack: Stack) -> AsyncIterator[asyncio.subprocess.Process]:
    pki = stack.pki
    env = process_env(
        pki,
        "workflows",
        component="workflows-teleexpertise",
        database_url=stack.settings.database_url,
        temporal_address=stack.settings.temporal_address,
        payload_keys=PAYLOAD_KEYS,
        directory_address=stack.directory_address,
        billing_address=stack.billing_address,
        teleexpertise_task_queue=stack.task_queue,
        # A dead worker's cases go to another worker after this (default 10 s).
        teleexpertise_sticky_timeout_seconds=1,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workflows.teleexpertise",
        env=env,
        cwd=repo_root(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def charges_of(stack: Stack, patient: str) -> list[billing_pb2.Charge]:
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris")).date()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)
    async with component_channel(stack.pki, stack.billing_address, "workflows") as channel:
        reply = await billing_pb2_grpc.BillingServiceStub(channel).ListCharges(
            billing_pb2.ListChargesRequest(patient=patient, start_date=day, end_date=day, page_size=100)
        )
    return list(reply.charges)


async def test_a_killed_worker_s_case_completes_with_one_charge_per_act(
    make_stack: Callable[..., Awaitable[Stack]], new_patient: NewPatient
) -> None:
    stack = await make_stack(worker=False)
    patient = await new_patient()
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)

    async with worker_process(stack) as first:
        created = await gp.create(patient=patient)
        await derm.accept(created.name)
        first.send_signal(signal.SIGKILL)
        await first.wait()

    # The report is submitted while no worker runs: the call waits for one.
    report = asyncio.create_task(derm.report(created.name, summary="Kératose séborrhéique."))
    await asyncio.sleep(0)
    assert not report.done()
    async with worker_process(stack):
        done = await asyncio.wait_for(report, timeout=60)
        assert done.state == Request.STATE_COMPLETED
        result = await asyncio.wait_for(stack.handle(created.name).result(), timeout=60)
    assert result.state == "COMPLETED" and result.billing_state == "BILLED"

    charges = await charges_of(stack, patient)
    assert sorted((c.code, c.practitioner) for c in charges) == [
        ("RQD", f"practitioners/{GP}"),
        ("TE2", f"practitioners/{DERM_LOIRE}"),
    ]

    # The billing activity run again, as after a worker lost between the charge and its completion: billing
    # returns the same lines, and the ledger holds no more.
    final = await gp.get(created.name)
    async with (
        component_channel(stack.pki, stack.directory_address, "workflows") as directory,
        component_channel(stack.pki, stack.billing_address, "workflows") as billing,
    ):
        activities = TeleexpertiseActivities(
            ExpertiseStore(stack.pool),
            directory_pb2_grpc.DirectoryServiceStub(directory),
            billing_pb2_grpc.BillingServiceStub(billing),
        )
        again = await activities.record_acts(
            BillingInput(
                case_id=final.name.removeprefix("teleexpertiseRequests/"),
                act_id=final.billing.act_id,
                patient=patient,
                requester=final.requester,
                requester_establishment=final.requester_establishment,
                expert=final.assigned_expert,
                expert_establishment=final.expert_establishment,
                act_time=final.report.act_time.ToDatetime(tzinfo=UTC),
            )
        )
    assert sorted(line.charge for line in again.lines) == sorted(line.charge for line in final.billing.lines)
    assert len(await charges_of(stack, patient)) == 2


async def test_the_processes_refuse_to_start_without_their_settings() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env["PARCOURS_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    env["PARCOURS_INSECURE_DEV_MODE"] = "true"
    for module, missing in (
        ("services.expertise", ["PARCOURS_DIRECTORY_ADDRESS", "PARCOURS_PAYLOAD_KEYS"]),
        ("workflows.teleexpertise", ["PARCOURS_DIRECTORY_ADDRESS", "PARCOURS_BILLING_ADDRESS"]),
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            env=env,
            cwd=repo_root(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 2, stderr
        for name in missing:
            assert f"missing required setting {name}" in stderr.decode()
