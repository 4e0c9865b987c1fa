"""ExportCharges: a period of an establishment's ledger as CSV and as a FHIR R4 Bundle of ChargeItem."""

from __future__ import annotations

import csv
import io
import json
import uuid

import grpc
import pytest
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.type.v1.practice_pb2 import PROFESSION_NURSE

from services.billing.export import CSV_COLUMNS
from services.kit.pki import DevPki
from tests.billing.builders import GP, NURSE, new_patient, paris, pro, teleconsultation, teleexpertise
from tests.billing.conftest import establishment_stub
from tests.conftest import Minter
from tests.support import VAL_RHONE, bearer, request_id
from tests.support.calls import call, details

NOVEMBER_2024 = {
    "start_date": {"year": 2024, "month": 11, "day": 1},
    "end_date": {"year": 2024, "month": 11, "day": 30},
}
FHIR_CHARGE_ITEM_STATUSES = {
    "planned",
    "billable",
    "not-billable",
    "aborted",
    "billed",
    "entered-in-error",
    "unknown",
}


@pytest.fixture(scope="module")
async def november_ledger(hub: billing_pb2_grpc.BillingServiceStub) -> dict[str, billing_pb2.Charge]:
    """Val de Rhône's November 2024: a téléconsultation, a téléexpertise whose expert line was reversed."""
    patient = new_patient()
    charges: dict[str, billing_pb2.Charge] = {}
    tlc = teleconsultation(paris("2024-11-04 09:15"))
    tle = teleexpertise(paris("2024-11-12 16:40"))
    for act in (tlc, tle):
        act.establishment = f"establishments/{VAL_RHONE}"
        reply = await hub.RecordAct(
            billing_pb2.RecordActRequest(
                request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act
            )
        )
        charges.update({c.code: c for c in reply.charges})
    reversal = await hub.ReverseCharge(
        billing_pb2.ReverseChargeRequest(
            request_id=request_id(),
            name=charges["TE2"].name,
            reason=billing_pb2.REVERSAL_REASON_ACT_NOT_PERFORMED,
        )
    )
    charges["reversal"] = reversal.reversal
    return charges


@pytest.fixture
def clerk(mint: Minter) -> tuple[tuple[str, str], ...]:
    return bearer(mint(staff="clerk-val-rhone", roles=["billing"]))


async def test_csv_export_of_a_month(
    pki: DevPki,
    billing_address: str,
    clerk: tuple[tuple[str, str], ...],
    november_ledger: dict[str, billing_pb2.Charge],
) -> None:
    stub = establishment_stub(pki, billing_address, VAL_RHONE)
    reply = await stub.ExportCharges(
        billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_CSV, **NOVEMBER_2024),
        metadata=clerk,
    )
    assert reply.content_type == "text/csv; charset=utf-8"
    assert reply.filename == f"charges-establishments-{VAL_RHONE}-2024-11-01-2024-11-30.csv"
    rows = list(csv.DictReader(io.StringIO(reply.content.decode("utf-8"))))
    assert reply.line_count == len(rows) == 4
    assert tuple(rows[0]) == CSV_COLUMNS
    by_charge = {row["charge"]: row for row in rows}
    tcg = by_charge[november_ledger["TCG"].name]
    assert (tcg["code"], tcg["amount_eur"], tcg["reimbursement_eur"], tcg["participation_eur"]) == (
        "TCG",
        "25.00",
        "15.50",
        "2.00",
    )
    assert (tcg["act_date"], tcg["act_time"], tcg["fhir_status"]) == (
        "2024-11-04",
        "2024-11-04T08:15:00Z",
        "billable",
    )
    assert tcg["practitioner"] == f"practitioners/{GP}" and tcg["reimbursement_rate_percent"] == "70"
    reversal = by_charge[november_ledger["reversal"].name]
    assert (
        reversal["kind"],
        reversal["amount_eur"],
        reversal["fhir_status"],
        reversal["reversal_reason"],
    ) == (
        "reversal",
        "-20.00",
        "aborted",
        "act_not_performed",
    )
    assert by_charge[november_ledger["TE2"].name]["reversed_by"] == november_ledger["reversal"].name


async def test_fhir_charge_items_of_a_month(
    pki: DevPki,
    billing_address: str,
    clerk: tuple[tuple[str, str], ...],
    november_ledger: dict[str, billing_pb2.Charge],
) -> None:
    stub = establishment_stub(pki, billing_address, VAL_RHONE)
    reply = await stub.ExportCharges(
        billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_FHIR_CHARGE_ITEMS, **NOVEMBER_2024),
        metadata=clerk,
    )
    assert reply.content_type == "application/fhir+json"
    bundle = json.loads(reply.content)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    items = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    assert set(items) == {"TCG", "TE2", "RQD"}
    assert {item["status"] for item in items.values()} <= FHIR_CHARGE_ITEM_STATUSES
    assert items["TE2"]["status"] == "aborted" and items["TCG"]["status"] == "billable"
    assert items["TE2"]["priceOverride"] == {"value": 20.0, "currency": "EUR"}
    patient = november_ledger["TCG"].patient.removeprefix("patients/")
    assert {item["subject"]["reference"] for item in items.values()} == {f"Patient/{patient}"}
    assert items["TCG"]["performer"][0]["actor"]["identifier"] == {
        "system": "urn:oid:1.2.250.1.71.4.2.1",
        "value": f"8{GP}",
    }
    assert items["TCG"]["occurrenceDateTime"] == "2024-11-04T08:15:00Z"
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])


async def test_exports_are_for_billing_staff_of_the_establishment_and_bounded(
    pki: DevPki, billing_address: str, clerk: tuple[tuple[str, str], ...], mint: Minter
) -> None:
    stub = establishment_stub(pki, billing_address, VAL_RHONE)
    error = await call(
        stub.ExportCharges(
            billing_pb2.ExportChargesRequest(
                format=billing_pb2.EXPORT_FORMAT_CSV,
                establishment="establishments/420000017",
                **NOVEMBER_2024,
            ),
            metadata=clerk,
        )
    )
    assert details(error)[0].reason == "ESTABLISHMENT_NOT_CALLER"  # type: ignore[union-attr]
    error = await call(
        stub.ExportCharges(
            billing_pb2.ExportChargesRequest(
                format=billing_pb2.EXPORT_FORMAT_CSV,
                start_date={"year": 2023, "month": 1, "day": 1},
                end_date={"year": 2024, "month": 12, "day": 31},
            ),
            metadata=clerk,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(error)[1]] == ["end_date"]
    error = await call(stub.ExportCharges(billing_pb2.ExportChargesRequest(**NOVEMBER_2024), metadata=clerk))
    assert [f for f, _ in details(error)[1]] == ["format"]


async def test_an_assisted_teleconsultation_exports_the_prescriber_and_the_tlc_date(
    pki: DevPki,
    billing_address: str,
    clerk: tuple[tuple[str, str], ...],
    hub: billing_pb2_grpc.BillingServiceStub,
) -> None:
    """§7.18: the nurse's TLD line carries the teleconsultant's identifier as prescriber and the TLC's date as
    prescription date, in the ledger, the CSV and the FHIR ChargeItem; the TLC's own line carries neither."""
    act = teleconsultation(paris("2024-12-02 23:40"))  # Paris date: 2 December (UTC 22:40)
    act.establishment = f"establishments/{VAL_RHONE}"
    act.assistant.CopyFrom(pro(NURSE, PROFESSION_NURSE))
    act.assistance_setting = billing_pb2.ASSISTANCE_SETTING_ORGANISED_AT_HOME
    reply = await hub.RecordAct(
        billing_pb2.RecordActRequest(
            request_id=request_id(), act_id=f"act-{uuid.uuid4()}", patient=new_patient(), act=act
        )
    )
    by_code = {c.code: c for c in reply.charges}
    assert set(by_code) == {"TCG", "TLD"}
    tld = by_code["TLD"]
    assert (tld.practitioner, tld.prescriber) == (f"practitioners/{NURSE}", f"practitioners/{GP}")
    assert (tld.prescription_date.year, tld.prescription_date.month, tld.prescription_date.day) == (
        2024,
        12,
        2,
    )
    assert not by_code["TCG"].prescriber

    stub = establishment_stub(pki, billing_address, VAL_RHONE)
    december = {
        "start_date": {"year": 2024, "month": 12, "day": 2},
        "end_date": {"year": 2024, "month": 12, "day": 2},
    }
    exported = await stub.ExportCharges(
        billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_CSV, **december), metadata=clerk
    )
    rows = {r["charge"]: r for r in csv.DictReader(io.StringIO(exported.content.decode("utf-8")))}
    assert (rows[tld.name]["prescriber"], rows[tld.name]["prescription_date"]) == (
        f"practitioners/{GP}",
        "2024-12-02",
    )
    assert (rows[by_code["TCG"].name]["prescriber"], rows[by_code["TCG"].name]["prescription_date"]) == (
        "",
        "",
    )

    fhir = await stub.ExportCharges(
        billing_pb2.ExportChargesRequest(format=billing_pb2.EXPORT_FORMAT_FHIR_CHARGE_ITEMS, **december),
        metadata=clerk,
    )
    items = {
        e["resource"]["identifier"][0]["value"]: e["resource"] for e in json.loads(fhir.content)["entry"]
    }
    performers = [
        (p["function"]["text"], p["actor"]["identifier"]["value"]) for p in items[tld.name]["performer"]
    ]
    assert performers == [("assistant", f"8{NURSE}"), ("prescriber", f"8{GP}")]
    assert items[tld.name]["occurrenceDateTime"] == "2024-12-02T22:40:00Z"
    assert len(items[by_code["TCG"].name]["performer"]) == 1
