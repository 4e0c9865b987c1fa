"""Exports of the ledger: CSV (one row per ledger line) and a FHIR R4 Bundle of ChargeItem resources.

CSV: RFC 4180, UTF-8, a header row (the columns `prescriber` and `prescription_date` filled on an assisted
téléconsultation's assistant line, §7.18), amounts in euros with a dot ("27.60"), reversals as rows of their
own with negative amounts. FHIR: one ChargeItem per charge (reversal lines are not items of their own); its
`status` says whether it was reversed, with the codes of the FHIR R4 value set chargeitem-status:
`billable` (recorded, not reversed), `entered-in-error`, `aborted` or `not-billable` (reversed for that
reason).

Identifier systems: practitioners by IDNPS ("8" + RPPS), establishments by IDNST ("1" + FINESS), built by
services/kit/fhir.py as for every FHIR export of the hub. No official FHIR code system URI was found for NGAP
codes: they carry Parcours' own system URI below (unconfirmed).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from parcours.billing.v1 import billing_pb2

from services.kit.fhir import establishment_identifier, practitioner_identifier

NGAP_SYSTEM = "https://parcours.invalid/fhir/CodeSystem/ngap-telemedicine"
CHARGE_SYSTEM = "https://parcours.invalid/fhir/sid/charge"
SIREN_SYSTEM = "https://parcours.invalid/fhir/sid/siren"

FHIR_STATUS = {
    billing_pb2.REVERSAL_REASON_ENTERED_IN_ERROR: "entered-in-error",
    billing_pb2.REVERSAL_REASON_ACT_NOT_PERFORMED: "aborted",
    billing_pb2.REVERSAL_REASON_NOT_BILLABLE: "not-billable",
}

CSV_COLUMNS = (
    "charge",
    "kind",
    "act_id",
    "line",
    "act_date",
    "act_time",
    "act_type",
    "code",
    "label",
    "biller_role",
    "practitioner",
    "exploitant",
    "establishment",
    "patient",
    "amount_eur",
    "extra_fee_eur",
    "reimbursement_rate_percent",
    "reimbursement_eur",
    "participation_eur",
    "overseas",
    "unconfirmed",
    "quota_slot",
    "fhir_status",
    "reverses",
    "reversed_by",
    "reversal_reason",
    "catalog_entry",
    "catalog_version",
    "create_time",
    # §7.18: on an assistant's line (TLS, TLL, TLD, TLM), the teleconsultant and the téléconsultation's date.
    "prescriber",
    "prescription_date",
)


def cents_of(money: Any) -> int:
    return int(money.units) * 100 + int(money.nanos) // 10_000_000


def euros(money: Any) -> str:
    return f"{Decimal(cents_of(money)) / 100:.2f}"


def fhir_status(charge: billing_pb2.Charge) -> str:
    """The FHIR ChargeItem status of a charge line (a reversal line reports the status it gave its charge)."""
    if charge.kind == billing_pb2.Charge.KIND_REVERSAL or charge.reversed_by:
        return FHIR_STATUS.get(charge.reversal_reason, "entered-in-error")
    return "billable"


def _date(charge: billing_pb2.Charge) -> str:
    return _day(charge.act_date)


def _day(d: Any) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _instant(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z"))


def to_csv(charges: Sequence[billing_pb2.Charge]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for c in charges:
        writer.writerow(
            (
                c.name,
                billing_pb2.Charge.Kind.Name(c.kind).removeprefix("KIND_").lower(),
                c.act_id,
                c.line,
                _date(c),
                _instant(c.act_time),
                billing_pb2.ActType.Name(c.act_type).removeprefix("ACT_TYPE_").lower(),
                c.code,
                c.label,
                billing_pb2.BillerRole.Name(c.biller_role).removeprefix("BILLER_ROLE_").lower(),
                c.practitioner,
                c.exploitant,
                c.establishment,
                c.patient,
                euros(c.amount),
                euros(c.extra_fee),
                f"{Decimal(c.reimbursement_rate_bp) / 100:g}",
                euros(c.reimbursement),
                euros(c.participation),
                "true" if c.overseas else "false",
                "true" if c.unconfirmed else "false",
                c.quota_slot or "",
                fhir_status(c),
                c.reverses,
                c.reversed_by,
                billing_pb2.ReversalReason.Name(c.reversal_reason).removeprefix("REVERSAL_REASON_").lower()
                if c.reversal_reason
                else "",
                c.catalog_entry,
                c.catalog_version,
                _instant(c.create_time),
                c.prescriber,
                _day(c.prescription_date) if c.prescriber else "",
            )
        )
    return buffer.getvalue().encode("utf-8")


def charge_item(charge: billing_pb2.Charge) -> dict[str, Any]:
    charge_id = charge.name.removeprefix("charges/")
    price = Decimal(cents_of(charge.amount) + cents_of(charge.extra_fee)) / 100
    if charge.practitioner:
        actor = {"identifier": practitioner_identifier(charge.practitioner)}
    else:
        actor = {"identifier": {"system": SIREN_SYSTEM, "value": charge.exploitant}}
    role = billing_pb2.BillerRole.Name(charge.biller_role).removeprefix("BILLER_ROLE_").lower()
    item: dict[str, Any] = {
        "resourceType": "ChargeItem",
        "id": charge_id,
        "identifier": [{"system": CHARGE_SYSTEM, "value": charge.name}],
        "status": fhir_status(charge),
        "code": {"coding": [{"system": NGAP_SYSTEM, "code": charge.code, "display": charge.label}]},
        "subject": {"reference": f"Patient/{charge.patient.removeprefix('patients/')}"},
        "occurrenceDateTime": _instant(charge.act_time),
        "performer": [{"function": {"text": role}, "actor": actor}],
        "performingOrganization": {"identifier": establishment_identifier(charge.establishment)},
        "quantity": {"value": 1},
        "priceOverride": {"value": float(price), "currency": "EUR"},
        "enteredDate": _instant(charge.create_time),
    }
    if charge.prescriber:
        # §7.18: the teleconsultant who prescribed the assistance, as a performer of its own function; the
        # prescription date is the téléconsultation's (occurrenceDateTime).
        item["performer"].append(
            {
                "function": {"text": "prescriber"},
                "actor": {"identifier": practitioner_identifier(charge.prescriber)},
            }
        )
    notes = []
    if cents_of(charge.extra_fee):
        notes.append(f"includes a dépassement of {euros(charge.extra_fee)} EUR")
    if charge.reversed_by:
        notes.append(
            f"reversed by {charge.reversed_by}"
            + (f": {charge.reversal_note}" if charge.reversal_note else "")
        )
    if charge.unconfirmed:
        notes.append("a value used to price this item is not confirmed by a source")
    if notes:
        item["note"] = [{"text": text} for text in notes]
    return item


def to_fhir_bundle(charges: Sequence[billing_pb2.Charge], *, generated_at: datetime | None = None) -> bytes:
    instant = (generated_at or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant,
        "entry": [
            {"fullUrl": f"urn:uuid:{c.name.removeprefix('charges/')}", "resource": charge_item(c)}
            for c in charges
            if c.kind == billing_pb2.Charge.KIND_CHARGE
        ],
    }
    return json.dumps(bundle, ensure_ascii=False, indent=1).encode("utf-8")
