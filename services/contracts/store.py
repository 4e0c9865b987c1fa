"""The contracts schema's SQL.

Two writers, one owner each (see the migration's header):
- the service: a case when it is created (its resource, its workflow's input, the creation's ledger entry and
  the outbox command that starts its workflow, in one transaction), the views of a case, documents' bytes,
  decision previews, policy versions, the agrément register, motivation templates, who the staff are;
- the case's workflow, through its projection activity (`apply`): every later change — the case's columns and
  state when its version is newer, and what the change appends (timeline events, messages, comments,
  opinions, documents, notifications, the RPC's ledger entry), keyed so that a retried write appends nothing
  twice; and, in the same transaction, the coverage version when what the case grants changed.

Coverage reads holdings from the cases' columns (`holder`, `holding_from`, `holding_until`...), which the
projection derives from the state (`holding_of`): the first and last civil day a contract, declaration or
agrément is or was in force.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, TypeVar

import asyncpg
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from services.contracts import clock
from services.contracts.coverage import Holding
from services.contracts.models import (
    AgrementCase,
    AgrementState,
    ArsContractCase,
    ArsContractState,
    CaseKind,
    CaseWrite,
    DeclarationState,
    IntermediaryReviewCase,
    OperatorDeclarationCase,
)
from services.contracts.policy import RegionPolicy
from services.kit import names
from services.kit.cases import Outbox
from services.kit.idempotency import Call, Entry, Ledger
from services.kit.pagination import split_page

LEDGER = Ledger("contracts")
OUTBOX = Outbox("contracts")
T = TypeVar("T")

# --- the workflow's dataclasses as JSON (the Temporal payload converter's own encoding) ---------------------

_PAYLOADS = DataConverter.default.payload_converter
_JSON = {"encoding": b"json/plain"}


def to_json(value: object) -> str:
    """A workflow dataclass as Temporal encodes it (datetimes as ISO strings)."""
    return _PAYLOADS.to_payloads([value])[0].data.decode()


def from_json(text: str | bytes, type_: type[T]) -> T:
    data = text.encode() if isinstance(text, str) else text
    value: T = _PAYLOADS.from_payloads([Payload(metadata=_JSON, data=data)], [type_])[0]
    return value


STATE_TYPES: Mapping[str, type[Any]] = {
    CaseKind.ARS_CONTRACT: ArsContractCase,
    CaseKind.OPERATOR_DECLARATION: OperatorDeclarationCase,
    CaseKind.INTERMEDIARY_CONTRACT_REVIEW: IntermediaryReviewCase,
    CaseKind.AGREMENT_APPLICATION: AgrementCase,
}
AnyCase = ArsContractCase | OperatorDeclarationCase | IntermediaryReviewCase | AgrementCase


def state_of(write: CaseWrite) -> AnyCase:
    for value in (write.ars_contract, write.operator_declaration, write.intermediary_review, write.agrement):
        if value is not None:
            return value
    raise ValueError("a case write carries its state")


# --- documents' bytes --------------------------------------------------------------------------------------


class DocumentStore(Protocol):
    """Where documents' bytes live, by their SHA-256 (content-addressed: a second copy is not stored twice).

    PostgreSQL by default (`PgDocumentStore`); an object store implements the same two calls."""

    async def put(self, content: bytes) -> str:
        """Store the bytes; their SHA-256 (hex)."""
        ...

    async def get(self, sha256: str) -> bytes | None:
        """The bytes of a digest, or None."""
        ...


class PgDocumentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        await self._pool.execute(
            "INSERT INTO contracts.document_blobs (sha256, content) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            digest,
            content,
        )
        return digest

    async def get(self, sha256: str) -> bytes | None:
        found = await self._pool.fetchval(
            "SELECT content FROM contracts.document_blobs WHERE sha256 = $1", sha256
        )
        return bytes(found) if found is not None else None


# --- holdings: what a case grants, in civil days ------------------------------------------------------------

FOREVER = date(9999, 12, 31)


@dataclass(frozen=True, kw_only=True)
class HoldingColumns:
    holder: str | None = None
    act_type: str = ""
    visa: bool = False
    first_day: date | None = None
    last_day: date | None = None


def _day(instant: datetime | None, zone: str) -> date | None:
    return clock.local_date(instant, zone) if instant is not None else None


def _until(first: date | None, last: date | None) -> tuple[date | None, date | None]:
    """A period that ended before it started was in force on no day."""
    if first is None or last is None or last < first:
        return None, None
    return first, last


def holding_of(state: AnyCase) -> HoldingColumns:
    """The days a case is (or was) in force, as coverage reads them; a contract terminated in June still
    covered its May acts, so a closed case keeps its holding up to the day before it closed."""
    core = state.core
    zone = core.time_zone
    closed_day = _day(core.closed_at, zone)
    before_close = closed_day - timedelta(days=1) if closed_day is not None else None
    if isinstance(state, ArsContractCase):
        if state.valid_from is None or state.valid_until is None:
            return HoldingColumns()
        first = _day(state.valid_from, zone)
        last = _day(state.valid_until, zone)
        assert last is not None
        last -= timedelta(days=1)  # valid_until is exclusive: the instant after the last day
        if core.state in (ArsContractState.TERMINATED,) and before_close is not None:
            last = min(last, before_close)
        first, last = _until(first, last)
        return HoldingColumns(
            holder=core.promoter,
            act_type=state.activity.act_type,
            visa=state.visa_required and bool(state.visa_given_by),
            first_day=first,
            last_day=last,
        )
    if isinstance(state, OperatorDeclarationCase):
        if state.effective_from is None or core.state == DeclarationState.REJECTED:
            return HoldingColumns()
        first = _day(state.effective_from, zone)
        last = FOREVER if core.state not in DeclarationState.CLOSED else before_close
        first, last = _until(first, last)
        return HoldingColumns(
            holder=core.promoter, act_type="TELESURVEILLANCE", first_day=first, last_day=last
        )
    if isinstance(state, AgrementCase):
        if state.valid_from is None or state.valid_until is None:
            return HoldingColumns()
        first = _day(state.valid_from, zone)
        last = _day(state.valid_until, zone)
        assert last is not None
        last -= timedelta(days=1)
        if core.state == AgrementState.WITHDRAWN and before_close is not None:
            last = min(last, before_close)
        first, last = _until(first, last)
        return HoldingColumns(
            holder=state.company, act_type="TELECONSULTATION", first_day=first, last_day=last
        )
    return HoldingColumns()


# --- rows ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NewCase:
    """A case as its creation saves it."""

    case_id: uuid.UUID
    kind: str
    request_id: uuid.UUID
    workflow_id: str
    region: str
    departement: str
    ght: str
    promoter: str
    filer: str
    creator: str
    title: str
    resource: bytes
    start_state: str  # to_json(the workflow's input)
    state: str
    create_time: datetime


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What visibility and the choice of actor need of a case."""

    case_id: uuid.UUID
    kind: str
    region: str
    departement: str
    promoter: str
    filer: str
    ordre_territory: str
    state: str
    closed: bool
    version: int
    experts: tuple[str, ...]

    @property
    def name(self) -> str:
        return names.CONTRACTS_CASE.format(CaseKind.COLLECTION[self.kind], self.case_id)


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """Who may see which cases: ARS staff their region, an Ordre reviewer the cases routed to its territory, a
    promoter (an establishment's staff, a practitioner) its own, an expert the cases it was asked an opinion
    on, a hub operator every case."""

    region: str | None = None
    territory: str | None = None
    everything: bool = False
    parties: tuple[str, ...] = ()
    me: str = ""

    def sees(self, scope: Scope) -> bool:
        return (
            self.everything
            or (self.region is not None and scope.region == self.region)
            or (self.territory is not None and scope.ordre_territory == self.territory)
            or bool({scope.promoter, scope.filer}.intersection(self.parties))
            or (bool(self.me) and self.me in scope.experts)
        )


# The same rule in SQL ($1 region, $2 territory, $3 everything, $4 parties, $5 me), for lists and counters.
VISIBLE = """(
    $3::boolean
    OR ($1::text IS NOT NULL AND c.region = $1)
    OR ($2::text IS NOT NULL AND c.ordre_territory = $2)
    OR c.promoter = ANY($4::text[]) OR c.filer = ANY($4::text[])
    OR ($5::text <> '' AND EXISTS (
        SELECT 1 FROM contracts.opinions o WHERE o.case_id = c.case_id AND o.expert = $5))
)"""


def viewer_args(viewer: Viewer) -> list[Any]:
    return [viewer.region, viewer.territory, viewer.everything, list(viewer.parties), viewer.me]


@dataclass(frozen=True, kw_only=True)
class CaseFilter:
    """ListCases / CountCases filters (values as the tables store them)."""

    kinds: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    region: str = ""
    ght: str = ""
    departement: str = ""
    establishment: str = ""
    # ME (the caller or `claimant`), UNCLAIMED, OTHERS ('' any)
    assignment: str = ""
    claimant: str = ""
    due_before: datetime | None = None
    overdue_only: bool = False
    expiring_within_days: int = 0
    include_closed: bool = False


# Filter columns after the visibility rule's five parameters.
_FILTERS = """
  AND (cardinality($6::text[]) = 0 OR c.kind = ANY($6::text[]))
  AND (cardinality($7::text[]) = 0 OR c.state = ANY($7::text[]))
  AND (cardinality($8::text[]) = 0 OR c.step = ANY($8::text[]))
  AND ($9::text = '' OR c.region = $9)
  AND ($10::text = '' OR c.ght = $10)
  AND ($11::text = '' OR c.departement = $11)
  AND ($12::text = '' OR c.promoter = $12 OR c.filer = $12)
  AND ($13::text = ''
       OR ($13 = 'ME' AND c.claimant = $14)
       OR ($13 = 'UNCLAIMED' AND c.step <> '' AND c.claimant = '')
       OR ($13 = 'OTHERS' AND c.claimant <> '' AND c.claimant <> $14))
  AND ($15::timestamptz IS NULL OR c.due_time < $15)
  AND (NOT $16::boolean OR c.overdue)
  AND ($17::integer = 0 OR (c.expire_time IS NOT NULL AND NOT c.closed
                            AND c.expire_time < now() + make_interval(days => $17)))
"""

# ListNotifications ($1-$5 the visibility rule, $6 the caller's roles, $7 after this id, $8 the limit):
# rows addressed to the caller (by name: $5 or a party it acts for; or a role it holds) of cases it may see,
# one per event (its first row addressed to the caller: told by role and by name, one item).
_TOLD = "(n.recipient = $5 OR n.recipient = ANY($4::text[]) OR n.role = ANY($6::text[]))"
LIST_NOTIFICATIONS = f"""
SELECT n.notification_id, n.case_id, c.kind, n.kind AS event, n.recipient <> '' AS personal, n.create_time
FROM contracts.notifications n JOIN contracts.cases c ON c.case_id = n.case_id
WHERE n.notification_id > $7 AND {_TOLD} AND {VISIBLE}
  AND NOT EXISTS (
      SELECT 1 FROM contracts.notifications e
      WHERE e.case_id = n.case_id AND e.event_sequence = n.event_sequence
        AND e.notification_id < n.notification_id
        AND {_TOLD.replace("n.", "e.")})
ORDER BY n.notification_id LIMIT $8
"""  # noqa: S608 (every fragment is a constant of this module)

# GetCaseActivityReport ($1-$5 the visibility rule, $6 the region or '').
_REPORT_SCOPE = f"{VISIBLE} AND ($6::text = '' OR c.region = $6)"
_REPORT_STATES = f"""
SELECT c.kind, c.state, count(*)::integer AS count FROM contracts.cases c
WHERE {_REPORT_SCOPE}
GROUP BY c.kind, c.state ORDER BY c.kind, c.state
"""  # noqa: S608 (constants of this module)
# $7 the time zone, $8 and $9 the first days of the first and last months.
_REPORT_LEAD_TIMES = f"""
SELECT date_trunc('month', c.decide_time AT TIME ZONE $7)::date AS month,
       count(*)::integer AS decisions,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.decide_time - c.create_time))
           AS median_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM c.decide_time - c.create_time))
           AS p90_seconds
FROM contracts.cases c
WHERE {_REPORT_SCOPE} AND c.decide_time IS NOT NULL
  AND c.decide_time >= ($8::date)::timestamp AT TIME ZONE $7
  AND c.decide_time < (($9::date + interval '1 month')::date)::timestamp AT TIME ZONE $7
GROUP BY 1 ORDER BY 1
"""  # noqa: S608 (constants of this module)
# $7 the time zone, $8 the number of days ahead (the inbox's `expiring_within_days` rule).
_REPORT_EXPIRATIONS = f"""
SELECT (c.expire_time AT TIME ZONE $7)::date AS expire_date, c.kind, count(*)::integer AS count
FROM contracts.cases c
WHERE {_REPORT_SCOPE} AND c.expire_time IS NOT NULL AND NOT c.closed
  AND c.expire_time < now() + make_interval(days => $8)
GROUP BY 1, 2 ORDER BY 1, 2
"""  # noqa: S608 (constants of this module)

# The tabs (`k` is the caller: its role names, $18, and its identity for claims, $19).
_TO_PROCESS = """(NOT c.closed AND c.step <> '' AND (
    (c.step_role = ANY(k.roles) AND c.step_role <> 'PROMOTER' AND (c.claimant = '' OR c.claimant = k.me))
    OR (c.step_role = 'PROMOTER' AND (c.promoter = ANY($4::text[]) OR c.filer = ANY($4::text[])))))"""
_FOLLOWED = "(NOT c.closed AND c.claimant <> '' AND c.claimant = k.me)"
_PROCESSED = "c.closed"
_ALL = "TRUE"  # closed cases only with include_closed (the filter below)
_DUE_SOON = """(NOT c.closed AND (
    (c.step <> '' AND c.due_time < now() + interval '7 days')
    OR (c.legal_deadline_time IS NOT NULL AND NOT c.legal_clock_suspended
        AND c.legal_deadline_time < now() + interval '7 days')
    OR (c.expire_time IS NOT NULL AND c.expire_time < now() + interval '90 days')))"""
TABS = {
    "TO_PROCESS": _TO_PROCESS,
    "FOLLOWED": _FOLLOWED,
    "PROCESSED": _PROCESSED,
    "ALL": _ALL,
    "DUE_SOON": _DUE_SOON,
}

# Sort keys: (key expression, descending).
ORDERS = {
    "DUE_TIME": ("coalesce(least(c.due_time, c.legal_deadline_time), 'infinity'::timestamptz)", False),
    "UPDATE_TIME": ("c.update_time", True),
    "EXPIRE_TIME": ("coalesce(c.expire_time, 'infinity'::timestamptz)", False),
}

_SUMMARY_COLUMNS = """
c.case_id, c.kind, c.state, c.title, c.region, c.departement, c.ght, c.promoter, c.step, c.step_role,
    c.claimant,
c.claim_time, c.step_open_time, c.due_time, c.reminded, c.overdue, c.escalated, c.legal_deadline_time,
c.legal_clock_suspended, c.expire_time, c.open_opinions, c.update_time, c.version, c.closed
"""

GET_SCOPE = """
SELECT c.case_id, c.kind, c.region, c.departement, c.promoter, c.filer, c.ordre_territory, c.state, c.closed,
       c.version, ARRAY(SELECT o.expert FROM contracts.opinions o WHERE o.case_id = c.case_id) AS experts
FROM contracts.cases c WHERE c.case_id = $1
"""
GET_CASE = """
SELECT c.*, (SELECT count(*) FROM contracts.opinions o WHERE o.case_id = c.case_id AND o.state = 'REQUESTED')
            AS requested_opinions
FROM contracts.cases c WHERE c.case_id = $1
"""
LIST_KIND = f"""
SELECT c.* FROM contracts.cases c
WHERE c.kind = $6 AND {VISIBLE}
  AND ($7::text = '' OR c.state = $7)
  AND ($8::text = '' OR c.promoter = $8 OR c.filer = $8)
  AND ($9::text = '' OR c.ordre_territory = $9)
  AND ($10::text = '' OR c.promoter = $10)
  AND ($11::timestamptz IS NULL OR (c.create_time, c.case_id) < ($11, $12::uuid))
ORDER BY c.create_time DESC, c.case_id DESC
LIMIT $13
"""  # noqa: S608 (the visibility rule is a constant)

INSERT_CASE = """
INSERT INTO contracts.cases (case_id, kind, request_id, workflow_id, region, departement, ght, promoter,
    filer,
                             creator, title, resource, start_state, state, create_time, update_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15, $15)
"""
GET_START = (
    "SELECT case_id, kind, start_state, create_time FROM contracts.cases WHERE case_id = ANY($1::uuid[])"
)

# The projection.
LOCK_CASE = """
SELECT version, event_count, holder, holding_act_type, holding_visa, holding_from, holding_until
FROM contracts.cases WHERE case_id = $1 FOR UPDATE
"""
UPDATE_VIEW = """
UPDATE contracts.cases SET
    state = $2, version = $3, case_state = $4::jsonb, step = $5, step_role = $6, claimant = $7,
        claim_time = $8,
    step_open_time = $9, due_time = $10, reminded = $11, overdue = $12, escalated = $13,
    legal_deadline_time = $14, legal_clock_suspended = $15, expire_time = $16, closed = $17,
        ordre_territory = $18,
    open_opinions = $19, decider = $20, decide_time = $21, close_time = $22, holder = $23,
        holding_act_type = $24,
    holding_visa = $25, holding_from = $26, holding_until = $27, update_time = $28
WHERE case_id = $1 AND version < $3
"""
INSERT_EVENT = """
INSERT INTO contracts.events (case_id, position, workflow_sequence, kind, actor, step, detail, items,
    event_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
KNOWN_EVENTS = """
SELECT workflow_sequence FROM contracts.events WHERE case_id = $1 AND workflow_sequence = ANY($2::int[])
"""
SET_EVENT_COUNT = "UPDATE contracts.cases SET event_count = $2 WHERE case_id = $1"
INSERT_MESSAGE = """
INSERT INTO contracts.messages (case_id, sequence, author, from_promoter, text, items, request_id,
    create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (case_id, sequence) DO NOTHING
"""
INSERT_COMMENT = """
INSERT INTO contracts.comments (case_id, sequence, author, text, request_id, create_time)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (case_id, sequence) DO NOTHING
"""
UPSERT_OPINION = """
INSERT INTO contracts.opinions (case_id, opinion_id, state, expert, requester, due_time, reminded, verdict,
                                request_time, answer_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (case_id, opinion_id) DO UPDATE SET
    state = EXCLUDED.state, reminded = EXCLUDED.reminded, verdict = EXCLUDED.verdict,
    answer_time = EXCLUDED.answer_time
WHERE contracts.opinions.state = 'REQUESTED'
"""
OPINION_TEXTS = """
UPDATE contracts.opinions SET
    question = CASE WHEN $3 <> '' AND question = '' THEN $3 ELSE question END,
    answer = CASE WHEN $4 <> '' AND answer = '' THEN $4 ELSE answer END,
    revocation_reason = CASE WHEN $5 <> '' AND revocation_reason = '' THEN $5 ELSE revocation_reason END
WHERE case_id = $1 AND opinion_id = $2
"""
INSERT_DOCUMENT = """
INSERT INTO contracts.documents (case_id, document_id, version, document_type, title, media_type, size_bytes,
                                 sha256, uploader, request_id, create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (case_id, document_id, version) DO NOTHING
"""
INSERT_NOTIFICATION = """
INSERT INTO contracts.notifications (case_id, event_sequence, recipient, role, kind)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_id, event_sequence, recipient, role) DO NOTHING
"""
BUMP_COVERAGE = (
    "UPDATE contracts.coverage_version SET version = version + 1, update_time = now() RETURNING version"
)
GET_COVERAGE_VERSION = "SELECT version, update_time FROM contracts.coverage_version"

RECORD_VIEW = """
WITH numbered AS (
    UPDATE contracts.cases SET event_count = event_count + 1 WHERE case_id = $1 RETURNING event_count
)
INSERT INTO contracts.events (case_id, position, kind, actor, detail, event_time)
SELECT $1, event_count, 'VIEWED', $2, $3, now() FROM numbered
"""

LIST_EVENTS = """
SELECT position, kind, actor, step, detail, items, event_time FROM contracts.events
WHERE case_id = $1 AND position > $2 ORDER BY position LIMIT $3
"""
LIST_MESSAGES = """
SELECT sequence, author, from_promoter, text, items, create_time FROM contracts.messages
WHERE case_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3
"""
MESSAGE_OF_REQUEST = """
SELECT case_id, sequence, author, from_promoter, text, items, create_time FROM contracts.messages
WHERE request_id = $1
"""
LIST_COMMENTS = """
SELECT sequence, author, text, create_time FROM contracts.comments
WHERE case_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3
"""
COMMENT_OF_REQUEST = (
    "SELECT case_id, sequence, author, text, create_time FROM contracts.comments WHERE request_id = $1"
)
_OPINION_COLUMNS = """
case_id, opinion_id, state, expert, requester, question, due_time, reminded, verdict, answer,
    revocation_reason,
request_time, answer_time
"""
LIST_OPINIONS = f"""
SELECT {_OPINION_COLUMNS} FROM contracts.opinions
WHERE case_id = $1 AND (request_time, opinion_id) > ($2, $3::uuid) ORDER BY request_time, opinion_id LIMIT $4
"""  # noqa: S608
GET_OPINION = f"SELECT {_OPINION_COLUMNS} FROM contracts.opinions WHERE case_id = $1 AND opinion_id = $2"  # noqa: S608
_DOCUMENT_COLUMNS = """
case_id, document_id, version, document_type, title, media_type, size_bytes, sha256, uploader, create_time
"""
LIST_DOCUMENTS = f"""
SELECT {_DOCUMENT_COLUMNS} FROM contracts.documents d
WHERE case_id = $1 AND ($2::boolean OR version = (
        SELECT max(version) FROM contracts.documents l WHERE l.case_id = d.case_id
            AND l.document_id = d.document_id))
  AND (create_time, document_id, version) > ($3, $4, $5)
ORDER BY create_time, document_id, version LIMIT $6
"""  # noqa: S608
GET_DOCUMENT = f"""
SELECT {_DOCUMENT_COLUMNS} FROM contracts.documents
WHERE case_id = $1 AND document_id = $2 AND ($3 = 0 OR version = $3) ORDER BY version DESC LIMIT 1
"""  # noqa: S608
DOCUMENT_OF_REQUEST = f"SELECT {_DOCUMENT_COLUMNS} FROM contracts.documents WHERE request_id = $1"  # noqa: S608

_DECISION_COLUMNS = """
decision_id, case_id, kind, reference, step, motivation, preview_sha256, signed_sha256, signer, sign_time,
create_time
"""
INSERT_DECISION = """
INSERT INTO contracts.decisions (decision_id, case_id, kind, reference, step, motivation, preview_sha256,
    creator,
                                 request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
GET_DECISION = f"SELECT {_DECISION_COLUMNS} FROM contracts.decisions WHERE decision_id = $1"  # noqa: S608
DECISION_OF_REQUEST = f"SELECT {_DECISION_COLUMNS} FROM contracts.decisions WHERE request_id = $1"  # noqa: S608
LATEST_PREVIEW = f"""
SELECT {_DECISION_COLUMNS} FROM contracts.decisions
WHERE case_id = $1 AND kind = ANY($2::text[]) AND step = $3 AND signed_sha256 IS NULL
ORDER BY create_time DESC LIMIT 1
"""  # noqa: S608
SIGN_DECISION = """
UPDATE contracts.decisions SET signed_sha256 = $2, signer = $3, sign_time = $4
WHERE decision_id = $1 AND signed_sha256 IS NULL
"""
NEXT_REFERENCE = """
INSERT INTO contracts.decision_counters (prefix, year, last) VALUES ($1, $2, 1)
ON CONFLICT (prefix, year) DO UPDATE SET last = contracts.decision_counters.last + 1
RETURNING last
"""

LIST_POLICIES = """
SELECT region, version, effective_date, profile, cnom_offerers, note, publisher, publish_time
FROM contracts.region_policies WHERE region = $1 AND version > $2 ORDER BY version LIMIT $3
"""
ALL_POLICIES = """
SELECT region, version, effective_date, profile, cnom_offerers, note, publisher, publish_time
FROM contracts.region_policies WHERE region = $1 ORDER BY version
"""
INSERT_POLICY = """
INSERT INTO contracts.region_policies (region, version, effective_date, profile, cnom_offerers, note,
    publisher,
                                       publish_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

HOLDINGS = """
SELECT case_id, kind, holder, region, holding_from, holding_until, holding_act_type, holding_visa
FROM contracts.cases
WHERE holding_from IS NOT NULL AND holder = ANY($1::text[])
  AND (region = $2 OR kind = 'AGREMENT_APPLICATION')
  AND holding_from <= $3 AND holding_until >= $3
"""

INSERT_COMPANY = """
INSERT INTO contracts.companies (siren, legal_name, ans_certificate, creator) VALUES ($1, $2, $3, $4)
"""
GET_COMPANY = (
    "SELECT siren, legal_name, ans_certificate, create_time FROM contracts.companies WHERE siren = $1"
)
LIST_COMPANIES = """
SELECT siren, legal_name, ans_certificate, create_time FROM contracts.companies c
WHERE siren > $1 AND (NOT $2::boolean OR EXISTS (
    SELECT 1 FROM contracts.cases a WHERE a.kind = 'AGREMENT_APPLICATION'
        AND a.holder = 'teleconsultationCompanies/' || c.siren
      AND a.holding_from <= $3 AND a.holding_until >= $3))
ORDER BY siren LIMIT $4
"""
AGREMENTS_OF = """
SELECT c.case_id, c.state, c.holding_from, c.holding_until,
       EXISTS (SELECT 1 FROM contracts.events e WHERE e.case_id = c.case_id AND e.kind = 'GRANTED_BY_SILENCE')
           AS by_silence
FROM contracts.cases c
WHERE c.kind = 'AGREMENT_APPLICATION' AND c.holder = $1 AND c.holding_from IS NOT NULL
ORDER BY c.holding_from DESC
"""

INSERT_TEMPLATE = """
INSERT INTO contracts.motivation_templates (template_id, region, title, text, kinds, creator, create_time)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
LIST_TEMPLATES = """
SELECT template_id, region, title, text, kinds, creator, create_time FROM contracts.motivation_templates
WHERE region = $1 AND title > $2 ORDER BY title LIMIT $3
"""
GET_TEMPLATE = """
SELECT template_id, region, title, text, kinds, creator, create_time FROM contracts.motivation_templates
WHERE template_id = $1
"""

UPSERT_STAFF = """
INSERT INTO contracts.staff (staff, roles, region, territory, seen_time) VALUES ($1, $2, $3, $4, now())
ON CONFLICT (staff) DO UPDATE SET roles = EXCLUDED.roles, region = EXCLUDED.region,
    territory = EXCLUDED.territory, seen_time = now()
"""
GET_STAFF = "SELECT staff, roles, region, territory FROM contracts.staff WHERE staff = $1"


@dataclass(frozen=True, kw_only=True)
class StaffMember:
    staff: str
    roles: tuple[str, ...]
    region: str
    territory: str


def list_cases_query(tab: str, order: str, *, include_closed: bool) -> str:
    """ListCases' SQL for a tab and an order ($1-$5 the visibility rule, $6-$17 the filters, $18-$19 the
    caller, $20-$21 the keyset, $22 the limit). The default order over open cases reads
    `cases_inbox_due_idx` (migration 0004) in order."""
    key, descending = ORDERS[order]
    closed = "" if include_closed or tab == "PROCESSED" else " AND NOT c.closed"
    comparison = "<" if descending else ">"
    direction = "DESC" if descending else "ASC"
    return f"""
WITH k AS (SELECT $18::text[] AS roles, $19::text AS me)
SELECT {_SUMMARY_COLUMNS}, {key} AS sort_key FROM contracts.cases c, k
WHERE {VISIBLE} {_FILTERS} AND {TABS[tab]}{closed}
  AND ($20::timestamptz IS NULL OR ({key}, c.case_id) {comparison} ($20, $21::uuid))
ORDER BY sort_key {direction}, c.case_id {direction}
LIMIT $22
"""  # noqa: S608 (every fragment is a constant of this module)


class ContractsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # --- creations (the service) ----------------------------------------------------------------------------

    async def create_case(self, new: NewCase, call: Call) -> tuple[uuid.UUID, bool]:
        """The case, its creation's ledger entry and the `start` of its workflow, in one transaction.

        (case id, created): a request id already used returns the case it created (a concurrent retry waits
        for the first and gets its case)."""
        async with self._pool.acquire() as conn, conn.transaction():
            done = await LEDGER.claim(conn, call)
            if done is not None:
                return names.CONTRACTS_CASE.parse_uuid(done.resource, "name"), False
            await conn.execute(
                INSERT_CASE,
                new.case_id,
                new.kind,
                new.request_id,
                new.workflow_id,
                new.region,
                new.departement,
                new.ght,
                new.promoter,
                new.filer,
                new.creator,
                new.title,
                new.resource,
                new.start_state,
                new.state,
                new.create_time,
            )
            await LEDGER.record(
                conn, call, [names.CONTRACTS_CASE.format(CaseKind.COLLECTION[new.kind], new.case_id)]
            )
            await OUTBOX.enqueue(conn, new.case_id)
            return new.case_id, True

    async def applied(self, call: Call) -> Entry | None:
        """What a request id did the first time (None: never applied); REQUEST_ID_REUSED for another call."""
        return await LEDGER.find(self._pool, call)

    async def start_data(
        self, conn: Any, case_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[str, str, datetime]]:
        """(kind, workflow input JSON, creation time) of each case that exists."""
        rows = await conn.fetch(GET_START, list(case_ids))
        return {r["case_id"]: (r["kind"], r["start_state"], r["create_time"]) for r in rows}

    async def purge_ledger(self, older_than: timedelta) -> int:
        return await LEDGER.purge(self._pool, older_than)

    # --- the projection (the workflow's activity) -----------------------------------------------------------

    async def apply(self, write: CaseWrite) -> bool:
        """Write one change of a case; False when a newer change is already there (what it appends is still
        written, once)."""
        summary = write.summary
        state = state_of(write)
        case_id = uuid.UUID(summary.case_id)
        holding = holding_of(state)
        core = state.core
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(LOCK_CASE, case_id)
            if current is None:
                raise LookupError(f"no case {case_id} to project")
            newer = summary.version > current["version"]
            if newer:
                step = core.step
                await conn.execute(
                    UPDATE_VIEW,
                    case_id,
                    summary.state,
                    summary.version,
                    to_json(state),
                    summary.step,
                    summary.step_role,
                    summary.claimant,
                    step.claimed_at if step is not None else None,
                    step.opened_at if step is not None else None,
                    summary.due_at,
                    bool(step and step.reminded),
                    summary.overdue,
                    summary.escalated,
                    summary.legal_deadline_at,
                    summary.legal_clock_suspended,
                    summary.expires_at,
                    summary.closed,
                    summary.ordre_territory,
                    sum(1 for o in core.opinions if o.state == "REQUESTED"),
                    core.decided_by,
                    core.decided_at,
                    core.closed_at,
                    holding.holder,
                    holding.act_type,
                    holding.visa,
                    holding.first_day,
                    holding.last_day,
                    write.time or datetime.now().astimezone(),
                )
                for opinion in core.opinions:
                    await conn.execute(
                        UPSERT_OPINION,
                        case_id,
                        uuid.UUID(opinion.opinion_id),
                        opinion.state,
                        opinion.expert,
                        opinion.requested_by,
                        opinion.due_at,
                        opinion.reminded,
                        opinion.verdict,
                        opinion.requested_at,
                        opinion.answered_at,
                    )
                before = (
                    current["holder"],
                    current["holding_act_type"],
                    current["holding_visa"],
                    current["holding_from"],
                    current["holding_until"],
                )
                after = (holding.holder, holding.act_type, holding.visa, holding.first_day, holding.last_day)
                if before != after:
                    await conn.fetchval(BUMP_COVERAGE)
            if write.events:
                known = {
                    r["workflow_sequence"]
                    for r in await conn.fetch(KNOWN_EVENTS, case_id, [e.sequence for e in write.events])
                }
                fresh = [e for e in write.events if e.sequence not in known]
                position = int(current["event_count"])
                for event in fresh:
                    position += 1
                    await conn.execute(
                        INSERT_EVENT,
                        case_id,
                        position,
                        event.sequence,
                        event.kind,
                        event.actor,
                        event.step,
                        event.detail,
                        list(event.items),
                        event.time,
                    )
                if fresh:
                    await conn.execute(SET_EVENT_COUNT, case_id, position)
            for message in write.messages:
                await conn.execute(
                    INSERT_MESSAGE,
                    case_id,
                    message.sequence,
                    message.author,
                    message.from_promoter,
                    message.text,
                    list(message.items),
                    uuid.UUID(message.request_id) if message.request_id else None,
                    message.time,
                )
            for comment in write.comments:
                await conn.execute(
                    INSERT_COMMENT,
                    case_id,
                    comment.sequence,
                    comment.author,
                    comment.text,
                    uuid.UUID(comment.request_id) if comment.request_id else None,
                    comment.time,
                )
            for text in write.opinion_texts:
                await conn.execute(
                    OPINION_TEXTS,
                    case_id,
                    uuid.UUID(text.opinion_id),
                    text.question,
                    text.answer,
                    text.revocation_reason,
                )
            for document in write.documents:
                _, _, document_id = names.CASE_DOCUMENT.parse_ids(document.document, "document")
                await conn.execute(
                    INSERT_DOCUMENT,
                    case_id,
                    document_id,
                    document.version,
                    document.document_type,
                    document.title or document_id,
                    document.media_type,
                    document.size_bytes,
                    document.sha256,
                    document.uploader or "hub",
                    uuid.UUID(document.request_id) if document.request_id else None,
                    write.time or datetime.now().astimezone(),
                )
            for notice in write.notices:
                await conn.execute(
                    INSERT_NOTIFICATION,
                    case_id,
                    notice.event_sequence,
                    notice.recipient,
                    notice.role,
                    notice.kind,
                )
            applied = write.applied
            if applied is not None:
                await LEDGER.record(
                    conn,
                    Call(
                        request_id=applied.request_id,
                        method=applied.method,
                        actor=applied.actor,
                        digest=applied.digest,
                    ),
                    [names.CONTRACTS_CASE.format(CaseKind.COLLECTION[summary.kind], case_id)],
                    if_absent=True,
                )
            return bool(newer)

    # --- reads ----------------------------------------------------------------------------------------------

    async def scope(self, case_id: uuid.UUID) -> Scope | None:
        row = await self._pool.fetchrow(GET_SCOPE, case_id)
        if row is None:
            return None
        return Scope(
            case_id=row["case_id"],
            kind=row["kind"],
            region=row["region"],
            departement=row["departement"],
            promoter=row["promoter"],
            filer=row["filer"],
            ordre_territory=row["ordre_territory"],
            state=row["state"],
            closed=row["closed"],
            version=row["version"],
            experts=tuple(row["experts"]),
        )

    async def case_row(self, case_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_CASE, case_id)

    async def record_view(self, case_id: uuid.UUID, actor: str, detail: str) -> None:
        """A timeline entry for someone who consulted the case (who, what, when)."""
        await self._pool.execute(RECORD_VIEW, case_id, actor, detail)

    async def list_kind(
        self,
        viewer: Viewer,
        kind: str,
        *,
        state: str,
        promoter: str,
        territory: str,
        company: str,
        size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> tuple[Sequence[asyncpg.Record], tuple[datetime, uuid.UUID] | None]:
        rows = await self._pool.fetch(
            LIST_KIND,
            *viewer_args(viewer),
            kind,
            state,
            promoter,
            territory,
            company,
            after[0] if after else None,
            after[1] if after else None,
            size + 1,
        )
        page, last = split_page(rows, size)
        return page, (None if last is None else (last["create_time"], last["case_id"]))

    @staticmethod
    def _filter_args(filters: CaseFilter, me: str) -> list[Any]:
        return [
            list(filters.kinds),
            list(filters.states),
            list(filters.steps),
            filters.region,
            filters.ght,
            filters.departement,
            filters.establishment,
            filters.assignment,
            filters.claimant or me,
            filters.due_before,
            filters.overdue_only,
            filters.expiring_within_days,
        ]

    async def list_cases(
        self,
        viewer: Viewer,
        filters: CaseFilter,
        *,
        tab: str,
        roles: Sequence[str],
        order: str,
        size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> tuple[Sequence[asyncpg.Record], tuple[datetime, uuid.UUID] | None]:
        """One page of the inbox, sorted by `order`, keyset-paginated on (sort key, case id)."""
        rows = await self._pool.fetch(
            list_cases_query(tab, order, include_closed=filters.include_closed),
            *viewer_args(viewer),
            *self._filter_args(filters, viewer.me),
            list(roles),
            viewer.me,
            after[0] if after else None,
            after[1] if after else None,
            size + 1,
        )
        page, last = split_page(rows, size)
        return page, (None if last is None else (last["sort_key"], last["case_id"]))

    async def count_cases(
        self, viewer: Viewer, filters: CaseFilter, *, roles: Sequence[str]
    ) -> dict[str, int]:
        """Every tab's counter under the same filters, in one query."""
        closed = "" if filters.include_closed else " AND NOT c.closed"
        query = f"""
SELECT count(*) FILTER (WHERE {_TO_PROCESS}{closed}) AS to_process,
       count(*) FILTER (WHERE {_FOLLOWED}{closed}) AS followed,
       count(*) FILTER (WHERE {_PROCESSED}) AS processed,
       count(*) FILTER (WHERE {_ALL}{closed}) AS all,
       count(*) FILTER (WHERE {_DUE_SOON}{closed}) AS due_soon,
       count(*) FILTER (WHERE {_ALL} AND c.overdue{closed}) AS overdue
FROM contracts.cases c, (SELECT $18::text[] AS roles, $19::text AS me) k
WHERE {VISIBLE} {_FILTERS}
"""  # noqa: S608 (every fragment is a constant of this module)
        row = await self._pool.fetchrow(
            query, *viewer_args(viewer), *self._filter_args(filters, viewer.me), list(roles), viewer.me
        )
        assert row is not None
        return dict(row)

    async def list_notifications(
        self, viewer: Viewer, *, roles: Sequence[str], after: int, size: int
    ) -> tuple[Sequence[asyncpg.Record], int | None]:
        """The caller's notifications after id `after`, oldest first; the last id when more follow."""
        rows = await self._pool.fetch(LIST_NOTIFICATIONS, *viewer_args(viewer), list(roles), after, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else last["notification_id"])

    async def activity_report(
        self, viewer: Viewer, *, region: str, zone: str, start: date, end: date, expiring_days: int
    ) -> dict[str, Sequence[asyncpg.Record]]:
        """GetCaseActivityReport's three aggregates over the visible cases (`region` narrows; '' any), civil
        months and days in `zone`: one snapshot, three grouped queries that read no row out of scope."""
        args = [*viewer_args(viewer), region]
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            states = await conn.fetch(_REPORT_STATES, *args)
            lead_times = await conn.fetch(_REPORT_LEAD_TIMES, *args, zone, start, end)
            expirations = await conn.fetch(_REPORT_EXPIRATIONS, *args, zone, expiring_days)
        return {"states": states, "lead_times": lead_times, "expirations": expirations}

    async def list_events(
        self, case_id: uuid.UUID, *, size: int, after: int
    ) -> tuple[Sequence[Any], int | None]:
        rows = await self._pool.fetch(LIST_EVENTS, case_id, after, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else last["position"])

    async def list_messages(
        self, case_id: uuid.UUID, *, size: int, after: int
    ) -> tuple[Sequence[Any], int | None]:
        rows = await self._pool.fetch(LIST_MESSAGES, case_id, after, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else last["sequence"])

    async def message_of(self, request_id: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(MESSAGE_OF_REQUEST, uuid.UUID(request_id))

    async def list_comments(
        self, case_id: uuid.UUID, *, size: int, after: int
    ) -> tuple[Sequence[Any], int | None]:
        rows = await self._pool.fetch(LIST_COMMENTS, case_id, after, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else last["sequence"])

    async def comment_of(self, request_id: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(COMMENT_OF_REQUEST, uuid.UUID(request_id))

    async def list_opinions(
        self, case_id: uuid.UUID, *, size: int, after: tuple[datetime, uuid.UUID] | None
    ) -> tuple[Sequence[Any], tuple[datetime, uuid.UUID] | None]:
        start = after or (datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo), uuid.UUID(int=0))
        rows = await self._pool.fetch(LIST_OPINIONS, case_id, start[0], start[1], size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else (last["request_time"], last["opinion_id"]))

    async def opinion(self, case_id: uuid.UUID, opinion_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_OPINION, case_id, opinion_id)

    async def list_documents(
        self,
        case_id: uuid.UUID,
        *,
        all_versions: bool,
        size: int,
        after: tuple[datetime, str, int] | None,
    ) -> tuple[Sequence[Any], tuple[datetime, str, int] | None]:
        start = after or (datetime.min.replace(tzinfo=datetime.now().astimezone().tzinfo), "", 0)
        rows = await self._pool.fetch(LIST_DOCUMENTS, case_id, all_versions, *start, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else (last["create_time"], last["document_id"], last["version"]))

    async def document(self, case_id: uuid.UUID, document_id: str, version: int) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_DOCUMENT, case_id, document_id, version)

    async def document_of(self, request_id: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(DOCUMENT_OF_REQUEST, uuid.UUID(request_id))

    # --- decisions ------------------------------------------------------------------------------------------

    async def next_reference(self, prefix: str, year: int) -> str:
        number = await self._pool.fetchval(NEXT_REFERENCE, prefix, year)
        return f"{prefix}-{year}-{int(number):06d}"

    async def create_decision(
        self,
        *,
        decision_id: uuid.UUID,
        case_id: uuid.UUID,
        kind: str,
        reference: str,
        step: str,
        motivation: str,
        preview_sha256: str,
        call: Call,
        creator: str,
        case_name: str,
    ) -> uuid.UUID:
        """The preview's row with the call's ledger entry; a retried preview returns the first one's id."""
        async with self._pool.acquire() as conn, conn.transaction():
            done = await LEDGER.claim(conn, call)
            if done is not None:
                return names.CASE_DECISION.parse_uuid(done.resource, "name")
            await conn.execute(
                INSERT_DECISION,
                decision_id,
                case_id,
                kind,
                reference,
                step,
                motivation,
                preview_sha256,
                creator,
                uuid.UUID(call.request_id),
            )
            await LEDGER.record(conn, call, [f"{case_name}/decisions/{decision_id}"])
            return decision_id

    async def decision(self, decision_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_DECISION, decision_id)

    async def latest_preview(
        self, case_id: uuid.UUID, kinds: Sequence[str], step: str
    ) -> asyncpg.Record | None:
        return await self._pool.fetchrow(LATEST_PREVIEW, case_id, list(kinds), step)

    async def mark_signed(
        self, decision_id: uuid.UUID, signed_sha256: str, signer: str, sign_time: datetime
    ) -> None:
        await self._pool.execute(SIGN_DECISION, decision_id, signed_sha256, signer, sign_time)

    # --- policy versions ------------------------------------------------------------------------------------

    @staticmethod
    def _policy(row: Any) -> RegionPolicy:
        return RegionPolicy(
            region=row["region"],
            version=row["version"],
            effective_from=row["effective_date"],
            profile=row["profile"],
            cnom_offerers=frozenset(row["cnom_offerers"]) if row["cnom_offerers"] is not None else None,
            published_by=row["publisher"],
            published_at=row["publish_time"],
            note=row["note"],
        )

    async def policies(self, region: str) -> list[RegionPolicy]:
        return [self._policy(r) for r in await self._pool.fetch(ALL_POLICIES, region)]

    async def list_policies(
        self, region: str, *, size: int, after: int
    ) -> tuple[list[RegionPolicy], int | None]:
        rows = await self._pool.fetch(LIST_POLICIES, region, after, size + 1)
        page, last = split_page(rows, size)
        return [self._policy(r) for r in page], (None if last is None else last["version"])

    async def publish_policy(self, version: RegionPolicy, call: Call) -> RegionPolicy | None:
        """Insert a version with its ledger entry; None when this request id published one already."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await LEDGER.claim(conn, call) is not None:
                return None
            await conn.execute(
                INSERT_POLICY,
                version.region,
                version.version,
                version.effective_from,
                version.profile,
                sorted(version.cnom_offerers) if version.cnom_offerers is not None else None,
                version.note,
                version.published_by,
                version.published_at,
            )
            await conn.fetchval(BUMP_COVERAGE)
            await LEDGER.record(conn, call, [version.name])
            return version

    # --- coverage ------------------------------------------------------------------------------------------

    async def holdings(self, holders: Iterable[str], region: str, day: date) -> list[Holding]:
        rows = await self._pool.fetch(HOLDINGS, [h for h in holders if h], region, day)
        return [
            Holding(
                case=names.CONTRACTS_CASE.format(CaseKind.COLLECTION[r["kind"]], r["case_id"]),
                kind=r["kind"],
                holder=r["holder"],
                # An agrément is national: it holds in every region.
                region=r["region"] or region,
                valid_from=r["holding_from"],
                valid_until=r["holding_until"],
                act_type=r["holding_act_type"],
                visa=r["holding_visa"],
            )
            for r in rows
        ]

    async def coverage_version(self) -> tuple[int, datetime]:
        row = await self._pool.fetchrow(GET_COVERAGE_VERSION)
        assert row is not None
        return int(row["version"]), row["update_time"]

    # --- the agrément register ------------------------------------------------------------------------------

    async def create_company(
        self, siren: str, legal_name: str, ans_certificate: str, call: Call, creator: str
    ) -> bool:
        """Register a company with the call's ledger entry; False when this request id did it already."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await LEDGER.claim(conn, call) is not None:
                return False
            await conn.execute(INSERT_COMPANY, siren, legal_name, ans_certificate, creator)
            await LEDGER.record(conn, call, [names.TELECONSULTATION_COMPANY.format(siren)])
            return True

    async def company(self, siren: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_COMPANY, siren)

    async def list_companies(
        self, *, valid_on: date | None, size: int, after: str
    ) -> tuple[Sequence[Any], str | None]:
        rows = await self._pool.fetch(
            LIST_COMPANIES, after, valid_on is not None, valid_on or date.today(), size + 1
        )
        page, last = split_page(rows, size)
        return page, (None if last is None else last["siren"])

    async def agrements_of(self, company: str) -> Sequence[Any]:
        rows: Sequence[Any] = await self._pool.fetch(AGREMENTS_OF, company)
        return rows

    # --- motivation templates -------------------------------------------------------------------------------

    async def create_template(
        self,
        *,
        template_id: uuid.UUID,
        region: str,
        title: str,
        text: str,
        kinds: Sequence[str],
        call: Call,
        creator: str,
        create_time: datetime,
    ) -> uuid.UUID:
        async with self._pool.acquire() as conn, conn.transaction():
            done = await LEDGER.claim(conn, call)
            if done is not None:
                return names.MOTIVATION_TEMPLATE.parse_uuid(done.resource, "name")
            await conn.execute(
                INSERT_TEMPLATE, template_id, region, title, text, list(kinds), creator, create_time
            )
            await LEDGER.record(conn, call, [names.MOTIVATION_TEMPLATE.format(region, template_id)])
            return template_id

    async def template(self, template_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._pool.fetchrow(GET_TEMPLATE, template_id)

    async def list_templates(self, region: str, *, size: int, after: str) -> tuple[Sequence[Any], str | None]:
        rows = await self._pool.fetch(LIST_TEMPLATES, region, after, size + 1)
        page, last = split_page(rows, size)
        return page, (None if last is None else last["title"])

    # --- staff ----------------------------------------------------------------------------------------------

    async def saw_staff(self, member: StaffMember) -> None:
        await self._pool.execute(
            UPSERT_STAFF, member.staff, list(member.roles), member.region, member.territory
        )

    async def staff(self, staff: str) -> StaffMember | None:
        row = await self._pool.fetchrow(GET_STAFF, staff)
        if row is None:
            return None
        return StaffMember(
            staff=row["staff"], roles=tuple(row["roles"]), region=row["region"], territory=row["territory"]
        )
