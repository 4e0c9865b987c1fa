"""Who may see and change a request, what a request must hold, and how refusals read: bad input names its
field, business refusals carry a stable reason, a request one does not take part in is indistinguishable
from one that does not exist."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2
from parcours.type.v1 import practice_pb2

from tests.expertise.conftest import (
    CARDIO_LOIRE,
    DERM_DAUPHINE,
    DERM_LOIRE,
    GP,
    GP_DAUPHINE,
    NURSE_LOIRE,
    Actor,
    Stack,
    request_input,
)
from tests.scheduling.helpers import new_practitioner
from tests.support import DAUPHINE, LOIRE, STRANGER, bearer, establishment_channel, request_id
from tests.support.calls import call, details

Request = expertise_pb2.TeleexpertiseRequest
NewPatient = Callable[..., Awaitable[str]]


def _at(delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + delta)
    return stamp


async def _refused(attempt: Awaitable[object], code: grpc.StatusCode, reason: str) -> list[tuple[str, str]]:
    error = await call(attempt)
    assert error.code() == code, error
    info, violations = details(error)
    assert info is not None and info.reason == reason, (info, violations)
    return violations


# --- what a request must hold --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"question": ""}, "teleexpertise_request.question"),
        ({"clinical_context": ""}, "teleexpertise_request.clinical_context"),
        ({"urgency": expertise_pb2.URGENCY_UNSPECIFIED}, "teleexpertise_request.urgency"),
        ({"patient": "patients/not-a-uuid"}, "teleexpertise_request.patient"),
        ({"specialty": 1}, "teleexpertise_request.specialty"),  # SPECIALTY_NONE
        ({"expert": "practitioners/123"}, "teleexpertise_request.expert"),
        (
            {"attachments": [expertise_pb2.AttachmentInput(title="x", media_type="application/pdf")]},
            "teleexpertise_request.attachments[0].source",
        ),
    ],
)
async def test_malformed_requests_are_refused_naming_the_field(
    stack: Stack, fields: dict[str, object], field: str
) -> None:
    gp = stack.as_(GP)
    values = {"patient": f"patients/{uuid.uuid4()}", **fields}
    violations = await _refused(gp.create(**values), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert field in [f for f, _ in violations]


async def test_the_answer_deadline_must_fit_the_urgency(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    patient = await new_patient()
    for urgency, delta in (
        (expertise_pb2.URGENCY_URGENT, timedelta(hours=1)),  # urgent: 2 hours at least
        (expertise_pb2.URGENCY_URGENT, timedelta(days=3)),  # urgent: 48 hours at most
        (expertise_pb2.URGENCY_ROUTINE, timedelta(hours=24)),  # routine: 48 hours at least
        (expertise_pb2.URGENCY_ROUTINE, timedelta(days=31)),  # routine: 30 days at most
    ):
        violations = await _refused(
            gp.create(patient=patient, urgency=urgency, answer_deadline=_at(delta)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "DEADLINE_OUT_OF_BOUNDS",
        )
        assert [f for f, _ in violations] == ["teleexpertise_request.answer_deadline"]
        assert "URGENCY_" in violations[0][1]
    created = await gp.create(
        patient=patient, urgency=expertise_pb2.URGENCY_URGENT, answer_deadline=_at(timedelta(hours=6))
    )
    assert created.urgency == expertise_pb2.URGENCY_URGENT
    span = created.answer_due_time.ToDatetime() - created.create_time.ToDatetime()
    assert timedelta(hours=5, minutes=59) < span <= timedelta(hours=6)
    # Without a deadline, the urgency's default (routine: 7 days).
    default = await gp.create(patient=patient)
    span = default.answer_due_time.ToDatetime() - default.create_time.ToDatetime()
    assert abs(span - timedelta(days=7)) < timedelta(seconds=5)


async def test_attachments_are_checked_against_the_type_and_size_limits(
    make_stack: Callable[..., Awaitable[Stack]], new_patient: NewPatient
) -> None:
    stack = await make_stack(worker=False, teleexpertise_attachment_max_bytes=64)
    gp = stack.as_(GP)
    patient = await new_patient()
    violations = await _refused(
        gp.create(
            patient=patient,
            attachments=[
                expertise_pb2.AttachmentInput(
                    title="exe", media_type="application/x-msdownload", content=b"MZ"
                ),
                expertise_pb2.AttachmentInput(title="faux", media_type="image/png", content=b"not a png"),
                expertise_pb2.AttachmentInput(title="gros", media_type="text/plain", content=b"x" * 65),
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [f for f, _ in violations] == [
        "teleexpertise_request.attachments[0].media_type",
        "teleexpertise_request.attachments[1].content",
        "teleexpertise_request.attachments[2].content",
    ]


async def test_consent_is_required(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    await _refused(
        gp.create(patient=await new_patient(), patient_consent=False),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
    )


async def test_who_may_request_and_be_asked(stack: Stack, new_patient: NewPatient) -> None:
    patient = await new_patient()
    # Any health professional may request (a nurse here); a psychologist may not.
    nurse = stack.as_(NURSE_LOIRE, profession="PROFESSION_NURSE", specialty="SPECIALTY_NONE")
    created = await nurse.create(patient=patient)
    assert created.requester == nurse.name
    # A psychologist of the establishment (so the token binding lets them through to the profession rule).
    async with establishment_channel(stack.pki, stack.directory_address, LOIRE) as channel:
        operator = bearer(stack.mint(staff="ops-expertise", roles=["hub_operator"]))
        rpps = await new_practitioner(
            directory_pb2_grpc.DirectoryServiceStub(channel),
            operator,
            LOIRE,
            profession=practice_pb2.PROFESSION_PSYCHOLOGIST,
        )
    psychologist = stack.as_(rpps, profession="PROFESSION_PSYCHOLOGIST", specialty="SPECIALTY_NONE")
    await _refused(
        psychologist.create(patient=patient),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROFESSION_NOT_ALLOWED_TO_REQUEST",
    )
    # The expert must be a medical professional (R.6316-1): not a nurse.
    gp = stack.as_(GP)
    await _refused(
        gp.create(patient=patient, expert=f"practitioners/{NURSE_LOIRE}"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "EXPERT_NOT_ELIGIBLE",
    )
    violations = await _refused(
        gp.create(patient=patient, expert="practitioners/19999999999"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert violations[0][0] == "teleexpertise_request.expert"
    # A specialty nobody offers in the region.
    await _refused(
        gp.create(patient=patient, specialty=21),  # SPECIALTY_INFECTIOUS_DISEASES
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_EXPERT_AVAILABLE",
    )


async def test_a_patient_of_another_ght_cannot_be_the_subject(stack: Stack, new_patient: NewPatient) -> None:
    dauphine_patient = await new_patient(DAUPHINE, GP_DAUPHINE)
    gp = stack.as_(GP)
    await _refused(
        gp.create(patient=dauphine_patient), grpc.StatusCode.PERMISSION_DENIED, "PATIENT_NOT_VISIBLE"
    )
    await _refused(
        gp.create(patient=f"patients/{uuid.uuid4()}"),
        grpc.StatusCode.PERMISSION_DENIED,
        "PATIENT_NOT_VISIBLE",
    )
    # A practitioner acting through another GHT's information system.
    elsewhere = stack.as_(GP, DAUPHINE)
    await _refused(
        elsewhere.create(patient=dauphine_patient),
        grpc.StatusCode.PERMISSION_DENIED,
        "PRACTITIONER_NOT_AT_ESTABLISHMENT",
    )


# --- who sees a request --------------------------------------------------------------------------------


async def _every_read_and_change_refused(
    actor: Actor, name: str, reason: str = "REQUEST_NOT_VISIBLE"
) -> None:
    for attempt in (
        actor.get(name),
        actor.accept(name),
        actor.decline(name),
        actor.cancel(name),
        actor.ask(name, "?"),
        actor.report(name),
        actor.events(name),
        actor.stub.ListTeleexpertiseMessages(
            expertise_pb2.ListTeleexpertiseMessagesRequest(parent=name), metadata=actor.metadata
        ),
    ):
        await _refused(attempt, grpc.StatusCode.PERMISSION_DENIED, reason)


async def test_strangers_other_ghts_and_outsiders_see_nothing(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    created = await gp.create(patient=await new_patient())
    # Someone unknown to the directory, through an unknown establishment's system: refused for who they are
    # (the token binding), before anything is looked up — the same for this request and for one that does not
    # exist, and nothing listed.
    stranger = stack.as_("19999999901", STRANGER)
    for name in (created.name, f"teleexpertiseRequests/{uuid.uuid4()}"):
        await _every_read_and_change_refused(stranger, name, "PRACTITIONER_NOT_AT_ESTABLISHMENT")
    await _refused(
        stranger.stub.ListTeleexpertiseRequests(
            expertise_pb2.ListTeleexpertiseRequestsRequest(), metadata=stranger.metadata
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PRACTITIONER_NOT_AT_ESTABLISHMENT",
    )
    outsiders = [
        # A GP of another GHT.
        stack.as_(GP_DAUPHINE, DAUPHINE),
        # A doctor of the same GHT in no dermatology pool.
        stack.as_(CARDIO_LOIRE, specialty="SPECIALTY_CARDIOLOGY"),
        # A dermatologist of the region pool, before the request is escalated to it.
        stack.as_(DERM_DAUPHINE, DAUPHINE),
    ]
    for outsider in outsiders:
        await _every_read_and_change_refused(outsider, created.name)
        listed = await outsider.stub.ListTeleexpertiseRequests(
            expertise_pb2.ListTeleexpertiseRequestsRequest(), metadata=outsider.metadata
        )
        assert created.name not in [r.name for r in listed.teleexpertise_requests]
    # A request that does not exist reads the same as one that is not theirs.
    await _refused(
        gp.get(f"teleexpertiseRequests/{uuid.uuid4()}"),
        grpc.StatusCode.PERMISSION_DENIED,
        "REQUEST_NOT_VISIBLE",
    )
    # Refused reads are audited too, with the request named and no patient revealed.
    audited = await stack.pool.fetch(
        "SELECT practitioner, outcome, outcome_reason, patient FROM audit.events "
        "WHERE resource = $1 AND method LIKE '%/GetTeleexpertiseRequest'",
        created.name,
    )
    refused = [r for r in audited if r["outcome"] == "PERMISSION_DENIED"]
    assert {r["practitioner"] for r in refused} == {f"practitioners/{o.rpps}" for o in outsiders}
    assert {r["outcome_reason"] for r in refused} == {"REQUEST_NOT_VISIBLE"} and not any(
        r["patient"] for r in refused
    )


async def test_pool_members_see_a_request_only_until_it_is_assigned(
    stack: Stack, new_patient: NewPatient
) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    created = await gp.create(patient=await new_patient())
    inbox = await derm.stub.ListTeleexpertiseRequests(
        expertise_pb2.ListTeleexpertiseRequestsRequest(relation=expertise_pb2.RELATION_CANDIDATE),
        metadata=derm.metadata,
    )
    assert created.name in [r.name for r in inbox.teleexpertise_requests]

    await derm.accept(created.name)
    # The requester lists it among theirs, the expert among those assigned to them.
    for actor, relation in (
        (gp, expertise_pb2.RELATION_REQUESTER),
        (derm, expertise_pb2.RELATION_ASSIGNED_EXPERT),
    ):
        listed = await actor.stub.ListTeleexpertiseRequests(
            expertise_pb2.ListTeleexpertiseRequestsRequest(relation=relation, state=Request.STATE_ACCEPTED),
            metadata=actor.metadata,
        )
        assert created.name in [r.name for r in listed.teleexpertise_requests]
    inbox = await derm.stub.ListTeleexpertiseRequests(
        expertise_pb2.ListTeleexpertiseRequestsRequest(relation=expertise_pb2.RELATION_CANDIDATE),
        metadata=derm.metadata,
    )
    assert created.name not in [r.name for r in inbox.teleexpertise_requests]


async def test_state_changes_by_the_wrong_party_are_refused(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_(GP)
    derm = stack.as_(DERM_LOIRE)
    created = await gp.create(patient=await new_patient())
    # The requester is no candidate; nobody reports before accepting.
    await _refused(gp.accept(created.name), grpc.StatusCode.PERMISSION_DENIED, "NOT_A_CANDIDATE")
    await _refused(derm.report(created.name), grpc.StatusCode.FAILED_PRECONDITION, "NOT_ASSIGNED")
    await _refused(gp.hand_back(created.name), grpc.StatusCode.FAILED_PRECONDITION, "NOT_ASSIGNED")
    await derm.accept(created.name)
    await _refused(gp.report(created.name), grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED_EXPERT")
    await _refused(derm.accept(created.name), grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_ASSIGNED")


async def test_lists_page_through_every_request(stack: Stack, new_patient: NewPatient) -> None:
    gp = stack.as_("10000000301")  # a GP of GHT Loire that no other test uses as requester
    patient = await new_patient(rpps="10000000301")
    made = [(await gp.create(patient=patient)).name for _ in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = await gp.stub.ListTeleexpertiseRequests(
            expertise_pb2.ListTeleexpertiseRequestsRequest(
                relation=expertise_pb2.RELATION_REQUESTER, page_size=2, page_token=token
            ),
            metadata=gp.metadata,
        )
        seen += [r.name for r in page.teleexpertise_requests]
        token = page.next_page_token
        if not token:
            break
    # Newest first, each once.
    assert seen[: len(made)] == made[::-1] and len(seen) == len(set(seen))
    await _refused(
        gp.stub.ListTeleexpertiseRequests(
            expertise_pb2.ListTeleexpertiseRequestsRequest(page_token="forged"), metadata=gp.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_a_request_id_must_be_a_uuid(stack: Stack) -> None:
    gp = stack.as_(GP)
    violations = await _refused(
        gp.stub.CreateTeleexpertiseRequest(
            expertise_pb2.CreateTeleexpertiseRequestRequest(
                request_id="again", teleexpertise_request=request_input(patient=f"patients/{uuid.uuid4()}")
            ),
            metadata=gp.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [f for f, _ in violations] == ["request_id"]
    violations = await _refused(
        gp.stub.AcceptTeleexpertiseRequest(
            expertise_pb2.AcceptTeleexpertiseRequestRequest(request_id=request_id(), name="requests/1"),
            metadata=gp.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert [f for f, _ in violations] == ["name"]
