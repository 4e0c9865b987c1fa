"""Every list read is audited per patient returned (issue 14.7): an auditor who exports the accesses to one
patient (`python -m services.kit.audit export --patient patients/<id>`) sees the lists that showed them —
requests, patients, appointments, charges, the charges export — not only the reads of that patient alone."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, date, datetime, timedelta

import asyncpg
from google.type import date_pb2
from parcours.billing.v1 import billing_pb2, billing_pb2_grpc
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc
from parcours.expertise.v1 import expertise_pb2
from parcours.scheduling.v1 import scheduling_pb2 as s

from services.kit import audit
from tests.conftest import Minter
from tests.observability import flows
from tests.observability.conftest import Hub
from tests.support import AUDIT_KEYS, DAUPHINE, LOIRE, bearer, repo_root

LISTS = {
    "/parcours.expertise.v1.ExpertiseService/ListTeleexpertiseRequests",
    "/parcours.directory.v1.DirectoryService/ListPatients",
    "/parcours.scheduling.v1.SchedulingService/ListAppointments",
    "/parcours.billing.v1.BillingService/ListCharges",
    "/parcours.billing.v1.BillingService/ExportCharges",
}


def proto_date(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def export(hub: Hub, since: datetime, patient: str) -> dict[str, object]:
    """The auditor's command, as the README writes it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.kit.audit",
        "export",
        "--database-url",
        hub.database_url,
        "--since",
        since.isoformat(),
        "--patient",
        patient,
        cwd=repo_root(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    bundle: dict[str, object] = json.loads(out)
    return bundle


async def test_an_export_for_a_patient_shows_every_list_that_returned_them(hub: Hub, mint: Minter) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    case = await flows.ask(hub, mint)
    await flows.answer(case)
    await hub.temporal.get_workflow_handle(case.workflow_id).result()
    await flows.book(hub, mint)
    gp = bearer(mint(rpps=flows.GP))
    today = datetime.now(UTC).date()

    requests = await case.requester.stub.ListTeleexpertiseRequests(
        expertise_pb2.ListTeleexpertiseRequestsRequest(page_size=50), metadata=case.requester.metadata
    )
    assert flows.PATIENT_NAME in {r.patient for r in requests.teleexpertise_requests}
    patients = await directory_pb2_grpc.DirectoryServiceStub(hub.channel("directory")).ListPatients(
        directory_pb2.ListPatientsRequest(establishment=f"establishments/{LOIRE}", page_size=100), metadata=gp
    )
    assert flows.PATIENT_NAME in {p.name for p in patients.patients}
    # A list of several patients (CHU Dauphiné-Belledonne's, as a GP of its GHT sees them).
    several = await directory_pb2_grpc.DirectoryServiceStub(hub.channel("directory", DAUPHINE)).ListPatients(
        directory_pb2.ListPatientsRequest(establishment=f"establishments/{DAUPHINE}", page_size=100),
        metadata=bearer(mint(rpps="10000000501")),
    )
    listed = {p.name for p in several.patients}
    assert len(listed) > 1
    appointments = await flows.scheduling(hub).ListAppointments(
        s.ListAppointmentsRequest(establishment=f"establishments/{LOIRE}", page_size=100),
        metadata=bearer(mint(staff="front-desk-forez")),
    )
    assert flows.PATIENT_NAME in {a.patient for a in appointments.appointments}
    billing = billing_pb2_grpc.BillingServiceStub(hub.channel("billing"))
    expert = case.expert.metadata
    period = {
        "start_date": proto_date(today - timedelta(days=1)),
        "end_date": proto_date(today + timedelta(days=1)),
    }
    charges = await billing.ListCharges(
        billing_pb2.ListChargesRequest(practitioner=case.expert.name, page_size=100, **period),
        metadata=expert,
    )
    assert flows.PATIENT_NAME in {c.patient for c in charges.charges}
    await billing.ExportCharges(
        # The establishment's billing office exports its lines (the act was billed at 420000017).
        billing_pb2.ExportChargesRequest(
            establishment=f"establishments/{LOIRE}", format=billing_pb2.EXPORT_FORMAT_CSV, **period
        ),
        metadata=bearer(mint(staff="billing-forez", roles=["billing"])),
    )

    bundle = await export(hub, since, flows.PATIENT_NAME)
    entries = bundle["entry"]
    assert isinstance(entries, list)
    methods = {e["resource"]["subtype"][0]["code"] for e in entries}
    assert methods >= LISTS, f"lists missing from the patient's audit: {sorted(LISTS - methods)}"
    for entry in entries:
        patient_entities = [x for x in entry["resource"]["entity"] if x.get("type", {}).get("code") == "1"]
        assert [x["what"]["reference"] for x in patient_entities] == [f"Patient/{flows.PATIENT.patient_id}"]

    # One record per patient a list returned, written together, and the chain still verifies.
    conn = await asyncpg.connect(hub.database_url)
    try:
        rows = await conn.fetch(
            "SELECT patient, seq, trace_id FROM audit.events "
            "WHERE method = $1 AND recorded_at >= $2 AND establishment = $3",
            "/parcours.directory.v1.DirectoryService/ListPatients",
            since,
            f"establishments/{DAUPHINE}",
        )
        assert {r["patient"] for r in rows} == listed
        assert len({r["trace_id"] for r in rows}) == 1
        seqs = sorted(r["seq"] for r in rows)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a call's records are consecutive"
        assert (await audit.verify(conn, audit.AuditKeys.parse(AUDIT_KEYS))).intact
    finally:
        await conn.close()
