"""A worker killed in the middle of a case: another one finishes it, the signature included, and nothing is
applied twice. The worker runs as a real process (`python -m workflows.contracts`, as `make run` and the Helm
chart start it), killed with SIGKILL: no graceful shutdown, activities and the workflow cache lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts.decisions import ensure_dev_signing_identity
from services.kit.pki import DevPki
from tests.contracts.conftest import ALICE, DG, PROMOTER, Hub, HubFactory, new_contract, rid
from tests.support import PAYLOAD_KEYS, process_env, repo_root


@asynccontextmanager
async def worker_process(hub: Hub) -> AsyncIterator[asyncio.subprocess.Process]:
    certificate, key = ensure_dev_signing_identity(hub.pki.directory)
    env = process_env(
        hub.pki,
        "workflows",
        component="workflows-contracts",
        database_url=hub.settings.database_url,
        temporal_address=hub.settings.temporal_address,
        payload_keys=PAYLOAD_KEYS,
        contracts_task_queue=hub.settings.contracts_task_queue,
        # A dead worker's cases go to another worker after this (default 10 s).
        contracts_sticky_timeout_seconds=1,
        decision_signing_cert_file=certificate,
        decision_signing_key_file=key,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workflows.contracts",
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


async def test_a_killed_worker_s_case_goes_on_with_another_and_is_signed_once(make_hub: HubFactory) -> None:
    hub = await make_hub(worker=False)
    promoter, alice, dg = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(DG)
    today = datetime.now(UTC).date()

    async with worker_process(hub) as first:
        name = (
            await promoter.CreateArsContract(
                new_contract(start=today + timedelta(days=5), end=today + timedelta(days=500))
            )
        ).ars_contract.name
        await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name))
        await alice.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=name))
        first.send_signal(signal.SIGKILL)
        await first.wait()

    # The approval is asked while no worker runs: the call waits for one, and the case goes on.
    approval = asyncio.create_task(
        alice.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=name))
    )
    await asyncio.sleep(0)
    assert not approval.done()
    async with worker_process(hub):
        approved = (await asyncio.wait_for(approval, timeout=60)).ars_contract
        assert approved.state == c.ArsContract.STATE_AWAITING_SIGNATURE
        await dg.PreviewCaseDecision(
            c.PreviewCaseDecisionRequest(
                request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL
            )
        )
        sign = c.SignArsContractRequest(request_id=rid(), name=name)
        signed = (await dg.SignArsContract(sign)).ars_contract
        assert signed.state == c.ArsContract.STATE_ACTIVE
        # A retried signature returns the contract as signed: one SIGNED event, one signed document.
        assert (await dg.SignArsContract(sign)).ars_contract.version == signed.version
    events = (await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=name, page_size=500))).events
    assert [e.kind for e in events].count(c.EVENT_KIND_SIGNED) == 1
    assert [e.kind for e in events].count(c.EVENT_KIND_APPROVED) == 1
    documents = (
        await alice.ListCaseDocuments(c.ListCaseDocumentsRequest(parent=name, all_versions=True))
    ).documents
    assert [d.document_type for d in documents] == [c.DOCUMENT_TYPE_DECISION]


async def test_the_processes_refuse_to_start_without_their_settings(pki: DevPki) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    common = {"database_url": "postgresql://nobody@127.0.0.1:1/none", "payload_keys": "k1:" + "A" * 43}
    cases = [
        (
            "services.contracts",
            {**bare, "PARCOURS_DATABASE_URL": common["database_url"]},
            "DIRECTORY_ADDRESS",
        ),
        (
            "services.contracts",
            process_env(pki, "contracts", directory_address="127.0.0.1:1", **common),
            "DECISION_TRUST_ROOTS_FILE",
        ),
        ("workflows.contracts", process_env(pki, "workflows", **common), "DECISION_SIGNING_CERT_FILE"),
    ]
    for module, env, missing in cases:
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
        assert f"PARCOURS_{missing}" in stderr.decode()
