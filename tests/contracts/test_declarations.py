"""Télésurveillance operator declarations: declared, completed on request, acknowledged (effective at once or
from a later day), in bulk with each refusal on its own; rejected, withdrawn, lapsed; and what coverage says
of each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from parcours.billing.v1 import billing_pb2 as b
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts import clock
from tests.contracts.conftest import (
    ALICE,
    BILLING,
    BOB,
    ENDOCRINO,
    PROMOTER,
    Hub,
    Who,
    activity,
    new_declaration,
    pb_date,
    rid,
)
from tests.support import DAUPHINE
from tests.support.calls import call, details

Declaration = c.OperatorDeclaration
TODAY = clock.local_date(datetime.now(UTC), "Europe/Paris")
ENDOCRINOLOGIST = Who("practitioners/" + ENDOCRINO, DAUPHINE, rpps=ENDOCRINO)  # at 380000024


async def coverage(hub: Hub, operator: str, day: object) -> c.Coverage:
    reply = await hub.stub(BILLING).CheckCoverage(
        c.CheckCoverageRequest(
            activity=activity(b.ACT_TYPE_TELESURVEILLANCE),
            act_date=day,
            region="regions/84",
            practitioner=operator,
        )
    )
    return reply.coverage


async def test_a_declaration_acknowledged_today_is_effective_at_once_and_covers_the_forfaits(
    hub: Hub,
) -> None:
    endocrinologist, alice = hub.stub(ENDOCRINOLOGIST), hub.stub(ALICE)
    created = (await endocrinologist.CreateOperatorDeclaration(new_declaration())).operator_declaration
    assert created.state == Declaration.STATE_DECLARED and created.operator == ENDOCRINOLOGIST.name
    assert created.progress.current_step.step == c.STEP_ACKNOWLEDGEMENT
    before = await coverage(hub, ENDOCRINOLOGIST.name, pb_date(TODAY))
    assert not before.covered
    assert [o.reason for o in before.obligations] == ["REQUIRES_OPERATOR_DECLARATION"]

    # Missing items first: the file goes back to the operator, who completes it.
    asked = await alice.RequestOperatorDeclarationDocuments(
        c.RequestOperatorDeclarationDocumentsRequest(
            request_id=rid(), name=created.name, motivation="Pièces manquantes", items=["Marquage CE du DMN"]
        )
    )
    assert asked.operator_declaration.state == Declaration.STATE_AWAITING_DOCUMENTS
    listed = await endocrinologist.ListCaseMessages(c.ListCaseMessagesRequest(parent=created.name))
    messages = listed.messages
    assert [(m.author, m.text, list(m.items), m.from_promoter) for m in messages] == [
        (ALICE.name, "Pièces manquantes", ["Marquage CE du DMN"], False)
    ]
    completed = await endocrinologist.CompleteOperatorDeclarationDocuments(
        c.CompleteOperatorDeclarationDocumentsRequest(request_id=rid(), name=created.name)
    )
    assert completed.operator_declaration.state == Declaration.STATE_DECLARED

    # Effective before it was filed: refused, naming the field.
    early = await call(
        alice.AcknowledgeOperatorDeclaration(
            c.AcknowledgeOperatorDeclarationRequest(
                request_id=rid(), name=created.name, effective_date=pb_date(TODAY - timedelta(days=1))
            )
        )
    )
    assert early.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(early)[1] == [("effective_date", "a declaration takes effect on or after it was filed")]
    acknowledged = (
        await alice.AcknowledgeOperatorDeclaration(
            c.AcknowledgeOperatorDeclarationRequest(
                request_id=rid(), name=created.name, effective_date=pb_date(TODAY)
            )
        )
    ).operator_declaration
    assert acknowledged.state == Declaration.STATE_EFFECTIVE and acknowledged.acknowledger == ALICE.name
    assert acknowledged.effective_date == pb_date(TODAY)
    after = await coverage(hub, ENDOCRINOLOGIST.name, pb_date(TODAY))
    assert after.covered and after.obligations[0].covered_by == created.name
    assert not (await coverage(hub, ENDOCRINOLOGIST.name, pb_date(TODAY - timedelta(days=1)))).covered

    # The ARS records that the operator's conditions changed: no forfait after that day.
    lapsed = (
        await alice.LapseOperatorDeclaration(
            c.LapseOperatorDeclarationRequest(
                request_id=rid(), name=created.name, motivation="DMN radié de la LATM"
            )
        )
    ).operator_declaration
    assert lapsed.state == Declaration.STATE_LAPSED
    assert not (await coverage(hub, ENDOCRINOLOGIST.name, pb_date(TODAY))).covered
    closed = await call(
        alice.LapseOperatorDeclaration(
            c.LapseOperatorDeclarationRequest(request_id=rid(), name=created.name, motivation="encore")
        )
    )
    assert closed.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(closed)[0].reason == "CASE_CLOSED"  # type: ignore[union-attr]


async def test_bulk_acknowledgement_says_for_each_case_done_or_why_not(hub: Hub) -> None:
    promoter, alice, bob = hub.stub(PROMOTER), hub.stub(ALICE), hub.stub(BOB)
    first = (await promoter.CreateOperatorDeclaration(new_declaration())).operator_declaration
    second = (
        await promoter.CreateOperatorDeclaration(new_declaration(level=b.OPERATOR_LEVEL_2))
    ).operator_declaration
    third = (await promoter.CreateOperatorDeclaration(new_declaration())).operator_declaration
    # Bob holds the third: Alice's bulk acknowledgement is refused for it alone.
    await bob.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=third.name))
    tomorrow = TODAY + timedelta(days=1)
    request = c.BatchAcknowledgeOperatorDeclarationsRequest(
        request_id=rid(), names=[first.name, second.name, third.name], effective_date=pb_date(tomorrow)
    )
    results = (await alice.BatchAcknowledgeOperatorDeclarations(request)).results
    assert [(r.name, r.ok, r.reason) for r in results] == [
        (first.name, True, ""),
        (second.name, True, ""),
        (third.name, False, "CASE_CLAIMED_BY_OTHER"),
    ]
    # Effective tomorrow: acknowledged today, and not covering today's acts.
    got = (
        await alice.GetOperatorDeclaration(c.GetOperatorDeclarationRequest(name=first.name))
    ).operator_declaration
    assert got.state == Declaration.STATE_ACKNOWLEDGED and got.effective_date == pb_date(tomorrow)
    # A retried batch replays each case's outcome: nothing is acknowledged twice.
    again = (await alice.BatchAcknowledgeOperatorDeclarations(request)).results
    assert [(r.ok, r.reason) for r in again] == [(True, ""), (True, ""), (False, "CASE_CLAIMED_BY_OTHER")]
    events = (await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=first.name))).events
    assert [e.kind for e in events].count(c.EVENT_KIND_ACKNOWLEDGED) == 1


async def test_reject_needs_a_motivation_and_only_the_operator_withdraws(hub: Hub) -> None:
    promoter, alice = hub.stub(PROMOTER), hub.stub(ALICE)
    declared = (await promoter.CreateOperatorDeclaration(new_declaration())).operator_declaration
    blank = await call(
        alice.RejectOperatorDeclaration(
            c.RejectOperatorDeclarationRequest(request_id=rid(), name=declared.name, motivation="   ")
        )
    )
    assert blank.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(blank)[0].reason == "MOTIVATION_REQUIRED"  # type: ignore[union-attr]
    not_theirs = await call(
        alice.WithdrawOperatorDeclaration(
            c.WithdrawOperatorDeclarationRequest(request_id=rid(), name=declared.name)
        )
    )
    assert details(not_theirs)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]
    withdrawn = await promoter.WithdrawOperatorDeclaration(
        c.WithdrawOperatorDeclarationRequest(
            request_id=rid(), name=declared.name, motivation="Projet abandonné"
        )
    )
    assert withdrawn.operator_declaration.state == Declaration.STATE_WITHDRAWN

    rejected = (await promoter.CreateOperatorDeclaration(new_declaration())).operator_declaration
    reply = await alice.RejectOperatorDeclaration(
        c.RejectOperatorDeclarationRequest(
            request_id=rid(), name=rejected.name, motivation="DMN non inscrit à la LATM"
        )
    )
    assert reply.operator_declaration.state == Declaration.STATE_REJECTED
    assert reply.operator_declaration.progress.decider == ALICE.name
