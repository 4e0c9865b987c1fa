"""The record documents of closed cases and their push to the DMP: one table shape, one seam.

When a case closes with its report, its workflow builds the R.6316-4 record as a FHIR R4 document
(services/kit/fhir.py) and calls its domain's `publish_record` activity, which

1. keeps the document in `<schema>.record_documents`, once per case (a retried activity finds it there and
   reuses it, so the document every participant reads is the one that was pushed), then
2. hands it to the `DmpPublisher`: the DMP (Mon espace santé) feed behind an interface.

The only publisher today is `RecordingDmpPublisher`: it writes what would be sent into
`<schema>.dmp_submissions` and sends nothing — this deployment has no DMP connection (that needs the
establishment's DMP-compatible LPS certification and its certificates). A real publisher implements the same
protocol; nothing else changes. The DMP is fed only under a qualified INS (RNIV): a document whose patient
identity is not qualified is recorded as SKIPPED with the reason IDENTITY_NOT_QUALIFIED.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

_SCHEMA = re.compile(r"[a-z][a-z0-9_]{0,62}")

RECORDED = "STATE_RECORDED"
SKIPPED = "STATE_SKIPPED"
IDENTITY_NOT_QUALIFIED = "IDENTITY_NOT_QUALIFIED"


def _checked(schema: str) -> str:
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    return schema


def records_migration(schema: str) -> str:
    """The SQL creating `<schema>.record_documents` and `<schema>.dmp_submissions`; for a migration."""
    schema = _checked(schema)
    return f"""
CREATE TABLE {schema}.record_documents (
    case_id uuid NOT NULL,
    document_id uuid NOT NULL,
    bundle jsonb NOT NULL,
    -- The patient's identity was qualified when it was written (what the DMP feed requires).
    identity_qualified boolean NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT record_documents_pkey PRIMARY KEY (case_id),
    CONSTRAINT record_documents_document_id_key UNIQUE (document_id),
    CONSTRAINT record_documents_is_a_document CHECK (
        bundle ->> 'resourceType' = 'Bundle' AND bundle ->> 'type' = 'document'
        AND bundle #>> '{{entry,0,resource,resourceType}}' = 'Composition'
    )
);
COMMENT ON TABLE {schema}.record_documents IS
    'R.6316-4 records of closed cases as FHIR R4 document bundles, one per case (services/kit/records.py).';
-- What the DMP adapter was given. The recording adapter keeps the payload it would send; a real one keeps
-- its outcome. Append-only in practice: one row per document.
CREATE TABLE {schema}.dmp_submissions (
    document_id uuid NOT NULL,
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    payload jsonb,
    submit_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dmp_submissions_pkey PRIMARY KEY (document_id),
    CONSTRAINT dmp_submissions_document_fkey FOREIGN KEY (document_id)
        REFERENCES {schema}.record_documents (document_id),
    CONSTRAINT dmp_submissions_state_known CHECK (state IN ('STATE_RECORDED', 'STATE_SKIPPED')),
    CONSTRAINT dmp_submissions_skipped_has_reason CHECK ((state = 'STATE_SKIPPED') = (reason <> ''))
);
COMMENT ON TABLE {schema}.dmp_submissions IS
    'What the DMP adapter was given for each record document (recording stand-in: nothing is sent).';
"""


@dataclass(frozen=True, kw_only=True)
class StoredDocument:
    case_id: uuid.UUID
    document_id: uuid.UUID
    bundle: dict[str, Any]
    identity_qualified: bool
    create_time: datetime


@dataclass(frozen=True, kw_only=True)
class Submission:
    state: str
    reason: str
    submit_time: datetime


class DmpPublisher(Protocol):
    """Pushes a record document to the patient's DMP."""

    async def publish(self, conn: Any, document: StoredDocument) -> Submission:
        """Submit `document` (idempotent per document id); the outcome kept."""


class RecordStore:
    """The SQL of `<schema>.record_documents` and `<schema>.dmp_submissions`."""

    def __init__(self, schema: str) -> None:
        schema = _checked(schema)
        self._insert = f"""
INSERT INTO {schema}.record_documents (case_id, document_id, bundle, identity_qualified)
VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (case_id) DO NOTHING
"""  # noqa: S608
        self._get = f"""
SELECT d.case_id, d.document_id, d.bundle, d.identity_qualified, d.create_time,
       s.state, s.reason, s.submit_time
FROM {schema}.record_documents d LEFT JOIN {schema}.dmp_submissions s ON s.document_id = d.document_id
WHERE d.case_id = $1
"""  # noqa: S608
        self.submit = f"""
INSERT INTO {schema}.dmp_submissions (document_id, state, reason, payload) VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT (document_id) DO NOTHING
"""  # noqa: S608
        self._submission = f"""
SELECT state, reason, submit_time FROM {schema}.dmp_submissions WHERE document_id = $1
"""  # noqa: S608

    async def keep(
        self, conn: Any, case_id: uuid.UUID, bundle: dict[str, Any], *, identity_qualified: bool
    ) -> StoredDocument:
        """Keep the case's document unless one is kept already; the one kept."""
        await conn.execute(
            self._insert, case_id, uuid.UUID(bundle["id"]), json.dumps(bundle), identity_qualified
        )
        found = await self.get(conn, case_id)
        assert found is not None
        return found[0]

    async def get(self, conn: Any, case_id: uuid.UUID) -> tuple[StoredDocument, Submission | None] | None:
        row = await conn.fetchrow(self._get, case_id)
        if row is None:
            return None
        bundle = row["bundle"]
        document = StoredDocument(
            case_id=row["case_id"],
            document_id=row["document_id"],
            bundle=json.loads(bundle) if isinstance(bundle, str) else bundle,
            identity_qualified=row["identity_qualified"],
            create_time=row["create_time"],
        )
        submission = (
            Submission(state=row["state"], reason=row["reason"], submit_time=row["submit_time"])
            if row["state"] is not None
            else None
        )
        return document, submission

    async def submission(self, conn: Any, document_id: uuid.UUID) -> Submission:
        row = await conn.fetchrow(self._submission, document_id)
        return Submission(state=row["state"], reason=row["reason"], submit_time=row["submit_time"])


class RecordingDmpPublisher:
    """The DMP adapter of a deployment without a DMP connection: writes what would be sent to
    `<schema>.dmp_submissions`, sends nothing (see the module docstring)."""

    def __init__(self, records: RecordStore) -> None:
        self._records = records

    async def publish(self, conn: Any, document: StoredDocument) -> Submission:
        if document.identity_qualified:
            state, reason, payload = RECORDED, "", json.dumps(document.bundle)
        else:
            state, reason, payload = SKIPPED, IDENTITY_NOT_QUALIFIED, None
        await conn.execute(self._records.submit, document.document_id, state, reason, payload)
        return await self._records.submission(conn, document.document_id)


async def keep_and_publish(
    pool: Any,
    records: RecordStore,
    publisher: DmpPublisher,
    case_id: uuid.UUID,
    build: Callable[[], Awaitable[tuple[dict[str, Any], bool]]],
) -> tuple[StoredDocument, Submission]:
    """A case's record document, built (`build` → the bundle and whether the identity is qualified) and kept
    once, then handed to the DMP adapter once: what a workflow's record activity does, retries included."""
    found = await records.get(pool, case_id)
    if found is None:
        bundle, qualified = await build()
        async with pool.acquire() as conn, conn.transaction():
            await records.keep(conn, case_id, bundle, identity_qualified=qualified)
        found = await records.get(pool, case_id)
        assert found is not None
    document, submission = found
    if submission is None:
        async with pool.acquire() as conn, conn.transaction():
            submission = await publisher.publish(conn, document)
    return document, submission
