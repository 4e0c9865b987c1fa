"""Notifications that leave the hub and the record as a FHIR document, end to end: bookings over gRPC, the
Teleconsultation workflow on a time-skipping Temporal test server, the real worker delivering by SMTP to a
real SMTP server (aiosmtpd) or by signed webhook to a real HTTP endpoint, the real billing and directory.

- E-mails reach the sink, each kind saying what it may and nothing the reference forbids there (no name, INS,
  birth date, compte rendu, prescription); the join link's token admits its participant while the
  appointment is booked, and only for callers who see the appointment.
- A webhook endpoint answering 500 then 200 gets the event once accepted, with a valid signature, under the
  same event id; one that keeps failing gets the notification recorded as failed, and the case goes on.
- The R.6316-4 record is a FHIR R4 document (validated with fhir.resources), the same one the DMP adapter
  recorded; hidden from another GHT exactly as a missing appointment is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from email.message import EmailMessage

import asyncpg
import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle
from parcours.directory.v1 import directory_pb2_grpc
from parcours.scheduling.v1 import scheduling_pb2 as s
from parcours.scheduling.v1 import scheduling_pb2_grpc
from temporalio.worker import Replayer

from services.devstack.mailsink import MailSink
from services.devstack.postgres import PostgresHandle
from services.directory.demo import DEMO_PATIENTS
from services.kit.cases import Relay
from services.kit.codec import Keyring, data_converter
from services.kit.notify import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Endpoint,
    FileAddressBook,
    Notifier,
    NotifySettings,
    SmtpTransport,
    parse_keys,
    verify_signature,
)
from services.kit.pki import DevPki
from services.scheduling.join import JoinLinks
from tests.conftest import Minter
from tests.scheduling.conftest import PAYLOAD_KEYS
from tests.scheduling.helpers import PATIENT_LOIRE, Metadata
from tests.scheduling.workflow import (
    TREATING_GP,
    Stack,
    appointment_id,
    booked_case,
    complete,
    get,
    outcome,
    record,
    skip_to_join_window,
    start,
    workflow_stack,
)
from tests.support import DAUPHINE, bearer, component_channel, establishment_channel, request_id
from tests.support.calls import call, details
from tests.support.webhooks import Endpoint as WebhookEndpoint
from workflows.teleconsultation.workflows import TeleconsultationWorkflow

N = s.Notification
PATIENT = DEMO_PATIENTS[0]  # CHAVANOL Jeanne Marie, born 14/03/1948, qualified INS
# What no notification may carry (case-insensitive): identity traits, the INS, the record's free text.
FORBIDDEN = [
    PATIENT.birth_family_name,
    PATIENT.birth_given_names.split()[0],
    PATIENT.matricule,
    "1948",
    "14/03",
    "Tension bien contrôlée",
    "HTA",
    "amlodipine",
]
WEBHOOK_KEY = os.urandom(32)


class EveryoneHasAMailbox:
    """An address book (the kit's seam) where every patient and practitioner has an address."""

    def email(self, recipient: str) -> str | None:
        kind, _, key = recipient.partition("/")
        return f"{kind}-{key}@mssante.example.invalid"

    def webhook(self, establishment: str) -> Endpoint | None:
        return None


def address(recipient: str) -> str:
    found = EveryoneHasAMailbox().email(recipient)
    assert found is not None
    return found


@pytest.fixture(scope="module")
async def mailed(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, MailSink]]:
    sink = MailSink(tmp_path_factory.mktemp("mail") / "box").start()
    smtp = SmtpTransport(NotifySettings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none"))
    notifier = Notifier(EveryoneHasAMailbox(), smtp)
    join_links = JoinLinks("https://visio.example.invalid/join", os.urandom(32))
    try:
        async with workflow_stack(
            pki, postgres, pool, directory_address, billing_address, notifier=notifier, join_links=join_links
        ) as stack:
            yield stack, sink
    finally:
        await notifier.close()
        sink.stop()


def to(sink: MailSink, recipient: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"] == address(recipient)]


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return f"{message['Subject']}\n{body.get_content()}"


async def test_emails_reach_the_sink_saying_what_each_kind_may_and_the_record_is_a_fhir_document(
    mailed: tuple[Stack, MailSink],
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
    pki: DevPki,
) -> None:
    stack, sink = mailed
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ELECTRONIC)
    )
    doctor = f"practitioners/{case.rpps}"
    address_ = f"127.0.0.1:{stack.scheduling.port}"
    hub = scheduling_pb2_grpc.SchedulingServiceStub(component_channel(pki, address_, "workflows"))
    elsewhere = scheduling_pb2_grpc.SchedulingServiceStub(establishment_channel(pki, address_, DAUPHINE))
    elsewhere_staff = bearer(mint(staff="front-desk-dauphine"))

    # The record is not there before the act.
    error = await call(
        stack.stub.GetTeleconsultationDocument(
            s.GetTeleconsultationDocumentRequest(name=case.name), metadata=case.doctor
        )
    )
    assert (error.code(), details(error)[0].reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RECORD_NOT_AVAILABLE",
    )  # type: ignore[union-attr]

    await skip_to_join_window(stack, case)
    await _eventually(lambda: len(to(sink, doctor)) == 1 and len(to(sink, PATIENT_LOIRE)) == 3)
    reminders = [m for m in to(sink, PATIENT_LOIRE) if m["Subject"].startswith("Rappel")]
    assert len(reminders) == 2
    for message in reminders:
        said = text_of(message)
        assert (
            case.name in said
            and "Centre hospitalier des Monts du Forez" in said
            and "(heure de Paris)" in said
        )
    [patient_link] = [m for m in to(sink, PATIENT_LOIRE) if not m["Subject"].startswith("Rappel")]
    [doctor_link] = to(sink, doctor)
    tokens = {}
    for who, message in ((PATIENT_LOIRE, patient_link), (doctor, doctor_link)):
        found = re.search(r"https://visio\.example\.invalid/join/([A-Za-z0-9_-]{43})\b", text_of(message))
        assert found is not None, text_of(message)
        tokens[who] = found.group(1)
    assert tokens[PATIENT_LOIRE] != tokens[doctor]

    # A join link admits its own participant while the appointment is booked, for whoever sees it.
    admitted = await hub.CheckJoinToken(s.CheckJoinTokenRequest(token=tokens[PATIENT_LOIRE]))
    assert (admitted.valid, admitted.appointment, admitted.participant) == (True, case.name, PATIENT_LOIRE)
    admitted = await stack.stub.CheckJoinToken(
        s.CheckJoinTokenRequest(token=tokens[doctor]), metadata=bearer(mint(staff="visio-forez"))
    )
    assert (admitted.valid, admitted.participant) == (True, doctor)
    unknown = await hub.CheckJoinToken(s.CheckJoinTokenRequest(token="x" * 43))
    # Another GHT learns nothing of it: the same answer as an unknown token.
    hidden = await elsewhere.CheckJoinToken(
        s.CheckJoinTokenRequest(token=tokens[PATIENT_LOIRE]), metadata=elsewhere_staff
    )
    assert (unknown.valid, unknown.reason) == (hidden.valid, hidden.reason) == (False, "JOIN_TOKEN_UNKNOWN")
    # The database keeps the token's hash only.
    kept = await stack.pool.fetch("SELECT token_hash FROM scheduling.join_tokens")
    assert all(tokens[PATIENT_LOIRE].encode() not in bytes(r["token_hash"]) for r in kept)

    await start(stack, case)
    await complete(stack, case, record(case.rpps))
    result = await outcome(stack, case)
    assert result.state == "BILLED" and result.record_document

    [report] = to(sink, f"practitioners/{TREATING_GP}")
    assert "GetTeleconsultationDocument" in text_of(report) and case.name in text_of(report)
    for message in sink.messages():
        said = text_of(message).lower()
        assert not [f for f in FORBIDDEN if f.lower() in said], said
        assert message["Message-ID"] and message["Auto-Submitted"] == "auto-generated"
    final = await get(stack, case)
    assert sorted((n.kind, n.channel, n.delivery_state) for n in final.notifications) == sorted(
        [(N.KIND_REMINDER, s.NOTIFICATION_CHANNEL_EMAIL, s.DELIVERY_STATE_DELIVERED)] * 2
        + [(N.KIND_JOIN_LINK, s.NOTIFICATION_CHANNEL_EMAIL, s.DELIVERY_STATE_DELIVERED)] * 2
        + [(N.KIND_REPORT, s.NOTIFICATION_CHANNEL_EMAIL, s.DELIVERY_STATE_DELIVERED)]
    )
    # Once fulfilled, the link admits nobody.
    ended = await hub.CheckJoinToken(s.CheckJoinTokenRequest(token=tokens[PATIENT_LOIRE]))
    assert (ended.valid, ended.reason) == (False, "APPOINTMENT_NOT_BOOKED")

    # The record: a FHIR R4 document, Composition first, one section per R.6316-4 item.
    reply = await stack.stub.GetTeleconsultationDocument(
        s.GetTeleconsultationDocumentRequest(name=case.name), metadata=case.doctor
    )
    document = reply.document
    assert document.media_type == "application/fhir+json"
    assert document.document_id == f"urn:uuid:{result.record_document}"
    bundle = Bundle.model_validate_json(document.content)
    assert bundle.type == "document" and bundle.entry is not None
    resources = [e.resource for e in bundle.entry]
    composition = resources[0]
    assert composition.get_resource_type() == "Composition"
    assert [sec.code.coding[0].code for sec in composition.section] == [
        "report",
        "acts-prescriptions",
        "participants",
        "date-time",
        "technical-incidents",
    ]
    by_url = {e.fullUrl: e.resource for e in bundle.entry}
    patient = by_url[composition.subject.reference]
    assert (patient.identifier[0].system, patient.identifier[0].value) == (
        f"urn:oid:{PATIENT.oid}",
        PATIENT.matricule,
    )
    assert patient.name[0].family == PATIENT.birth_family_name and str(patient.birthDate) == "1948-03-14"
    author = by_url[composition.author[0].reference]
    assert author.identifier[0].value == f"8{case.rpps}"
    encounter = by_url[composition.encounter.reference]
    assert encounter.status == "finished" and encounter.class_fhir.code == "VR"
    assert "Tension bien contrôlée" in composition.section[0].text.div
    assert "amlodipine" in composition.section[1].text.div
    assert all(ref.reference in by_url for sec in composition.section for ref in sec.entry or [])
    # The DMP adapter recorded exactly that document (a qualified identity: it would be sent).
    assert document.dmp_submission.state == s.DmpSubmission.STATE_RECORDED
    payload = await stack.pool.fetchval(
        "SELECT payload FROM scheduling.dmp_submissions WHERE document_id = $1",
        uuid.UUID(result.record_document),
    )
    assert json.loads(payload) == json.loads(document.content)
    # Read again: the same document (one per case).
    again = await stack.stub.GetTeleconsultationDocument(
        s.GetTeleconsultationDocumentRequest(name=case.name), metadata=bearer(mint(rpps=TREATING_GP))
    )
    assert again.document.content == document.content

    # Another GHT: exactly the answer of an appointment that does not exist.
    hidden_error = await call(
        elsewhere.GetTeleconsultationDocument(
            s.GetTeleconsultationDocumentRequest(name=case.name), metadata=elsewhere_staff
        )
    )
    missing_error = await call(
        elsewhere.GetTeleconsultationDocument(
            s.GetTeleconsultationDocumentRequest(name=f"appointments/{uuid.uuid4()}"),
            metadata=elsewhere_staff,
        )
    )
    assert (
        (hidden_error.code(), details(hidden_error)[0].reason)
        == (
            missing_error.code(),
            details(missing_error)[0].reason,
        )
        == (grpc.StatusCode.PERMISSION_DENIED, "APPOINTMENT_NOT_VISIBLE")
    )  # type: ignore[union-attr]

    # The recorded history (deliveries and the record included) replays with today's code.
    history = await stack.env.client.get_workflow_handle(case.appointment.workflow_id).fetch_history()
    await Replayer(
        workflows=[TeleconsultationWorkflow], data_converter=data_converter(Keyring.parse(PAYLOAD_KEYS))
    ).replay_workflow(history)


async def _eventually(condition: Callable[[], bool], attempts: int = 200) -> None:
    """Deliveries run beside the case on the worker: poll what a person would see, bounded."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the messages never arrived")


# --- webhooks ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def hooked(
    pki: DevPki,
    postgres: PostgresHandle,
    pool: asyncpg.Pool,
    seeded_pool: asyncpg.Pool,
    directory_address: str,
    billing_address: str,
) -> AsyncIterator[tuple[Stack, WebhookEndpoint]]:
    """GHT Loire's system has an endpoint (and nobody has an e-mail address): every notification of its
    appointments goes there. The endpoint answers P1D reminders 500 then 200, PT1H ones 503 forever."""
    seen: dict[str, int] = {}

    def answer(body: bytes) -> int:
        event = json.loads(body)
        seen[event["id"]] = seen.get(event["id"], 0) + 1
        if event["label"] == "PT1H":
            return 503
        if event["label"] == "P1D" and seen[event["id"]] == 1:
            return 500
        return 200

    endpoint = await WebhookEndpoint(answer).start()
    book = FileAddressBook(
        {}, {"establishments/420000017": Endpoint(url=endpoint.url, key_id="forez-1", secret=WEBHOOK_KEY)}
    )
    notifier = Notifier(book)
    try:
        async with workflow_stack(
            pki,
            postgres,
            pool,
            directory_address,
            billing_address,
            # Three attempts, a tenth of a second apart at first: the retries of a failing endpoint.
            settings={"delivery_max_attempts": 3, "delivery_first_retry": timedelta(milliseconds=100)},
            notifier=notifier,
        ) as stack:
            yield stack, endpoint
    finally:
        await notifier.close()
        await endpoint.stop()


async def test_a_webhook_answering_500_then_200_gets_the_event_once_and_a_failing_one_is_recorded_as_failed(
    hooked: tuple[Stack, WebhookEndpoint],
    directory: directory_pb2_grpc.DirectoryServiceStub,
    operator: Metadata,
    mint: Minter,
) -> None:
    stack, endpoint = hooked
    case = await booked_case(
        stack, directory, operator, mint, consent=s.ConsentInput(method=s.CONSENT_METHOD_ORAL)
    )
    await skip_to_join_window(stack, case)
    # The case goes on whatever the endpoint answers: cancelled now, it ends once every delivery settled.
    await stack.stub.CancelAppointment(
        s.CancelAppointmentRequest(
            request_id=request_id(),
            name=case.name,
            initiator=s.PARTY_PRACTITIONER,
            reason=s.CANCELLATION_REASON_PRACTITIONER_UNAVAILABLE,
        ),
        metadata=case.doctor,
    )
    await stack.scheduling.task(Relay).relay_now(appointment_id(case.appointment))
    assert (await outcome(stack, case)).state == "CANCELLED"

    mine = [r for r in endpoint.received if json.loads(r.body)["case"] == case.name]
    by_label: dict[str, list[int]] = {}
    for received in mine:
        event = json.loads(received.body)
        by_label.setdefault(f"{event['label']} {event['recipient']}", []).append(received.status)
        # Every attempt is signed with the endpoint's key, over its timestamp and exact body.
        assert verify_signature({"forez-1": WEBHOOK_KEY}, received.headers[SIGNATURE_HEADER], received.body)
        assert not verify_signature(
            {"forez-1": WEBHOOK_KEY}, received.headers[SIGNATURE_HEADER], received.body + b" "
        )
        assert received.headers[EVENT_ID_HEADER] == event["id"]
        assert PATIENT.birth_family_name not in received.body.decode()
    doctor = f"practitioners/{case.rpps}"
    assert by_label == {
        f"P1D {PATIENT_LOIRE}": [500, 200],  # retried after the 500, accepted once
        f"PT1H {PATIENT_LOIRE}": [503, 503, 503],  # the three attempts, then given up
        f"join {PATIENT_LOIRE}": [200],
        f"join {doctor}": [200],
    }
    p1d = [json.loads(r.body) for r in mine if json.loads(r.body)["label"] == "P1D"]
    assert p1d[0] == p1d[1]  # the same event, same id, retried
    [join] = [
        json.loads(r.body)
        for r in mine
        if json.loads(r.body)["recipient"] == PATIENT_LOIRE and json.loads(r.body)["label"] == "join"
    ]
    assert (
        join["type"] == "parcours.teleconsultation.join_link"
        and join["data"]["join_url"].count("/join/") == 1
    )

    final = await get(stack, case)
    states = {(n.label, n.recipient): (n.channel, n.delivery_state) for n in final.notifications}
    webhook = s.NOTIFICATION_CHANNEL_WEBHOOK
    assert states == {
        ("P1D", PATIENT_LOIRE): (webhook, s.DELIVERY_STATE_DELIVERED),
        ("PT1H", PATIENT_LOIRE): (webhook, s.DELIVERY_STATE_FAILED),
        ("join", PATIENT_LOIRE): (webhook, s.DELIVERY_STATE_DELIVERED),
        ("join", doctor): (webhook, s.DELIVERY_STATE_DELIVERED),
    }
    attempts = await stack.pool.fetchval(
        "SELECT attempts FROM scheduling.notifications WHERE appointment_id = $1 AND label = 'PT1H'",
        appointment_id(case.appointment),
    )
    assert attempts == 3


def test_a_webhook_key_is_named_and_long_enough() -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    assert parse_keys(f"forez-1:{key}") == {"forez-1": base64.urlsafe_b64decode(key + "=")}
    with pytest.raises(ValueError, match="at least 32 bytes"):
        parse_keys("short:" + base64.urlsafe_b64encode(b"x" * 8).decode())
