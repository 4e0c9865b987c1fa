"""A doctor ↔ company contract before the Ordre: every CNOM clause marked with its note, a visa only when each
applicable clause is satisfied, a refusal naming the failed clauses (and its decision listing them), a
request for changes and the doctor's revision, routed to the Ordre of the doctor's département only."""

from __future__ import annotations

import io

import grpc
from google.type import money_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader

from tests.contracts.conftest import DOCTOR, ORDRE, ORDRE_13, Hub, rid
from tests.support.calls import call, details

Review = c.IntermediaryContractReview
CLAUSES = [
    c.CLAUSE_PROFESSIONAL_INDEPENDENCE,
    c.CLAUSE_REMUNERATION,
    c.CLAUSE_QUALIFICATION,
    c.CLAUSE_ROLL_REGISTRATION,
    c.CLAUSE_NO_CANVASSING,
    c.CLAUSE_HEALTH_DATA_PROTECTION,
    c.CLAUSE_CIVIL_LIABILITY_INSURANCE,
]


def page_text(pdf: bytes) -> bytes:
    """The decoded content streams of a PDF's pages (ReportLab writes the text there)."""
    reader = PdfFileReader(io.BytesIO(pdf))
    found = b""
    for page in reader.root["/Pages"]["/Kids"]:
        contents = page.get_object()["/Contents"]
        streams = contents if isinstance(contents, generic.ArrayObject) else [contents]
        found += b"".join(s.get_object().data for s in streams)
    return found


async def submit(hub: Hub) -> Review:
    reply = await hub.stub(DOCTOR).CreateIntermediaryContractReview(
        c.CreateIntermediaryContractReviewRequest(
            request_id=rid(),
            intermediary_contract_review=Review(
                region="regions/84",
                territory="42",
                company_siren="912345678",
                company_name="MédiConsult SAS",
                offer="Téléconsultations non programmées en soirée pour les abonnés d'une mutuelle.",
                remuneration_per_act=money_pb2.Money(currency_code="EUR", units=18),
            ),
        )
    )
    return reply.intermediary_contract_review


async def mark(hub: Hub, name: str, clause: int, status: int, note: str = "") -> Review:
    reply = await hub.stub(ORDRE).MarkIntermediaryContractClause(
        c.MarkIntermediaryContractClauseRequest(
            request_id=rid(), name=name, clause=clause, status=status, note=note
        )
    )
    return reply.intermediary_contract_review


async def test_a_visa_needs_every_applicable_clause_satisfied(hub: Hub) -> None:
    review = await submit(hub)
    assert review.state == Review.STATE_UNDER_REVIEW and review.doctor == DOCTOR.name
    assert review.progress.current_step.step == c.STEP_ORDRE_REVIEW
    assert [x.status for x in review.clauses] == [c.CLAUSE_STATUS_UNREVIEWED] * 7
    # Routed to the Ordre of département 42: not 13's.
    hidden = await call(
        hub.stub(ORDRE_13).GetIntermediaryContractReview(
            c.GetIntermediaryContractReviewRequest(name=review.name)
        )
    )
    assert details(hidden)[0].reason == "CASE_NOT_VISIBLE"  # type: ignore[union-attr]

    early = await call(
        hub.stub(ORDRE).GiveIntermediaryContractVisa(
            c.GiveIntermediaryContractVisaRequest(request_id=rid(), name=review.name)
        )
    )
    assert early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(early)[0].reason == "CLAUSES_NOT_SATISFIED"  # type: ignore[union-attr]
    no_note = await call(mark(hub, review.name, c.CLAUSE_NO_CANVASSING, c.CLAUSE_STATUS_NOT_APPLICABLE))
    assert details(no_note)[1] == [("note", "a clause not satisfied or not applicable says why in a note")]

    for clause in CLAUSES[:-1]:
        review = await mark(hub, review.name, clause, c.CLAUSE_STATUS_SATISFIED)
    review = await mark(
        hub,
        review.name,
        c.CLAUSE_CIVIL_LIABILITY_INSURANCE,
        c.CLAUSE_STATUS_NOT_APPLICABLE,
        "Salarié couvert par la société",
    )
    assert {x.assessor for x in review.clauses} == {ORDRE.name}
    given = await hub.stub(ORDRE).GiveIntermediaryContractVisa(
        c.GiveIntermediaryContractVisaRequest(
            request_id=rid(), name=review.name, motivation="Contrat conforme"
        )
    )
    assert given.intermediary_contract_review.state == Review.STATE_VISA_GIVEN
    assert given.intermediary_contract_review.progress.decider == ORDRE.name


async def test_a_refusal_names_the_failed_clauses_and_so_does_its_decision(hub: Hub) -> None:
    review = await submit(hub)
    # Changes first: the doctor revises, the review opens again.
    asked = await hub.stub(ORDRE).RequestIntermediaryContractChanges(
        c.RequestIntermediaryContractChangesRequest(
            request_id=rid(),
            name=review.name,
            motivation="Clauses à revoir",
            items=["Article 5 : exclusivité"],
        )
    )
    assert asked.intermediary_contract_review.state == Review.STATE_CHANGES_REQUESTED
    resubmitted = await hub.stub(DOCTOR).ResubmitIntermediaryContractReview(
        c.ResubmitIntermediaryContractReviewRequest(request_id=rid(), name=review.name)
    )
    assert resubmitted.intermediary_contract_review.state == Review.STATE_UNDER_REVIEW

    await mark(
        hub,
        review.name,
        c.CLAUSE_PROFESSIONAL_INDEPENDENCE,
        c.CLAUSE_STATUS_NOT_SATISFIED,
        "Objectifs de volume",
    )
    await mark(
        hub, review.name, c.CLAUSE_REMUNERATION, c.CLAUSE_STATUS_NOT_SATISFIED, "Rémunération au chiffre"
    )
    preview = (
        await hub.stub(ORDRE).PreviewCaseDecision(
            c.PreviewCaseDecisionRequest(
                request_id=rid(),
                parent=review.name,
                kind=c.DECISION_KIND_INTERMEDIARY_VISA_REFUSAL,
                motivation="Le contrat porte atteinte à l'indépendance du médecin.",
            )
        )
    ).decision
    assert preview.reference.startswith("ORDRE42-")
    text = page_text(preview.content)
    assert b"Objectifs de volume" in text and b"chiffre" in text
    refused = (
        await hub.stub(ORDRE).RefuseIntermediaryContractVisa(
            c.RefuseIntermediaryContractVisaRequest(
                request_id=rid(), name=review.name, motivation="Clauses non conformes"
            )
        )
    ).intermediary_contract_review
    assert refused.state == Review.STATE_VISA_REFUSED
    assert list(refused.failed_clauses) == [c.CLAUSE_PROFESSIONAL_INDEPENDENCE, c.CLAUSE_REMUNERATION]
    # The doctor reads why, with the clauses.
    messages = (
        await hub.stub(DOCTOR).ListCaseMessages(c.ListCaseMessagesRequest(parent=review.name))
    ).messages
    assert list(messages[-1].items) == ["PROFESSIONAL_INDEPENDENCE", "REMUNERATION"]
    withdrawn = await call(
        hub.stub(DOCTOR).WithdrawIntermediaryContractReview(
            c.WithdrawIntermediaryContractReviewRequest(request_id=rid(), name=review.name)
        )
    )
    assert details(withdrawn)[0].reason == "CASE_CLOSED"  # type: ignore[union-attr]
