"""Activities of the contracts workflows: write a case's projection, sign a previewed decision.

Both are idempotent, so a retry (a worker killed mid-activity, a lost completion) never writes twice:
- `persist_contracts_case` writes a `CaseWrite` keyed by the case's version and the workflow's sequences, with
  the notifications it records (one row per event and recipient) and the RPC's idempotency entry;
- `sign_contracts_decision` signs exactly the bytes of the preview an officer saw (pyHanko, PAdES) with the
  signing identity this worker holds; a decision signed already is returned as it was signed, never signed
  twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.contracts import decisions
from services.contracts.models import CaseWrite, DocumentRef, Reason, SignDecisionInput
from services.contracts.store import ContractsStore, DocumentStore
from services.kit import names

log = logging.getLogger(__name__)


def signed_document_id(decision_id: str) -> str:
    """The case document a signed decision becomes (`{case}/documents/decision-{id}`)."""
    return f"decision-{decision_id}"


class ContractsActivities:
    """The workflows' activities, with their dependencies (one pool per worker process)."""

    def __init__(
        self, store: ContractsStore, documents: DocumentStore, identity: decisions.SigningIdentity | None
    ) -> None:
        self._store = store
        self._documents = documents
        self._identity = identity

    @activity.defn(name="persist_contracts_case")
    async def persist_case(self, write: CaseWrite) -> None:
        current = await self._store.apply(write)
        if not current:
            log.info("case %s: version %s already superseded", write.summary.case_id, write.summary.version)

    @activity.defn(name="sign_contracts_decision")
    async def sign_decision(self, request: SignDecisionInput) -> DocumentRef:
        decision_id = uuid.UUID(request.decision_id)
        row = await self._store.decision(decision_id)
        if row is None or row["preview_sha256"] != request.preview_sha256:
            raise ApplicationError(
                "no such preview of this decision", type=Reason.DECISION_NOT_FOUND, non_retryable=True
            )
        if row["signed_sha256"] is not None:
            signed_sha = str(row["signed_sha256"])
            signed = await self._documents.get(signed_sha)
            if signed is None:
                raise RuntimeError(f"the signed decision {decision_id} has no bytes in the document store")
        else:
            if self._identity is None:
                raise ApplicationError(
                    "this worker holds no signing identity (PARCOURS_DECISION_SIGNING_CERT_FILE)",
                    type="SIGNING_IDENTITY_MISSING",
                    non_retryable=True,
                )
            preview = await self._documents.get(request.preview_sha256)
            if preview is None:
                raise RuntimeError(
                    f"the preview of decision {decision_id} has no bytes in the document store"
                )
            # pyHanko's synchronous API runs its own event loop: in a thread, beside this one.
            signed = await asyncio.to_thread(
                decisions.sign, preview, self._identity, reason=request.reason, location=request.location
            )
            await self._store.mark_signed(
                decision_id, await self._documents.put(signed), self._identity.subject(), datetime.now(UTC)
            )
            # Two attempts racing: the first signature recorded is the decision's.
            row = await self._store.decision(decision_id)
            assert row is not None
            assert row["signed_sha256"] is not None
            signed_sha = str(row["signed_sha256"])
            recorded = await self._documents.get(signed_sha)
            assert recorded is not None
            signed = recorded
        case_name = names.CONTRACTS_CASE.format(*names.CONTRACTS_CASE.parse_ids(request.case_name, "case"))
        return DocumentRef(
            document=f"{case_name}/documents/{signed_document_id(request.decision_id)}",
            version=1,
            document_type="DECISION",
            media_type="application/pdf",
            size_bytes=len(signed),
            sha256=signed_sha,
            title=str(row["reference"]),
            uploader="hub",
        )
