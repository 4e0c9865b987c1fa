"""The append-only, hash-chained audit log.

The audit interceptor appends a record for every RPC whose access policy says it touches patient data: who
(practitioner, establishment), action, resource, patient reference, time, outcome. Handlers name the resource
and patient with `audit_target()`, and a List the patients it returns with `audit_patients()`; the interceptor
does the rest, including for refused calls: one record per patient of the call (one with no patient when it
named none), appended together, so that an export for a patient shows every access to them, through lists
too.

Each row's hash is SHA-256(previous row's hash || canonical row bytes); `audit.chain_heads` holds the newest
(seq, hash) of each chain, so a changed, removed or reordered row — even the last one — breaks verification.
`python -m services.kit.audit verify` walks every chain and names the first broken row;
`python -m services.kit.audit export --since ... --until ...` writes a FHIR R4 Bundle of AuditEvent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.kit.fhir import establishment_identifier, practitioner_identifier

GENESIS = bytes(32)


@dataclass
class AuditTarget:
    """What a handler acted on, filled in during the call: a resource and the patients it concerns (in the
    order named, each once)."""

    resource: str = ""
    patients: list[str] = field(default_factory=list)

    @property
    def patient(self) -> str:
        """The first patient named ('' when none)."""
        return self.patients[0] if self.patients else ""

    def add_patient(self, patient: str) -> None:
        if patient and patient not in self.patients:
            self.patients.append(patient)


_target: contextvars.ContextVar[AuditTarget | None] = contextvars.ContextVar(
    "parcours_audit_target", default=None
)


def begin_call() -> AuditTarget:
    target = AuditTarget()
    _target.set(target)
    return target


def audit_target(*, resource: str = "", patient: str = "") -> None:
    """Name the resource and the patient (an opaque `patients/{id}`, never an INS) of the current call."""
    target = _target.get()
    if target is None:
        return
    if resource:
        target.resource = resource
    target.add_patient(patient)


def audit_patients(patients: Iterable[str]) -> None:
    """Name every patient (`patients/{id}`) a List returns: each gets its own audit record of the call."""
    target = _target.get()
    if target is None:
        return
    for patient in patients:
        target.add_patient(patient)


@dataclass(frozen=True)
class AuditRecord:
    recorded_at: datetime
    practitioner: str
    establishment: str
    roles: Sequence[str]
    action: str
    method: str
    resource: str
    patient: str
    outcome: str
    outcome_reason: str
    trace_id: str = ""

    def canonical(self, chain: str, seq: int) -> bytes:
        # A fixed field order and an exact UTC instant: the bytes are rebuilt identically from the row.
        body = [
            chain,
            seq,
            self.recorded_at.astimezone(UTC).isoformat(timespec="microseconds"),
            self.practitioner,
            self.establishment,
            list(self.roles),
            self.action,
            self.method,
            self.resource,
            self.patient,
            self.outcome,
            self.outcome_reason,
            self.trace_id,
        ]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, record: AuditRecord, chain: str, seq: int) -> bytes:
    return hashlib.sha256(prev_hash + record.canonical(chain, seq)).digest()


_APPEND_HEAD = """
INSERT INTO audit.chain_heads (chain, seq, hash) VALUES ($1, 0, $2)
ON CONFLICT (chain) DO NOTHING
"""
_LOCK_HEAD = "SELECT seq, hash FROM audit.chain_heads WHERE chain = $1 FOR UPDATE"
_INSERT_EVENT = """
INSERT INTO audit.events (chain, seq, recorded_at, practitioner, establishment, roles, action, method,
                          resource, patient, outcome, outcome_reason, trace_id, prev_hash, hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
_MOVE_HEAD = "UPDATE audit.chain_heads SET seq = $2, hash = $3 WHERE chain = $1"


class AuditLog:
    """Appends records to one chain, with group commit.

    Appends of one chain are serialised by the lock on its head row; holding it for a few round trips per
    call would queue every audited RPC behind the others. So calls hand their record to one writer task that
    appends whatever has accumulated in a single transaction (lock the head, chain the hashes, insert the
    batch, move the head), and each call still awaits the commit of its own record before it answers: a call
    whose audit record cannot be written fails (fail closed), and no answer leaves before its record is
    durable.
    """

    MAX_BATCH = 512

    def __init__(self, pool: asyncpg.Pool, chain: str) -> None:
        self._pool = pool
        self.chain = chain
        self._queue: asyncio.Queue[tuple[Sequence[AuditRecord], asyncio.Future[int]]] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def append(self, record: AuditRecord) -> int:
        """Append one record; returns its sequence number once it is committed."""
        return await self.append_all([record])

    async def append_all(self, records: Sequence[AuditRecord]) -> int:
        """Append the records of one call together (consecutive, in one transaction); returns the first's
        sequence number once they are committed."""
        if self._queue is None or self._writer is None or self._writer.done():
            self._queue = asyncio.Queue()
            self._writer = asyncio.create_task(self._write_batches(self._queue), name=f"audit-{self.chain}")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put((records, done))
        return await done

    async def close(self) -> None:
        """Stop the writer once what is queued is written."""
        if self._writer is not None and self._queue is not None:
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._writer = None

    async def _write_batches(
        self, queue: asyncio.Queue[tuple[Sequence[AuditRecord], asyncio.Future[int]]]
    ) -> None:
        while True:
            calls = [await queue.get()]
            while sum(len(r) for r, _ in calls) < self.MAX_BATCH and not queue.empty():
                calls.append(queue.get_nowait())
            batch = [(record, done) for records, done in calls for record in records]
            try:
                first_seq = await self._write(batch)
            except Exception as exc:
                for _, done in calls:
                    if not done.done():
                        done.set_exception(exc)
            else:
                offset = 0
                for records, done in calls:
                    if not done.done():
                        done.set_result(first_seq + offset)
                    offset += len(records)
            finally:
                for _ in calls:
                    queue.task_done()

    async def _write(self, batch: Sequence[tuple[AuditRecord, asyncio.Future[int]]]) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_APPEND_HEAD, self.chain, GENESIS)
            head = await conn.fetchrow(_LOCK_HEAD, self.chain)
            assert head is not None
            first_seq = int(head["seq"]) + 1
            prev = bytes(head["hash"])
            rows = []
            for offset, (record, _) in enumerate(batch):
                seq = first_seq + offset
                digest = chain_hash(prev, record, self.chain, seq)
                rows.append(
                    (
                        self.chain,
                        seq,
                        record.recorded_at,
                        record.practitioner,
                        record.establishment,
                        list(record.roles),
                        record.action,
                        record.method,
                        record.resource,
                        record.patient,
                        record.outcome,
                        record.outcome_reason,
                        record.trace_id,
                        prev,
                        digest,
                    )
                )
                prev = digest
            await conn.executemany(_INSERT_EVENT, rows)
            await conn.execute(_MOVE_HEAD, self.chain, first_seq + len(batch) - 1, prev)
            return first_seq


@dataclass
class ChainReport:
    chain: str
    rows: int
    first_broken_seq: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.first_broken_seq is None


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return all(c.intact for c in self.chains)


async def verify(conn: asyncpg.Connection | asyncpg.Pool, batch: int = 5000) -> VerifyReport:
    """Walk every chain in order and report the first broken row of each."""
    report = VerifyReport()
    heads = await conn.fetch("SELECT chain, seq, hash FROM audit.chain_heads ORDER BY chain")
    chains = {r["chain"]: r for r in heads}
    for row in await conn.fetch("SELECT DISTINCT chain FROM audit.events"):
        chains.setdefault(row["chain"], None)
    for chain in sorted(chains):
        report.chains.append(await _verify_chain(conn, chain, chains[chain], batch))
    return report


async def _verify_chain(
    conn: asyncpg.Connection | asyncpg.Pool, chain: str, head: asyncpg.Record | None, batch: int
) -> ChainReport:
    result = ChainReport(chain=chain, rows=0)
    expected_seq = 1
    prev = GENESIS
    after = 0
    while True:
        rows = await conn.fetch(
            "SELECT * FROM audit.events WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            chain,
            after,
            batch,
        )
        if not rows:
            break
        for row in rows:
            seq = int(row["seq"])
            result.rows += 1
            if seq != expected_seq:
                result.first_broken_seq = expected_seq
                result.problem = f"row {expected_seq} is missing (next row is {seq})"
                return result
            if bytes(row["prev_hash"]) != prev:
                result.first_broken_seq = seq
                result.problem = f"row {seq} does not follow row {seq - 1} (previous hash differs)"
                return result
            record = AuditRecord(
                recorded_at=row["recorded_at"],
                practitioner=row["practitioner"],
                establishment=row["establishment"],
                roles=list(row["roles"]),
                action=row["action"],
                method=row["method"],
                resource=row["resource"],
                patient=row["patient"],
                outcome=row["outcome"],
                outcome_reason=row["outcome_reason"],
                trace_id=row["trace_id"],
            )
            digest = chain_hash(prev, record, chain, seq)
            if digest != bytes(row["hash"]):
                result.first_broken_seq = seq
                result.problem = f"row {seq} was altered (its content no longer matches its hash)"
                return result
            prev = digest
            expected_seq = seq + 1
            after = seq
    last_seq = expected_seq - 1
    if head is None:
        if last_seq:
            result.first_broken_seq = 1
            result.problem = "the chain has rows but no head"
        return result
    if int(head["seq"]) != last_seq or bytes(head["hash"]) != prev:
        result.first_broken_seq = last_seq + 1
        result.problem = (
            f"the chain ends at row {last_seq} but its head records row {head['seq']}: "
            "the newest rows were removed or the head was altered"
        )
    return result


_FHIR_OUTCOME = {
    "OK": "0",
    "INVALID_ARGUMENT": "4",
    "NOT_FOUND": "4",
    "PERMISSION_DENIED": "4",
    "UNAUTHENTICATED": "4",
    "FAILED_PRECONDITION": "4",
    "ALREADY_EXISTS": "4",
    "ABORTED": "4",
}


def _who(name: str, prefix: str, identifier: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """An agent's `who`: its national identifier, or its name as recorded when it is not one (a component)."""
    if name.startswith(prefix):
        with contextlib.suppress(ValueError):
            return {"identifier": identifier(name)}
    return {"display": name}


def fhir_audit_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A FHIR R4 AuditEvent for one audit row."""
    agents: list[dict[str, Any]] = []
    practitioner = str(row["practitioner"])
    if practitioner:
        agents.append(
            {"who": _who(practitioner, "practitioners/", practitioner_identifier), "requestor": True}
        )
    establishment = str(row["establishment"])
    if establishment:
        agents.append(
            {
                "who": _who(establishment, "establishments/", establishment_identifier),
                "requestor": not practitioner,
            }
        )
    entities: list[dict[str, Any]] = []
    if row["patient"]:
        entities.append(
            {
                "what": {"reference": "Patient/" + str(row["patient"]).removeprefix("patients/")},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            }
        )
    if row["resource"] and row["resource"] != row["patient"]:
        entities.append({"what": {"display": row["resource"]}})
    outcome = str(row["outcome"])
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"{row['chain']}-{row['seq']}",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "urn:parcours:grpc-method", "code": row["method"]}],
        "action": row["action"],
        "recorded": row["recorded_at"].astimezone(UTC).isoformat(),
        "outcome": _FHIR_OUTCOME.get(outcome, "8"),
        "agent": agents,
        "source": {"observer": {"display": f"parcours-{row['chain']}"}},
        "entity": entities,
    }
    if outcome != "OK":
        event["outcomeDesc"] = f"{outcome} {row['outcome_reason']}".strip()
    return event


async def export_fhir(
    conn: asyncpg.Connection | asyncpg.Pool, since: datetime, until: datetime, patient: str | None = None
) -> dict[str, Any]:
    """A FHIR R4 Bundle (collection) of the AuditEvents of [since, until), optionally of one patient."""
    rows = await conn.fetch(
        "SELECT * FROM audit.events WHERE recorded_at >= $1 AND recorded_at < $2 "
        "AND ($3::text IS NULL OR patient = $3) ORDER BY recorded_at, chain, seq",
        since,
        until,
        patient,
    )
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "total": len(rows),
        "entry": [{"resource": fhir_audit_event(row)} for row in rows],
    }


async def _main_async(args: argparse.Namespace) -> int:
    conn = await asyncpg.connect(args.database_url)
    try:
        if args.command == "export":
            bundle = await export_fhir(conn, args.since, args.until, args.patient)
            print(json.dumps(bundle, ensure_ascii=False, indent=2))
            return 0
        report = await verify(conn)
    finally:
        await conn.close()
    for chain in report.chains:
        if chain.intact:
            print(f"chain {chain.chain}: {chain.rows} rows, intact")
        else:
            print(f"chain {chain.chain}: BROKEN at row {chain.first_broken_seq}: {chain.problem}")
    if not report.chains:
        print("no audit records yet")
    return 0 if report.intact else 1


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def running_hub_database_url(data_dir: Path | None = None) -> str | None:
    """The database of the hub `make run` started, from the `hub.json` it writes in its data folder
    (PARCOURS_DATA_DIR, else `.data` in the current folder); None when there is none."""
    folder = data_dir or Path(os.environ.get("PARCOURS_DATA_DIR") or ".data")
    try:
        found = json.loads((folder / "hub.json").read_text())["database_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, str) else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Parcours audit log tools. The database is --database-url, else PARCOURS_DATABASE_URL, "
        "else that of the hub `make run` started (.data/hub.json)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify_cmd = sub.add_parser("verify", help="verify every hash chain; exit 1 naming the first broken row")
    verify_cmd.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    export_cmd = sub.add_parser("export", help="print the audit events of a period as a FHIR R4 Bundle")
    export_cmd.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    export_cmd.add_argument("--since", type=_instant, required=True, help="ISO 8601 instant, inclusive")
    export_cmd.add_argument("--until", type=_instant, default=datetime.now(UTC), help="ISO 8601, exclusive")
    export_cmd.add_argument("--patient", help="only this patient (patients/{id})")
    args = parser.parse_args(argv)
    args.database_url = args.database_url or running_hub_database_url()
    if not args.database_url:
        parser.error(
            "no database: pass --database-url or set PARCOURS_DATABASE_URL "
            "(next to `make run`, run from the repository's folder: it reads .data/hub.json)"
        )
    raise SystemExit(asyncio.run(_main_async(args)))


if __name__ == "__main__":
    main()
