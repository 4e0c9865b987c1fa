"""No INTERNAL, no UNKNOWN, no traceback for bad input (issue 9.9 and 9.11): instants and durations outside
what protobuf defines, or whose arithmetic runs past year 9999, and bodies that are not protobuf at all,
answer INVALID_ARGUMENT naming the field — after authentication, and with one rate-limited log line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.message import Message
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2
from parcours.directory.v1 import directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2
from parcours.type.v1 import practice_pb2

from services.directory.demo import DEMO_PATIENTS
from services.kit.server import KitServer
from tests.conftest import Minter
from tests.security.conftest import SecurityHub
from tests.security.world import PROMOTER_STAFF, make_cases
from tests.support import LOIRE, bearer, establishment_channel, kit_settings, request_id, role_url
from tests.support.calls import call, details

GP_LOIRE = "10000000101"  # practises at 420000025, calls through 420000017 (GHT Loire)
PATIENT = f"patients/{DEMO_PATIENTS[0].patient_id}"
AFTER_9999 = 253_402_300_800  # 10000-01-01T00:00:00Z
BEFORE_1 = -62_135_596_801
LAST_DAY = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    request: Callable[[], Message]
    field: str


def _search(**times: tuple[int, int]) -> scheduling_pb2.SearchSlotsRequest:
    request = scheduling_pb2.SearchSlotsRequest(specialty=practice_pb2.SPECIALTY_GENERAL_MEDICINE)
    for name, (seconds, nanos) in times.items():
        getattr(request, name).seconds = seconds
        getattr(request, name).nanos = nanos
    return request


def _hold() -> scheduling_pb2.HoldSlotRequest:
    request = scheduling_pb2.HoldSlotRequest(
        request_id=request_id(), slot="slots/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21"
    )
    request.ttl.seconds, request.ttl.nanos = 60, -5  # seconds and nanos of opposite signs
    return request


def _schedule() -> scheduling_pb2.CreateScheduleRequest:
    request = scheduling_pb2.CreateScheduleRequest(request_id=request_id())
    request.schedule.practitioner = f"practitioners/{GP_LOIRE}"
    request.schedule.establishment = "establishments/420000025"
    kind = request.schedule.service_types.add(service_type=scheduling_pb2.SERVICE_TYPE_FOLLOW_UP)
    # protovalidate itself raised "Duration is out of range" on this one's rule (whole minutes).
    kind.slot_duration.seconds = 10**12
    return request


def _exception() -> scheduling_pb2.CreateAvailabilityExceptionRequest:
    request = scheduling_pb2.CreateAvailabilityExceptionRequest(request_id=request_id())
    request.exception.practitioner = f"practitioners/{GP_LOIRE}"
    request.exception.kind = scheduling_pb2.EXCEPTION_KIND_LEAVE
    request.exception.interval.start_time.seconds = AFTER_9999
    request.exception.interval.end_time.seconds = AFTER_9999 + 3600
    return request


def _teleexpertise() -> expertise_pb2.CreateTeleexpertiseRequestRequest:
    request = expertise_pb2.CreateTeleexpertiseRequestRequest(request_id=request_id())
    given = request.teleexpertise_request
    given.patient = PATIENT
    given.patient_consent = True
    given.specialty = practice_pb2.SPECIALTY_DERMATOLOGY
    given.question = "Lésion pigmentée évolutive : exérèse ?"
    given.urgency = expertise_pb2.URGENCY_ROUTINE
    given.answer_deadline.seconds = AFTER_9999
    return request


def _quote() -> billing_pb2.QuoteActRequest:
    request = billing_pb2.QuoteActRequest(patient=PATIENT)
    request.act.act_time.seconds = BEFORE_1
    return request


CASES = [
    Case("scheduling", "SearchSlots", lambda: _search(start_time=(AFTER_9999, 0)), "start_time"),
    Case("scheduling", "SearchSlots", lambda: _search(start_time=(0, -1)), "start_time"),
    Case("scheduling", "SearchSlots", lambda: _search(end_time=(BEFORE_1, 0)), "end_time"),
    # A valid instant whose default search window (400 days) would end after year 9999.
    Case("scheduling", "SearchSlots", lambda: _search(start_time=(LAST_DAY, 0)), "start_time"),
    Case("scheduling", "HoldSlot", _hold, "ttl"),
    Case("scheduling", "CreateSchedule", _schedule, "schedule.service_types[0].slot_duration"),
    Case("scheduling", "CreateAvailabilityException", _exception, "exception.interval.start_time"),
    Case("expertise", "CreateTeleexpertiseRequest", _teleexpertise, "teleexpertise_request.answer_deadline"),
    Case("billing", "QuoteAct", _quote, "act.act_time"),
]
SERVICE_NAMES = {
    "directory": "parcours.directory.v1.DirectoryService",
    "scheduling": "parcours.scheduling.v1.SchedulingService",
    "expertise": "parcours.expertise.v1.ExpertiseService",
    "billing": "parcours.billing.v1.BillingService",
}


def raw_method(channel: grpc.aio.Channel, service: str, method: str) -> Any:
    """A method called with the body as bytes, so the test chooses every byte on the wire."""
    return channel.unary_unary(f"/{SERVICE_NAMES[service]}/{method}")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method}.{c.field}" for c in CASES])
async def test_an_instant_or_duration_out_of_range_is_named(
    case: Case, hub: SecurityHub, mint: Minter
) -> None:
    body = case.request().SerializeToString()
    method = raw_method(hub.channel(case.service, LOIRE), case.service, case.method)
    error = await call(method(body, metadata=bearer(mint(rpps=GP_LOIRE)), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    _, violations = details(error)
    assert case.field in [field for field, _ in violations], violations


# Bodies that are not protobuf: corrupt bytes, invalid UTF-8 in a string, a varint of 11 bytes, groups nested
# deeper than the parser allows, a group never closed.
BODIES = {
    "corrupt wire format": b"\xff\xff\xff\xff",
    "invalid UTF-8": b"\x0a\x02\xc3\x28",
    "bad varint": b"\x0a" + b"\x80" * 10 + b"\x01",
    "nested groups": b"\x0b" * 200 + b"\x0c" * 200,
    "unterminated group": b"\x0b",
}
READS = [
    ("directory", "GetPatient"),
    ("scheduling", "GetAppointment"),
    ("expertise", "GetTeleexpertiseRequest"),
    ("billing", "GetCharge"),
]


@pytest.mark.parametrize(("service", "method"), READS)
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_an_undecodable_body_is_invalid_argument_after_authentication(
    service: str, method: str, body: bytes, hub: SecurityHub, mint: Minter
) -> None:
    rpc = raw_method(hub.channel(service, LOIRE), service, method)
    anonymous = await call(rpc(body, timeout=10))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = details(anonymous)
    assert info is not None and info.reason == "TOKEN_MISSING"

    error = await call(rpc(body, metadata=bearer(mint(rpps=GP_LOIRE)), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info, violations = details(error)
    assert info is not None and info.reason == "UNDECODABLE_REQUEST"
    assert [field for field, _ in violations] == ["(request)"]


async def test_undecodable_bodies_in_a_loop_log_one_line_without_traceback(
    hub: SecurityHub, mint: Minter, caplog: pytest.LogCaptureFixture
) -> None:
    from services.directory.server import build
    from services.directory.settings import DirectorySettings

    # A directory of its own, so the rate limit starts afresh.
    pool = await asyncpg.create_pool(role_url(hub.database_url, "parcours_directory"), min_size=1, max_size=2)
    assert pool is not None
    kit: KitServer = await build(
        DirectorySettings(**kit_settings(hub.pki, hub.database_url, "directory")), pool
    )  # type: ignore[arg-type]
    await kit.start()
    await kit.set_serving(True)
    try:
        caplog.set_level(logging.INFO)
        async with establishment_channel(hub.pki, f"127.0.0.1:{kit.port}", LOIRE) as channel:
            rpc = raw_method(channel, "directory", "GetPatient")
            metadata = bearer(mint(rpps=GP_LOIRE))
            for body in list(BODIES.values()) * 6:
                error = await call(rpc(body, metadata=metadata, timeout=10))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            # The server still answers well-formed calls.
            stub = directory_pb2_grpc.DirectoryServiceStub(channel)
            from parcours.directory.v1 import directory_pb2

            await stub.GetPatient(directory_pb2.GetPatientRequest(name=PATIENT), metadata=metadata)
    finally:
        await kit.stop(0.5)
        await pool.close()
    undecodable = [r for r in caplog.records if "undecodable request body" in r.getMessage()]
    assert len(undecodable) == 1, [r.getMessage() for r in undecodable]
    assert undecodable[0].exc_info is None and undecodable[0].levelno == logging.WARNING
    assert "/parcours.directory.v1.DirectoryService/GetPatient" in undecodable[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]


# Found by the fuzzer under make chaos (seed 9009): a promoter filter holding a NUL byte reached PostgreSQL
# (INTERNAL, "invalid byte sequence for encoding UTF8: 0x00"). A filter names a promoter or is refused.
PROMOTER_FILTERS: dict[str, Callable[[str], Message]] = {
    "ListArsContracts": lambda p: contracts_pb2.ListArsContractsRequest(promoter=p),
    "ListOperatorDeclarations": lambda p: contracts_pb2.ListOperatorDeclarationsRequest(promoter=p),
    "ListIntermediaryContractReviews": lambda p: contracts_pb2.ListIntermediaryContractReviewsRequest(
        promoter=p
    ),
}


@pytest.mark.parametrize("method", PROMOTER_FILTERS)
@pytest.mark.parametrize("promoter", ["\x00", "establishments/\x00", "patients/x"])
async def test_a_promoter_filter_that_names_no_promoter_is_named(
    hub: SecurityHub, mint: Minter, method: str, promoter: str
) -> None:
    stub = hub.contracts(LOIRE)
    doctor = bearer(mint(rpps=GP_LOIRE))
    error = await call(getattr(stub, method)(PROMOTER_FILTERS[method](promoter), metadata=doctor))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert [field for field, _ in details(error)[1]] == ["promoter"]
    # A promoter's name filters as before.
    listed = await getattr(stub, method)(
        PROMOTER_FILTERS[method](f"practitioners/{GP_LOIRE}"), metadata=doctor
    )
    assert listed is not None


async def test_a_nul_byte_in_any_text_of_a_case_is_named_and_leaves_the_case_working(
    hub: SecurityHub, mint: Minter
) -> None:
    # PostgreSQL's text holds no NUL: one in a message, a motivation, a title or a company's name reached the
    # database (INTERNAL on creation; a change that never applied, UNAVAILABLE "retry"). Refused up front.
    made = await make_cases(hub, mint)
    promoter = bearer(mint(staff=PROMOTER_STAFF, roles=["promoter"]))
    doctor = bearer(mint(rpps=GP_LOIRE))
    stub = hub.contracts(LOIRE)
    probes: dict[str, tuple[object, str]] = {
        "message": (
            stub.PostCaseMessage(
                contracts_pb2.PostCaseMessageRequest(
                    request_id=request_id(), parent=made["ars_contract"], text="Bonjour\x00"
                ),
                metadata=promoter,
                timeout=30,
            ),
            "text",
        ),
        "message items": (
            stub.PostCaseMessage(
                contracts_pb2.PostCaseMessageRequest(
                    request_id=request_id(), parent=made["ars_contract"], text="Bonjour", items=["ok", "\x00"]
                ),
                metadata=promoter,
                timeout=30,
            ),
            "items[1]",
        ),
        "withdrawal": (
            stub.WithdrawOperatorDeclaration(
                contracts_pb2.WithdrawOperatorDeclarationRequest(
                    request_id=request_id(), name=made["declaration"], motivation="Abandon\x00"
                ),
                metadata=promoter,
                timeout=30,
            ),
            "motivation",
        ),
        "review": (
            stub.CreateIntermediaryContractReview(
                contracts_pb2.CreateIntermediaryContractReviewRequest(
                    request_id=request_id(),
                    intermediary_contract_review=contracts_pb2.IntermediaryContractReview(
                        region="regions/84",
                        territory="42",
                        company_siren="912345678",
                        company_name="MédiConsult\x00 SAS",
                        offer="Téléconsultations en soirée.",
                    ),
                ),
                metadata=doctor,
                timeout=30,
            ),
            "intermediary_contract_review.company_name",
        ),
    }
    for label, (pending, field) in probes.items():
        error = await call(pending)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{label}: {error.code()} {error.details()}"
        assert [f for f, _ in details(error)[1]] == [field], label

    # The cases still take changes.
    posted = await stub.PostCaseMessage(
        contracts_pb2.PostCaseMessageRequest(
            request_id=request_id(), parent=made["ars_contract"], text="Bonjour"
        ),
        metadata=promoter,
        timeout=30,
    )
    assert posted is not None
    withdrawn = await stub.WithdrawOperatorDeclaration(
        contracts_pb2.WithdrawOperatorDeclarationRequest(
            request_id=request_id(), name=made["declaration"], motivation="Abandon"
        ),
        metadata=promoter,
        timeout=30,
    )
    assert withdrawn.operator_declaration.state == contracts_pb2.OperatorDeclaration.STATE_WITHDRAWN
