"""A téléexpertise request through its life, over real gRPC, PostgreSQL and Temporal: routed, accepted,
questions and answers, the report, billing; declined, handed back, cancelled; two experts at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from parcours.expertise.v1 import expertise_pb2
from temporalio.client import WorkflowExecutionStatus

from tests.expertise.conftest import (
    DERM_DAUPHINE,
    DERM_LOIRE,
    DERM_VAL_RHONE,
    GP,
    GP_DAUPHINE,
    Stack,
    request_input,
)
from tests.support import DAUPHINE, LOIRE, VAL_RHONE, request_id
from tests.support.calls import call, details
from tests.support.golden import keep

Request = expertise_pb2.TeleexpertiseRequest
NewPatient = Callable[..., Awaitable[str]]
PDF = b"%PDF-1.7\n% photo de la lesion\n"


async def test_happy_path_from_request_to_billed_report(stack: Stack, new_patient: NewPatient) -> None:
    patient = await new_patient()
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE, specialty="SPECIALTY_DERMATOLOGY")

    created = await gp.create(
        patient=patient,
        attachments=[
            expertise_pb2.AttachmentInput(title="Photo", media_type="application/pdf", content=PDF),
            expertise_pb2.AttachmentInput(
                title="Compte rendu antérieur",
                media_type="application/pdf",
                uri="urn:dmp:doc:1234",
                size_bytes=10,
            ),
        ],
    )

    # Routed before the call returns: to the GHT Loire dermatology pool, which is notified.
    assert created.state == Request.STATE_AWAITING_EXPERT
    assert (created.fhir_status.task_status, created.fhir_status.service_request_status) == (
        "requested",
        "active",
    )
    assert created.fhir_status.split_active_status == "ready"
    assert list(created.candidates) == [derm.name]
    assert created.requester == gp.name and created.patient == patient and created.patient_consent
    assert created.requester_establishment == "establishments/420000025"
    assert created.ght == "ghts/ght-loire" and created.region == "regions/84"
    assert created.patient_identity.birth_family_name == "ESSAI"
    assert [n.kind for n in await derm.notifications(created.name)] == [expertise_pb2.EVENT_KIND_ROUTED]
    stored, referenced = created.attachments
    assert (stored.size_bytes, stored.uri, len(stored.sha256)) == (len(PDF), "", 64)
    assert referenced.uri == "urn:dmp:doc:1234" and not referenced.sha256

    # The pool member sees it and its attachment.
    seen = await derm.get(created.name)
    assert seen.question == created.question
    reply = await derm.stub.GetTeleexpertiseAttachment(
        expertise_pb2.GetTeleexpertiseAttachmentRequest(name=stored.name), metadata=derm.metadata
    )
    assert reply.attachment.content == PDF

    accepted = await derm.accept(created.name)
    assert accepted.state == Request.STATE_ACCEPTED and accepted.assigned_expert == derm.name
    assert accepted.expert_establishment == f"establishments/{LOIRE}"
    assert accepted.fhir_status.task_status == "accepted" and not accepted.candidates

    done = await derm.report(
        created.name,
        summary="Naevus atypique : exérèse conseillée avec marges de 2 mm.",
        acts_and_prescriptions=["Exérèse chirurgicale à programmer"],
        technical_incidents="",
    )
    assert done.state == Request.STATE_COMPLETED
    assert (done.fhir_status.task_status, done.fhir_status.service_request_status) == (
        "completed",
        "completed",
    )

    # The requester reads the report, with the R.6316-4 items.
    report = (await gp.get(created.name)).report
    assert report.summary.startswith("Naevus atypique")
    assert list(report.acts_and_prescriptions) == ["Exérèse chirurgicale à programmer"]
    assert list(report.participants) == [gp.name, derm.name]
    assert report.act_time.seconds > 0 and report.technical_incidents == "" and report.author == derm.name
    assert expertise_pb2.EVENT_KIND_COMPLETED in [n.kind for n in await gp.notifications(created.name)]

    # Billing: RQD for the requester, TE2 for the expert, recorded once the workflow ends.
    handle = stack.handle(created.name)
    result = await handle.result()
    assert result.state == "COMPLETED" and result.billing_state == "BILLED"
    billing = (await gp.get(created.name)).billing
    assert billing.state == expertise_pb2.Billing.STATE_BILLED
    assert billing.act_id == f"teleexpertise-{created.name.removeprefix('teleexpertiseRequests/')}"
    assert sorted((line.code, line.practitioner) for line in billing.lines) == [
        ("RQD", gp.name),
        ("TE2", derm.name),
    ]

    # The history, in order; the search attributes a Web UI user filters on, with no patient data.
    kinds = [e.kind for e in await gp.events(created.name)]
    assert kinds == [
        expertise_pb2.EVENT_KIND_CREATED,
        expertise_pb2.EVENT_KIND_ROUTED,
        expertise_pb2.EVENT_KIND_ACCEPTED,
        expertise_pb2.EVENT_KIND_COMPLETED,
        expertise_pb2.EVENT_KIND_BILLED,
    ]
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    attributes = {k: v for k, v in description.search_attributes.items() if k.startswith("Parcours")}
    assert attributes["ParcoursState"] == ["COMPLETED"]
    assert attributes["ParcoursSpecialty"] == ["SPECIALTY_DERMATOLOGY"]
    assert attributes["ParcoursGht"] == ["ght-loire"] and attributes["ParcoursRegion"] == ["84"]
    assert attributes["ParcoursBreached"] == [False] and attributes["ParcoursKind"] == ["teleexpertise"]
    assert patient.removeprefix("patients/") not in str(description.search_attributes)

    # The scenario's golden history (replayed by tests/replay on every run).
    await keep("teleexpertise-billed", handle)

    # Every read of the case was audited, naming the case and the patient.
    audited = await stack.pool.fetch(
        "SELECT method, outcome FROM audit.events WHERE resource = $1 AND patient = $2", created.name, patient
    )
    methods = {r["method"].rsplit("/", 1)[1] for r in audited}
    assert {"CreateTeleexpertiseRequest", "GetTeleexpertiseRequest", "AcceptTeleexpertiseRequest"} <= methods


async def test_creation_is_idempotent_on_request_id(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    message = expertise_pb2.CreateTeleexpertiseRequestRequest(
        request_id=request_id(), teleexpertise_request=request_input(patient=await new_patient())
    )
    first, again = [
        (await gp.stub.CreateTeleexpertiseRequest(message, metadata=gp.metadata)).teleexpertise_request
        for _ in range(2)
    ]
    assert first.name == again.name and again.state == Request.STATE_AWAITING_EXPERT
    assert len([e for e in await gp.events(first.name) if e.kind == expertise_pb2.EVENT_KIND_CREATED]) == 1

    # The same id from someone else, or for another call, is refused.
    other = stack.as_("10000000201")
    error = await call(other.stub.CreateTeleexpertiseRequest(message, metadata=other.metadata))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]
    derm = stack.as_(DERM_LOIRE)
    error = await call(
        derm.stub.AcceptTeleexpertiseRequest(
            expertise_pb2.AcceptTeleexpertiseRequestRequest(request_id=message.request_id, name=first.name),
            metadata=derm.metadata,
        )
    )
    assert details(error)[0].reason == "REQUEST_ID_REUSED"  # type: ignore[union-attr]

    # A retried change returns the request without applying it twice.
    accept = expertise_pb2.AcceptTeleexpertiseRequestRequest(request_id=request_id(), name=first.name)
    once = (await derm.stub.AcceptTeleexpertiseRequest(accept, metadata=derm.metadata)).teleexpertise_request
    twice = (await derm.stub.AcceptTeleexpertiseRequest(accept, metadata=derm.metadata)).teleexpertise_request
    assert once.version == twice.version and twice.state == Request.STATE_ACCEPTED


async def test_a_decline_reroutes_to_the_region_pool_at_once(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm_loire = stack.as_(DERM_LOIRE)
    derm_dauphine = stack.as_(DERM_DAUPHINE, DAUPHINE)
    derm_val_rhone = stack.as_(DERM_VAL_RHONE, VAL_RHONE)
    created = await gp.create(patient=await new_patient())
    assert list(created.candidates) == [derm_loire.name]

    after = await derm_loire.decline(created.name, reason="congés cette semaine")

    # Nobody left in the GHT pool: the region's pool now, without waiting for the acceptance window.
    assert after.state == Request.STATE_AWAITING_EXPERT and after.escalation_level == 1
    assert sorted(after.candidates) == [derm_dauphine.name, derm_val_rhone.name]
    for expert in (derm_dauphine, derm_val_rhone):
        assert [n.kind for n in await expert.notifications(created.name)] == [
            expertise_pb2.EVENT_KIND_ESCALATED
        ]
    # The decliner no longer sees the request; the requester sees why.
    error = await call(derm_loire.get(created.name))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    declined = [e for e in await gp.events(created.name) if e.kind == expertise_pb2.EVENT_KIND_DECLINED]
    assert declined[0].detail == "congés cette semaine" and declined[0].actor == derm_loire.name

    accepted = await derm_dauphine.accept(created.name)
    assert accepted.assigned_expert == derm_dauphine.name
    assert accepted.expert_establishment == f"establishments/{DAUPHINE}"


async def test_questions_and_answers_keep_the_thread_in_order(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    created = await gp.create(patient=await new_patient())
    await derm.accept(created.name)

    asked = await derm.ask(created.name, "Pouvez-vous préciser l'évolution sur 3 mois ?")
    assert asked.state == Request.STATE_AWAITING_INFORMATION and asked.deadline_paused
    assert asked.fhir_status.task_status == "on-hold"
    assert expertise_pb2.EVENT_KIND_QUESTION_ASKED in [n.kind for n in await gp.notifications(created.name)]
    # One question at a time; only the requester answers; only the expert asks.
    for attempt, reason in (
        (derm.ask(created.name, "Et les antécédents ?"), "QUESTION_ALREADY_OPEN"),
        (derm.answer(created.name, "Réponse de l'expert"), "NOT_REQUESTER"),
        (gp.ask(created.name, "Question du requérant"), "NOT_ASSIGNED_EXPERT"),
    ):
        error = await call(attempt)
        assert details(error)[0].reason == reason  # type: ignore[union-attr]

    answered = await gp.answer(created.name, "Croissance de 2 mm, bords irréguliers.")
    assert answered.state == Request.STATE_IN_PROGRESS and not answered.deadline_paused
    assert answered.fhir_status.task_status == "in-progress"
    # The deadline stood still while the expert waited (the default setting): it moved by that time.
    assert answered.answer_due_time.ToDatetime() > created.answer_due_time.ToDatetime()
    error = await call(gp.answer(created.name, "Encore ?"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "NO_OPEN_QUESTION"  # type: ignore[union-attr]

    await derm.ask(created.name, "Une photo dermoscopique est-elle possible ?")
    await gp.answer(created.name, "Non, pas de dermoscope sur place.")
    for reader in (gp, derm):
        thread = await reader.stub.ListTeleexpertiseMessages(
            expertise_pb2.ListTeleexpertiseMessagesRequest(parent=created.name, page_size=3),
            metadata=reader.metadata,
        )
        rest = await reader.stub.ListTeleexpertiseMessages(
            expertise_pb2.ListTeleexpertiseMessagesRequest(
                parent=created.name, page_token=thread.next_page_token
            ),
            metadata=reader.metadata,
        )
        messages = [*thread.messages, *rest.messages]
        assert [m.sequence for m in messages] == [1, 2, 3, 4] and not rest.next_page_token
        assert [(m.kind, m.author) for m in messages] == [
            (expertise_pb2.Message.KIND_QUESTION, derm.name),
            (expertise_pb2.Message.KIND_ANSWER, gp.name),
        ] * 2
        assert messages[3].text == "Non, pas de dermoscope sur place."

    done = await derm.report(created.name)
    assert done.state == Request.STATE_COMPLETED


async def test_the_requester_cancels_until_the_answer(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    created = await gp.create(patient=await new_patient())
    await derm.accept(created.name)

    error = await call(derm.cancel(created.name))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)[0].reason == "NOT_REQUESTER"  # type: ignore[union-attr]

    cancelled = await gp.cancel(created.name, reason="patient adressé en consultation")
    assert (
        cancelled.state == Request.STATE_CANCELLED
        and cancelled.close_reason == "patient adressé en consultation"
    )
    assert (cancelled.fhir_status.task_status, cancelled.fhir_status.service_request_status) == (
        "cancelled",
        "revoked",
    )
    assert expertise_pb2.EVENT_KIND_CANCELLED in [n.kind for n in await derm.notifications(created.name)]
    result = await stack.handle(created.name).result()
    assert result.state == "CANCELLED" and result.billing_state == ""

    # A closed case takes no change, and says why.
    for attempt, reason in (
        (derm.report(created.name), "REQUEST_CANCELLED"),
        (gp.cancel(created.name), "REQUEST_CANCELLED"),
    ):
        error = await call(attempt)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(error)[0].reason == reason  # type: ignore[union-attr]


async def test_a_completed_request_can_no_longer_be_cancelled(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    created = await gp.create(patient=await new_patient())
    await derm.accept(created.name)
    await derm.report(created.name)
    error = await call(gp.cancel(created.name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)[0].reason == "REQUEST_COMPLETED"  # type: ignore[union-attr]


async def test_an_expert_hands_a_request_back(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm_loire = stack.as_(DERM_LOIRE)
    derm_dauphine = stack.as_(DERM_DAUPHINE, DAUPHINE)
    created = await gp.create(patient=await new_patient())
    await derm_loire.accept(created.name)
    await derm_loire.ask(created.name, "Âge exact ?")

    back = await derm_loire.hand_back(created.name, reason="conflit d'intérêts")

    assert (
        back.state == Request.STATE_AWAITING_EXPERT and not back.assigned_expert and not back.deadline_paused
    )
    # The GHT pool had only them: routed to the region's pool.
    assert sorted(back.candidates) == sorted([derm_dauphine.name, f"practitioners/{DERM_VAL_RHONE}"])
    assert expertise_pb2.EVENT_KIND_HANDED_BACK in [n.kind for n in await gp.notifications(created.name)]
    error = await call(derm_loire.get(created.name))
    assert details(error)[0].reason == "REQUEST_NOT_VISIBLE"  # type: ignore[union-attr]

    await derm_dauphine.accept(created.name)
    # The thread stays with the request for the new expert.
    thread = await derm_dauphine.stub.ListTeleexpertiseMessages(
        expertise_pb2.ListTeleexpertiseMessagesRequest(parent=created.name), metadata=derm_dauphine.metadata
    )
    assert [m.text for m in thread.messages] == ["Âge exact ?"]
    done = await derm_dauphine.report(created.name)
    assert done.report.author == derm_dauphine.name
    result = await stack.handle(created.name).result()
    assert result.billing_state == "BILLED"


async def test_two_experts_accepting_at_once_one_wins(stack: Stack, new_patient: NewPatient) -> None:
    # GHT Alpes-Dauphiné has no dermatology pool: its requests go to the region's two dermatologists at once.
    gp = stack.as_(GP_DAUPHINE, DAUPHINE)
    experts = [stack.as_(DERM_DAUPHINE, DAUPHINE), stack.as_(DERM_VAL_RHONE, VAL_RHONE)]
    patient = await new_patient(DAUPHINE, GP_DAUPHINE)
    for _ in range(3):
        created = await gp.create(patient=patient)
        assert sorted(created.candidates) == sorted(e.name for e in experts)

        outcomes = await asyncio.gather(*(e.accept(created.name) for e in experts), return_exceptions=True)

        won = [o for o in outcomes if isinstance(o, Request)]
        lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(lost[0])[0].reason == "ALREADY_ASSIGNED"  # type: ignore[union-attr]
        final = await gp.get(created.name)
        assert final.assigned_expert == won[0].assigned_expert
        accepted = [e for e in await gp.events(created.name) if e.kind == expertise_pb2.EVENT_KIND_ACCEPTED]
        assert len(accepted) == 1
        # The loser, trying again later, is told the same.
        loser = next(e for e in experts if e.name != won[0].assigned_expert)
        error = await call(loser.accept(created.name))
        assert details(error)[0].reason == "ALREADY_ASSIGNED"  # type: ignore[union-attr]


async def test_the_fifth_request_of_the_year_is_refused_by_billing(
    stack: Stack, new_patient: NewPatient
) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    patient = await new_patient()
    names = []
    for _ in range(5):
        created = await gp.create(patient=patient, expert=derm.name)
        assert list(created.candidates) == [derm.name] and created.requested_expert == derm.name
        await derm.accept(created.name)
        await derm.report(created.name)
        names.append(created.name)
        await stack.handle(created.name).result()

    for name in names[:4]:
        assert (await gp.get(name)).billing.state == expertise_pb2.Billing.STATE_BILLED
    # The fifth: the report stands, the refusal is kept on the request and shown to both.
    for reader in (gp, derm):
        fifth = await reader.get(names[4])
        assert fifth.state == Request.STATE_COMPLETED
        assert fifth.billing.state == expertise_pb2.Billing.STATE_REFUSED and not fifth.billing.lines
        assert [r.reason for r in fifth.billing.refusals] == ["TELEEXPERTISE_QUOTA_EXCEEDED"]
        assert fifth.billing.refusals[0].message
        kinds = [n.kind for n in await reader.notifications(names[4])]
        assert expertise_pb2.EVENT_KIND_BILLING_REFUSED in kinds
