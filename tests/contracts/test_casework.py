"""Instruction as ARS officers practise it: the inbox and its tabs, claims and a supervisor's reassignment,
opinions (immutable once given), messages with the promoter, internal comments, versioned documents, decisions
on the version decided on, motivation templates; and the agrément register with its legal clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.contracts.v1 import contracts_pb2 as c

from services.contracts import clock
from tests.contracts.conftest import (
    ALICE,
    BOB,
    CHIEF,
    DOCTOR,
    OPERATOR,
    PROMOTER,
    Hub,
    Who,
    new_contract,
    rid,
)
from tests.support.calls import call, details

TODAY = clock.local_date(datetime.now(UTC), "Europe/Paris")
PDF = b"%PDF-1.7\n% test document\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
EXPERT = Who("practitioners/10000001801", "420000017", rpps="10000001801")  # a cardiologist of GHT Loire


def reason(error: grpc.aio.AioRpcError) -> str:
    info = details(error)[0]
    assert info is not None
    return str(info.reason)


async def submitted(hub: Hub) -> c.ArsContract:
    created = (
        await hub.stub(PROMOTER).CreateArsContract(
            new_contract(start=TODAY + timedelta(days=20), end=TODAY + timedelta(days=700))
        )
    ).ars_contract
    reply = await hub.stub(PROMOTER).SubmitArsContract(
        c.SubmitArsContractRequest(request_id=rid(), name=created.name)
    )
    return reply.ars_contract


async def test_the_inbox_tabs_claims_and_a_supervisor_s_reassignment(hub: Hub) -> None:
    case = await submitted(hub)
    alice, bob, chief = hub.stub(ALICE), hub.stub(BOB), hub.stub(CHIEF)
    await bob.GetArsContract(
        c.GetArsContractRequest(name=case.name)
    )  # Bob is known to the hub as an officer of 84

    def names(reply: c.ListCasesResponse) -> set[str]:
        return {x.name for x in reply.cases}

    assert case.name in names(await alice.ListCases(c.ListCasesRequest(tab=c.TAB_TO_PROCESS, page_size=500)))
    assert case.name not in names(
        await alice.ListCases(c.ListCasesRequest(tab=c.TAB_FOLLOWED, page_size=500))
    )
    before = (await alice.CountCases(c.CountCasesRequest())).counts
    await alice.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=case.name))
    after = (await alice.CountCases(c.CountCasesRequest())).counts
    assert after.followed == before.followed + 1 and after.to_process == before.to_process
    assert case.name in names(await alice.ListCases(c.ListCasesRequest(tab=c.TAB_FOLLOWED, page_size=500)))
    # Bob no longer has it to process; claiming it is refused.
    assert case.name not in names(
        await bob.ListCases(c.ListCasesRequest(tab=c.TAB_TO_PROCESS, page_size=500))
    )
    assert reason(
        await call(bob.ClaimCaseStep(c.ClaimCaseStepRequest(request_id=rid(), name=case.name)))
    ) == ("CASE_CLAIMED_BY_OTHER")
    assert case.name in names(
        await bob.ListCases(c.ListCasesRequest(assignment=c.ASSIGNMENT_CLAIMED_BY_OTHERS, page_size=500))
    )
    # Alice is away: her supervisor gives her steps to Bob, case by case.
    unknown = f"arsContracts/{uuid.uuid4()}"
    results = (
        await chief.ReassignCaseSteps(
            c.ReassignCaseStepsRequest(request_id=rid(), names=[case.name, unknown], assignee=BOB.name)
        )
    ).results
    assert [(r.name, r.ok, r.reason) for r in results] == [
        (case.name, True, ""),
        (unknown, False, "CASE_NOT_VISIBLE"),
    ]
    summary = (await bob.ListCases(c.ListCasesRequest(tab=c.TAB_FOLLOWED, page_size=500))).cases
    assert [x.current_step.claimant for x in summary if x.name == case.name] == [BOB.name]
    # Only a supervisor reassigns; an officer may not give a step to someone outside the step's group.
    assert (
        reason(
            await call(
                alice.ReassignCaseSteps(
                    c.ReassignCaseStepsRequest(request_id=rid(), names=[case.name], assignee=ALICE.name)
                )
            )
        )
        == "ROLE_REQUIRED"
    )
    outsider = (
        await chief.ReassignCaseSteps(
            c.ReassignCaseStepsRequest(request_id=rid(), names=[case.name], assignee="staff/nobody")
        )
    ).results
    assert [(r.ok, r.reason) for r in outsider] == [(False, "REASSIGNEE_NOT_CANDIDATE")]
    # Bob releases it: open to the group again.
    released = (await bob.ReleaseCaseStep(c.ReleaseCaseStepRequest(request_id=rid(), name=case.name))).case
    assert released.current_step.claimant == ""
    # Closed cases are in "processed".
    await alice.RejectArsContract(
        c.RejectArsContractRequest(request_id=rid(), name=case.name, motivation="Hors champ")
    )
    assert case.name in names(await alice.ListCases(c.ListCasesRequest(tab=c.TAB_PROCESSED, page_size=500)))
    assert case.name not in names(await alice.ListCases(c.ListCasesRequest(page_size=500)))


async def test_a_decision_on_a_stale_version_and_a_reused_request_id_are_refused(hub: Hub) -> None:
    case = await submitted(hub)
    alice = hub.stub(ALICE)
    stale = await call(
        alice.MarkArsContractComplete(
            c.MarkArsContractCompleteRequest(
                request_id=rid(), name=case.name, expected_version=case.version - 1
            )
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED and reason(stale) == "CASE_CHANGED"
    request = c.MarkArsContractCompleteRequest(
        request_id=rid(), name=case.name, expected_version=case.version
    )
    done = (await alice.MarkArsContractComplete(request)).ars_contract
    assert done.state == c.ArsContract.STATE_UNDER_REVIEW
    # The same call again is a retry: the case as it is now, changed once.
    assert (await alice.MarkArsContractComplete(request)).ars_contract.version == done.version
    reused = c.ApproveArsContractRequest(request_id=request.request_id, name=case.name)
    refused = await call(alice.ApproveArsContract(reused))
    assert refused.code() == grpc.StatusCode.ALREADY_EXISTS and reason(refused) == "REQUEST_ID_REUSED"


async def test_opinions_messages_comments_and_documents(hub: Hub) -> None:
    case = await submitted(hub)
    alice, promoter, expert = hub.stub(ALICE), hub.stub(PROMOTER), hub.stub(EXPERT)
    # An opinion from an outside expert, due in a week: they see the case to answer it.
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    asked = (
        await alice.RequestCaseOpinion(
            c.RequestCaseOpinionRequest(
                request_id=rid(),
                parent=case.name,
                expert=EXPERT.name,
                question="Le protocole est-il sûr ?",
                due_time=due,
            )
        )
    ).opinion
    assert asked.state == c.Opinion.STATE_REQUESTED and asked.question == "Le protocole est-il sûr ?"
    assert (
        await expert.GetArsContract(c.GetArsContractRequest(name=case.name))
    ).ars_contract.name == case.name
    not_asked = await call(
        alice.GiveCaseOpinion(
            c.GiveCaseOpinionRequest(
                request_id=rid(), name=asked.name, verdict=c.VERDICT_FAVOURABLE, text="Oui"
            )
        )
    )
    assert reason(not_asked) == "NOT_OPINION_EXPERT"
    given = (
        await expert.GiveCaseOpinion(
            c.GiveCaseOpinionRequest(
                request_id=rid(),
                name=asked.name,
                verdict=c.VERDICT_FAVOURABLE_WITH_RESERVATIONS,
                text="Sous réserve.",
            )
        )
    ).opinion
    assert (given.state, given.answer) == (c.Opinion.STATE_GIVEN, "Sous réserve.")
    again = await call(
        expert.GiveCaseOpinion(
            c.GiveCaseOpinionRequest(
                request_id=rid(), name=asked.name, verdict=c.VERDICT_UNFAVOURABLE, text="Non"
            )
        )
    )
    assert reason(again) == "OPINION_ALREADY_GIVEN"
    revoke = await call(
        alice.RevokeCaseOpinion(
            c.RevokeCaseOpinionRequest(request_id=rid(), name=asked.name, reason="Plus utile")
        )
    )
    assert reason(revoke) == "OPINION_ALREADY_GIVEN"
    listed = (await alice.ListCaseOpinions(c.ListCaseOpinionsRequest(parent=case.name))).opinions
    assert [o.name for o in listed] == [asked.name]
    assert (
        await alice.GetArsContract(c.GetArsContractRequest(name=case.name))
    ).ars_contract.progress.open_opinions == 0

    # Messages between the promoter and the staff; comments among the staff only.
    posted = (
        await promoter.PostCaseMessage(
            c.PostCaseMessageRequest(request_id=rid(), parent=case.name, text="Voici nos précisions.")
        )
    ).message
    assert posted.from_promoter and posted.author == "staff/promoter-loire"
    commented = (
        await alice.AddCaseComment(
            c.AddCaseCommentRequest(request_id=rid(), parent=case.name, text="À voir avec le DG")
        )
    ).comment
    assert commented.author == ALICE.name
    hidden = await call(promoter.ListCaseComments(c.ListCaseCommentsRequest(parent=case.name)))
    assert reason(hidden) == "ROLE_REQUIRED"
    assert [
        m.text for m in (await alice.ListCaseMessages(c.ListCaseMessagesRequest(parent=case.name))).messages
    ] == ["Voici nos précisions."]

    # Documents: the promoter adds them while the file is theirs (not now: under the completeness check);
    # staff at any time; a new version keeps its id; bytes must be what they claim.
    def document(content: bytes, media_type: str = "application/pdf") -> c.CreateCaseDocumentRequest:
        return c.CreateCaseDocumentRequest(
            request_id=rid(),
            parent=case.name,
            document_id="convention",
            document_type=c.DOCUMENT_TYPE_CONVENTION,
            title="Convention entre les acteurs",
            media_type=media_type,
            content=content,
        )

    assert reason(await call(promoter.CreateCaseDocument(document(PDF)))) == "STEP_NOT_OPEN"
    liar = await call(alice.CreateCaseDocument(document(PNG)))
    assert liar.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(liar)[1] == [("content", "is not a application/pdf document")]
    first = (await alice.CreateCaseDocument(document(PDF))).document
    second = (await alice.CreateCaseDocument(document(PDF + b"v2"))).document
    assert (first.version, second.version, second.name) == (1, 2, f"{case.name}/documents/convention")
    latest = (await promoter.ListCaseDocuments(c.ListCaseDocumentsRequest(parent=case.name))).documents
    assert [(d.name, d.version) for d in latest] == [(second.name, 2)]
    every = (
        await promoter.ListCaseDocuments(c.ListCaseDocumentsRequest(parent=case.name, all_versions=True))
    ).documents
    assert [d.version for d in every] == [1, 2]
    fetched = (await promoter.GetCaseDocument(c.GetCaseDocumentRequest(name=second.name, version=1))).document
    assert fetched.content == PDF and fetched.version == 1
    missing = await call(
        promoter.GetCaseDocument(c.GetCaseDocumentRequest(name=f"{case.name}/documents/annexe"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    events = (await alice.ListCaseEvents(c.ListCaseEventsRequest(parent=case.name, page_size=500))).events
    assert [e.detail for e in events if e.kind == c.EVENT_KIND_VIEWED][-1] == f"{second.name} v1"
    assert [e.kind for e in events].count(c.EVENT_KIND_DOCUMENT_ADDED) == 2
    assert c.EVENT_KIND_OPINION_GIVEN in [e.kind for e in events]


async def test_motivation_templates_belong_to_a_region(hub: Hub) -> None:
    alice = hub.stub(ALICE)
    created = (
        await alice.CreateMotivationTemplate(
            c.CreateMotivationTemplateRequest(
                request_id=rid(),
                parent="regions/84",
                motivation_template=c.MotivationTemplate(
                    title=f"Pièces manquantes {uuid.uuid4().hex[:6]}",
                    text="Le dossier ne comporte pas les pièces suivantes.",
                    kinds=[c.CASE_KIND_ARS_CONTRACT],
                ),
            )
        )
    ).motivation_template
    assert created.name.startswith("regions/84/motivationTemplates/") and created.creator == ALICE.name
    listed = (
        await alice.ListMotivationTemplates(c.ListMotivationTemplatesRequest(parent="regions/84"))
    ).motivation_templates
    assert created in listed
    other = await call(alice.ListMotivationTemplates(c.ListMotivationTemplatesRequest(parent="regions/93")))
    assert reason(other) == "REGION_NOT_CALLERS"


async def test_the_agrement_register_and_a_legal_clock_suspended_then_restarted(hub: Hub) -> None:
    operator = hub.stub(OPERATOR)
    siren = f"9{uuid.uuid4().int % 10**8:08d}"
    company = (
        await operator.CreateTeleconsultationCompany(
            c.CreateTeleconsultationCompanyRequest(
                request_id=rid(),
                teleconsultation_company=c.TeleconsultationCompany(
                    name=f"teleconsultationCompanies/{siren}", legal_name="Téléconsult Santé SAS"
                ),
            )
        )
    ).teleconsultation_company
    assert not company.agrement_valid
    twice = await call(
        operator.CreateTeleconsultationCompany(
            c.CreateTeleconsultationCompanyRequest(
                request_id=rid(),
                teleconsultation_company=c.TeleconsultationCompany(name=company.name, legal_name="Autre"),
            )
        )
    )
    assert twice.code() == grpc.StatusCode.ALREADY_EXISTS
    unregistered = await call(
        operator.CreateAgrementApplication(
            c.CreateAgrementApplicationRequest(
                request_id=rid(),
                agrement_application=c.AgrementApplication(company="teleconsultationCompanies/000000000"),
            )
        )
    )
    assert reason(unregistered) == "COMPANY_NOT_REGISTERED"

    filed = (
        await operator.CreateAgrementApplication(
            c.CreateAgrementApplicationRequest(
                request_id=rid(), agrement_application=c.AgrementApplication(company=company.name)
            )
        )
    ).agrement_application
    legal = filed.progress.legal_clock
    assert filed.state == c.AgrementApplication.STATE_FILED
    assert legal.silence_means == c.LegalClock.SILENCE_ACCEPTANCE and not legal.suspended
    deadline = (legal.decision_date.year, legal.decision_date.month, legal.decision_date.day)
    four_months = clock.add_months(TODAY + timedelta(days=1), 4)
    assert deadline == (four_months.year, four_months.month, four_months.day)

    # Missing documents suspend the clock; completing the file restarts it from zero.
    asked = (
        await operator.RequestAgrementDocuments(
            c.RequestAgrementDocumentsRequest(
                request_id=rid(), name=filed.name, motivation="Pièces manquantes", items=["Certificat ANS"]
            )
        )
    ).agrement_application
    assert (
        asked.state == c.AgrementApplication.STATE_AWAITING_DOCUMENTS and asked.progress.legal_clock.suspended
    )
    assert [x.reason for x in asked.progress.legal_clock.corrections] == [c.CORRECTION_REASON_INCOMPLETE]
    completed = (
        await operator.CompleteAgrementDocuments(
            c.CompleteAgrementDocumentsRequest(request_id=rid(), name=filed.name)
        )
    ).agrement_application
    assert (
        completed.state == c.AgrementApplication.STATE_FILED and not completed.progress.legal_clock.suspended
    )
    assert completed.progress.legal_clock.corrections[0].HasField("resolve_time")

    granted = (
        await operator.GrantAgrement(
            c.GrantAgrementRequest(request_id=rid(), name=filed.name, motivation="Arrêté")
        )
    ).agrement_application
    assert granted.state == c.AgrementApplication.STATE_GRANTED
    assert (granted.start_date.year, granted.start_date.month, granted.start_date.day) == (
        TODAY.year,
        TODAY.month,
        TODAY.day,
    )
    register = (
        await hub.stub(DOCTOR).GetTeleconsultationCompany(
            c.GetTeleconsultationCompanyRequest(name=company.name)
        )
    ).teleconsultation_company
    assert register.agrement_valid and [a.application for a in register.agrements] == [filed.name]
    valid = (
        await hub.stub(DOCTOR).ListTeleconsultationCompanies(
            c.ListTeleconsultationCompaniesRequest(with_valid_agrement_only=True, page_size=500)
        )
    ).teleconsultation_companies
    assert company.name in {x.name for x in valid}
