"""The expertise schema's SQL: requests, candidates, attachments, thread, history, notifications.

Two writers, one owner each:
- the service inserts a request when it is created (`create_request`): its content, attachments, the
  creation's request id (the kit's idempotency ledger) and the outbox command that starts its workflow, in
  one transaction;
- the `Teleexpertise` workflow's persist activity writes every later change (`apply`): the request's new view,
  its candidates, and what the change appends (events, messages, notifications, the RPC's ledger entry), in
  one transaction. `version` only grows: a retried activity that lost the race against a newer change leaves
  the view alone, and its appended rows are keyed (case, sequence) so they are never written twice.

Reads return `parcours.expertise.v1` messages with their resource names built. Keys in: case UUIDs, RPPS
numbers; `practitioners/`, `establishments/`, `patients/` prefixes are added and removed here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.expertise.v1 import expertise_pb2
from parcours.type.v1 import practice_pb2

from services.expertise.models import (
    FHIR_STATUS,
    BillingOutcome,
    ProjectionWrite,
    ReportRecord,
    State,
)
from services.kit import names
from services.kit.cases import Outbox
from services.kit.idempotency import Call, Ledger
from services.kit.pagination import split_page
from services.kit.regions import REGION_ZONE_NAMES
from services.kit.reports import Scope

Request = expertise_pb2.TeleexpertiseRequest
# The service's idempotency ledger and workflow outbox (the kit's shapes, in this schema).
LEDGER = Ledger("expertise")
OUTBOX = Outbox("expertise")

PRACTITIONERS = "practitioners/"
ESTABLISHMENTS = "establishments/"
PATIENTS = "patients/"
REQUESTS = "teleexpertiseRequests/"

# --- Queries ------------------------------------------------------------------------------------------------

INSERT_REQUEST = """
INSERT INTO expertise.requests (
    case_id, request_id, requester, requester_establishment, ght, region, patient, patient_identity,
    specialty, requested_expert, question, clinical_context, urgency, requested_answer_time, routing,
    timeline, workflow_id, answer_due_time, create_time, update_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15::jsonb, $16::jsonb, $17, $14,
        $18, $18)
ON CONFLICT (request_id) DO NOTHING
"""
INSERT_ATTACHMENT = """
INSERT INTO expertise.attachments (case_id, attachment_id, position, title, media_type, size_bytes, sha256,
                                   content, uri, create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""

# Who the caller is to a case: one row whatever the answer, None when the case does not exist.
GET_ACCESS = """
SELECT r.state, r.requester, r.assigned_expert, r.patient,
       COALESCE(c.active, false) AS active_candidate, c.rpps IS NOT NULL AS offered
FROM expertise.requests r
LEFT JOIN expertise.candidates c ON c.case_id = r.case_id AND c.rpps = $2
WHERE r.case_id = $1
"""

_REQUEST_COLUMNS = """
r.case_id, r.state, r.requester, r.requester_establishment, r.ght, r.region, r.patient, r.patient_identity,
r.specialty, r.requested_expert, r.question, r.clinical_context, r.urgency, r.requested_answer_time,
r.answer_due_time, r.deadline_paused, r.breached, r.breach_time, r.escalation_level, r.reminders_sent,
r.assigned_expert, r.expert_establishment, r.report, r.billing, r.close_reason, r.create_time, r.accept_time,
r.close_time, r.update_time, r.version,
ARRAY(SELECT c.rpps FROM expertise.candidates c WHERE c.case_id = r.case_id AND c.active ORDER BY c.rpps)
    AS candidates
"""
# The column list is a constant: nothing of a request reaches the statement's text.
GET_REQUEST = f"SELECT {_REQUEST_COLUMNS} FROM expertise.requests r WHERE r.case_id = $1"  # noqa: S608
# `relation`: ANY (every request the caller may see), REQUESTER, ASSIGNED_EXPERT, CANDIDATE.
LIST_REQUESTS = f"""
SELECT {_REQUEST_COLUMNS} FROM expertise.requests r
WHERE (
        ($2 IN ('ANY', 'REQUESTER') AND r.requester = $1)
     OR ($2 IN ('ANY', 'ASSIGNED_EXPERT') AND r.assigned_expert = $1)
     OR ($2 IN ('ANY', 'CANDIDATE') AND r.state = 'AWAITING_EXPERT' AND EXISTS (
            SELECT 1 FROM expertise.candidates c WHERE c.case_id = r.case_id AND c.rpps = $1 AND c.active))
  )
  AND ($3::text IS NULL OR r.state = $3)
  AND ($4::timestamptz IS NULL OR (r.create_time, r.case_id) < ($4, $5::uuid))
ORDER BY r.create_time DESC, r.case_id DESC
LIMIT $6
"""  # noqa: S608
LIST_ATTACHMENTS = """
SELECT case_id, attachment_id, title, media_type, size_bytes, sha256, uri, create_time
FROM expertise.attachments WHERE case_id = ANY($1::uuid[]) ORDER BY case_id, position
"""
GET_ATTACHMENT = """
SELECT case_id, attachment_id, title, media_type, size_bytes, sha256, uri, create_time, content
FROM expertise.attachments WHERE case_id = $1 AND attachment_id = $2
"""
LIST_MESSAGES = """
SELECT sequence, author, kind, text, create_time FROM expertise.messages
WHERE case_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3
"""
LIST_EVENTS = """
SELECT sequence, kind, actor, detail, event_time FROM expertise.events
WHERE case_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3
"""
LIST_NOTIFICATIONS = """
SELECT notification_id, case_id, kind, create_time, channel, delivery_state FROM expertise.notifications
WHERE recipient = $1 AND notification_id > $2 AND ($3::uuid IS NULL OR case_id = $3)
ORDER BY notification_id LIMIT $4
"""
GET_START_DATA = """
SELECT case_id, requester, requester_establishment, ght, region, patient, specialty, routing, timeline,
       requested_answer_time, create_time, workflow_id, state
FROM expertise.requests WHERE case_id = ANY($1::uuid[])
"""

# One change of a case in one statement (one round trip): the view when its version is newer, the candidates
# with it, then what the change appends, each row keyed so that a retried write adds nothing twice. The
# notifications' foreign key to the events is checked at the end of the statement, once both are written.
APPLY_CHANGE = """
WITH view AS (
    UPDATE expertise.requests SET
        state = $2, version = $3, answer_due_time = $4, deadline_paused = $5, breached = $6, breach_time = $7,
        escalation_level = $8, reminders_sent = $9, assigned_expert = $10, expert_establishment = $11,
        accept_time = $12, close_time = $13, close_reason = $14, report = $15::jsonb, billing = $16::jsonb,
        update_time = now()
    WHERE case_id = $1 AND version < $3
    RETURNING case_id
), candidates AS (
    INSERT INTO expertise.candidates (case_id, rpps, active)
    SELECT view.case_id, offered.rpps, offered.rpps = ANY($18::text[])
    FROM view, unnest($17::text[]) AS offered (rpps)
    ON CONFLICT (case_id, rpps) DO UPDATE SET active = EXCLUDED.active
        WHERE expertise.candidates.active IS DISTINCT FROM EXCLUDED.active
), events AS (
    INSERT INTO expertise.events (case_id, sequence, kind, actor, detail, event_time)
    SELECT $1, * FROM unnest($19::int[], $20::text[], $21::text[], $22::text[], $23::timestamptz[])
    ON CONFLICT (case_id, sequence) DO NOTHING
), messages AS (
    INSERT INTO expertise.messages (case_id, sequence, author, kind, text, create_time)
    SELECT $1, * FROM unnest($24::int[], $25::text[], $26::text[], $27::text[], $28::timestamptz[])
    ON CONFLICT (case_id, sequence) DO NOTHING
), notifications AS (
    INSERT INTO expertise.notifications (case_id, event_sequence, recipient, kind, delivery_state)
    SELECT $1, n.sequence, n.recipient, n.kind, $36
    FROM unnest($29::int[], $30::text[], $31::text[]) AS n (sequence, recipient, kind)
    ON CONFLICT (case_id, event_sequence, recipient) DO NOTHING
), applied AS (
    INSERT INTO expertise.idempotency (request_id, method, actor, digest, resources)
    SELECT $32::uuid, $33, $34, $35, ARRAY['teleexpertiseRequests/' || $1::text] WHERE $32::uuid IS NOT NULL
    ON CONFLICT (request_id) DO NOTHING
)
SELECT count(*) FROM view
"""


# --- Values -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewAttachment:
    attachment_id: uuid.UUID
    title: str
    media_type: str
    size_bytes: int
    sha256: str | None
    content: bytes | None
    uri: str | None


@dataclass(frozen=True)
class NewRequest:
    case_id: uuid.UUID
    request_id: uuid.UUID
    requester: str  # RPPS
    requester_establishment: str  # FINESS
    ght: str | None
    region: str
    patient: uuid.UUID
    patient_identity: dict[str, str]
    specialty: str  # Specialty name without prefix
    requested_expert: str | None  # RPPS
    question: str
    clinical_context: str
    urgency: str  # ROUTINE | URGENT
    requested_answer_time: datetime
    routing: list[dict[str, Any]]  # [{source, members}]
    timeline: dict[str, Any]
    workflow_id: str
    create_time: datetime
    attachments: Sequence[NewAttachment]


@dataclass(frozen=True)
class Access:
    """The caller's relation to a case."""

    state: str
    patient: uuid.UUID
    requester: bool
    assigned_expert: bool
    active_candidate: bool
    offered: bool

    @property
    def visible(self) -> bool:
        """Requester, assigned expert, or a candidate while the request is unassigned."""
        return (
            self.requester
            or self.assigned_expert
            or (self.active_candidate and self.state == State.AWAITING_EXPERT)
        )


@dataclass(frozen=True)
class StartData:
    """What starting (or restarting) a case's workflow needs."""

    case_id: uuid.UUID
    requester: str
    requester_establishment: str
    ght: str
    region: str
    patient: uuid.UUID
    specialty: str
    routing: list[dict[str, Any]]
    timeline: dict[str, Any]
    requested_answer_time: datetime
    create_time: datetime
    workflow_id: str
    state: str

    @classmethod
    def of(cls, new: NewRequest) -> StartData:
        """The start data of a request just saved."""
        return cls(
            case_id=new.case_id,
            requester=new.requester,
            requester_establishment=new.requester_establishment,
            ght=new.ght or "",
            region=new.region,
            patient=new.patient,
            specialty=new.specialty,
            routing=new.routing,
            timeline=new.timeline,
            requested_answer_time=new.requested_answer_time,
            create_time=new.create_time,
            workflow_id=new.workflow_id,
            state=State.REQUESTED,
        )


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _iso_timestamp(value: str | None) -> Timestamp | None:
    return _timestamp(datetime.fromisoformat(value)) if value else None


def _rpps_name(rpps: str | None) -> str:
    return f"{PRACTITIONERS}{rpps}" if rpps else ""


def _rpps(name: str) -> str:
    return name.removeprefix(PRACTITIONERS)


def _rpps_or_none(name: str) -> str | None:
    return _rpps(name) or None


def _request_name(case_id: uuid.UUID) -> str:
    return f"{REQUESTS}{case_id}"


def _report(raw: str | None) -> expertise_pb2.Report | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return expertise_pb2.Report(
        summary=data["summary"],
        acts_and_prescriptions=data["acts_and_prescriptions"],
        participants=data["participants"],
        act_time=_iso_timestamp(data["act_time"]),
        technical_incidents=data["technical_incidents"],
        author=data["author"],
    )


def _billing(raw: str | None) -> expertise_pb2.Billing | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return expertise_pb2.Billing(
        state=expertise_pb2.Billing.State.Value(f"STATE_{data['state']}"),
        act_id=data["act_id"],
        lines=[expertise_pb2.BilledLine(**line) for line in data["lines"]],
        refusals=[expertise_pb2.BillingRefusal(**refusal) for refusal in data["refusals"]],
        record_time=_iso_timestamp(data.get("record_time")),
    )


def _patient_identity(raw: str) -> expertise_pb2.PatientIdentity:
    data = json.loads(raw)
    born = date.fromisoformat(data["birth_date"]) if data.get("birth_date") else None
    return expertise_pb2.PatientIdentity(
        birth_family_name=data.get("birth_family_name", ""),
        birth_given_names=data.get("birth_given_names", ""),
        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day) if born else None,
        sex=data.get("sex", ""),
        identity_status=data.get("identity_status", ""),
    )


def _attachment(row: asyncpg.Record, *, with_content: bool = False) -> expertise_pb2.Attachment:
    return expertise_pb2.Attachment(
        name=f"{_request_name(row['case_id'])}/attachments/{row['attachment_id']}",
        title=row["title"],
        media_type=row["media_type"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"] or "",
        uri=row["uri"] or "",
        content=bytes(row["content"]) if with_content and row["content"] is not None else b"",
        create_time=_timestamp(row["create_time"]),
    )


def _request(row: asyncpg.Record, attachments: Sequence[expertise_pb2.Attachment]) -> Request:
    task, service_request, split = FHIR_STATUS[row["state"]]
    return Request(
        name=_request_name(row["case_id"]),
        state=Request.State.Value(f"STATE_{row['state']}"),
        fhir_status=expertise_pb2.FhirStatus(
            task_status=task, service_request_status=service_request, split_active_status=split
        ),
        requester=_rpps_name(row["requester"]),
        requester_establishment=f"{ESTABLISHMENTS}{row['requester_establishment']}",
        ght=f"ghts/{row['ght']}" if row["ght"] else "",
        region=f"regions/{row['region']}",
        patient=f"{PATIENTS}{row['patient']}",
        patient_identity=_patient_identity(row["patient_identity"]),
        specialty=practice_pb2.Specialty.Value(f"SPECIALTY_{row['specialty']}"),
        requested_expert=_rpps_name(row["requested_expert"]),
        question=row["question"],
        clinical_context=row["clinical_context"],
        urgency=expertise_pb2.Urgency.Value(f"URGENCY_{row['urgency']}"),
        patient_consent=True,
        requested_answer_time=_timestamp(row["requested_answer_time"]),
        answer_due_time=_timestamp(row["answer_due_time"]),
        deadline_paused=row["deadline_paused"],
        breached=row["breached"],
        breach_time=_timestamp(row["breach_time"]),
        escalation_level=row["escalation_level"],
        reminders_sent=row["reminders_sent"],
        candidates=[_rpps_name(c) for c in row["candidates"]],
        assigned_expert=_rpps_name(row["assigned_expert"]),
        expert_establishment=(
            f"{ESTABLISHMENTS}{row['expert_establishment']}" if row["expert_establishment"] else ""
        ),
        attachments=attachments,
        report=_report(row["report"]),
        billing=_billing(row["billing"]),
        close_reason=row["close_reason"],
        create_time=_timestamp(row["create_time"]),
        accept_time=_timestamp(row["accept_time"]),
        close_time=_timestamp(row["close_time"]),
        update_time=_timestamp(row["update_time"]),
        version=row["version"],
    )


def _report_json(report: ReportRecord | None) -> str | None:
    return to_json(asdict(report)) if report is not None else None


def _billing_json(billing: BillingOutcome | None) -> str | None:
    return to_json(asdict(billing)) if billing is not None else None


def _start_data(row: Any) -> StartData:
    return StartData(
        case_id=row["case_id"],
        requester=row["requester"],
        requester_establishment=row["requester_establishment"],
        ght=row["ght"] or "",
        region=row["region"],
        patient=row["patient"],
        specialty=row["specialty"],
        routing=json.loads(row["routing"]),
        timeline=json.loads(row["timeline"]),
        requested_answer_time=row["requested_answer_time"],
        create_time=row["create_time"],
        workflow_id=row["workflow_id"],
        state=row["state"],
    )


class ExpertiseStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # --- creation (the service) --------------------------------------------------------------------------

    async def create_request(self, new: NewRequest, call: Call) -> tuple[uuid.UUID, bool]:
        """Insert the request, its attachments, its creation's request id and the `start` of its workflow in
        one transaction.

        Returns (case id, created): a request id already used returns the case it created, unchanged (two
        concurrent creations with one request id: the second waits for the first and gets its case).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            done = await LEDGER.claim(conn, call)
            if done is not None:
                return names.TELEEXPERTISE_REQUEST.parse_uuid(done.resource, "name"), False
            await conn.execute(
                INSERT_REQUEST,
                new.case_id,
                new.request_id,
                new.requester,
                new.requester_establishment,
                new.ght,
                new.region,
                new.patient,
                to_json(new.patient_identity),
                new.specialty,
                new.requested_expert,
                new.question,
                new.clinical_context,
                new.urgency,
                new.requested_answer_time,
                to_json(new.routing),
                to_json(new.timeline),
                new.workflow_id,
                new.create_time,
            )
            for position, attachment in enumerate(new.attachments):
                await conn.execute(
                    INSERT_ATTACHMENT,
                    new.case_id,
                    attachment.attachment_id,
                    position,
                    attachment.title,
                    attachment.media_type,
                    attachment.size_bytes,
                    attachment.sha256,
                    attachment.content,
                    attachment.uri,
                    new.create_time,
                )
            await LEDGER.record(conn, call, [names.TELEEXPERTISE_REQUEST.format(new.case_id)])
            await OUTBOX.enqueue(conn, new.case_id)
            return new.case_id, True

    async def applied(self, call: Call) -> uuid.UUID | None:
        """The case a request id applied to (None: not applied); REQUEST_ID_REUSED for another call."""
        entry = await LEDGER.find(self._pool, call)
        return names.TELEEXPERTISE_REQUEST.parse_uuid(entry.resource, "name") if entry is not None else None

    async def start_data(self, conn: Any, case_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, StartData]:
        """What starting each case's workflow needs (cases that exist)."""
        return {row["case_id"]: _start_data(row) for row in await conn.fetch(GET_START_DATA, list(case_ids))}

    async def state(self, case_id: uuid.UUID) -> str | None:
        found: str | None = await self._pool.fetchval(
            "SELECT state FROM expertise.requests WHERE case_id = $1", case_id
        )
        return found

    # --- reads -------------------------------------------------------------------------------------------

    async def access(self, case_id: uuid.UUID, rpps: str) -> Access | None:
        row = await self._pool.fetchrow(GET_ACCESS, case_id, rpps)
        if row is None:
            return None
        return Access(
            state=row["state"],
            patient=row["patient"],
            requester=row["requester"] == rpps,
            assigned_expert=row["assigned_expert"] == rpps,
            active_candidate=row["active_candidate"],
            offered=row["offered"],
        )

    async def _attachments(
        self, case_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[expertise_pb2.Attachment]]:
        found: dict[uuid.UUID, list[expertise_pb2.Attachment]] = {}
        if not case_ids:
            return found
        for row in await self._pool.fetch(LIST_ATTACHMENTS, list(case_ids)):
            found.setdefault(row["case_id"], []).append(_attachment(row))
        return found

    async def get_request(self, case_id: uuid.UUID) -> Request | None:
        row = await self._pool.fetchrow(GET_REQUEST, case_id)
        if row is None:
            return None
        attachments = await self._attachments([case_id])
        return _request(row, attachments.get(case_id, []))

    async def list_requests(
        self,
        rpps: str,
        *,
        relation: str,
        state: str | None,
        size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> tuple[list[Request], tuple[datetime, uuid.UUID] | None]:
        rows = await self._pool.fetch(
            LIST_REQUESTS,
            rpps,
            relation,
            state,
            after[0] if after else None,
            after[1] if after else None,
            size + 1,
        )
        page, last = split_page(rows, size)
        attachments = await self._attachments([r["case_id"] for r in page])
        items = [_request(r, attachments.get(r["case_id"], [])) for r in page]
        next_key = None if last is None else (last["create_time"], last["case_id"])
        return items, next_key

    async def get_attachment(
        self, case_id: uuid.UUID, attachment_id: uuid.UUID
    ) -> expertise_pb2.Attachment | None:
        row = await self._pool.fetchrow(GET_ATTACHMENT, case_id, attachment_id)
        return _attachment(row, with_content=True) if row is not None else None

    async def list_messages(
        self, case_id: uuid.UUID, *, size: int, after: int
    ) -> tuple[list[expertise_pb2.Message], int | None]:
        rows = await self._pool.fetch(LIST_MESSAGES, case_id, after, size + 1)
        page, last = split_page(rows, size)
        items = [
            expertise_pb2.Message(
                name=f"{_request_name(case_id)}/messages/{r['sequence']}",
                sequence=r["sequence"],
                author=_rpps_name(r["author"]),
                kind=expertise_pb2.Message.Kind.Value(f"KIND_{r['kind']}"),
                text=r["text"],
                create_time=_timestamp(r["create_time"]),
            )
            for r in page
        ]
        return items, (None if last is None else last["sequence"])

    async def list_events(
        self, case_id: uuid.UUID, *, size: int, after: int
    ) -> tuple[list[expertise_pb2.Event], int | None]:
        rows = await self._pool.fetch(LIST_EVENTS, case_id, after, size + 1)
        page, last = split_page(rows, size)
        items = [
            expertise_pb2.Event(
                name=f"{_request_name(case_id)}/events/{r['sequence']}",
                sequence=r["sequence"],
                kind=expertise_pb2.EventKind.Value(f"EVENT_KIND_{r['kind']}"),
                actor=_rpps_name(r["actor"]),
                detail=r["detail"],
                event_time=_timestamp(r["event_time"]),
            )
            for r in page
        ]
        return items, (None if last is None else last["sequence"])

    async def list_notifications(
        self, rpps: str, *, size: int, after: int, case_id: uuid.UUID | None
    ) -> tuple[list[expertise_pb2.Notification], int | None]:
        rows = await self._pool.fetch(LIST_NOTIFICATIONS, rpps, after, case_id, size + 1)
        page, last = split_page(rows, size)
        items = [
            expertise_pb2.Notification(
                name=f"notifications/{r['notification_id']}",
                teleexpertise_request=_request_name(r["case_id"]),
                kind=expertise_pb2.EventKind.Value(f"EVENT_KIND_{r['kind']}"),
                create_time=_timestamp(r["create_time"]),
                channel=expertise_pb2.NotificationChannel.Value(
                    r["channel"] or "NOTIFICATION_CHANNEL_UNSPECIFIED"
                ),
                delivery_state=expertise_pb2.DeliveryState.Value(r["delivery_state"]),
            )
            for r in page
        ]
        return items, (None if last is None else last["notification_id"])

    # --- changes (the workflow's persist activity) --------------------------------------------------------

    async def apply(self, write: ProjectionWrite) -> bool:
        """Write one change of a case; False when a newer change is already there (the view is kept)."""
        view = write.view
        events, messages, notices, applied = write.events, write.messages, write.notices, write.applied
        updated = await self._pool.fetchval(
            APPLY_CHANGE,
            uuid.UUID(view.case_id),
            view.state,
            view.version,
            view.answer_due,
            view.deadline_paused,
            view.breached,
            view.breach_time,
            view.escalation_level,
            view.reminders_sent,
            _rpps_or_none(view.assigned_expert),
            view.expert_establishment.removeprefix(ESTABLISHMENTS) or None,
            view.accept_time,
            view.close_time,
            view.close_reason,
            _report_json(view.report),
            _billing_json(view.billing),
            [_rpps(o) for o in view.offered],
            [_rpps(c) for c in view.candidates],
            [e.sequence for e in events],
            [e.kind for e in events],
            [_rpps(e.actor) for e in events],
            [e.detail for e in events],
            [e.time for e in events],
            [m.sequence for m in messages],
            [_rpps(m.author) for m in messages],
            [m.kind for m in messages],
            [m.text for m in messages],
            [m.time for m in messages],
            [n.event_sequence for n in notices],
            [_rpps(n.recipient) for n in notices],
            [n.kind for n in notices],
            uuid.UUID(applied.request_id) if applied is not None else None,
            applied.method if applied is not None else "",
            applied.actor if applied is not None else "",
            applied.digest if applied is not None else "",
            # A notice the workflow will deliver waits PENDING; else it is only recorded.
            "DELIVERY_STATE_PENDING" if write.deliver else "DELIVERY_STATE_RECORDED",
        )
        return bool(updated)

    # --- notifications that leave the hub (the workflow's delivery activity) -------------------------------

    async def delivery_facts(self, case_id: uuid.UUID) -> asyncpg.Record | None:
        """What routing and wording a case's notifications need (no free text)."""
        return await self._pool.fetchrow(DELIVERY_FACTS, case_id)

    async def delivery_state(self, case_id: uuid.UUID, sequence: int, rpps: str) -> asyncpg.Record | None:
        """The notification's delivery state and when it was recorded."""
        return await self._pool.fetchrow(DELIVERY_STATE, case_id, sequence, rpps)

    async def mark_delivery(
        self,
        case_id: uuid.UUID,
        sequence: int,
        rpps: str,
        *,
        channel: str | None,
        state: str,
        attempted: bool,
        error: str | None = None,
    ) -> None:
        await self._pool.execute(
            MARK_DELIVERY, case_id, sequence, rpps, channel, state, int(attempted), error
        )

    async def mark_delivery_failed(self, case_id: uuid.UUID, keys: Sequence[tuple[int, str]]) -> None:
        await self._pool.execute(
            MARK_FAILED, case_id, [sequence for sequence, _ in keys], [rpps for _, rpps in keys]
        )

    # --- activity reports --------------------------------------------------------------------------------

    async def activity_report(
        self,
        scope: Scope,
        first_month: date,
        last_month: date,
        *,
        ght: str | None,
        specialty: str | None,
        limit: int,
        after: tuple[date, str, str, str] | None,
    ) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                ACTIVITY_REPORT,
                first_month,
                last_month,
                scope.region_code,
                scope.ght_id,
                scope.finess,
                ght,
                specialty,
                *(after or (None, None, None, None)),
                limit,
            )
        )


DELIVERY_FACTS = """
SELECT case_id, requester, requester_establishment, assigned_expert, expert_establishment, region,
       answer_due_time
FROM expertise.requests WHERE case_id = $1
"""
_NOTICE_KEY = "case_id = $1 AND event_sequence = $2 AND recipient = $3"
DELIVERY_STATE = f"SELECT delivery_state, create_time FROM expertise.notifications WHERE {_NOTICE_KEY}"  # noqa: S608
# Only a pending notification moves: a delivered, failed or recorded one is settled.
MARK_DELIVERY = f"""
UPDATE expertise.notifications SET
    channel = $4, delivery_state = $5, attempts = attempts + $6, last_error = $7,
    deliver_time = CASE WHEN $5 = 'DELIVERY_STATE_DELIVERED' THEN now() END
WHERE {_NOTICE_KEY} AND delivery_state = 'DELIVERY_STATE_PENDING'
"""  # noqa: S608
MARK_FAILED = """
UPDATE expertise.notifications n SET delivery_state = 'DELIVERY_STATE_FAILED'
FROM unnest($2::int[], $3::text[]) AS k (sequence, recipient)
WHERE n.case_id = $1 AND n.event_sequence = k.sequence AND n.recipient = k.recipient
  AND n.delivery_state = 'DELIVERY_STATE_PENDING'
"""
# The civil time zone of a region (a DROM's own, else Europe/Paris), as SQL over `r.region`.
_REGION_ZONE = (
    "CASE r.region "
    + " ".join(f"WHEN '{code}' THEN '{zone}'" for code, zone in REGION_ZONE_NAMES.items())
    + " ELSE 'Europe/Paris' END"
)
# One row per (month, region, GHT, specialty) of the requests made in [$1, $2] (months local to the region):
# requests, outcomes, answer times (creation to report, over the answered ones), and deadlines: a request is
# due once its deadline is behind it — breached, answered, expired, or past due and not cancelled. Scope:
# a region ($3), a GHT ($4) or an establishment outside any GHT ($5); $6/$7 narrow to a GHT and a specialty;
# $8..$11 are the keyset of the last row seen.
ACTIVITY_REPORT = f"""
WITH request_rows AS (
    SELECT r.region, COALESCE(r.ght, '') AS ght, r.specialty,
           date_trunc('month', r.create_time AT TIME ZONE ({_REGION_ZONE}))::date AS month, r.state,
           r.breached, r.answer_due_time,
           CASE WHEN r.state = 'COMPLETED' THEN extract(epoch FROM r.close_time - r.create_time) END AS answer
    FROM expertise.requests r
    WHERE r.create_time >= $1::date - 2
      AND r.create_time < ($2::date + interval '1 month') + interval '2 days'
      AND ($3::text IS NULL OR r.region = $3) AND ($4::text IS NULL OR r.ght = $4)
      AND ($5::text IS NULL OR (r.ght IS NULL AND r.requester_establishment = $5))
      AND ($6::text IS NULL OR r.ght = $6) AND ($7::text IS NULL OR r.specialty = $7)
), report AS (
    SELECT month, region AS region_code, ght, specialty, count(*)::int AS requests,
           count(*) FILTER (WHERE state = 'COMPLETED')::int AS completed,
           count(*) FILTER (WHERE state = 'CANCELLED')::int AS cancelled,
           count(*) FILTER (WHERE state = 'EXPIRED')::int AS expired,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY answer) AS median_answer,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY answer) AS p90_answer,
           count(*) FILTER (WHERE breached OR state IN ('COMPLETED', 'EXPIRED')
                                 OR (state <> 'CANCELLED' AND answer_due_time < now()))::int AS due,
           count(*) FILTER (WHERE breached)::int AS breached
    FROM request_rows WHERE month BETWEEN $1 AND $2 GROUP BY 1, 2, 3, 4
)
SELECT * FROM report
WHERE $8::date IS NULL OR (month, region_code, ght, specialty) > ($8, $9, $10, $11)
ORDER BY month, region_code, ght, specialty
LIMIT $12
"""  # noqa: S608
