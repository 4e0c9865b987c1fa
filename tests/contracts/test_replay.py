"""Golden histories: one recorded history per contracts workflow, replayed on today's code at every run, so a
change to a workflow's command sequence that would break running cases fails here (it must go through
`workflow.patched`).

The histories live in tests/replay/histories/contracts/. A missing one is recorded by driving a case through
the real service and worker (payloads with Temporal's default converter, not the hub's encryption, so the file
replays in any run); to record them again on purpose, delete the files and run this test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.billing.v1 import billing_pb2 as b
from parcours.contracts.v1 import contracts_pb2 as c
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from services.devstack.temporal import TemporalHandle
from tests.contracts.conftest import (
    ALICE,
    BOB,
    DG,
    DOCTOR,
    OPERATOR,
    ORDRE,
    PROMOTER,
    Hub,
    HubFactory,
    new_contract,
    new_declaration,
    pb_date,
    rid,
)
from tests.support import repo_root
from workflows.contracts.workflows import WORKFLOWS

HISTORIES = repo_root() / "tests" / "replay" / "histories" / "contracts"
TODAY = datetime.now(UTC).date()


async def ars_contract(hub: Hub) -> str:
    promoter, alice, bob, dg = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(BOB), hub.stub(DG)
    name = (
        await promoter.CreateArsContract(
            new_contract(start=TODAY + timedelta(days=5), end=TODAY + timedelta(days=900))
        )
    ).ars_contract.name
    await promoter.SubmitArsContract(c.SubmitArsContractRequest(request_id=rid(), name=name))
    await alice.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=name))
    await alice.RequestArsContractDocuments(
        c.RequestArsContractDocumentsRequest(
            request_id=rid(), name=name, motivation="Pièces", items=["Convention"]
        )
    )
    await promoter.CompleteArsContractDocuments(
        c.CompleteArsContractDocumentsRequest(request_id=rid(), name=name)
    )
    await bob.MarkArsContractComplete(c.MarkArsContractCompleteRequest(request_id=rid(), name=name))
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=3))
    opinion = (
        await bob.RequestCaseOpinion(
            c.RequestCaseOpinionRequest(
                request_id=rid(), parent=name, expert=ALICE.name, question="Avis ?", due_time=due
            )
        )
    ).opinion
    await alice.GiveCaseOpinion(
        c.GiveCaseOpinionRequest(
            request_id=rid(), name=opinion.name, verdict=c.VERDICT_FAVOURABLE, text="Favorable"
        )
    )
    await bob.RequestArsContractChanges(
        c.RequestArsContractChangesRequest(
            request_id=rid(), name=name, motivation="Article 3", items=["Durée"]
        )
    )
    await promoter.PostCaseMessage(c.PostCaseMessageRequest(request_id=rid(), parent=name, text="Corrigé."))
    await promoter.ResubmitArsContract(c.ResubmitArsContractRequest(request_id=rid(), name=name))
    await bob.AddCaseComment(c.AddCaseCommentRequest(request_id=rid(), parent=name, text="OK pour moi"))
    await bob.ApproveArsContract(c.ApproveArsContractRequest(request_id=rid(), name=name))
    await dg.PreviewCaseDecision(
        c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL)
    )
    await dg.SignArsContract(c.SignArsContractRequest(request_id=rid(), name=name))
    await promoter.AmendArsContract(
        c.AmendArsContractRequest(
            request_id=rid(), name=name, change_id="avenant-1", summary="Un site de plus"
        )
    )
    await alice.ApproveArsContractChange(c.ApproveArsContractChangeRequest(request_id=rid(), name=name))
    await dg.PreviewCaseDecision(
        c.PreviewCaseDecisionRequest(request_id=rid(), parent=name, kind=c.DECISION_KIND_CONTRACT_AMENDMENT)
    )
    await dg.SignArsContractChange(c.SignArsContractChangeRequest(request_id=rid(), name=name))
    await alice.TerminateArsContract(
        c.TerminateArsContractRequest(request_id=rid(), name=name, motivation="Fin du programme")
    )
    return f"ars-contract-{name.removeprefix('arsContracts/')}"


async def operator_declaration(hub: Hub) -> str:
    promoter, alice = hub.stub(PROMOTER), hub.stub(ALICE)
    name = (
        await promoter.CreateOperatorDeclaration(new_declaration(level=b.OPERATOR_LEVEL_2))
    ).operator_declaration.name
    await alice.RequestOperatorDeclarationDocuments(
        c.RequestOperatorDeclarationDocumentsRequest(
            request_id=rid(), name=name, motivation="Pièce", items=["CE"]
        )
    )
    await promoter.CompleteOperatorDeclarationDocuments(
        c.CompleteOperatorDeclarationDocumentsRequest(request_id=rid(), name=name)
    )
    await alice.AcknowledgeOperatorDeclaration(
        c.AcknowledgeOperatorDeclarationRequest(request_id=rid(), name=name, effective_date=pb_date(TODAY))
    )
    await alice.LapseOperatorDeclaration(
        c.LapseOperatorDeclarationRequest(request_id=rid(), name=name, motivation="DMN radié")
    )
    return f"operator-declaration-{name.removeprefix('operatorDeclarations/')}"


async def intermediary_review(hub: Hub) -> str:
    doctor, ordre = hub.stub(DOCTOR), hub.stub(ORDRE)
    name = (
        await doctor.CreateIntermediaryContractReview(
            c.CreateIntermediaryContractReviewRequest(
                request_id=rid(),
                intermediary_contract_review=c.IntermediaryContractReview(
                    region="regions/84",
                    territory="42",
                    company_siren="912345678",
                    company_name="MédiConsult SAS",
                    offer="Téléconsultations de soirée.",
                ),
            )
        )
    ).intermediary_contract_review.name
    for clause in range(1, 8):
        await ordre.MarkIntermediaryContractClause(
            c.MarkIntermediaryContractClauseRequest(
                request_id=rid(), name=name, clause=clause, status=c.CLAUSE_STATUS_SATISFIED
            )
        )
    await ordre.GiveIntermediaryContractVisa(
        c.GiveIntermediaryContractVisaRequest(request_id=rid(), name=name)
    )
    return f"intermediary-review-{name.removeprefix('intermediaryContractReviews/')}"


async def agrement_application(hub: Hub) -> str:
    operator = hub.stub(OPERATOR)
    company = f"teleconsultationCompanies/7{uuid.uuid4().int % 10**8:08d}"
    await operator.CreateTeleconsultationCompany(
        c.CreateTeleconsultationCompanyRequest(
            request_id=rid(),
            teleconsultation_company=c.TeleconsultationCompany(name=company, legal_name="Télé SAS"),
        )
    )
    name = (
        await operator.CreateAgrementApplication(
            c.CreateAgrementApplicationRequest(
                request_id=rid(), agrement_application=c.AgrementApplication(company=company)
            )
        )
    ).agrement_application.name
    await operator.RequestAgrementDocuments(
        c.RequestAgrementDocumentsRequest(
            request_id=rid(), name=name, motivation="Statuts", items=["Statuts"]
        )
    )
    await operator.CompleteAgrementDocuments(c.CompleteAgrementDocumentsRequest(request_id=rid(), name=name))
    await operator.GrantAgrement(c.GrantAgrementRequest(request_id=rid(), name=name))
    await operator.WithdrawAgrement(
        c.WithdrawAgrementRequest(request_id=rid(), name=name, motivation="Fraude")
    )
    return f"agrement-application-{name.removeprefix('agrementApplications/')}"


CASES: dict[str, Callable[[Hub], Awaitable[str]]] = {
    "ars-contract": ars_contract,
    "operator-declaration": operator_declaration,
    "intermediary-review": intermediary_review,
    "agrement-application": agrement_application,
}


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_the_recorded_history_replays_on_today_s_code(
    kind: str, make_hub: HubFactory, temporal: TemporalHandle
) -> None:
    path = HISTORIES / f"{kind}.json"
    if not path.exists():
        await record(kind, path, make_hub, temporal)
    history = WorkflowHistory.from_json(kind, path.read_text())
    assert len(history.events) > 10
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)


async def record(kind: str, path: Path, make_hub: HubFactory, temporal: TemporalHandle) -> None:
    """Drive a case through the real service and worker, with Temporal's default converter, and keep its
    history."""
    client = await Client.connect(temporal.address)
    hub = await make_hub(client=client)
    workflow_id = await CASES[kind](hub)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, history.to_json())
