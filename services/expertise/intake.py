"""What a new request must satisfy before it is saved, and where it is routed. Pure functions.

Routing tiers, in order (each later tier widens the candidates once the previous one's acceptance window
passes or every candidate declined):
1. the named expert, if the requester named one;
2. the specialty pool(s) of the requester's GHT;
3. the region-wide pool(s) of the specialty;
4. the backup experts of those pools.
The requester is never a candidate; a tier adding nobody new is dropped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from parcours.directory.v1 import directory_pb2
from parcours.expertise.v1 import expertise_pb2

from services.expertise.models import Tier
from services.expertise.store import NewAttachment
from services.kit.errors import FieldViolation, InvalidArgument

# Only these may be the requis of a téléexpertise (L.6316-1, R.6316-1 CSP: professionnels médicaux; §7.2).
MEDICAL_PROFESSIONS = frozenset({"PROFESSION_PHYSICIAN", "PROFESSION_MIDWIFE", "PROFESSION_DENTIST"})

# The first bytes of the formats the hub stores, so a file is what it claims to be.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
}

BACKUP = "backup"


def _human(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} days"
    if hours >= 1 and hours == int(hours):
        return f"{int(hours)} hours"
    return f"{int(span.total_seconds())} seconds"


def answer_deadline(
    requested: Timestamp | None, now: datetime, bounds: tuple[timedelta, timedelta, timedelta], urgency: str
) -> datetime:
    """The answer deadline: as requested within (min, max) from now, or now + default when not given."""
    low, default, high = bounds
    if requested is None:
        return now + default
    try:
        due = requested.ToDatetime(tzinfo=now.tzinfo)
    except (ValueError, OverflowError):
        # Outside years 1-9999 (the kit's validation refuses it first; this holds for any other caller).
        raise InvalidArgument.one(
            "teleexpertise_request.answer_deadline", "is not an instant between years 1 and 9999"
        ) from None
    if not low <= due - now <= high:
        raise InvalidArgument(
            [
                FieldViolation(
                    "teleexpertise_request.answer_deadline",
                    f"must be between {_human(low)} and {_human(high)} from now for URGENCY_{urgency}",
                )
            ],
            reason="DEADLINE_OUT_OF_BOUNDS",
        )
    return due


def attachments(
    given: Sequence[expertise_pb2.AttachmentInput],
    *,
    media_types: frozenset[str],
    max_bytes: int,
    max_total_bytes: int,
) -> list[NewAttachment]:
    """Check attachments against the hub's type and size limits; every bad field is named."""
    violations: list[FieldViolation] = []
    found: list[NewAttachment] = []
    total = 0
    for index, attachment in enumerate(given):
        path = f"teleexpertise_request.attachments[{index}]"
        if attachment.media_type not in media_types:
            violations.append(
                FieldViolation(f"{path}.media_type", f"must be one of: {', '.join(sorted(media_types))}")
            )
            continue
        if attachment.WhichOneof("source") == "uri":
            found.append(
                NewAttachment(
                    attachment_id=uuid.uuid4(),
                    title=attachment.title,
                    media_type=attachment.media_type,
                    size_bytes=attachment.size_bytes,
                    sha256=None,
                    content=None,
                    uri=attachment.uri,
                )
            )
            continue
        content = attachment.content
        total += len(content)
        if len(content) > max_bytes:
            violations.append(
                FieldViolation(
                    f"{path}.content",
                    f"is {len(content)} bytes; at most {max_bytes} are stored (refer larger files by uri)",
                )
            )
            continue
        if not _looks_like(attachment.media_type, content):
            violations.append(FieldViolation(f"{path}.content", f"is not a {attachment.media_type} document"))
            continue
        found.append(
            NewAttachment(
                attachment_id=uuid.uuid4(),
                title=attachment.title,
                media_type=attachment.media_type,
                size_bytes=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                content=content,
                uri=None,
            )
        )
    if total > max_total_bytes:
        violations.append(
            FieldViolation(
                "teleexpertise_request.attachments",
                f"total {total} bytes; at most {max_total_bytes} are stored",
            )
        )
    if violations:
        raise InvalidArgument(violations)
    return found


def _looks_like(media_type: str, content: bytes) -> bool:
    magic = _MAGIC.get(media_type)
    if magic is not None:
        return content.startswith(magic)
    if media_type.startswith("text/"):
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def tiers(
    *,
    requester: str,
    named_expert: str | None,
    ght_offers: Sequence[directory_pb2.ExpertiseOffer],
    region_offers: Sequence[directory_pb2.ExpertiseOffer],
) -> list[Tier]:
    """The routing tiers of a request (see the module's docstring)."""
    raw: list[Tier] = []
    if named_expert:
        raw.append(Tier(source=named_expert, members=[named_expert]))
    for offers in (ght_offers, region_offers):
        if offers:
            raw.append(
                Tier(
                    source=",".join(o.name for o in offers),
                    members=[m for o in offers for m in o.members],
                )
            )
    backups = [o.backup_expert for o in (*ght_offers, *region_offers) if o.backup_expert]
    if backups:
        raw.append(Tier(source=BACKUP, members=backups))
    seen: set[str] = {requester}
    routed: list[Tier] = []
    for tier in raw:
        members: list[str] = []
        for member in tier.members:
            if member not in seen:
                seen.add(member)
                members.append(member)
        if members:
            routed.append(Tier(source=tier.source, members=members))
    return routed
