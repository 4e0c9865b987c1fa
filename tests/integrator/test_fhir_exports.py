"""The two FHIR exports of the hub — billing's ChargeItem bundle and the audit's AuditEvent bundle — validate
as FHIR R4 (fhir.resources 6.4, FHIR 4.0.1) and write each national identifier in one form: IDNPS "8" + RPPS
and IDNST "1" + FINESS, the same establishment reading the same in both."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2_grpc

from services.kit.audit import export_fhir
from services.kit.tokens import mint_token
from tests.billing.builders import GP, paris, teleconsultation, teleexpertise
from tests.directory.builders import register
from tests.integrator.conftest import Hub, tool
from tests.support import AUDIENCE, ISSUER, LOIRE, bearer, component_channel, establishment_channel, repo_root

IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
IDNST = "urn:oid:1.2.250.1.71.4.2.2"
FINESS = r"(?:[0-9]{2}|2[AB])[0-9]{7}"


def token(hub: Hub, subject: str, **claims: Any) -> tuple[tuple[str, str], ...]:
    return bearer(
        mint_token(
            signing_key_file=hub.pki.signing_key_file,
            kid=hub.pki.signing_kid,
            issuer=ISSUER,
            audience=AUDIENCE,
            subject=subject,
            profession=claims.pop("profession", None),
            specialty=claims.pop("specialty", None),
            **claims,
        )
    )


def identifiers(document: Any) -> Iterator[dict[str, str]]:
    """Every Identifier (an object with `system` and `value`) anywhere in a FHIR document."""
    if isinstance(document, dict):
        if "system" in document and "value" in document:
            yield document
        for value in document.values():
            yield from identifiers(value)
    elif isinstance(document, list):
        for value in document:
            yield from identifiers(value)


async def validate_r4(bundle: dict[str, Any]) -> dict[str, int]:
    python = tool("build/fhir-r4/bin/python")
    ran = await asyncio.to_thread(
        subprocess.run,
        [str(python), str(repo_root() / "tests/integrator/fhir_r4/validate.py")],
        input=json.dumps(bundle),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, f"not valid FHIR R4:\n{ran.stdout}{ran.stderr}"
    counts: dict[str, int] = json.loads(ran.stdout)
    return counts


async def test_charge_items_and_audit_events_validate_and_agree_on_identifiers(hub: Hub) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    # A patient GHT Loire knows (billing answers for patients its caller may see only).
    async with establishment_channel(hub.pki, hub.directory, LOIRE) as channel:
        registered = await register(
            directory_pb2_grpc.DirectoryServiceStub(channel),
            token(hub, f"8{GP}", profession="PROFESSION_PHYSICIAN", specialty="SPECIALTY_GENERAL_MEDICINE"),
            LOIRE,
        )
    patient = registered.name
    # A workflow worker records a teleconsultation and a téléexpertise at 420000017 (GHT Loire).
    async with component_channel(hub.pki, hub.billing, "workflows") as channel:
        worker = billing_pb2_grpc.BillingServiceStub(channel)
        for act in (teleconsultation(paris("2025-03-04 09:15")), teleexpertise(paris("2025-03-12 16:40"))):
            act.establishment = f"establishments/{LOIRE}"
            await worker.RecordAct(
                billing_pb2.RecordActRequest(
                    request_id=str(uuid.uuid4()), act_id=f"act-{uuid.uuid4()}", patient=patient, act=act
                )
            )
    async with establishment_channel(hub.pki, hub.billing, LOIRE) as channel:
        billing = billing_pb2_grpc.BillingServiceStub(channel)
        # A practitioner's quote through 420000017: an audited call naming the GP and the establishment.
        await billing.QuoteAct(
            billing_pb2.QuoteActRequest(patient=patient, act=teleconsultation(paris("2025-03-20 10:00"))),
            metadata=token(
                hub, f"8{GP}", profession="PROFESSION_PHYSICIAN", specialty="SPECIALTY_GENERAL_MEDICINE"
            ),
        )
        exported = await billing.ExportCharges(
            billing_pb2.ExportChargesRequest(
                format=billing_pb2.EXPORT_FORMAT_FHIR_CHARGE_ITEMS,
                start_date={"year": 2025, "month": 3, "day": 1},
                end_date={"year": 2025, "month": 3, "day": 31},
            ),
            metadata=token(hub, "staff:clerk-loire", roles=["billing"]),
        )
    charges = json.loads(exported.content)
    audit = await export_fhir(hub.pool, since, datetime.now(UTC) + timedelta(seconds=1), patient)

    assert await validate_r4(charges) == {"Bundle": 1, "ChargeItem": 3}  # TCG; TE2 and RQD
    counts = await validate_r4(audit)
    assert counts["Bundle"] == 1 and counts["AuditEvent"] >= 3  # two RecordAct, one QuoteAct (and the export)

    found = [*identifiers(charges), *identifiers(audit)]
    establishments = {i["value"] for i in found if i["system"] == IDNST}
    practitioners = {i["value"] for i in found if i["system"] == IDNPS}
    assert all(re.fullmatch(f"1{FINESS}", value) for value in establishments), establishments
    assert all(re.fullmatch(r"8[0-9]{11}", value) for value in practitioners), practitioners
    # The same establishment and the same GP, in the same form, in both exports.
    for bundle in (charges, audit):
        values = {i["value"] for i in identifiers(bundle)}
        assert f"1{LOIRE}" in values and f"8{GP}" in values
        assert LOIRE not in values and GP not in values


async def test_a_refused_boolean_is_spelt_as_in_proto_json(hub: Hub) -> None:
    """The act says `overseas: true` in a metropolitan region: the message says what it must be, in JSON."""
    act = teleconsultation(paris("2025-03-20 10:00"))
    act.overseas = True
    async with component_channel(hub.pki, hub.billing, "workflows") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await billing_pb2_grpc.BillingServiceStub(channel).QuoteAct(
                billing_pb2.QuoteActRequest(patient=f"patients/{uuid.uuid4()}", act=act)
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad) for detail in status.details if detail.Is(bad.DESCRIPTOR))
    violations = {v.field: v.description for v in bad.field_violations}
    assert violations["act.overseas"] == "must be false for region 84"
