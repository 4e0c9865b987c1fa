"""The append-only, keyed, hash-chained and anchored audit log.

The audit interceptor appends a record for every RPC whose access policy says it touches patient data: who
(practitioner, establishment), action, resource, patient reference, time, outcome. Handlers name the resource
and patient with `audit_target()`, and a List the patients it returns with `audit_patients()`; the interceptor
does the rest, including for refused calls: one record per patient of the call (one with no patient when it
named none), appended together, so that an export for a patient shows every access to them, through lists
too.

Each row's hash is HMAC-SHA256(key, previous row's hash || canonical row bytes) under a key the database never
holds (`PARCOURS_AUDIT_KEYS`, `key_id:base64url,...`: the first key signs, every key verifies, so keys rotate;
the row keeps its key id). Rows written before keyed chains keep their plain SHA-256 hash and an empty key id.
`audit.chain_heads` holds the newest (seq, hash) of each chain. A service appends only through the database
functions `audit.lock_chain` / `audit.append_events` (its role has no privilege on the tables), and the head
of each chain is anchored outside PostgreSQL (services/kit/anchors.py). So:

- a row altered or removed in the middle, even with every later hash recomputed, is named by `verify`
  (recomputing needs the key);
- the newest rows removed with `chain_heads` moved back, or a chain cut short, is named by `verify` as soon
  as an anchor covered them.

`python -m services.kit.audit verify` walks every chain, checks it against the anchors and names the first
row that disagrees; `python -m services.kit.audit export --since ... --until ...` writes a FHIR R4 Bundle of
AuditEvent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import contextvars
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.kit.anchors import Anchor, AnchorReading, FolderAnchorStore, anchors_by_chain
from services.kit.fhir import establishment_identifier, practitioner_identifier

GENESIS = bytes(32)
KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


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


class AuditKeys:
    """Named HMAC keys of the audit chains; the first signs new rows and anchors, every one verifies.

    The repr shows key ids only: a keyring in a log or a traceback leaks no key material.
    """

    __slots__ = ("_keys", "_signing_id")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("no audit keys given (expected key_id:base64url,...)")
        found: dict[str, bytes] = {}
        for index, (key_id, key) in enumerate(keys, start=1):
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"audit key {index}: key id must match {_KEY_ID.pattern}")
            if key_id in found:
                raise ValueError(f"audit key {index} ({key_id!r}): duplicate key id")
            if len(key) < KEY_BYTES:
                raise ValueError(f"audit key {index} ({key_id!r}): at least {KEY_BYTES} bytes are needed")
            found[key_id] = key
        self._keys = found
        self._signing_id = keys[0][0]

    @classmethod
    def parse(cls, spec: str) -> AuditKeys:
        """`a2:<base64url>,a1:<base64url>`; errors name the entry, never its key material."""
        keys: list[tuple[str, bytes]] = []
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        if not entries:
            raise ValueError("no audit keys given (expected key_id:base64url,...)")
        for index, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id, encoded = key_id.strip(), encoded.strip()
            if not sep or not key_id or not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"audit key {index}: expected key_id:base64url")
            if not _B64URL.fullmatch(encoded):
                raise ValueError(f"audit key {index} ({key_id!r}): not base64url")
            try:
                key = base64.urlsafe_b64decode(encoded.rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4))
            except (binascii.Error, ValueError):
                raise ValueError(f"audit key {index} ({key_id!r}): not base64url") from None
            keys.append((key_id, key))
        return cls(keys)

    @staticmethod
    def generate(key_id: str = "a1") -> str:
        """A new keyring of one random key, in the settings format."""
        return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b'=').decode()}"

    @property
    def signing_id(self) -> str:
        return self._signing_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def mac(self, key_id: str, data: bytes) -> bytes | None:
        """HMAC-SHA256 of `data` under key `key_id`; None when this keyring does not hold it."""
        key = self._keys.get(key_id)
        return None if key is None else hmac.new(key, data, hashlib.sha256).digest()

    @staticmethod
    def same(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)

    def __repr__(self) -> str:
        return f"AuditKeys(key_ids={list(self._keys)!r})"


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

    def canonical(self, chain: str, seq: int, key_id: str = "") -> bytes:
        # A fixed field order and an exact UTC instant: the bytes are rebuilt identically from the row. A
        # keyed row's bytes end with its key id, so a row cannot be passed off as signed by another key.
        body: list[Any] = [
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
        if key_id:
            body.append(key_id)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, record: AuditRecord, chain: str, seq: int) -> bytes:
    """The unkeyed hash of rows written before keyed chains (key id '')."""
    return hashlib.sha256(prev_hash + record.canonical(chain, seq)).digest()


def row_hash(
    prev_hash: bytes, record: AuditRecord, chain: str, seq: int, key_id: str, keys: AuditKeys | None
) -> bytes | None:
    """A row's hash: keyed under `key_id` (None when `keys` does not hold it), or unkeyed for key id ''."""
    if not key_id:
        return chain_hash(prev_hash, record, chain, seq)
    if keys is None:
        return None
    return keys.mac(key_id, prev_hash + record.canonical(chain, seq, key_id))


_LOCK_CHAIN = "SELECT seq, hash FROM audit.lock_chain($1)"
_APPEND = "SELECT audit.append_events($1, $2::audit.event_input[])"


class AuditLog:
    """Appends records to one chain, with group commit.

    Appends of one chain are serialised by the lock on its head row; holding it for a few round trips per
    call would queue every audited RPC behind the others. So calls hand their record to one writer task that
    appends whatever has accumulated in a single transaction (lock the head, chain the keyed hashes, append
    the batch through `audit.append_events`, which moves the head), and each call still awaits the commit of
    its own record before it answers: a call whose audit record cannot be written fails (fail closed), and no
    answer leaves before its record is durable. `head` is the (seq, hash) this log last committed, which the
    anchorer signs.

    One round trip per batch when this process is the chain's only writer, as it usually is: the batch is
    chained on `head` and sent as the one statement `audit.append_events`, which locks the chain's head in
    its own (implicit) transaction and refuses rows that do not continue it (SQLSTATE 40001). Only when it
    refuses — another process wrote to the chain, or nothing was written yet — is the batch chained again on
    the head read under lock, in an explicit transaction (four round trips). The database checks the
    continuity either way; the fast path only skips reading a head this process already knows.
    """

    MAX_BATCH = 512

    def __init__(self, pool: asyncpg.Pool, chain: str, keys: AuditKeys) -> None:
        self._pool = pool
        self.chain = chain
        self._keys = keys
        self.head: tuple[int, bytes] | None = None
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
        records = [record for record, _ in batch]
        if self.head is not None:
            first_seq = self.head[0] + 1
            rows, last = self._chain(records, first_seq, self.head[1])
            try:
                await self._pool.fetchval(_APPEND, self.chain, rows)
            except asyncpg.SerializationError:
                pass  # the chain moved on elsewhere: chain the batch again on its locked head
            else:
                self.head = (first_seq + len(records) - 1, last)
                return first_seq
        async with self._pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow(_LOCK_CHAIN, self.chain)
            assert head is not None
            first_seq = int(head["seq"]) + 1
            rows, last = self._chain(records, first_seq, bytes(head["hash"]))
            await conn.fetchval(_APPEND, self.chain, rows)
        self.head = (first_seq + len(records) - 1, last)
        return first_seq

    def _chain(
        self, records: Sequence[AuditRecord], first_seq: int, prev: bytes
    ) -> tuple[list[tuple[Any, ...]], bytes]:
        """The rows of `records` chained from `prev` (keyed with the signing key), and the last row's hash."""
        key_id = self._keys.signing_id
        rows: list[tuple[Any, ...]] = []
        for offset, record in enumerate(records):
            seq = first_seq + offset
            digest = row_hash(prev, record, self.chain, seq, key_id, self._keys)
            assert digest is not None
            rows.append(
                (
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
                    key_id,
                    prev,
                    digest,
                )
            )
            prev = digest
        return rows, prev


@dataclass
class ChainReport:
    chain: str
    rows: int
    first_broken_seq: int | None = None
    problem: str = ""
    unkeyed_rows: int = 0
    anchored_up_to: int = 0

    @property
    def intact(self) -> bool:
        return self.first_broken_seq is None


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)
    anchors: int = 0
    # Anchors that could not be read or whose signature is not the audit key's.
    anchor_problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return all(c.intact for c in self.chains) and not self.anchor_problems


async def verify(
    conn: asyncpg.Connection | asyncpg.Pool,
    keys: AuditKeys | None,
    anchors: AnchorReading | None = None,
    batch: int = 5000,
) -> VerifyReport:
    """Walk every chain in order, check it against the anchors, and report the first broken row of each."""
    report = VerifyReport()
    reading = anchors or AnchorReading()
    report.anchor_problems.extend(reading.problems)
    trusted: list[Anchor] = []
    for anchor in reading.anchors:
        if keys is not None and anchor.signed_by(keys):
            trusted.append(anchor)
        else:
            report.anchor_problems.append(
                f"an anchor of chain {anchor.chain} at row {anchor.seq} is not signed by a key given "
                f"(key id {anchor.key_id!r})"
            )
    report.anchors = len(trusted)
    by_chain = anchors_by_chain(trusted)
    heads = await conn.fetch("SELECT chain, seq, hash FROM audit.chain_heads ORDER BY chain")
    chains: dict[str, asyncpg.Record | None] = {r["chain"]: r for r in heads}
    for row in await conn.fetch("SELECT DISTINCT chain FROM audit.events"):
        chains.setdefault(row["chain"], None)
    for chain in by_chain:
        chains.setdefault(chain, None)
    for chain in sorted(chains):
        report.chains.append(
            await _verify_chain(conn, chain, chains[chain], keys, by_chain.get(chain, []), batch)
        )
    return report


async def _verify_chain(
    conn: asyncpg.Connection | asyncpg.Pool,
    chain: str,
    head: asyncpg.Record | None,
    keys: AuditKeys | None,
    anchors: Sequence[Anchor],
    batch: int,
) -> ChainReport:
    result = ChainReport(chain=chain, rows=0, anchored_up_to=max((a.seq for a in anchors), default=0))
    pinned: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        pinned.setdefault(anchor.seq, []).append(anchor)

    def broken(seq: int, problem: str) -> ChainReport:
        result.first_broken_seq = seq
        result.problem = problem
        return result

    expected_seq = 1
    prev = GENESIS
    after = 0
    keyed_seen = False
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
                return broken(expected_seq, f"row {expected_seq} is missing (next row is {seq})")
            if bytes(row["prev_hash"]) != prev:
                return broken(seq, f"row {seq} does not follow row {seq - 1} (previous hash differs)")
            key_id = str(row["key_id"])
            if not key_id:
                if keyed_seen:
                    return broken(seq, f"row {seq} is unkeyed after keyed rows: it was rewritten")
                result.unkeyed_rows += 1
            else:
                keyed_seen = True
            if key_id and (keys is None or key_id not in keys.key_ids):
                return broken(seq, f"row {seq} is keyed with {key_id!r}, a key this verifier was not given")
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
            digest = row_hash(prev, record, chain, seq, key_id, keys)
            if digest is None or not hmac.compare_digest(digest, bytes(row["hash"])):
                return broken(seq, f"row {seq} was altered (its content no longer matches its hash)")
            for anchor in pinned.get(seq, ()):
                if anchor.hash != digest:
                    return broken(
                        seq,
                        f"row {seq} is not the row anchored at {_when(anchor)}: "
                        "the chain was rewritten at or before it",
                    )
            prev = digest
            expected_seq = seq + 1
            after = seq
    last_seq = expected_seq - 1
    if result.anchored_up_to > last_seq:
        return broken(
            last_seq + 1,
            f"the chain ends at row {last_seq} but row {result.anchored_up_to} was anchored at "
            f"{_when(max(anchors, key=lambda a: a.seq))}: rows {last_seq + 1} to {result.anchored_up_to} "
            "(at least) were removed",
        )
    if head is None:
        if last_seq:
            return broken(1, "the chain has rows but no head")
        return result
    if int(head["seq"]) != last_seq or bytes(head["hash"]) != prev:
        return broken(
            last_seq + 1,
            f"the chain ends at row {last_seq} but its head records row {head['seq']}: "
            "the newest rows were removed or the head was altered",
        )
    return result


def _when(anchor: Anchor) -> str:
    return anchor.anchored_at.astimezone(UTC).isoformat(timespec="seconds")


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
        anchor_dir: Path | None = args.anchor_dir
        reading = FolderAnchorStore(anchor_dir).read() if anchor_dir is not None else AnchorReading()
        report = await verify(conn, args.keys, reading)
    finally:
        await conn.close()
    for chain in report.chains:
        if chain.intact:
            line = f"chain {chain.chain}: {chain.rows} rows, intact"
            if chain.anchored_up_to:
                line += f" (anchored up to row {chain.anchored_up_to})"
            if chain.unkeyed_rows:
                line += f"; its first {chain.unkeyed_rows} rows predate keyed chains"
            print(line)
        else:
            print(f"chain {chain.chain}: BROKEN at row {chain.first_broken_seq}: {chain.problem}")
    for problem in report.anchor_problems:
        print(f"anchors: {problem}")
    if not report.chains:
        print("no audit records yet")
    if anchor_dir is None:
        print(
            "no anchors given (--anchor-dir, PARCOURS_AUDIT_ANCHOR_DIR): rows removed from the end of a "
            "chain, with its head moved back, cannot be told from a shorter chain"
        )
    else:
        print(f"{report.anchors} anchors read from {anchor_dir}")
    return 0 if report.intact else 1


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def running_hub_settings(data_dir: Path | None = None) -> dict[str, Any]:
    """What the hub `make run` started wrote in its data folder's `hub.json` (PARCOURS_DATA_DIR, else `.data`
    in the current folder); {} when there is none."""
    folder = data_dir or Path(os.environ.get("PARCOURS_DATA_DIR") or ".data")
    try:
        found = json.loads((folder / "hub.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def running_hub_database_url(data_dir: Path | None = None) -> str | None:
    """The database of the hub `make run` started (as the auditor role); None when there is none."""
    found = running_hub_settings(data_dir).get("database_url")
    return found if isinstance(found, str) else None


def _keys_from(spec: str | None, keys_file: str | None) -> AuditKeys | None:
    if spec:
        return AuditKeys.parse(spec)
    if keys_file:
        return AuditKeys.parse(Path(keys_file).read_text().strip())
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Parcours audit log tools. The database is --database-url, else PARCOURS_DATABASE_URL, "
        "else that of the hub `make run` started (.data/hub.json), whose audit keys and anchors `verify` "
        "reads too."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify_cmd = sub.add_parser(
        "verify", help="verify every chain against its keys and anchors; exit 1 naming the first broken row"
    )
    verify_cmd.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    verify_cmd.add_argument(
        "--keys-file", help="a file holding the audit keys (default: PARCOURS_AUDIT_KEYS, else hub.json's)"
    )
    verify_cmd.add_argument(
        "--anchor-dir",
        type=Path,
        default=Path(os.environ["PARCOURS_AUDIT_ANCHOR_DIR"])
        if os.environ.get("PARCOURS_AUDIT_ANCHOR_DIR")
        else None,
        help="the folder of the anchors (PARCOURS_AUDIT_ANCHOR_DIR, else hub.json's)",
    )
    export_cmd = sub.add_parser("export", help="print the audit events of a period as a FHIR R4 Bundle")
    export_cmd.add_argument("--database-url", default=os.environ.get("PARCOURS_DATABASE_URL"))
    export_cmd.add_argument("--since", type=_instant, required=True, help="ISO 8601 instant, inclusive")
    export_cmd.add_argument("--until", type=_instant, default=datetime.now(UTC), help="ISO 8601, exclusive")
    export_cmd.add_argument("--patient", help="only this patient (patients/{id})")
    args = parser.parse_args(argv)
    hub = running_hub_settings() if not args.database_url else {}
    args.database_url = args.database_url or hub.get("database_url")
    if not args.database_url:
        parser.error(
            "no database: pass --database-url or set PARCOURS_DATABASE_URL "
            "(next to `make run`, run from the repository's folder: it reads .data/hub.json)"
        )
    if args.command == "verify":
        try:
            args.keys = _keys_from(
                os.environ.get("PARCOURS_AUDIT_KEYS") if not args.keys_file else None,
                args.keys_file or hub.get("audit_keys_file"),
            )
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read the audit keys: {exc}")
        if args.keys is None:
            parser.error(
                "no audit keys: set PARCOURS_AUDIT_KEYS or pass --keys-file (the keys the hub signs with)"
            )
        if args.anchor_dir is None and hub.get("audit_anchor_dir"):
            args.anchor_dir = Path(hub["audit_anchor_dir"])
    raise SystemExit(asyncio.run(_main_async(args)))


if __name__ == "__main__":
    main()
