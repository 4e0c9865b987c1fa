"""The Temporal Web UI's codec endpoint: decrypts a case's payloads for the officer whose region owns it.

The UI (started with `--ui-codec-endpoint <console>/codec` and "include cross-origin credentials") sends the
console's session cookie with each `POST /codec/decode`; the request says nothing of which workflow the
payloads come from. So decoding is bound to workflows, not only to people:

1. An officer opens a case in the console and follows "Voir dans Temporal". The console reads the case through
   the contracts service as the officer (which answers only for a case of their scope), checks the workflow's
   `ParcoursRegion` search attribute against the officer's region, and records in their session a *grant*:
   the SHA-256 of every encrypted payload of that workflow's history, for `codec_grant_ttl`.
2. `/codec/decode` decrypts a payload only if its ciphertext is one of a live grant's payloads (histories
   grow: an unknown payload makes the console re-read the granted histories once). Ciphertexts carry a random
   nonce, so a payload of any other workflow never matches: no signed-in officer reads another region's case,
   nor any téléexpertise or teleconsultation payload.

Anything else is refused: no session 401, no grant or a foreign payload 403. Responses are `no-store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import temporalio.client
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads

from services.kit.codec import ENCODING, METADATA_ENCODING, AesGcmPayloadCodec, PayloadDecryptionError

logger = logging.getLogger(__name__)

MAX_GRANTS = 20


def payload_digest(payload: Payload) -> str:
    return hashlib.sha256(payload.data).hexdigest()


def encrypted(payload: Payload) -> bool:
    return payload.metadata.get(METADATA_ENCODING) == ENCODING


def payloads_in(message: Message) -> Iterable[Payload]:
    """Every `Payload` inside a protobuf message (history events: inputs, results, headers, memos,
    failures)."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            items: Iterable[object] = [value]
        elif hasattr(value, "values") and callable(value.values):
            items = value.values()  # a map; scalar-valued maps hold no payload
        else:
            items = value
        for item in items:
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from payloads_in(item)


async def history_digests(client: temporalio.client.Client, workflow_id: str) -> list[str]:
    """The digests of every encrypted payload in a workflow's history (its latest run)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    digests = {payload_digest(p) for event in history.events for p in payloads_in(event) if encrypted(p)}
    return sorted(digests)


async def workflow_region(client: temporalio.client.Client, workflow_id: str) -> str | None:
    description = await client.get_workflow_handle(workflow_id).describe()
    region = description.raw_description.workflow_execution_info.search_attributes.indexed_fields.get(
        "ParcoursRegion"
    )
    if region is None:
        return None
    value = json.loads(region.data or b"null")
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def live_grants(session: dict[str, Any], now: datetime) -> dict[str, dict[str, Any]]:
    grants = session.get("codec_grants")
    if not isinstance(grants, dict):
        return {}
    return {
        wid: grant
        for wid, grant in grants.items()
        if isinstance(grant, dict) and datetime.fromisoformat(str(grant.get("until"))) > now
    }


def add_grant(session: dict[str, Any], workflow_id: str, digests: list[str], until: datetime) -> None:
    grants = live_grants(session, datetime.now(UTC))
    grants[workflow_id] = {"until": until.isoformat(), "digests": digests}
    if len(grants) > MAX_GRANTS:
        oldest = sorted(grants, key=lambda w: str(grants[w]["until"]))[: len(grants) - MAX_GRANTS]
        for wid in oldest:
            del grants[wid]
    session["codec_grants"] = grants


class CodecRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def decode(
    body: bytes,
    session: dict[str, Any],
    codec: AesGcmPayloadCodec,
    client: temporalio.client.Client | None,
) -> bytes:
    """The decoded `Payloads` JSON for a request body, or CodecRefused."""
    payloads = Payloads()
    try:
        json_format.Parse(body.decode("utf-8"), payloads)
    except (json_format.ParseError, UnicodeDecodeError):
        raise CodecRefused(400, "body is not a Payloads JSON message") from None
    now = datetime.now(UTC)
    grants = live_grants(session, now)
    if not grants:
        raise CodecRefused(403, "open the case from the console first (Voir dans Temporal)")
    wanted = {payload_digest(p) for p in payloads.payloads if encrypted(p)}
    known = {d for grant in grants.values() for d in grant.get("digests", [])}
    if not wanted <= known and client is not None:
        # The granted cases moved on since the grant: read their histories again, once.
        for workflow_id, grant in grants.items():
            grant["digests"] = await history_digests(client, workflow_id)
        session["codec_grants"] = {**live_grants(session, now), **grants}
        known = {d for grant in grants.values() for d in grant.get("digests", [])}
    if not wanted <= known:
        logger.info("codec decode refused: %d payload(s) outside the granted workflows", len(wanted - known))
        raise CodecRefused(403, "these payloads are not those of a case you opened")
    try:
        decoded = await codec.decode(payloads.payloads)
    except PayloadDecryptionError as error:
        raise CodecRefused(400, str(error)) from None
    message = json_format.MessageToDict(Payloads(payloads=decoded))
    message.setdefault("payloads", [])
    logger.info("codec decoded %d payload(s) of %d granted workflow(s)", len(decoded), len(grants))
    return json.dumps(message).encode()
