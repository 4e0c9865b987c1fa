"""The billing service's SQL: the catalog, the ledger, the quota counters (schema `billing`).

Keys in, resources out: methods take ids (act id, charge UUID, RPPS, FINESS, patient UUID) and return
`parcours.billing.v1` messages with their resource names built (`charges/{uuid}`, `patients/{uuid}`), or the
in-memory `Catalog`. Money is integer cents in the database and `google.type.Money` out.

Transactions. Methods that write take `tx`, a connection inside a transaction opened by
`async with store.transaction() as tx:`; reads take an optional `tx`. Constraint violations become domain
errors with a stable reason chosen by constraint name, never the driver's message (it may quote a key).

Recording an act (the servicer's sequence, in one transaction):

    await store.lock_act(tx, act_id)                # concurrent recordings of one act queue here
    recorded = await store.get_act(act_id, tx=tx)   # a retry, or the loser of a race: replay the first
    slot = await store.take_quota_slot(tx, key, max)  # per quota line, keys in sorted order (no deadlock)
    await store.insert_act(tx, ...); await store.insert_charges(tx, ...)

The ledger tables refuse UPDATE and DELETE (trigger); a reversal is a new line. Quota counters are a
projection that a reversal decrements; they are updated with row locks, never read-then-written.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from parcours.billing.v1 import billing_pb2

from services.billing import catalog as catalog_module
from services.billing.catalog import Catalog
from services.billing.rules import PairWindow
from services.kit.db import constraint_errors
from services.kit.errors import DomainError, FailedPrecondition
from services.kit.idempotency import Ledger
from services.kit.pagination import split_page
from services.kit.reports import Scope

# First key of the billing service's two-key advisory locks (ASCII "bil").
_ADVISORY_LOCK_CLASS = 0x0062696C
# The service's idempotency ledger (the kit's shape, in this schema).
LEDGER = Ledger("billing")

# --- Queries ------------------------------------------------------------------------------------------------

GET_CURRENT_VERSION = """
SELECT v.catalog, v.version, v.sha256, v.loaded_at FROM billing.catalogs c
JOIN billing.catalog_versions v ON v.catalog = c.catalog AND v.version = c.current_version
WHERE c.catalog = $1
"""
GET_ENTRIES = """
SELECT * FROM billing.catalog_entries WHERE catalog = $1 AND version = $2 ORDER BY position
"""
GET_PARAMETERS = """
SELECT * FROM billing.catalog_parameters WHERE catalog = $1 AND version = $2 ORDER BY name, effective_from
"""

GET_QUOTA_USED = "SELECT counter_key, used FROM billing.quota_counters WHERE counter_key = ANY($1::text[])"
# Takes a slot or returns no row when the quota is full; the row lock makes concurrent takers queue, and the
# WHERE is evaluated on the row as the previous taker left it.
TAKE_QUOTA_SLOT = """
INSERT INTO billing.quota_counters AS q (counter_key, used) VALUES ($1, 1)
ON CONFLICT (counter_key) DO UPDATE SET used = q.used + 1, update_time = now() WHERE q.used < $2
RETURNING used
"""
RELEASE_QUOTA_SLOT = """
UPDATE billing.quota_counters SET used = used - 1, update_time = now() WHERE counter_key = $1 AND used > 0
"""
# Téléconsultations counted by the remote cap, net of reversals.
COUNT_REMOTE = """
SELECT coalesce(sum(CASE kind WHEN 'KIND_CHARGE' THEN 1 ELSE -1 END), 0)::integer
FROM billing.charges
WHERE practitioner_rpps = $1 AND counts_toward_remote_cap AND act_date BETWEEN $2 AND $3
"""

# Téléconsultations a practitioner gave a patient over a period (acts whose performer line is not reversed):
# the alternance check's floor of remote acts (§7.10).
COUNT_PAIR_TELECONSULTATIONS = """
SELECT count(DISTINCT c.act_id)::integer
FROM billing.charges c
WHERE c.patient_id = $2 AND c.act_date BETWEEN $3 AND $4 AND c.practitioner_rpps = $1
  AND c.kind = 'KIND_CHARGE' AND c.biller_role = 'BILLER_ROLE_PERFORMER'
  AND c.act_type = 'ACT_TYPE_TELECONSULTATION'
  AND NOT EXISTS (SELECT 1 FROM billing.charges r WHERE r.reverses = c.charge_id)
"""

LOCK = "SELECT pg_advisory_xact_lock($1::integer, hashtext($2::text))"
GET_ACT = "SELECT act_id, digest, quote, patient_id, establishment FROM billing.acts WHERE act_id = $1"
INSERT_ACT = """
INSERT INTO billing.acts (act_id, request_id, digest, patient_id, establishment, act_type, act_time, act_date,
    quote, recorded_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
INSERT_CHARGE = """
INSERT INTO billing.charges (charge_id, kind, act_id, line, code, label, biller_role, practitioner_rpps,
    exploitant, establishment, patient_id, act_type, act_time, act_date, amount_cents, extra_fee_cents,
    reimbursement_rate_bp, reimbursement_cents, participation_cents, overseas, catalog_entry, catalog_version,
    unconfirmed, quota_key, quota_slot, counts_toward_remote_cap, reverses, reversal_reason, reversal_note,
    request_id, region_code, ght_id, prescriber_rpps)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
    $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)
RETURNING *, NULL::uuid AS reversed_by, NULL::text AS reversed_reason, NULL::text AS reversed_note
"""
# A line with what reversed it (for a charge) — `r` is the reversal line of `c`, if any.
_CHARGE_COLUMNS = """
c.*, r.charge_id AS reversed_by, r.reversal_reason AS reversed_reason, r.reversal_note AS reversed_note
FROM billing.charges c LEFT JOIN billing.charges r ON r.reverses = c.charge_id
"""
GET_CHARGE = f"SELECT {_CHARGE_COLUMNS} WHERE c.charge_id = $1"
CHARGES_OF_ACT = f"SELECT {_CHARGE_COLUMNS} WHERE c.act_id = $1 ORDER BY c.seq"
# Optional filters are `($n IS NULL OR ...)` so that one static statement serves every combination.
LIST_CHARGES = f"""
SELECT {_CHARGE_COLUMNS}
WHERE c.act_date BETWEEN $1 AND $2
  AND ($3::text IS NULL OR c.practitioner_rpps = $3)
  AND ($4::text IS NULL OR c.establishment = $4)
  AND ($5::uuid IS NULL OR c.patient_id = $5)
  AND ($6::timestamptz IS NULL OR (c.act_time, c.seq) > ($6, $7::bigint))
ORDER BY c.act_time, c.seq
LIMIT $8
"""


# The activity report: one row per (month of the act, region, GHT, code) of the lines whose act date is in
# [$1, the end of $2's month], where they were billed, reversals deducted in the month of their act. One
# statement per kind of scope, so that each can use its index: `{scope}` is one of _REPORT_SCOPES (fixed
# text), then $4/$5/$6 narrow to a region, a GHT and an act type and $7..$10 are the keyset of the last row
# seen.
_ACTIVITY_REPORT = """
WITH report AS (
    SELECT date_trunc('month', c.act_date)::date AS month, coalesce(c.region_code, '') AS region_code,
           coalesce(c.ght_id, '') AS ght, c.code,
           count(*) FILTER (WHERE c.kind = 'KIND_CHARGE')::int AS charges,
           count(*) FILTER (WHERE c.kind = 'KIND_REVERSAL')::int AS reversals,
           sum(c.amount_cents)::bigint AS amount_cents
    FROM billing.charges c
    WHERE c.act_date >= $1 AND c.act_date < $2::date + interval '1 month' AND {scope}
      AND ($4::text IS NULL OR c.region_code = $4) AND ($5::text IS NULL OR c.ght_id = $5)
      AND ($6::text IS NULL OR c.act_type = $6)
    GROUP BY 1, 2, 3, 4
)
SELECT * FROM report
WHERE $7::date IS NULL OR (month, region_code, ght, code) > ($7, $8, $9, $10)
ORDER BY month, region_code, ght, code
LIMIT $11
"""
# $3: the scope's region code, GHT id or FINESS (unused, NULL, for the hub's).
_REPORT_SCOPES = {
    "hub": "$3::text IS NULL",
    "region": "c.region_code = $3",
    "ght": "c.ght_id = $3",
    "establishment": "c.establishment = $3",
}
ACTIVITY_REPORTS = {kind: _ACTIVITY_REPORT.format(scope=where) for kind, where in _REPORT_SCOPES.items()}


_CONSTRAINT_ERRORS: dict[str, Callable[[], DomainError]] = {
    "charges_reverses_key": lambda: FailedPrecondition(
        "CHARGE_ALREADY_REVERSED", "the charge was already reversed"
    ),
    "charges_line_key": lambda: FailedPrecondition(
        "CHARGE_ALREADY_REVERSED", "the charge was already reversed"
    ),
}


# --- Rows to resources --------------------------------------------------------------------------------------


def money(cents: int, target: object) -> None:
    """Write integer cents (EUR) into a google.type.Money field: units and nanos carry the same sign."""
    sign = -1 if cents < 0 else 1
    whole, rest = divmod(abs(cents), 100)
    target.currency_code = "EUR"  # type: ignore[attr-defined]
    target.units = sign * whole  # type: ignore[attr-defined]
    target.nanos = sign * rest * 10_000_000  # type: ignore[attr-defined]


def set_date(day: date, target: object) -> None:
    """Write a date into a google.type.Date field (that module ships no type information)."""
    target.year = day.year  # type: ignore[attr-defined]
    target.month = day.month  # type: ignore[attr-defined]
    target.day = day.day  # type: ignore[attr-defined]


def timestamp(instant: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(instant)
    return ts


def charge_from_row(row: asyncpg.Record) -> billing_pb2.Charge:
    charge = billing_pb2.Charge(
        name=f"charges/{row['charge_id']}",
        kind=billing_pb2.Charge.Kind.Value(row["kind"]),
        act_id=row["act_id"],
        line=row["line"],
        code=row["code"],
        label=row["label"],
        biller_role=billing_pb2.BillerRole.Value(row["biller_role"]),
        practitioner=f"practitioners/{row['practitioner_rpps']}" if row["practitioner_rpps"] else "",
        exploitant=row["exploitant"] or "",
        establishment=f"establishments/{row['establishment']}",
        patient=f"patients/{row['patient_id']}",
        act_type=billing_pb2.ActType.Value(row["act_type"]),
        act_time=timestamp(row["act_time"]),
        reimbursement_rate_bp=row["reimbursement_rate_bp"],
        overseas=row["overseas"],
        catalog_entry=row["catalog_entry"],
        catalog_version=row["catalog_version"],
        unconfirmed=row["unconfirmed"],
        quota_slot=row["quota_slot"] or 0,
        counts_toward_remote_cap=row["counts_toward_remote_cap"],
        create_time=timestamp(row["create_time"]),
    )
    set_date(row["act_date"], charge.act_date)
    if row["prescriber_rpps"]:
        # §7.18: the teleconsultant prescribes the assistance, on the téléconsultation's date.
        charge.prescriber = f"practitioners/{row['prescriber_rpps']}"
        set_date(row["act_date"], charge.prescription_date)
    money(row["amount_cents"], charge.amount)
    money(row["extra_fee_cents"], charge.extra_fee)
    money(row["reimbursement_cents"], charge.reimbursement)
    money(row["participation_cents"], charge.participation)
    if row["kind"] == "KIND_REVERSAL":
        charge.reverses = f"charges/{row['reverses']}"
        charge.reversal_reason = billing_pb2.ReversalReason.Value(row["reversal_reason"])
        charge.reversal_note = row["reversal_note"] or ""
    elif row["reversed_by"] is not None:
        charge.reversed_by = f"charges/{row['reversed_by']}"
        charge.reversal_reason = billing_pb2.ReversalReason.Value(row["reversed_reason"])
        charge.reversal_note = row["reversed_note"] or ""
    return charge


# --- Inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChargeRow:
    """A ledger line to insert (a charge, or a reversal when `reverses` is set)."""

    kind: str
    act_id: str
    line: int
    code: str
    label: str
    biller_role: str
    practitioner_rpps: str | None
    exploitant: str | None
    establishment: str  # FINESS
    patient_id: uuid.UUID
    act_type: str
    act_time: datetime
    act_date: date
    amount_cents: int
    extra_fee_cents: int
    reimbursement_rate_bp: int
    reimbursement_cents: int
    participation_cents: int
    overseas: bool
    catalog_entry: str
    catalog_version: str
    unconfirmed: bool
    quota_key: str | None
    quota_slot: int | None
    counts_toward_remote_cap: bool
    reverses: uuid.UUID | None = None
    reversal_reason: str | None = None
    reversal_note: str | None = None
    request_id: uuid.UUID | None = None
    # Where the line is billed: its establishment's region code and GHT id (see 0005.billing-activity-report).
    region_code: str | None = None
    ght_id: str | None = None
    # An assistant's line (§7.18): the teleconsultant's RPPS, the prescriber (see 0007).
    prescriber_rpps: str | None = None


@dataclass(frozen=True)
class RecordedAct:
    act_id: str
    digest: bytes
    quote: bytes
    patient_id: uuid.UUID
    establishment: str


@dataclass(frozen=True)
class StoredCharge:
    """A ledger line as the servicer needs it to authorise and reverse it."""

    charge: billing_pb2.Charge
    row: asyncpg.Record


@dataclass(frozen=True)
class ChargeFilter:
    start: date
    end: date
    practitioner_rpps: str | None = None
    establishment: str | None = None  # FINESS
    patient_id: uuid.UUID | None = None


# --- The store ----------------------------------------------------------------------------------------------


class BillingStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction, committed on exit; constraint violations become domain errors."""
        async with constraint_errors(_CONSTRAINT_ERRORS), self._pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _read(self, tx: asyncpg.Connection | None) -> AsyncIterator[asyncpg.Connection]:
        if tx is not None:
            yield tx
            return
        async with self._pool.acquire() as conn:
            yield conn

    # --- catalog ---

    async def load_catalog(self, name: str = catalog_module.CATALOG) -> Catalog | None:
        """The current version of a catalog, or None when none was loaded (migrations not applied)."""
        async with self._pool.acquire() as conn:
            version = await conn.fetchrow(GET_CURRENT_VERSION, name)
            if version is None:
                return None
            entries = await conn.fetch(GET_ENTRIES, name, version["version"])
            parameters = await conn.fetch(GET_PARAMETERS, name, version["version"])
        return catalog_module.from_rows(version, entries, parameters)

    # --- facts ---

    async def quota_used(
        self, keys: Sequence[str], *, tx: asyncpg.Connection | None = None
    ) -> dict[str, int]:
        if not keys:
            return {}
        async with self._read(tx) as conn:
            rows = await conn.fetch(GET_QUOTA_USED, list(keys))
        return {row["counter_key"]: row["used"] for row in rows}

    async def remote_recorded(self, rpps: str, year: int, *, tx: asyncpg.Connection | None = None) -> int:
        async with self._read(tx) as conn:
            count = await conn.fetchval(COUNT_REMOTE, rpps, date(year, 1, 1), date(year, 12, 31))
        return int(count)

    async def pair_teleconsultations(
        self, window: PairWindow, *, tx: asyncpg.Connection | None = None
    ) -> int:
        async with self._read(tx) as conn:
            count = await conn.fetchval(
                COUNT_PAIR_TELECONSULTATIONS,
                window.rpps,
                uuid.UUID(window.patient.removeprefix("patients/")),
                window.start,
                window.end,
            )
        return int(count)

    # --- recording ---

    async def lock(self, tx: asyncpg.Connection, key: str) -> None:
        """Serialise, until the end of the transaction, every transaction locking the same key."""
        await tx.execute(LOCK, _ADVISORY_LOCK_CLASS, key)

    async def get_act(self, act_id: str, *, tx: asyncpg.Connection | None = None) -> RecordedAct | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_ACT, act_id)
        if row is None:
            return None
        return RecordedAct(
            act_id=row["act_id"],
            digest=bytes(row["digest"]),
            quote=bytes(row["quote"]),
            patient_id=row["patient_id"],
            establishment=row["establishment"],
        )

    async def take_quota_slot(self, tx: asyncpg.Connection, key: str, maximum: int) -> int | None:
        """The slot taken (1-based), or None when the quota is full."""
        used = await tx.fetchval(TAKE_QUOTA_SLOT, key, maximum)
        return None if used is None else int(used)

    async def release_quota_slot(self, tx: asyncpg.Connection, key: str) -> None:
        await tx.execute(RELEASE_QUOTA_SLOT, key)

    async def insert_act(
        self,
        tx: asyncpg.Connection,
        *,
        act_id: str,
        request_id: uuid.UUID,
        digest: bytes,
        patient_id: uuid.UUID,
        establishment: str,
        act_type: str,
        act_time: datetime,
        act_date: date,
        quote: bytes,
        recorded_by: str,
    ) -> None:
        await tx.execute(
            INSERT_ACT,
            act_id,
            request_id,
            digest,
            patient_id,
            establishment,
            act_type,
            act_time,
            act_date,
            quote,
            recorded_by,
        )

    async def insert_charges(
        self, tx: asyncpg.Connection, rows: Sequence[ChargeRow]
    ) -> list[billing_pb2.Charge]:
        """Write ledger lines (an act has one to a few: one statement each, returning the line written)."""
        written = []
        for r in rows:
            row = await tx.fetchrow(
                INSERT_CHARGE,
                uuid.uuid4(),
                r.kind,
                r.act_id,
                r.line,
                r.code,
                r.label,
                r.biller_role,
                r.practitioner_rpps,
                r.exploitant,
                r.establishment,
                r.patient_id,
                r.act_type,
                r.act_time,
                r.act_date,
                r.amount_cents,
                r.extra_fee_cents,
                r.reimbursement_rate_bp,
                r.reimbursement_cents,
                r.participation_cents,
                r.overseas,
                r.catalog_entry,
                r.catalog_version,
                r.unconfirmed,
                r.quota_key,
                r.quota_slot,
                r.counts_toward_remote_cap,
                r.reverses,
                r.reversal_reason,
                r.reversal_note,
                r.request_id,
                r.region_code,
                r.ght_id,
                r.prescriber_rpps,
            )
            written.append(charge_from_row(row))
        return written

    # --- reading the ledger ---

    async def charges_of_act(
        self, act_id: str, *, tx: asyncpg.Connection | None = None
    ) -> list[billing_pb2.Charge]:
        async with self._read(tx) as conn:
            rows = await conn.fetch(CHARGES_OF_ACT, act_id)
        return [charge_from_row(row) for row in rows if row["kind"] == "KIND_CHARGE"]

    async def get_charge(
        self, charge_id: uuid.UUID, *, tx: asyncpg.Connection | None = None
    ) -> StoredCharge | None:
        async with self._read(tx) as conn:
            row = await conn.fetchrow(GET_CHARGE, charge_id)
        return None if row is None else StoredCharge(charge_from_row(row), row)

    async def list_charges(
        self, where: ChargeFilter, page_size: int, after: tuple[datetime, int] | None = None
    ) -> tuple[list[billing_pb2.Charge], tuple[datetime, int] | None]:
        """A page of lines by act time then recording order, and the key to continue after (or None)."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                LIST_CHARGES,
                where.start,
                where.end,
                where.practitioner_rpps,
                where.establishment,
                where.patient_id,
                after[0] if after else None,
                after[1] if after else None,
                page_size + 1,
            )
        page, last = split_page(rows, page_size)
        next_key = None if last is None else (last["act_time"], int(last["seq"]))
        return [charge_from_row(row) for row in page], next_key

    async def export_charges(self, where: ChargeFilter, limit: int) -> list[billing_pb2.Charge]:
        """Every line of the filter, up to `limit` + 1 (the caller refuses a larger export)."""
        charges, _ = await self.list_charges(where, limit + 1)
        return charges

    # --- activity reports ---

    async def activity_report(
        self,
        scope: Scope,
        first_month: date,
        last_month: date,
        *,
        region: str | None,
        ght: str | None,
        act_type: str | None,
        limit: int,
        after: tuple[date, str, str, str] | None,
    ) -> list[asyncpg.Record]:
        """Rows of `ACTIVITY_REPORTS` for the scope (`services.kit.reports.scope_of`), narrowed to a region
        code, a GHT id and an act type when given, up to `limit`."""
        if scope.finess is not None:
            kind, key = "establishment", scope.finess
        elif scope.ght_id is not None:
            kind, key = "ght", scope.ght_id
        elif scope.region_code is not None:
            kind, key = "region", scope.region_code
        else:
            kind, key = "hub", None
        return list(
            await self._pool.fetch(
                ACTIVITY_REPORTS[kind],
                first_month,
                last_month,
                key,
                region,
                ght,
                act_type,
                *(after or (None, None, None, None)),
                limit,
            )
        )
