"""AIP-158 pagination: page sizes and opaque page tokens bound to the request's filters.

A token carries the last key of the previous page and a digest of the filters it was issued for; a token
replayed with other filters, or altered, is refused as INVALID_ARGUMENT on `page_token`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TypeVar

from services.kit.errors import InvalidArgument

T = TypeVar("T")

# What every List says in its proto comments and enforces (tests/integrator/test_pagination.py keeps the three
# in step): page_size 0 means DEFAULT_PAGE_SIZE; at most MAX_PAGE_SIZE items come back, a larger request is
# lowered to it (AIP-158 coerces rather than refuses); the protovalidate rule `lte: 1000` on every page_size
# refuses anything above PAGE_SIZE_LIMIT with INVALID_ARGUMENT, as a bound on nonsense, not a second maximum.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
PAGE_SIZE_LIMIT = 1000


def page_size(requested: int) -> int:
    """0 → the default; above the maximum → the maximum (the proto rules refuse above PAGE_SIZE_LIMIT)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _filters_digest(filters: Mapping[str, object]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_token(last_key: str, filters: Mapping[str, object]) -> str:
    payload = json.dumps({"k": last_key, "f": _filters_digest(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(token: str, filters: Mapping[str, object]) -> str | None:
    """The last key of the previous page, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        key, digest = payload["k"], payload["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument.one("page_token", "is not a token this service issued") from None
    if not isinstance(key, str) or digest != _filters_digest(filters):
        raise InvalidArgument.one("page_token", "was issued for other filters; start again without it")
    return key


def next_page_token(next_key: object | None, filters: Mapping[str, object]) -> str:
    """The response's next_page_token: empty on the last page."""
    return encode_token(str(next_key), filters) if next_key is not None else ""


def split_page(rows: Sequence[T], size: int) -> tuple[Sequence[T], T | None]:
    """From the `size + 1` rows a keyset query read: the page, and its last row when another page follows.

    The caller continues after that row's key; None means this is the last page.
    """
    if len(rows) > size:
        return rows[:size], rows[size - 1]
    return rows, None
