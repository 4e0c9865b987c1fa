"""Who sees which charges, what reading them leaves in the audit log, and bad input named field by field."""

from __future__ import annotations

import random
import uuid

import asyncpg
import grpc
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.type.v1 import practice_pb2 as p

from services.kit.pki import DevPki
from tests.billing.builders import (
    DERM,
    GP,
    GP_OPTAM,
    act,
    gp,
    md,
    new_patient,
    paris,
    teleconsultation,
    teleexpertise,
)
from tests.billing.conftest import PatientFactory, establishment_stub
from tests.conftest import Minter
from tests.support import DAUPHINE, LOIRE, bearer, request_id
from tests.support.calls import call, details

AUGUST = {
    "start_date": {"year": 2025, "month": 8, "day": 1},
    "end_date": {"year": 2025, "month": 8, "day": 31},
}


def record(act_: billing_pb2.Act, patient: str) -> billing_pb2.RecordActRequest:
    return billing_pb2.RecordActRequest(
        request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act_
    )


@pytest.fixture
async def loire(pki: DevPki, billing_address: str) -> billing_pb2_grpc.BillingServiceStub:
    return establishment_stub(pki, billing_address, LOIRE)


@pytest.fixture
async def dauphine(pki: DevPki, billing_address: str) -> billing_pb2_grpc.BillingServiceStub:
    return establishment_stub(pki, billing_address, DAUPHINE)


@pytest.fixture
async def shared_patient(hub: billing_pb2_grpc.BillingServiceStub) -> str:
    """A patient with a téléexpertise at Loire (GP requests, dermatologist answers) and a téléconsultation
    billed at Dauphiné by another GP."""
    patient = new_patient()
    await hub.RecordAct(record(teleexpertise(paris("2025-08-04 10:00")), patient))
    elsewhere = teleconsultation(paris("2025-08-05 10:00"), gp(GP_OPTAM, p.CONVENTION_SECTOR_2_OPTAM))
    elsewhere.establishment = f"establishments/{DAUPHINE}"
    await hub.RecordAct(record(elsewhere, patient))
    return patient


async def test_a_practitioner_sees_only_their_own_charges(
    loire: billing_pb2_grpc.BillingServiceStub, mint: Minter, shared_patient: str
) -> None:
    me = bearer(mint(rpps=GP))
    mine = await loire.ListCharges(
        billing_pb2.ListChargesRequest(patient=shared_patient, **AUGUST), metadata=me
    )
    assert [(c.code, c.practitioner) for c in mine.charges] == [("RQD", f"practitioners/{GP}")]
    error = await call(
        loire.ListCharges(
            billing_pb2.ListChargesRequest(
                patient=shared_patient, practitioner=f"practitioners/{DERM}", **AUGUST
            ),
            metadata=me,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)[0].reason == "PRACTITIONER_NOT_CALLER"  # type: ignore[union-attr]
    # Someone else's charge and a charge that does not exist look the same.
    derm = bearer(mint(rpps=DERM, specialty="SPECIALTY_DERMATOLOGY"))
    theirs = await loire.ListCharges(
        billing_pb2.ListChargesRequest(patient=shared_patient, **AUGUST), metadata=derm
    )
    for name in (theirs.charges[0].name, f"charges/{uuid.uuid4()}"):
        error = await call(loire.GetCharge(billing_pb2.GetChargeRequest(name=name), metadata=me))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert details(error)[0].reason == "CHARGE_NOT_VISIBLE"  # type: ignore[union-attr]
    assert (
        await loire.GetCharge(billing_pb2.GetChargeRequest(name=mine.charges[0].name), metadata=me)
    ).charge.code == "RQD"


async def test_billing_staff_see_their_establishment(
    loire: billing_pb2_grpc.BillingServiceStub,
    dauphine: billing_pb2_grpc.BillingServiceStub,
    mint: Minter,
    shared_patient: str,
) -> None:
    clerk = bearer(mint(staff="clerk-loire", roles=["billing"]))
    at_loire = await loire.ListCharges(
        billing_pb2.ListChargesRequest(patient=shared_patient, **AUGUST), metadata=clerk
    )
    assert sorted(c.code for c in at_loire.charges) == ["RQD", "TE2"]
    assert {c.establishment for c in at_loire.charges} == {f"establishments/{LOIRE}"}
    error = await call(
        loire.ListCharges(
            billing_pb2.ListChargesRequest(
                patient=shared_patient, establishment=f"establishments/{DAUPHINE}", **AUGUST
            ),
            metadata=clerk,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)[0].reason == "ESTABLISHMENT_NOT_CALLER"  # type: ignore[union-attr]
    # The same staff token through Dauphiné's certificate sees Dauphiné's line, and cannot reverse Loire's.
    at_dauphine = await dauphine.ListCharges(
        billing_pb2.ListChargesRequest(patient=shared_patient, **AUGUST), metadata=clerk
    )
    assert [c.code for c in at_dauphine.charges] == ["TCG"]
    error = await call(
        dauphine.ReverseCharge(
            billing_pb2.ReverseChargeRequest(
                request_id=request_id(),
                name=at_loire.charges[0].name,
                reason=billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR,
            ),
            metadata=clerk,
        )
    )
    assert details(error)[0].reason == "CHARGE_NOT_VISIBLE"  # type: ignore[union-attr]


async def test_reading_a_patients_charges_is_audited(
    loire: billing_pb2_grpc.BillingServiceStub, mint: Minter, shared_patient: str, pool: asyncpg.Pool
) -> None:
    clerk = bearer(mint(staff="clerk-audit", roles=["billing"]))
    await loire.ListCharges(billing_pb2.ListChargesRequest(patient=shared_patient, **AUGUST), metadata=clerk)
    await call(
        loire.ListCharges(
            billing_pb2.ListChargesRequest(
                patient=shared_patient, establishment=f"establishments/{DAUPHINE}", **AUGUST
            ),
            metadata=clerk,
        )
    )
    rows = await pool.fetch(
        "SELECT practitioner, establishment, action, method, resource, outcome, outcome_reason "
        "FROM audit.events WHERE chain = 'billing' AND patient = $1 AND practitioner = 'staff:clerk-audit' "
        "ORDER BY seq",
        shared_patient,
    )
    assert [(r["method"], r["action"], r["outcome"], r["outcome_reason"]) for r in rows] == [
        ("/parcours.billing.v1.BillingService/ListCharges", "R", "OK", ""),
        (
            "/parcours.billing.v1.BillingService/ListCharges",
            "R",
            "PERMISSION_DENIED",
            "ESTABLISHMENT_NOT_CALLER",
        ),
    ]
    assert rows[0]["establishment"] == f"establishments/{LOIRE}"
    # The recordings of the patient's acts were audited too, by the hub component that made them.
    recorded = await pool.fetchval(
        "SELECT count(*) FROM audit.events WHERE chain = 'billing' AND patient = $1 AND action = 'C'",
        shared_patient,
    )
    assert recorded == 2


async def test_paging_through_a_patients_charges(
    hub: billing_pb2_grpc.BillingServiceStub, shared_patient: str
) -> None:
    seen: list[str] = []
    token = ""
    while True:
        reply = await hub.ListCharges(
            billing_pb2.ListChargesRequest(patient=shared_patient, page_size=1, page_token=token, **AUGUST)
        )
        seen += [c.code for c in reply.charges]
        token = reply.next_page_token
        if not token:
            break
    assert seen == ["TE2", "RQD", "TCG"]
    first = await hub.ListCharges(
        billing_pb2.ListChargesRequest(patient=shared_patient, page_size=1, **AUGUST)
    )
    error = await call(
        hub.ListCharges(
            billing_pb2.ListChargesRequest(page_size=1, page_token=first.next_page_token, **AUGUST)
        )
    )
    assert [f for f, _ in details(error)[1]] == ["page_token"]


async def test_a_practitioner_records_acts_they_take_part_in(
    loire: billing_pb2_grpc.BillingServiceStub, mint: Minter, known_at: PatientFactory
) -> None:
    me = bearer(mint(rpps=GP))
    patient = await known_at(LOIRE)
    reply = await loire.RecordAct(record(teleconsultation(paris("2025-08-06 10:00")), patient), metadata=me)
    assert [c.code for c in reply.charges] == ["TCG"]
    someone_else = teleconsultation(paris("2025-08-06 11:00"), gp(GP_OPTAM, p.CONVENTION_SECTOR_2_OPTAM))
    error = await call(loire.RecordAct(record(someone_else, patient), metadata=me))
    assert details(error)[0].reason == "NOT_A_PARTICIPANT"  # type: ignore[union-attr]
    elsewhere = teleconsultation(paris("2025-08-06 12:00"))
    elsewhere.establishment = f"establishments/{DAUPHINE}"
    error = await call(loire.RecordAct(record(elsewhere, patient), metadata=me))
    assert details(error)[0].reason == "ESTABLISHMENT_NOT_CALLER"  # type: ignore[union-attr]


async def test_missing_roles_are_refused(loire: billing_pb2_grpc.BillingServiceStub, mint: Minter) -> None:
    export = billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_CSV, **AUGUST)
    error = await call(loire.ExportCharges(export, metadata=bearer(mint(rpps=GP))))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(error)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]
    operator = bearer(mint(staff="ops-1", roles=["hub_operator"]))
    error = await call(
        loire.RecordAct(record(teleconsultation(paris("2025-08-07 10:00")), new_patient()), metadata=operator)
    )
    assert details(error)[0].reason == "ROLE_REQUIRED"  # type: ignore[union-attr]


async def test_the_remote_cap_counts_what_the_hub_recorded(hub: billing_pb2_grpc.BillingServiceStub) -> None:
    # A GP of their own, whose information system declares no téléconsultation this year.
    rpps = "2" + "".join(random.choices("0123456789", k=10))
    doctor = gp(rpps)
    for day in (1, 2, 3):
        await hub.RecordAct(record(teleconsultation(paris(f"2025-09-0{day} 10:00"), doctor), new_patient()))
    quote = await hub.QuoteAct(
        billing_pb2.QuoteActRequest(act=teleconsultation(paris("2025-09-10 10:00"), doctor, activity=(15, 0)))
    )
    warning = next(w for w in quote.quote.warnings if w.reason == "REMOTE_CAP_EXCEEDED")
    assert warning.message.startswith("4 remote of 16 acts")
    assert quote.quote.billable


def _act(**changes: object) -> billing_pb2.Act:
    message = teleconsultation(paris("2025-08-08 10:00"))
    for name, value in changes.items():
        if value is None:
            message.ClearField(name)
    return message


def _bad_acts() -> list[tuple[str, billing_pb2.Act, list[str]]]:
    no_role = _act()
    no_role.performer.profession = p.PROFESSION_UNSPECIFIED
    no_specialty = _act()
    no_specialty.performer.specialty = p.SPECIALTY_NONE
    usd = _act()
    usd.extra_fee.currency_code = "USD"
    usd.extra_fee.units = 5
    wrong_drom = _act()
    wrong_drom.overseas = True
    unknown_code = _act()
    unknown_code.additional_codes.append("ZZZ1")
    no_requester = teleexpertise(paris("2025-08-08 10:00"))
    no_requester.ClearField("requester")
    assisted = _act()
    assisted.assistant.CopyFrom(md("10000004501", p.SPECIALTY_NONE))
    assisted.assistant.profession = p.PROFESSION_NURSE
    bad_time = _act()
    bad_time.act_time.seconds = 100
    return [
        ("missing performer", _act(performer=None), ["act.performer"]),
        ("missing profession", no_role, ["act.performer.profession"]),
        ("physician without specialty", no_specialty, ["act.performer.specialty"]),
        ("missing age", _act(patient_age=None), ["act.patient_age"]),
        ("dollars", usd, ["act.extra_fee"]),
        ("region is not a DROM", wrong_drom, ["act.overseas"]),
        ("unknown code", unknown_code, ["act.additional_codes[0]"]),
        ("téléexpertise without requester", no_requester, ["act.requester"]),
        ("assistant without setting", assisted, ["act.assistance_setting"]),
        ("act in 1970", bad_time, ["act.act_time"]),
        ("sick leave of 0 days", _with_leave(0), ["act.sick_leave.days"]),
        ("téléconseil", act(billing_pb2.ACT_TYPE_UNSPECIFIED, paris("2025-08-08 10:00"), gp()), ["act.type"]),
    ]


def _with_leave(days: int) -> billing_pb2.Act:
    message = _act()
    message.sick_leave.days = days
    return message


@pytest.mark.parametrize(("title", "bad", "fields"), _bad_acts(), ids=[t for t, _, _ in _bad_acts()])
async def test_bad_acts_name_the_field(
    hub: billing_pb2_grpc.BillingServiceStub, title: str, bad: billing_pb2.Act, fields: list[str]
) -> None:
    error = await call(hub.QuoteAct(billing_pb2.QuoteActRequest(act=bad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == fields


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (
            billing_pb2.ListChargesRequest(
                start_date={"year": 2025, "month": 2, "day": 30},
                end_date={"year": 2025, "month": 3, "day": 1},
            ),
            ["start_date"],
        ),
        (
            billing_pb2.ListChargesRequest(
                start_date={"year": 2025, "month": 3, "day": 1}, end_date={"year": 2025, "month": 2, "day": 1}
            ),
            ["end_date"],
        ),
        (billing_pb2.ListChargesRequest(end_date={"year": 2025, "month": 3, "day": 1}), ["start_date"]),
        (
            billing_pb2.RecordActRequest(
                request_id="not-a-uuid", act_id="../etc", patient="patients/nope", act=_act()
            ),
            ["request_id", "act_id", "patient"],
        ),
    ],
)
async def test_bad_requests_name_the_field(
    hub: billing_pb2_grpc.BillingServiceStub, request_: object, fields: list[str]
) -> None:
    method = hub.RecordAct if isinstance(request_, billing_pb2.RecordActRequest) else hub.ListCharges
    error = await call(method(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == fields
