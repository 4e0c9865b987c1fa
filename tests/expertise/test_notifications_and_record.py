"""A téléexpertise's events reach the practitioners by e-mail (a real SMTP server, aiosmtpd) carrying
nothing of the case but its name and what happened; once reported and billed, its R.6316-4 record is a FHIR
R4 document (validated with fhir.resources) the requester and the expert read, recorded by the DMP adapter,
and hidden from anyone else exactly as a missing request is."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from fhir.resources.R4B.bundle import Bundle
from parcours.expertise.v1 import expertise_pb2

from services.devstack.mailsink import MailSink
from tests.expertise.conftest import DERM_DAUPHINE, DERM_LOIRE, GP, Stack, request_input
from tests.support import DAUPHINE
from tests.support.calls import call, details

Request = expertise_pb2.TeleexpertiseRequest
NewPatient = Callable[..., Awaitable[str]]
SUMMARY = "Kératose séborrhéique typique, pas d'exérèse nécessaire."


async def test_events_by_email_and_the_report_as_a_fhir_document(
    make_stack: Callable[..., Awaitable[Stack]], new_patient: NewPatient, mail_sink: MailSink, tmp_path: Path
) -> None:
    gp_mail, derm_mail = "gp.forez@mssante.example.invalid", "derm.loire@mssante.example.invalid"
    book = tmp_path / "address-book.json"
    book.write_text(
        json.dumps({"emails": {f"practitioners/{GP}": gp_mail, f"practitioners/{DERM_LOIRE}": derm_mail}})
    )
    stack = await make_stack(
        notify={
            "smtp_host": "127.0.0.1",
            "smtp_port": mail_sink.port,
            "smtp_tls": "none",
            "notify_address_book": book,
        }
    )
    gp, derm = stack.as_(GP), stack.as_(DERM_LOIRE)
    patient = await new_patient()
    created = await gp.create(patient=patient)
    await derm.accept(created.name)
    await derm.report(
        created.name, summary=SUMMARY, acts_and_prescriptions=["Surveillance clinique annuelle"]
    )
    result = await stack.handle(created.name).result()  # the case ends once its deliveries settled
    assert (result.state, result.billing_state) == ("COMPLETED", "BILLED")

    received = {(m["To"], m["Subject"]) for m in mail_sink.messages()}
    assert (derm_mail, "Téléexpertise : Une demande de téléexpertise vous est adressée") in received
    assert any(to == gp_mail and "compte rendu" in subject for to, subject in received)
    forbidden = [
        request_input().question,
        request_input().clinical_context,
        SUMMARY,
        "ESSAI",
        "CAMILLE",
        patient.removeprefix("patients/"),
    ]
    for message in mail_sink.messages():
        body = message.get_body(("plain",))
        assert body is not None
        said = f"{message['Subject']}\n{body.get_content()}"
        assert created.name in said
        assert not [f for f in forbidden if f.lower() in said.lower()], said
    notified = await gp.notifications(created.name)
    assert notified and all(
        (n.channel, n.delivery_state)
        == (expertise_pb2.NOTIFICATION_CHANNEL_EMAIL, expertise_pb2.DELIVERY_STATE_DELIVERED)
        for n in notified
    )

    # The record, for the requester's record as for the expert's.
    for reader in (gp, derm):
        reply = await reader.stub.GetTeleexpertiseDocument(
            expertise_pb2.GetTeleexpertiseDocumentRequest(name=created.name), metadata=reader.metadata
        )
        document = reply.document
        bundle = Bundle.model_validate_json(document.content)
        assert bundle.type == "document" and bundle.entry is not None
        composition = bundle.entry[0].resource
        assert composition.get_resource_type() == "Composition"
        assert composition.title == "Compte rendu de téléexpertise"
        assert len(composition.section) == 5 and SUMMARY.split(",")[0] in composition.section[0].text.div
        by_url = {e.fullUrl: e.resource for e in bundle.entry}
        assert by_url[composition.author[0].reference].identifier[0].value == f"8{DERM_LOIRE}"
        participants = {by_url[r.reference].identifier[0].value for r in composition.section[2].entry}
        assert participants == {f"8{GP}", f"8{DERM_LOIRE}"}
        assert document.dmp_submission.state == expertise_pb2.DmpSubmission.STATE_RECORDED

    # Anyone else: the answer of a request that does not exist.
    stranger = stack.as_(DERM_DAUPHINE, DAUPHINE)
    hidden = await call(
        stranger.stub.GetTeleexpertiseDocument(
            expertise_pb2.GetTeleexpertiseDocumentRequest(name=created.name), metadata=stranger.metadata
        )
    )
    missing = await call(
        stranger.stub.GetTeleexpertiseDocument(
            expertise_pb2.GetTeleexpertiseDocumentRequest(name=f"teleexpertiseRequests/{uuid.uuid4()}"),
            metadata=stranger.metadata,
        )
    )
    assert (
        (hidden.code(), details(hidden)[0].reason)
        == (missing.code(), details(missing)[0].reason)
        == (
            grpc.StatusCode.PERMISSION_DENIED,
            "REQUEST_NOT_VISIBLE",
        )
    )  # type: ignore[union-attr]


async def test_no_document_before_the_report(
    make_stack: Callable[..., Awaitable[Stack]], new_patient: NewPatient
) -> None:
    stack = await make_stack()
    gp = stack.as_(GP)
    created = await gp.create(patient=await new_patient())
    error = await call(
        gp.stub.GetTeleexpertiseDocument(
            expertise_pb2.GetTeleexpertiseDocumentRequest(name=created.name), metadata=gp.metadata
        )
    )
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RECORD_NOT_AVAILABLE",
    )  # type: ignore[union-attr]
