"""Decisions are rendered and verified in the contracts service's document process (issue 15's idle RSS): the
same documents as in-process, none of their libraries in the service, a child that ends when idle, and a
child that dies costs one UNAVAILABLE answer, never a lost or half-written decision."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts.decisions import (
    DecisionContent,
    DecisionError,
    SigningIdentity,
    ensure_dev_signing_identity,
    render,
    sign,
    verify,
)
from services.contracts.document_process import DocumentProcess, DocumentProcessFailed
from services.kit.pki import DevPki
from tests.contracts.conftest import ALICE, DG, PROMOTER, HubFactory, new_contract, rid
from tests.contracts.test_decisions import APPROVAL
from tests.support.calls import call, details
from tests.support.footprint import ON_FIRST_USE, probe, which_loaded

TODAY = datetime.now(UTC).date()


async def exited(pid: int) -> None:
    """Returns once process `pid` has ended (its pidfd becomes readable)."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(descriptor, ended.set)
    try:
        await asyncio.wait_for(ended.wait(), 30)
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


async def test_the_process_renders_and_verifies_what_the_library_does(pki: DevPki) -> None:
    cert, key = ensure_dev_signing_identity(pki.directory)
    identity = SigningIdentity.from_files(cert, key)
    roots = [pki.ca_file.read_bytes()]
    process = DocumentProcess()
    try:
        preview = await process.render(APPROVAL)
        # Byte for byte the document rendered in-process (rendering is deterministic).
        assert preview == render(APPROVAL)

        # pyHanko's synchronous API runs an event loop of its own: in a thread.
        signed = await asyncio.to_thread(sign, preview, identity, reason="Approbation", location="Lyon")
        there, here = await process.verify(signed, roots), await asyncio.to_thread(verify, signed, roots)
        assert there.ok and there == here
        assert not (await process.verify(preview, roots)).ok

        # The template's refusal comes back as in-process, and the child goes on.
        refusal = DecisionContent(**{**APPROVAL.__dict__, "valid_until": None})
        with pytest.raises(DecisionError, match="a period has both ends"):
            await process.render(refusal)
        assert (await process.render(APPROVAL)) == preview
    finally:
        await process.stop()
    assert process.pid is None


def test_the_service_side_never_loads_the_document_libraries() -> None:
    # A fresh interpreter renders and verifies through the process: the libraries load in the child only.
    code = (
        "import asyncio, json, sys\n"
        "from services.contracts.document_process import DocumentProcess\n"
        "import datetime\n"
        "from services.contracts.decisions import DecisionContent\n"
        f"APPROVAL = DecisionContent(**{APPROVAL.__dict__!r})\n"
        "async def main():\n"
        "    process = DocumentProcess()\n"
        "    pdf = await process.render(APPROVAL)\n"
        "    checked = await process.verify(pdf, [])\n"
        "    await process.stop()\n"
        "    return pdf[:5].decode(), checked.problem\n"
        "made = asyncio.run(main())\n"
        f"print(json.dumps([made, {which_loaded(ON_FIRST_USE)}]))\n"
    )
    (start, problem), loaded = probe(code)
    assert start == "%PDF-" and "0 signatures found" in problem
    assert loaded == []


async def test_the_process_gets_none_of_the_service_s_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCOURS_DATABASE_URL", "postgresql://contracts:secret@db/parcours")
    monkeypatch.setenv("PARCOURS_LOG_LEVEL", "WARNING")
    process = DocumentProcess()
    try:
        await process.render(APPROVAL)
        assert process.pid is not None
        with open(f"/proc/{process.pid}/environ", "rb") as environ:
            names = {entry.partition(b"=")[0].decode() for entry in environ.read().split(b"\0") if entry}
    finally:
        await process.stop()
    assert "PARCOURS_DATABASE_URL" not in names
    assert "PARCOURS_LOG_LEVEL" in names


async def test_an_idle_process_ends_and_the_next_decision_starts_another() -> None:
    process = DocumentProcess(idle_seconds=0.2)
    try:
        first = await process.render(APPROVAL)
        pid = process.pid
        assert pid is not None

        await exited(pid)
        await process.retired()
        assert process.pid is None

        assert await process.render(APPROVAL) == first
        assert process.pid not in (None, pid)
    finally:
        await process.stop()


async def test_a_process_killed_while_idle_is_replaced_at_the_next_call() -> None:
    process = DocumentProcess()
    try:
        first = await process.render(APPROVAL)
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await exited(pid)

        assert await process.render(APPROVAL) == first
        assert process.pid not in (None, pid)
    finally:
        await process.stop()


async def test_a_process_that_does_not_answer_is_killed_and_the_next_call_starts_another() -> None:
    process = DocumentProcess(timeout_seconds=1.0)
    try:
        first = await process.render(APPROVAL)
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # hung: it reads nothing and answers nothing

        with pytest.raises(DocumentProcessFailed, match="did not answer"):
            await process.render(APPROVAL)
        await exited(pid)  # killed, not left behind

        assert await process.render(APPROVAL) == first
        assert process.pid not in (None, pid)
    finally:
        await process.stop()


async def test_a_call_given_up_midway_never_hands_its_answer_to_the_next_call() -> None:
    process = DocumentProcess()
    other = DecisionContent(**{**APPROVAL.__dict__, "reference": "ARS84-2026-000002"})
    try:
        await process.render(APPROVAL)
        pid = process.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # it will answer, but only once the caller has given up
        given_up = asyncio.create_task(process.render(APPROVAL))
        for _ in range(5):  # the request written to the pipe (a write, a drain that does not wait), then read
            await asyncio.sleep(0)
        assert process.busy
        given_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await given_up
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

        # The next call gets its own document, not the one the first call gave up on.
        assert await process.render(other) == render(other)
        assert process.pid not in (None, pid)
    finally:
        await process.stop()


async def test_a_preview_while_the_process_hangs_is_unavailable_and_its_retry_makes_one_decision(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub(document_process_timeout_seconds=1.0)
    promoter, alice, dg = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(DG)
    created = (
        await promoter.CreateArsContract(
            new_contract(start=TODAY + timedelta(days=1), end=TODAY + timedelta(days=400))
        )
    ).ars_contract
    name = created.name
    await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name))
    await alice.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=name))
    await alice.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=name))
    kind = c.DECISION_KIND_CONTRACT_APPROVAL
    first = (
        await dg.PreviewCaseDecision(c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=kind))
    ).decision

    # The document process hangs: the next preview is refused as retryable...
    assert hub.runtime is not None
    pid = hub.runtime.task(DocumentProcess).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    request = c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=kind)
    refused = await call(dg.PreviewCaseDecision(request))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
    assert details(refused)[0].reason == "DOCUMENT_UNAVAILABLE"  # type: ignore[union-attr]

    # ... and the same request sent again makes exactly one new decision, which signs.
    again = (await dg.PreviewCaseDecision(request)).decision
    assert again.name != first.name and again.content.startswith(b"%PDF-")
    assert (await dg.PreviewCaseDecision(request)).decision.name == again.name
    signed = (await dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=name))).ars_contract
    assert signed.decision == again.name
    decision = (await dg.GetCaseDecision(c.GetCaseDecisionRequest(name=signed.decision))).decision
    assert decision.signed and decision.signer
