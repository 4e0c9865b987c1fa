"""The audit log: every patient-data RPC leaves a keyed, chained record, and tampering is found, even by the
database's owner or a superuser with the triggers off: rows are keyed with a key the database never holds,
and chain heads are anchored outside it (issue 9.7)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import DEMO_PATIENTS
from services.kit.anchors import Anchor, AuditAnchorer, FolderAnchorStore
from services.kit.audit import AuditKeys, AuditLog, AuditRecord, ChainReport, verify
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import AUDIT_KEYS, DAUPHINE, LOIRE, bearer, establishment_channel, repo_root

GP_LOIRE = "10000000101"
KEYS = AuditKeys.parse(AUDIT_KEYS)


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


async def written(pool: asyncpg.Pool, chain: str, count: int, keys: AuditKeys = KEYS) -> AuditLog:
    log = AuditLog(pool, chain, keys)
    for n in range(1, count + 1):
        await log.append(record(n))
    await log.close()
    return log


async def chain_report(
    pool: asyncpg.Pool, chain: str, anchor_dir: Path | None = None, keys: AuditKeys = KEYS
) -> ChainReport:
    anchors = FolderAnchorStore(anchor_dir).read() if anchor_dir is not None else None
    return next(c for c in (await verify(pool, keys, anchors)).chains if c.chain == chain)


async def anchored(log: AuditLog, anchor_dir: Path) -> Anchor:
    """Anchor the log's head now, as its service does every interval and at stop."""
    anchorer = AuditAnchorer(log, FolderAnchorStore(anchor_dir, "probe"), KEYS, interval=3600)
    anchor = await anchorer.anchor_now()
    assert anchor is not None
    return anchor


async def tamper(pool: asyncpg.Pool, *statements: tuple[str, Sequence[object]]) -> None:
    """What the database's owner or a superuser can do: switch the triggers off and rewrite the tables."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql, args in statements:
            await conn.execute(sql, *args)


async def rehash_from(pool: asyncpg.Pool, chain: str, first: int, key_id: str) -> None:
    """Recompute the hashes of rows `first`… and the head, as an attacker without the key can: plain SHA-256
    over the same canonical bytes (the verifier's code is public; the key is not)."""
    rows = await pool.fetch("SELECT * FROM audit.events WHERE chain = $1 ORDER BY seq", chain)
    prev = bytes(rows[first - 2]["hash"]) if first > 1 else bytes(32)
    statements: list[tuple[str, Sequence[object]]] = []
    for row in rows[first - 1 :]:
        as_record = AuditRecord(
            **{f: row[f] for f in ("recorded_at", "practitioner", "establishment", "action", "method")},
            roles=list(row["roles"]),
            resource=row["resource"],
            patient=row["patient"],
            outcome=row["outcome"],
            outcome_reason=row["outcome_reason"],
            trace_id=row["trace_id"],
        )
        digest = hashlib.sha256(prev + as_record.canonical(chain, row["seq"], key_id)).digest()
        statements.append(
            (
                "UPDATE audit.events SET prev_hash = $3, hash = $4, key_id = $5"
                " WHERE chain = $1 AND seq = $2",
                (chain, row["seq"], prev, digest, key_id),
            )
        )
        prev = digest
    statements.append(("UPDATE audit.chain_heads SET hash = $2 WHERE chain = $1", (chain, prev)))
    await tamper(pool, *statements)


def verify_command(database_url: str, anchor_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARCOURS_DATABASE_URL": database_url, "PARCOURS_AUDIT_KEYS": AUDIT_KEYS}
    env.pop("PARCOURS_AUDIT_ANCHOR_DIR", None)
    args = ["--anchor-dir", str(anchor_dir)] if anchor_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "services.kit.audit", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=repo_root(),
        check=False,
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
    assert (granted["key_id"], refused["key_id"]) == ("t1", "t1")  # keyed with the hub's audit key
    directory_chain = next(c for c in (await verify(seeded_pool, KEYS)).chains if c.chain == "directory")
    assert directory_chain.intact and directory_chain.rows >= 2


async def test_rows_cannot_be_updated_or_deleted_through_sql(seeded_pool: asyncpg.Pool) -> None:
    await written(seeded_pool, "append-only-probe", 1)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await seeded_pool.execute("UPDATE audit.events SET outcome = 'OK' WHERE chain = 'append-only-probe'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await seeded_pool.execute("DELETE FROM audit.events WHERE chain = 'append-only-probe'")


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
    await written(seeded_pool, chain, 5)
    before = await chain_report(seeded_pool, chain)
    assert before.intact and before.rows == 5
    await tamper(seeded_pool, (sql, (chain,)))
    after = await chain_report(seeded_pool, chain)
    assert after.first_broken_seq == broken_at, after.problem
    # The command an operator runs says the same and exits 1.
    result = verify_command(database_url)
    assert result.returncode == 1
    assert f"chain {chain}: BROKEN at row {broken_at}" in result.stdout


async def test_the_newest_row_deleted_and_the_head_moved_back_is_named_by_the_anchor(
    seeded_pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    chain = "tamper-newest"
    log = await written(seeded_pool, chain, 5)
    anchor = await anchored(log, tmp_path)
    assert (anchor.seq, anchor.hash) == log.head
    previous = await seeded_pool.fetchrow(
        "SELECT seq, hash FROM audit.events WHERE chain = $1 AND seq = 4", chain
    )
    assert previous is not None
    await tamper(
        seeded_pool,
        ("DELETE FROM audit.events WHERE chain = $1 AND seq = 5", (chain,)),
        ("UPDATE audit.chain_heads SET seq = $2, hash = $3 WHERE chain = $1", (chain, 4, previous["hash"])),
    )
    # What is left is a well-formed chain of 4 rows: only the anchor knows there was a fifth.
    assert (await chain_report(seeded_pool, chain)).intact
    after = await chain_report(seeded_pool, chain, tmp_path)
    assert after.first_broken_seq == 5, after.problem
    assert "row 5" in after.problem and "removed" in after.problem
    result = verify_command(database_url, tmp_path)
    assert result.returncode == 1
    assert f"chain {chain}: BROKEN at row 5" in result.stdout


@pytest.mark.parametrize("as_key_id", ["t1", ""], ids=["keeping its key id", "relabelled unkeyed"])
async def test_a_row_edited_and_every_hash_after_it_recomputed_is_named(
    as_key_id: str, seeded_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    chain = f"tamper-rehash-{as_key_id or 'unkeyed'}"
    log = await written(seeded_pool, chain, 6)
    await anchored(log, tmp_path)
    await tamper(
        seeded_pool,
        (
            "UPDATE audit.events SET outcome = 'OK', outcome_reason = '' WHERE chain = $1 AND seq = 3",
            (chain,),
        ),
    )
    await rehash_from(seeded_pool, chain, 3, as_key_id)
    # Linked and headed like an untouched chain; the key (and the anchor) tell.
    for anchors in (None, tmp_path):
        report = await chain_report(seeded_pool, chain, anchors)
        assert report.first_broken_seq == 3, report.problem


async def test_a_chain_rewritten_unkeyed_from_its_first_row_is_named_by_the_anchor(
    seeded_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Rows written before keyed chains are plain SHA-256; rewriting a whole chain that way passes the row
    checks, not the anchor."""
    chain = "tamper-rewrite-all"
    log = await written(seeded_pool, chain, 4)
    await anchored(log, tmp_path)
    await tamper(
        seeded_pool,
        ("UPDATE audit.events SET patient = 'patients/other' WHERE chain = $1 AND seq = 2", (chain,)),
    )
    await rehash_from(seeded_pool, chain, 1, "")
    assert (await chain_report(seeded_pool, chain)).intact
    report = await chain_report(seeded_pool, chain, tmp_path)
    assert report.first_broken_seq == 4, report.problem  # the anchored row; every row before it differs too
    assert "anchored" in report.problem


async def test_a_chain_truncated_after_its_last_anchor_is_named(
    seeded_pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    chain = "tamper-truncate-anchored"
    log = await written(seeded_pool, chain, 3)
    await anchored(log, tmp_path)
    for n in range(4, 8):
        await log.append(record(n))
    await log.close()
    await anchored(log, tmp_path)  # anchors at rows 3 and 7
    kept = await seeded_pool.fetchrow("SELECT hash FROM audit.events WHERE chain = $1 AND seq = 2", chain)
    assert kept is not None
    await tamper(
        seeded_pool,
        ("DELETE FROM audit.events WHERE chain = $1 AND seq > 2", (chain,)),
        ("UPDATE audit.chain_heads SET seq = 2, hash = $2 WHERE chain = $1", (chain, kept["hash"])),
    )
    report = await chain_report(seeded_pool, chain, tmp_path)
    assert report.first_broken_seq == 3, report.problem
    assert "rows 3 to 7" in report.problem
    result = verify_command(database_url, tmp_path)
    assert f"chain {chain}: BROKEN at row 3" in result.stdout and result.returncode == 1


async def test_keys_rotate_with_a_key_id_per_row(seeded_pool: asyncpg.Pool) -> None:
    chain = "key-rotation"
    old_spec, new_spec = AuditKeys.generate("k-old"), AuditKeys.generate("k-new")
    await written(seeded_pool, chain, 2, AuditKeys.parse(old_spec))
    # The new key goes in front (it signs from now on); the old one stays to verify the old rows.
    rotated = AuditKeys.parse(f"{new_spec},{old_spec}")
    log = AuditLog(seeded_pool, chain, rotated)
    await log.append(record(3))
    await log.close()
    ids = await seeded_pool.fetch("SELECT key_id FROM audit.events WHERE chain = $1 ORDER BY seq", chain)
    assert [r["key_id"] for r in ids] == ["k-old", "k-old", "k-new"]
    assert (await chain_report(seeded_pool, chain, keys=rotated)).intact
    # A verifier without the old key cannot vouch for the old rows, and says which key it lacks.
    report = await chain_report(seeded_pool, chain, keys=AuditKeys.parse(new_spec))
    assert report.first_broken_seq == 1 and "k-old" in report.problem


async def test_a_service_anchors_its_head_when_it_stops_and_a_forged_anchor_is_reported(
    seeded_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    chain = "anchor-at-stop"
    log = await written(seeded_pool, chain, 2)
    anchorer = AuditAnchorer(log, FolderAnchorStore(tmp_path, "svc-host"), KEYS, interval=3600)
    await anchorer.start()
    await log.append(record(3))
    await anchorer.stop()
    lines = (tmp_path / "svc-host.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [3]
    # An anchor written by someone without the key is not believed, and is reported.
    forged = Anchor(chain, 9, bytes(32), datetime.now(UTC), "t1", bytes(32))
    FolderAnchorStore(tmp_path, "intruder").append(forged)
    report = await verify(seeded_pool, KEYS, FolderAnchorStore(tmp_path).read())
    assert next(c for c in report.chains if c.chain == chain).intact
    assert not report.intact
    assert any("not signed by a key given" in p for p in report.anchor_problems)


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
    log = AuditLog(seeded_pool, "group-commit-probe", KEYS)
    try:
        seqs = await asyncio.gather(*(log.append(record(n)) for n in range(200)))
    finally:
        await log.close()
    # Every call got its own committed row; batches chained one after another.
    assert sorted(seqs) == list(range(1, 201))
    chain = next(c for c in (await verify(seeded_pool, KEYS)).chains if c.chain == "group-commit-probe")
    assert chain.intact and chain.rows == 200


async def test_two_writers_of_one_chain_interleave_into_one_unbroken_chain(seeded_pool: asyncpg.Pool) -> None:
    # Two replicas of one service share its chain: each appends on the head it last wrote (one round trip)
    # until the database refuses it, then on the head it reads under lock.
    first, second = (AuditLog(seeded_pool, "two-writers-probe", KEYS) for _ in range(2))
    try:
        seqs = []
        for n in range(6):
            seqs.append(await (first if n % 3 else second).append(record(n)))
        seqs += await asyncio.gather(*(log.append(record(n)) for n in range(20) for log in (first, second)))
    finally:
        await first.close()
        await second.close()
    assert sorted(seqs) == list(range(1, 47))
    chain = next(c for c in (await verify(seeded_pool, KEYS)).chains if c.chain == "two-writers-probe")
    assert chain.intact and chain.rows == 46


async def test_a_call_whose_record_cannot_be_written_is_told_so(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    log = AuditLog(pool, "closed-pool-probe", KEYS)
    await pool.close()
    with pytest.raises(asyncpg.InterfaceError):
        await log.append(record(1))
    await log.close()
