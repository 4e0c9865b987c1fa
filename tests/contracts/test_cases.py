"""The contracts cases as plain state machines (no Temporal): paths, refusals, timers, continue-as-new."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from services.contracts.models import (
    REASON_STATUS,
    AcknowledgeInput,
    ActionInput,
    Actor,
    AgrementCase,
    ArsContractCase,
    AttachDocumentInput,
    CaseCore,
    ChangeInput,
    ClauseInput,
    ClockRule,
    CommentInput,
    ContractActivity,
    DocumentRef,
    IntermediaryReviewCase,
    LegalClock,
    MessageInput,
    OperatorDeclarationCase,
    OpinionInput,
    OpinionRequestInput,
    Reason,
    ReassignInput,
    SignInput,
    Timeline,
)
from services.contracts.policy import read_data_file
from workflows.contracts.cases import (
    AgrementApplication,
    ArsContract,
    IntermediaryContractReview,
    OperatorDeclaration,
    search_attributes,
)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
DAY = timedelta(days=1)
PROMOTER_ORG = "establishments/420000017"
PROMOTER = Actor(id="staff/promoter-1", organisation=PROMOTER_ORG, roles=["PROMOTER"])
STRANGER = Actor(id="staff/promoter-2", organisation="establishments/930000013", roles=["PROMOTER"])
ALICE = Actor(id="staff/alice", roles=["ARS_OFFICER"])
BOB = Actor(id="staff/bob", roles=["ARS_OFFICER"])
CHIEF = Actor(id="staff/chief", roles=["ARS_SUPERVISOR"])
DG = Actor(id="staff/dg", roles=["ARS_SIGNATORY"])
ORDRE = Actor(id="staff/ordre-42", roles=["ORDRE_REVIEWER"])
OPERATOR = Actor(id="staff/dgos", roles=["HUB_OPERATOR"])
EXPERT = "practitioners/10000000101"


def core(kind: str, state: str, *, clock: LegalClock | None = None) -> CaseCore:
    return CaseCore(
        case_id=str(uuid.uuid4()),
        kind=kind,
        region="84",
        departement="42",
        promoter=PROMOTER_ORG,
        created_at=T0,
        created_by=PROMOTER.id,
        state=state,
        clock=clock,
    )


def contract(*, visa_required: bool = True) -> ArsContract:
    machine = ArsContract(
        ArsContractCase(
            core=core("ARS_CONTRACT", "DRAFT"),
            activity=ContractActivity(
                act_type="TELECONSULTATION", offerer="ESTABLISHMENT", in_parcours=False, experimental=False
            ),
            requirement="CONTRACT_WITH_ORDINAL_VISA_REQUIRED" if visa_required else "CONTRACT_REQUIRED",
            visa_required=visa_required,
        )
    )
    machine.created(T0)
    return machine


def act(actor: Actor, motivation: str = "", items: list[str] | None = None, version: int = 0) -> ActionInput:
    return ActionInput(
        request_id=str(uuid.uuid4()),
        actor=actor,
        motivation=motivation,
        items=items or [],
        expected_version=version,
    )


def doc(name: str = "decision") -> DocumentRef:
    return DocumentRef(
        document=f"arsContracts/x/documents/{name}",
        version=1,
        document_type="DECISION",
        media_type="application/pdf",
        size_bytes=1234,
        sha256="0" * 64,
    )


def sign(actor: Actor, until: datetime, *, document: DocumentRef | None = None) -> SignInput:
    return SignInput(
        request_id=str(uuid.uuid4()),
        actor=actor,
        decision_document=document if document is not None else doc(),
        valid_from=T0,
        valid_until=until,
    )


def refused(call: object, *args: object) -> str:
    assert callable(call)
    with pytest.raises(ApplicationError) as error:
        call(*args)
    assert error.value.non_retryable
    reason = error.value.type
    assert reason in REASON_STATUS, f"{reason} has no gRPC status"
    return reason


def kinds(
    machine: ArsContract | OperatorDeclaration | IntermediaryContractReview | AgrementApplication,
) -> list[str]:
    return [e.kind for e in machine.take_write(T0, None).events]


def active_contract(until: datetime) -> ArsContract:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    c.mark_complete(T0, act(ALICE))
    c.approve(T0, act(ALICE))
    c.sign(T0, sign(DG, until))
    return c


# --- ArsContract -------------------------------------------------------------------------------------------


def test_a_contract_goes_from_draft_through_the_ordre_visa_to_signature() -> None:
    c = contract()
    c.submit(T0, act(PROMOTER))
    assert c.state == "SUBMITTED" and c.core.step and c.core.step.name == "COMPLETENESS_CHECK"
    c.claim(T0, act(ALICE))
    # Alice holds the completeness check: Bob acting on it is refused, and everyone sees who holds it.
    assert refused(c.mark_complete, T0, act(BOB)) == "CASE_CLAIMED_BY_OTHER"
    assert c.summary(T0).claimant == ALICE.id
    c.mark_complete(T0, act(ALICE))
    assert c.state == "AWAITING_VISA" and c.summary(T0).ordre_territory == "42"
    # The ARS review cannot conclude before the visa; an Ordre reviewer cannot act on an ARS step.
    assert refused(c.approve, T0, act(ALICE)) == "VISA_REQUIRED"
    assert refused(c.approve, T0, act(ORDRE)) == "NOT_A_CANDIDATE"
    assert refused(c.give_visa, T0, act(ALICE)) == "NOT_A_CANDIDATE"
    c.give_visa(T0 + DAY, act(ORDRE))
    assert c.state == "UNDER_REVIEW" and c.case.visa_given_by == ORDRE.id
    c.approve(T0 + 2 * DAY, act(BOB, "conforme"))
    assert c.state == "AWAITING_SIGNATURE"
    # Only the director general (or a named delegate) signs, and with the signed decision.
    until = T0 + 3 * 365 * DAY
    assert refused(c.sign, T0, sign(ALICE, until)) == "NOT_A_CANDIDATE"
    missing = SignInput(request_id="r", actor=DG, decision_document=None, valid_from=T0, valid_until=until)
    assert refused(c.sign, T0, missing) == "DECISION_DOCUMENT_REQUIRED"
    assert refused(c.sign, T0, sign(DG, T0 - DAY)) == "PERIOD_INVALID"
    c.sign(T0 + 3 * DAY, sign(DG, until))
    assert c.state == "ACTIVE" and c.case.signed_by == DG.id and c.summary(T0).expires_at == until
    write = c.take_write(T0 + 3 * DAY, None)
    assert [e.kind for e in write.events][:3] == ["CREATED", "SUBMITTED", "STEP_OPENED"]
    assert {"CLAIMED", "MARKED_COMPLETE", "VISA_GIVEN", "APPROVED", "SIGNED", "ACTIVATED"} <= {
        e.kind for e in write.events
    }
    assert write.ars_contract is c.case and write.documents == [doc()]
    # Every decision keeps who and when.
    assert (c.core.decided_by, c.core.decided_at) == (DG.id, T0 + 3 * DAY)


def test_without_a_required_visa_the_review_follows_the_completeness_check() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    c.mark_complete(T0, act(ALICE))
    assert c.state == "UNDER_REVIEW" and c.summary(T0).ordre_territory == ""


def test_refusals_and_requests_for_changes_state_their_motivation_and_items() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    c.mark_complete(T0, act(ALICE))
    assert refused(c.reject, T0, act(ALICE, "  ")) == "MOTIVATION_REQUIRED"
    assert refused(c.request_changes, T0, act(ALICE, "à revoir", [])) == "CHANGE_ITEMS_REQUIRED"
    c.request_changes(T0, act(ALICE, "à revoir", ["article 4: durée", "annexe financière"]))
    assert c.state == "CHANGES_REQUESTED" and c.core.step and c.core.step.name == "REVISION"
    write = c.take_write(T0, None)
    assert write.messages[-1].items == ["article 4: durée", "annexe financière"]
    assert any(n.recipient == PROMOTER_ORG and n.kind == "CHANGES_REQUESTED" for n in write.notices)
    # Only the promoter revises; another establishment is refused.
    assert refused(c.resubmit, T0, act(STRANGER)) == "NOT_PROMOTER"
    assert refused(c.approve, T0, act(ALICE)) == "STEP_NOT_OPEN"
    c.resubmit(T0 + DAY, act(PROMOTER))
    assert c.state == "UNDER_REVIEW"
    c.reject(T0 + 2 * DAY, act(ALICE, "hors du champ du programme régional"))
    assert c.state == "REJECTED" and c.closed and c.core.step is None
    assert refused(c.approve, T0, act(ALICE)) == "CASE_CLOSED"
    assert c.next_wake(T0) is None


def test_missing_documents_go_back_to_the_promoter_then_to_the_completeness_check() -> None:
    c = contract()
    assert refused(c.submit, T0, act(STRANGER)) == "NOT_PROMOTER"
    c.submit(T0, act(PROMOTER))
    c.request_documents(T0, act(ALICE, "pièces manquantes", ["convention signée"]))
    assert c.state == "AWAITING_DOCUMENTS" and c.summary(T0).step_role == "PROMOTER"
    # A promoter's step is not claimable by staff.
    assert refused(c.claim, T0, act(BOB)) == "NO_OPEN_STEP"
    c.attach_document(T0, AttachDocumentInput(request_id="d", actor=PROMOTER, document=doc("convention")))
    c.complete_documents(T0 + DAY, act(PROMOTER))
    assert c.state == "SUBMITTED" and c.core.step and c.core.step.name == "COMPLETENESS_CHECK"
    assert c.core.step.claimant == ""  # the new step is open to every officer again


def test_a_late_step_reminds_then_is_overdue_then_escalates_to_the_supervisor() -> None:
    c = contract(visa_required=False)
    c.core.timeline = Timeline(
        step_due_seconds={**Timeline().step_due_seconds, "COMPLETENESS_CHECK": 10 * 86400.0},
        reminder_before_seconds=3 * 86400.0,
        escalate_after_seconds=2 * 86400.0,
    )
    c.submit(T0, act(PROMOTER))
    c.take_write(T0, None)
    due = T0 + 10 * DAY
    assert c.summary(T0).due_at == due
    assert c.next_wake(T0) == due - 3 * DAY
    assert not c.on_time(due - 3 * DAY - timedelta(seconds=1))
    assert c.on_time(due - 3 * DAY)
    reminded = c.take_write(due, None)
    assert [e.kind for e in reminded.events] == ["REMINDED"]
    assert [n.role for n in reminded.notices] == ["ARS_OFFICER"]  # nobody holds it: the whole group
    c.claim(due - DAY, act(ALICE))
    c.take_write(due, None)
    assert c.next_wake(due) == due
    c.on_time(due)
    overdue = c.take_write(due, None)
    assert [e.kind for e in overdue.events] == ["OVERDUE"]
    assert [n.recipient for n in overdue.notices] == [ALICE.id]  # now the claimant
    assert c.summary(due).overdue and search_attributes(c.summary(due)).overdue
    assert c.next_wake(due) == due + 2 * DAY
    c.on_time(due + 2 * DAY)
    escalated = c.take_write(due, None)
    assert [e.kind for e in escalated.events] == ["ESCALATED"]
    assert [n.role for n in escalated.notices] == ["ARS_SUPERVISOR"]
    assert c.next_wake(due + 2 * DAY) is None
    # Acting closes the late step; the next one starts fresh.
    c.mark_complete(due + 3 * DAY, act(ALICE))
    assert not c.summary(due).overdue


def test_a_supervisor_reassigns_and_only_the_holder_or_the_supervisor_releases() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    c.claim(T0, act(ALICE))
    c.claim(T0, act(ALICE))  # claiming what one holds changes nothing
    to_bob = ReassignInput(request_id="r", actor=ALICE, assignee=BOB.id, assignee_roles=["ARS_OFFICER"])
    assert refused(c.reassign, T0, to_bob) == "SUPERVISOR_REQUIRED"
    to_dg = ReassignInput(request_id="r", actor=CHIEF, assignee=DG.id, assignee_roles=["ARS_SIGNATORY"])
    assert refused(c.reassign, T0, to_dg) == "REASSIGNEE_NOT_CANDIDATE"
    c.reassign(
        T0, ReassignInput(request_id="r", actor=CHIEF, assignee=BOB.id, assignee_roles=["ARS_OFFICER"])
    )
    assert c.summary(T0).claimant == BOB.id
    assert refused(c.mark_complete, T0, act(ALICE)) == "CASE_CLAIMED_BY_OTHER"
    assert refused(c.release, T0, act(ALICE)) == "CASE_CLAIMED_BY_OTHER"
    c.release(T0, act(BOB))
    assert refused(c.release, T0, act(BOB)) == "NOT_CLAIMED"
    events = c.take_write(T0, None).events
    assert [e.kind for e in events if e.kind in {"CLAIMED", "REASSIGNED", "RELEASED"}] == [
        "CLAIMED",
        "REASSIGNED",
        "RELEASED",
    ]


def test_renewal_reminders_a_signed_renewal_and_expiry() -> None:
    until = T0 + 365 * DAY
    c = active_contract(until)
    c.take_write(T0, None)
    assert c.next_wake(T0) == until - 90 * DAY
    c.on_time(until - 90 * DAY)
    assert [e.detail for e in c.take_write(T0, None).events] == ["90 days before the end"]
    assert c.next_wake(until - 90 * DAY) == until - 30 * DAY
    # A renewal is its own reviewed and signed change.
    renewal = ChangeInput(
        request_id="c1",
        actor=PROMOTER,
        change_id="renew-1",
        kind="RENEWAL",
        summary="3 ans",
        new_valid_until=until,
    )
    assert refused(c.propose_change, T0, renewal) == "PERIOD_INVALID"
    renewal.new_valid_until = until + 3 * 365 * DAY
    c.propose_change(until - 60 * DAY, renewal)
    assert refused(c.propose_change, T0, renewal) == "CHANGE_PENDING"
    assert refused(c.sign_change, T0, sign(DG, until)) == "STEP_NOT_OPEN"
    c.approve_change(until - 50 * DAY, act(ALICE))
    c.sign_change(until - 40 * DAY, sign(DG, until, document=doc("renewal")))
    assert (
        c.case.renewals == 1 and c.case.valid_until == until + 3 * 365 * DAY and c.case.pending_change is None
    )
    assert "RENEWED" in kinds(c)
    # Reminders start over for the new end date; the contract expires at it.
    new_until = until + 3 * 365 * DAY
    assert c.next_wake(until) == new_until - 90 * DAY
    c.on_time(new_until - 90 * DAY)
    c.on_time(new_until - 30 * DAY)
    c.on_time(new_until)
    assert c.state == "EXPIRED" and c.closed
    assert [e.kind for e in c.take_write(new_until, None).events] == [
        "RENEWAL_REMINDER",
        "RENEWAL_REMINDER",
        "EXPIRED",
    ]


def test_an_amendment_is_reviewed_then_signed_and_a_refused_one_leaves_the_contract_as_it_was() -> None:
    c = active_contract(T0 + 365 * DAY)
    amendment = ChangeInput(
        request_id="a1", actor=PROMOTER, change_id="av-1", kind="AMENDMENT", summary="site"
    )
    assert (
        refused(c.propose_change, T0, ChangeInput(**{**amendment.__dict__, "actor": ALICE})) == "NOT_PROMOTER"
    )
    c.propose_change(T0 + DAY, amendment)
    assert refused(c.reject_change, T0, act(ALICE)) == "MOTIVATION_REQUIRED"
    c.reject_change(T0 + DAY, act(ALICE, "le site n'est pas autorisé"))
    assert c.case.pending_change is None and c.core.step is None and c.state == "ACTIVE"
    assert refused(c.approve_change, T0, act(ALICE)) == "NO_PENDING_CHANGE"
    c.propose_change(T0 + 2 * DAY, ChangeInput(**{**amendment.__dict__, "change_id": "av-2"}))
    c.approve_change(T0 + 3 * DAY, act(ALICE))
    c.sign_change(T0 + 4 * DAY, sign(DG, T0))
    assert c.case.amendments == 1 and c.case.valid_until == T0 + 365 * DAY
    assert {"CHANGE_PROPOSED", "CHANGE_REJECTED", "CHANGE_APPROVED", "AMENDED"} <= set(kinds(c))


def test_termination_needs_a_motivation_and_withdrawal_happens_before_signature() -> None:
    c = active_contract(T0 + 365 * DAY)
    assert refused(c.withdraw, T0, act(PROMOTER)) == "STEP_NOT_OPEN"
    assert refused(c.terminate, T0, act(CHIEF, "fin")) == "NOT_A_CANDIDATE"
    assert refused(c.terminate, T0, act(ALICE)) == "MOTIVATION_REQUIRED"
    c.terminate(T0 + DAY, act(ALICE, "activité arrêtée"))
    assert c.state == "TERMINATED" and c.next_wake(T0) is None
    d = contract()
    d.submit(T0, act(PROMOTER))
    d.withdraw(T0, act(PROMOTER))
    assert d.state == "WITHDRAWN"


def test_opinions_are_reminded_revocable_before_and_immutable_once_given() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    ask = OpinionRequestInput(
        request_id="o", actor=ALICE, opinion_id="op-1", expert=EXPERT, question="Avis ?", due_at=T0 + 10 * DAY
    )
    assert (
        refused(c.request_opinion, T0, OpinionRequestInput(**{**ask.__dict__, "due_at": T0}))
        == "DUE_TIME_INVALID"
    )
    assert refused(c.request_opinion, T0, OpinionRequestInput(**{**ask.__dict__, "actor": PROMOTER})) == (
        "NOT_A_CANDIDATE"
    )
    c.request_opinion(T0, ask)
    assert refused(c.request_opinion, T0, ask) == "OPINION_ALREADY_REQUESTED"
    c.take_write(T0, None)
    # Reminded two days before it is due.
    assert c.next_wake(T0) == T0 + 8 * DAY
    c.on_time(T0 + 8 * DAY)
    assert [n.recipient for n in c.take_write(T0, None).notices] == [EXPERT]
    expert = Actor(id=EXPERT, roles=["PRACTITIONER"])
    give = OpinionInput(
        request_id="g", actor=expert, opinion_id="op-1", verdict="FAVOURABLE", text="Rien à redire"
    )
    assert (
        refused(c.give_opinion, T0, OpinionInput(**{**give.__dict__, "actor": BOB})) == "NOT_OPINION_EXPERT"
    )
    assert (
        refused(c.give_opinion, T0, OpinionInput(**{**give.__dict__, "opinion_id": "nope"}))
        == "OPINION_NOT_FOUND"
    )
    c.give_opinion(T0 + DAY, give)
    assert refused(c.give_opinion, T0, give) == "OPINION_ALREADY_GIVEN"
    revoke = OpinionInput(request_id="v", actor=ALICE, opinion_id="op-1", text="plus utile")
    assert refused(c.revoke_opinion, T0, revoke) == "OPINION_ALREADY_GIVEN"
    texts = c.take_write(T0, None).opinion_texts
    assert [t.answer for t in texts] == ["Rien à redire"]
    # A second request, revoked before it is given, cannot be answered.
    c.request_opinion(T0, OpinionRequestInput(**{**ask.__dict__, "opinion_id": "op-2"}))
    c.revoke_opinion(T0, OpinionInput(**{**revoke.__dict__, "opinion_id": "op-2"}))
    assert (
        refused(c.give_opinion, T0, OpinionInput(**{**give.__dict__, "opinion_id": "op-2"}))
        == "OPINION_REVOKED"
    )


def test_messages_comments_and_documents_respect_who_may_write_what() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    c.post_message(T0, MessageInput(request_id="m1", actor=PROMOTER, text="Bonjour"))
    c.post_message(T0, MessageInput(request_id="m2", actor=ALICE, text="Bien reçu"))
    assert (
        refused(c.post_message, T0, MessageInput(request_id="m3", actor=STRANGER, text="?"))
        == "NOT_A_CANDIDATE"
    )
    c.add_comment(T0, CommentInput(request_id="c1", actor=ALICE, text="à voir avec le DG"))
    assert (
        refused(c.add_comment, T0, CommentInput(request_id="c2", actor=PROMOTER, text="x"))
        == "NOT_A_CANDIDATE"
    )
    # Under instruction the file is no longer the promoter's to change; staff may still add documents.
    upload = AttachDocumentInput(request_id="d1", actor=PROMOTER, document=doc("annexe"))
    assert refused(c.attach_document, T0, upload) == "STEP_NOT_OPEN"
    c.attach_document(T0, AttachDocumentInput(request_id="d2", actor=ALICE, document=doc("note")))
    write = c.take_write(T0, None)
    assert [m.text for m in write.messages] == ["Bonjour", "Bien reçu"]
    assert [x.text for x in write.comments] == ["à voir avec le DG"]
    # The promoter's message tells the step's group; the officer's tells the promoter; comments tell no one.
    told = {
        (e.kind, n.role or n.recipient)
        for e in write.events
        for n in write.notices
        if n.event_sequence == e.sequence
    }
    assert ("MESSAGE_POSTED", "ARS_OFFICER") in told and ("MESSAGE_POSTED", PROMOTER_ORG) in told
    assert not any(kind == "COMMENT_ADDED" for kind, _ in told)


def test_a_decision_on_a_stale_version_is_refused() -> None:
    c = contract(visa_required=False)
    c.submit(T0, act(PROMOTER))
    seen = c.take_write(T0, None).summary.version
    c.claim(T0, act(ALICE))
    c.take_write(T0, None)
    assert refused(c.mark_complete, T0, act(ALICE, version=seen)) == "CASE_CHANGED"
    c.mark_complete(T0, act(ALICE, version=seen + 1))


def test_the_state_crosses_the_temporal_boundary_and_continues_as_new_unchanged() -> None:
    c = active_contract(T0 + 365 * DAY)
    ask = OpinionRequestInput(
        request_id="o", actor=ALICE, opinion_id="op-1", expert=EXPERT, question="?", due_at=T0 + 10 * DAY
    )
    c.request_opinion(T0, ask)
    c.give_opinion(
        T0,
        OpinionInput(
            request_id="g", actor=Actor(id=EXPERT), opinion_id="op-1", verdict="FAVOURABLE", text="ok"
        ),
    )
    c.take_write(T0, None)
    c.compact()
    converter = DataConverter.default.payload_converter
    (payload,) = converter.to_payloads([c.case])
    (carried,) = converter.from_payloads([payload], [ArsContractCase])
    assert carried == c.case and carried.core.opinions == [] and carried.core.generation == 1
    resumed = ArsContract(carried)
    assert resumed.next_wake(T0) == c.next_wake(T0) == T0 + 275 * DAY
    assert resumed.summary(T0) == c.summary(T0)
    # Sequences carry on: the next event after continue-as-new does not reuse a number.
    resumed.on_time(T0 + 275 * DAY)
    assert resumed.take_write(T0, None).events[0].sequence == c.core.event_seq + 1


# --- OperatorDeclaration -----------------------------------------------------------------------------------


def declaration() -> OperatorDeclaration:
    machine = OperatorDeclaration(
        OperatorDeclarationCase(
            core=core("OPERATOR_DECLARATION", "DECLARED"),
            indications=["HEART_FAILURE"],
            dmn="dmn-123",
            operator_level="LEVEL_1",
        )
    )
    machine.created(T0)
    return machine


def test_a_declaration_is_acknowledged_then_effective_from_its_date_then_lapses() -> None:
    d = declaration()
    assert d.summary(T0).step == "ACKNOWLEDGEMENT"
    start = T0 + 5 * DAY
    early = AcknowledgeInput(request_id="a", actor=ALICE, effective_from=T0 - DAY)
    assert refused(d.acknowledge, T0, early) == "PERIOD_INVALID"
    assert refused(
        d.acknowledge, T0, AcknowledgeInput(request_id="a", actor=PROMOTER, effective_from=start)
    ) == ("NOT_A_CANDIDATE")
    d.acknowledge(T0 + DAY, AcknowledgeInput(request_id="a", actor=ALICE, effective_from=start))
    assert d.state == "ACKNOWLEDGED" and d.next_wake(T0 + DAY) == start
    d.on_time(start)
    assert d.state == "EFFECTIVE"
    assert refused(d.lapse, T0, act(PROMOTER, "x")) == "NOT_A_CANDIDATE"
    assert refused(d.lapse, T0, act(ALICE)) == "MOTIVATION_REQUIRED"
    d.lapse(start + DAY, act(ALICE, "DMN retiré de la liste LATM"))
    assert d.state == "LAPSED" and d.closed
    assert [e.kind for e in d.take_write(T0, None).events] == [
        "CREATED",
        "STEP_OPENED",
        "ACKNOWLEDGED",
        "EFFECTIVE",
        "LAPSED",
    ]


def test_a_declaration_acknowledged_for_a_past_date_is_effective_at_once_and_can_be_withdrawn() -> None:
    d = declaration()
    d.request_documents(T0, act(ALICE, "incomplet", ["liste des indications"]))
    d.complete_documents(T0 + DAY, act(PROMOTER))
    d.acknowledge(T0 + 2 * DAY, AcknowledgeInput(request_id="a", actor=BOB, effective_from=T0))
    assert d.state == "EFFECTIVE"
    assert refused(d.withdraw, T0, act(STRANGER)) == "NOT_PROMOTER"
    d.withdraw(T0 + 3 * DAY, act(PROMOTER))
    assert d.state == "WITHDRAWN"


# --- IntermediaryContractReview ----------------------------------------------------------------------------


def review() -> IntermediaryContractReview:
    machine = IntermediaryContractReview(
        IntermediaryReviewCase(
            core=core("INTERMEDIARY_CONTRACT_REVIEW", "UNDER_REVIEW"),
            company="teleconsultationCompanies/123456789",
            territory="42",
        )
    )
    machine.created(T0)
    return machine


def mark(clause: str, status: str, note: str = "") -> ClauseInput:
    return ClauseInput(request_id=str(uuid.uuid4()), actor=ORDRE, clause=clause, status=status, note=note)


def test_a_visa_needs_every_applicable_clause_satisfied() -> None:
    r = review()
    assert r.summary(T0).ordre_territory == "42"
    with pytest.raises(ApplicationError) as error:
        r.give_visa(T0, act(ORDRE))
    assert error.value.type == "CLAUSES_NOT_SATISFIED" and "CIVIL_LIABILITY_INSURANCE" in str(error.value)
    assert refused(r.mark_clause, T0, mark("NO_CANVASSING", "NOT_APPLICABLE")) == "NOTE_REQUIRED"
    assert refused(
        r.mark_clause, T0, ClauseInput(**{**mark("REMUNERATION", "SATISFIED").__dict__, "actor": ALICE})
    ) == ("NOT_A_CANDIDATE")
    for clause in r.case.clauses:
        r.mark_clause(T0, mark(clause.clause, "SATISFIED"))
    r.mark_clause(T0, mark("NO_CANVASSING", "NOT_APPLICABLE", "pas de plateforme publique"))
    r.give_visa(T0 + DAY, act(ORDRE))
    assert r.state == "VISA_GIVEN" and r.closed


def test_a_refused_visa_lists_the_clauses_that_failed() -> None:
    r = review()
    r.mark_clause(T0, mark("REMUNERATION", "NOT_SATISFIED", "rémunération au nombre d'actes"))
    r.mark_clause(T0, mark("HEALTH_DATA_PROTECTION", "NOT_SATISFIED", "hébergeur non certifié HDS"))
    assert refused(r.refuse_visa, T0, act(ORDRE)) == "MOTIVATION_REQUIRED"
    r.refuse_visa(T0 + DAY, act(ORDRE, "clauses essentielles non respectées"))
    assert r.state == "VISA_REFUSED"
    assert r.case.failed_clauses == ["REMUNERATION", "HEALTH_DATA_PROTECTION"]
    refusal_event = next(e for e in r.take_write(T0, None).events if e.kind == "VISA_REFUSED")
    assert refusal_event.items == ["REMUNERATION", "HEALTH_DATA_PROTECTION"]


def test_a_review_goes_back_to_the_doctor_for_changes() -> None:
    r = review()
    r.request_changes(T0, act(ORDRE, "clause 7 à préciser", ["clause 7"]))
    assert r.state == "CHANGES_REQUESTED"
    assert refused(r.mark_clause, T0, mark("REMUNERATION", "SATISFIED")) == "STEP_NOT_OPEN"
    r.resubmit(T0 + DAY, act(PROMOTER))
    assert r.state == "UNDER_REVIEW" and r.summary(T0).step == "ORDRE_REVIEW"


# --- AgrementApplication: the legal clock -------------------------------------------------------------------

AGREMENT_RULE = read_data_file().clock_on("agrement", date(2026, 1, 1)).rule()
FILED = datetime(2026, 1, 10, 10, tzinfo=UTC)


def agrement(rule: ClockRule = AGREMENT_RULE) -> AgrementApplication:
    machine = AgrementApplication(
        AgrementCase(
            core=core("AGREMENT_APPLICATION", "FILED", clock=LegalClock(rule=rule, filed_at=FILED)),
            company="teleconsultationCompanies/123456789",
        )
    )
    machine.created(FILED)
    return machine


def paris_midnight(day: date) -> datetime:
    # Paris is UTC+1 in winter and UTC+2 in summer: midnight is 23:00 or 22:00 UTC the day before.
    offset = 2 if 4 <= day.month <= 10 else 1
    return datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(hours=offset)


def test_silence_means_acceptance_when_the_legal_clock_runs_out() -> None:
    a = agrement()
    deadline = paris_midnight(date(2026, 5, 11))
    summary = a.summary(FILED)
    assert summary.legal_deadline_at == deadline and summary.due_at == deadline
    assert search_attributes(summary).due_time == deadline
    a.take_write(FILED, None)
    wake = a.next_wake(FILED)
    assert wake is not None and wake < deadline  # the reminder first
    a.on_time(wake)
    assert [e.kind for e in a.take_write(wake, None).events] == ["REMINDED"]
    assert a.next_wake(wake) == deadline
    a.on_time(deadline)
    assert a.state == "GRANTED_BY_SILENCE"
    kinds_now = [e.kind for e in a.take_write(deadline, None).events]
    assert kinds_now == ["GRANTED_BY_SILENCE"]  # never "overdue": silence decided
    # Valid for 24 months (the value the sources dispute), then expired.
    assert a.case.valid_until == paris_midnight(date(2028, 5, 11))
    a.on_time(paris_midnight(date(2028, 5, 11)))
    assert a.state == "EXPIRED"


def test_missing_documents_suspend_the_clock_which_restarts_when_the_file_is_complete() -> None:
    a = agrement()
    asked = datetime(2026, 1, 20, 10, tzinfo=UTC)
    a.request_documents(asked, act(OPERATOR, "pièces manquantes", ["certificat ANS"]))
    summary = a.summary(datetime(2026, 1, 25, 10, tzinfo=UTC))
    assert summary.legal_clock_suspended and summary.state == "AWAITING_DOCUMENTS"
    # Suspended: the clock no longer wakes the case (only the promoter's step does).
    a.take_write(asked, None)
    assert a.next_wake(asked) == asked + 27 * DAY  # the DOCUMENTS step's reminder (30 days, 3 before)
    completed = datetime(2026, 2, 5, 10, tzinfo=UTC)
    a.complete_documents(completed, act(PROMOTER))
    restarted = paris_midnight(date(2026, 6, 6))
    assert (
        a.summary(completed).legal_deadline_at == restarted and not a.summary(completed).legal_clock_suspended
    )
    a.on_time(paris_midnight(date(2026, 5, 11)))
    assert a.state == "FILED"  # the first deadline means nothing any more
    a.on_time(restarted)
    assert a.state == "GRANTED_BY_SILENCE"


def test_an_explicit_decision_comes_before_silence_and_silence_may_mean_rejection() -> None:
    a = agrement()
    assert refused(a.grant, FILED, act(ALICE)) == "NOT_A_CANDIDATE"
    a.grant(FILED + DAY, act(OPERATOR))
    assert a.state == "GRANTED" and a.next_wake(FILED) == a.case.valid_until
    assert refused(a.withdraw, FILED, act(OPERATOR)) == "MOTIVATION_REQUIRED"
    a.withdraw(FILED + 2 * DAY, act(OPERATOR, "fraude"))
    assert a.state == "WITHDRAWN"
    svr = agrement(ClockRule(name="svr", decision="REJECTION", period_months=2))
    svr.on_time(paris_midnight(date(2026, 3, 11)))
    assert svr.state == "REFUSED"


# --- shared ----------------------------------------------------------------------------------------------


def test_every_reason_has_a_status_and_search_attributes_carry_no_personal_data() -> None:
    reasons = {v for k, v in vars(Reason).items() if k.isupper()}
    assert reasons == set(REASON_STATUS)
    c = active_contract(T0 + 365 * DAY)
    values = {pair.key.name: pair.value for pair in search_attributes(c.summary(T0)).at_start()}
    assert values == {
        "ParcoursKind": "ars-contract",
        "ParcoursState": "ACTIVE",
        "ParcoursRegion": "84",
        "ParcoursOverdue": False,
        "ParcoursExpireTime": T0 + 365 * DAY,
    }
    assert PROMOTER_ORG not in {str(v) for v in values.values()}
