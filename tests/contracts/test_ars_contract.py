"""An ARS contract over real gRPC, PostgreSQL and Temporal: drafted by a promoter, checked, visaed by the
Ordre, reviewed and signed by the director general with a PAdES signature that verifies; its timeline, its
search attributes, and every refusal on the way."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import grpc
from parcours.contracts.v1 import contracts_pb2 as c
from pyhanko.pdf_utils.reader import PdfFileReader
from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Replayer

from services.contracts.decisions import signed_over, verify
from tests.contracts.conftest import (
    ALICE,
    BOB,
    DG,
    PROMOTER,
    Hub,
    activity,
    new_contract,
    rid,
)
from tests.support.calls import call, details
from workflows.contracts.workflows import ArsContractWorkflow

Contract = c.ArsContract
TODAY = datetime.now(UTC).date()


async def draft(hub: Hub, *, in_parcours: bool = False, **fields: object) -> Contract:
    reply = await hub.stub(PROMOTER).CreateArsContract(
        new_contract(
            start=TODAY + timedelta(days=30),
            end=TODAY + timedelta(days=30 + 3 * 365),
            activity=activity(in_parcours=in_parcours),
            **fields,
        )
    )
    return reply.ars_contract


async def test_a_contract_from_draft_through_the_ordre_visa_to_a_signed_decision(hub: Hub) -> None:
    # Region 84 follows the national regime: a contract needs no visa there. The CNOM 2016 profile is
    # exercised in test_policy_api; here the Ordre's visa comes from a contract the promoter asks with it.
    created = await draft(hub)
    assert created.state == Contract.STATE_DRAFT and created.promoter == PROMOTER.name
    assert created.progress.current_step.step == c.STEP_UNSPECIFIED
    name = created.name

    promoter, alice, bob, dg = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(BOB), hub.stub(DG)
    submitted = (
        await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name))
    ).ars_contract
    assert submitted.state == Contract.STATE_SUBMITTED
    assert submitted.progress.current_step.step == c.STEP_COMPLETENESS_CHECK
    assert submitted.progress.current_step.candidate_role == 5  # ROLE_ARS_OFFICER

    # Alice claims the completeness check: everyone sees it, and Bob acting on it is refused.
    claimed = (await alice.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=name))).case
    assert claimed.current_step.claimant == ALICE.name
    refused = await call(
        bob.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=name))
    )
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(refused)[0].reason == "CASE_CLAIMED_BY_OTHER"  # type: ignore[union-attr]

    complete = await alice.MarkArsContractComplete(
        c.MarkArsContractCompleteRequest(request_id=rid(), name=name)
    )
    assert (
        complete.ars_contract.state == Contract.STATE_UNDER_REVIEW
    )  # no visa in region 84's national regime

    approved = await alice.ApproveArsContract(
        c.ApproveArsContractRequest(request_id=rid(), name=name, motivation="Dossier conforme")
    )
    assert approved.ars_contract.state == Contract.STATE_AWAITING_SIGNATURE

    # Signing needs the decision previewed first; then exactly those bytes are signed.
    missing = await call(dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=name)))
    assert details(missing)[0].reason == "DECISION_DOCUMENT_REQUIRED"  # type: ignore[union-attr]
    preview = (
        await dg.PreviewCaseDecision(
            c.PreviewCaseDecisionRequest(
                request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL
            )
        )
    ).decision
    assert not preview.signed and preview.content.startswith(b"%PDF-")
    assert preview.reference.startswith(f"ARS84-{TODAY.year}-")
    signed = (await dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=name))).ars_contract
    assert signed.state == Contract.STATE_ACTIVE and signed.signer == DG.name
    assert (signed.start_date.year, signed.start_date.month, signed.start_date.day) == (
        (TODAY + timedelta(days=30)).year,
        (TODAY + timedelta(days=30)).month,
        (TODAY + timedelta(days=30)).day,
    )
    assert signed.decision == preview.name

    # The signed PDF is the preview with a PAdES signature appended, and it verifies with pyHanko.
    decision = (await dg.GetCaseDecision(c.GetCaseDecisionRequest(name=signed.decision))).decision
    assert decision.signed and signed_over(preview.content, decision.content)
    checked = await asyncio.to_thread(verify, decision.content, [hub.pki.ca_file.read_bytes()])
    assert checked.ok and checked.signer == decision.signer != ""
    assert PdfFileReader(io.BytesIO(decision.content)).embedded_signatures[0].field_name
    documents = (await dg.ListCaseDocuments(c.ListCaseDocumentsRequest(parent=name))).documents
    assert [(d.document_type, d.sha256) for d in documents] == [(c.DOCUMENT_TYPE_DECISION, decision.sha256)]

    # The timeline says who did what, and who looked.
    await promoter.GetArsContract(c.GetArsContractRequest(name=name))
    events = (await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=name, page_size=500))).events
    kinds = [e.kind for e in events]
    for kind in (
        c.EVENT_KIND_CREATED,
        c.EVENT_KIND_SUBMITTED,
        c.EVENT_KIND_CLAIMED,
        c.EVENT_KIND_MARKED_COMPLETE,
        c.EVENT_KIND_APPROVED,
        c.EVENT_KIND_SIGNED,
        c.EVENT_KIND_ACTIVATED,
        c.EVENT_KIND_VIEWED,
    ):
        assert kind in kinds
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    viewed = [e for e in events if e.kind == c.EVENT_KIND_VIEWED]
    assert viewed[-1].actor == "staff/promoter-loire"  # the person who looked, not only their establishment
    approval = next(e for e in events if e.kind == c.EVENT_KIND_APPROVED)
    assert (approval.actor, approval.detail) == (ALICE.name, "Dossier conforme")

    # The search attributes a Web UI user filters on; the history replays on today's code.
    handle = hub.client.get_workflow_handle(f"ars-contract-{name.removeprefix('arsContracts/')}")
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    attributes = {k: v for k, v in description.search_attributes.items() if k.startswith("Parcours")}
    assert attributes["ParcoursKind"] == ["ars-contract"] and attributes["ParcoursState"] == ["ACTIVE"]
    assert attributes["ParcoursRegion"] == ["84"] and attributes["ParcoursOverdue"] == [False]
    assert "ParcoursExpireTime" in attributes
    await Replayer(workflows=[ArsContractWorkflow], data_converter=hub.client.data_converter).replay_workflow(
        await handle.fetch_history()
    )


async def test_a_contract_names_a_ght_of_its_own_region_or_none(hub: Hub) -> None:
    kept = await draft(hub, ght="ghts/ght-loire")
    assert kept.ght == "ghts/ght-loire"
    for region, ght in (("84", "ghts/ght-nowhere"), ("93", "ghts/ght-loire")):
        refused = await call(
            hub.stub(PROMOTER).CreateArsContract(
                new_contract(
                    region=region,
                    start=TODAY + timedelta(days=30),
                    end=TODAY + timedelta(days=400),
                    ght=ght,
                )
            )
        )
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, (region, ght)
        assert details(refused)[1] == [("ars_contract.ght", f"is not a GHT of region {region}")]
    malformed = await call(
        hub.stub(PROMOTER).CreateArsContract(
            new_contract(start=TODAY + timedelta(days=30), end=TODAY + timedelta(days=400), ght="GHT Loire")
        )
    )
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in details(malformed)[1]] == ["ars_contract.ght"]
    listed = await hub.stub(PROMOTER).ListCases(c.ListCasesRequest(ght="ghts/ght-loire"))
    assert kept.name in {case.name for case in listed.cases}
