"""The audit log: every patient-data RPC leaves a chained record, and tampering is found."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from services.kit.audit import AuditLog, AuditRecord, verify
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import DAUPHINE, LOIRE, bearer, establishment_channel, repo_root

GP_LOIRE = "10000000101"


def record(n: int) -> AuditRecord:
    return AuditRecord(
        recorded_at=datetime.now(UTC),
        practitioner="practitioners/10000000101",
        establishment="establishments/420000017",
        roles=["ROLE_PRACTITIONER"],
        action="R",
        method="/parcours.directory.v1.DirectoryService/GetPatient",
        resource=f"patients/p{n}",
        patient=f"patients/p{n}",
        outcome="OK",
        outcome_reason="",
    )


async def test_reading_a_patient_appends_who_what_and_outcome(
    pki: DevPki, directory_address: str, mint: Minter, seeded_pool: asyncpg.Pool
) -> None:
    patient = f"patients/{DEMO_PATIENTS[0].patient_id}"
    async with establishment_channel(pki, directory_address, LOIRE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        await stub.GetPatient(
            directory_pb2.GetPatientRequest(name=patient), metadata=bearer(mint(rpps=GP_LOIRE))
        )
    async with establishment_channel(pki, directory_address, DAUPHINE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetPatient(
                directory_pb2.GetPatientRequest(name=patient), metadata=bearer(mint(rpps="10000000501"))
            )
        # Reference data is not patient data: no audit record.
        await stub.ListRegions(directory_pb2.ListRegionsRequest(), metadata=bearer(mint(rpps="10000000501")))
    rows = await seeded_pool.fetch(
        "SELECT * FROM audit.events WHERE method LIKE '%/GetPatient' "
        "AND recorded_at > now() - interval '1 minute' ORDER BY seq DESC LIMIT 2"
    )
    refused, granted = rows[0], rows[1]
    assert (
        granted["practitioner"],
        granted["establishment"],
        granted["action"],
        granted["resource"],
        granted["patient"],
        granted["outcome"],
    ) == (f"practitioners/{GP_LOIRE}", f"establishments/{LOIRE}", "R", patient, patient, "OK")
    assert (
        refused["practitioner"],
        refused["establishment"],
        refused["outcome"],
        refused["outcome_reason"],
    ) == (
        "practitioners/10000000501",
        f"establishments/{DAUPHINE}",
        "PERMISSION_DENIED",
        "PATIENT_NOT_VISIBLE",
    )
    assert refused["prev_hash"] == granted["hash"]
    assert (
        await seeded_pool.fetchval("SELECT count(*) FROM audit.events WHERE method LIKE '%/ListRegions'") == 0
    )
    directory_chain = next(c for c in (await verify(seeded_pool)).chains if c.chain == "directory")
    assert directory_chain.intact and directory_chain.rows >= 2


async def test_rows_cannot_be_updated_or_deleted_through_sql(seeded_pool: asyncpg.Pool) -> None:
    await AuditLog(seeded_pool, "append-only-probe").append(record(1))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await seeded_pool.execute("UPDATE audit.events SET outcome = 'OK' WHERE chain = 'append-only-probe'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await seeded_pool.execute("DELETE FROM audit.events WHERE chain = 'append-only-probe'")


async def _tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    # What a superuser with the triggers switched off could do; only the hash chain can tell.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


@pytest.mark.parametrize(
    ("chain", "sql", "broken_at"),
    [
        (
            "tamper-alter",
            "UPDATE audit.events SET patient = 'patients/other' WHERE chain = $1 AND seq = 3",
            3,
        ),
        ("tamper-delete", "DELETE FROM audit.events WHERE chain = $1 AND seq = 2", 2),
        ("tamper-truncate-tail", "DELETE FROM audit.events WHERE chain = $1 AND seq = 5", 5),
    ],
)
async def test_an_altered_or_removed_row_is_named(
    chain: str, sql: str, broken_at: int, seeded_pool: asyncpg.Pool, database_url: str
) -> None:
    log = AuditLog(seeded_pool, chain)
    for n in range(1, 6):
        await log.append(record(n))
    before = next(c for c in (await verify(seeded_pool)).chains if c.chain == chain)
    assert before.intact and before.rows == 5
    await _tamper(seeded_pool, sql, chain)
    after = next(c for c in (await verify(seeded_pool)).chains if c.chain == chain)
    assert after.first_broken_seq == broken_at, after.problem
    # The command an operator runs says the same and exits 1.
    result = subprocess.run(
        [sys.executable, "-m", "services.kit.audit", "verify"],
        env={**os.environ, "PARCOURS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        cwd=repo_root(),
        check=False,
    )
    assert result.returncode == 1
    assert f"chain {chain}: BROKEN at row {broken_at}" in result.stdout


async def test_the_audit_of_a_patient_exports_as_fhir_audit_events(
    pki: DevPki, directory_address: str, mint: Minter, seeded_pool: asyncpg.Pool, database_url: str
) -> None:
    patient = f"patients/{DEMO_PATIENTS[1].patient_id}"  # known at 690000019 (GHT Val de Rhône)
    since = datetime.now(UTC)
    async with establishment_channel(pki, directory_address, LOIRE) as channel:
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetPatient(
                directory_pb2.GetPatientRequest(name=patient), metadata=bearer(mint(rpps=GP_LOIRE))
            )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.kit.audit",
            "export",
            "--since",
            since.isoformat(),
            "--patient",
            patient,
        ],
        env={**os.environ, "PARCOURS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        cwd=repo_root(),
        check=True,
    )
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == 1
    event = bundle["entry"][0]["resource"]
    assert event["resourceType"] == "AuditEvent" and event["action"] == "R"
    assert event["outcome"] == "4" and event["outcomeDesc"] == "PERMISSION_DENIED PATIENT_NOT_VISIBLE"
    identifiers = [a["who"]["identifier"] for a in event["agent"]]
    assert {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": f"8{GP_LOIRE}"} in identifiers
    assert {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1" + LOIRE} in identifiers
    assert event["entity"][0]["what"]["reference"] == f"Patient/{DEMO_PATIENTS[1].patient_id}"


async def test_concurrent_appends_form_one_unbroken_chain(seeded_pool: asyncpg.Pool) -> None:
    log = AuditLog(seeded_pool, "group-commit-probe")
    try:
        seqs = await asyncio.gather(*(log.append(record(n)) for n in range(200)))
    finally:
        await log.close()
    # Every call got its own committed row; batches chained one after another.
    assert sorted(seqs) == list(range(1, 201))
    chain = next(c for c in (await verify(seeded_pool)).chains if c.chain == "group-commit-probe")
    assert chain.intact and chain.rows == 200


async def test_a_call_whose_record_cannot_be_written_is_told_so(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    log = AuditLog(pool, "closed-pool-probe")
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError):
        await log.append(record(1))
    await log.close()
