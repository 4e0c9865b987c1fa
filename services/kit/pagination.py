"""AIP-158 pagination: page sizes and opaque page tokens bound to the request's filters, signed by the server.

A token carries the last key of the previous page and a digest of the filters it was issued for, and an
HMAC-SHA256 tag under the server's page-token key (`PARCOURS_PAGE_TOKEN_KEY`, shared by every replica of a
service so a client may page through any of them). A token replayed with other filters, altered in any byte,
or forged is refused as INVALID_ARGUMENT on `page_token`, never INTERNAL: the key inside is only ever one
this server wrote, so handlers parse it without defending against a client's inventions.

The kit's server sets the signer for each call (`use_page_tokens`), as it sets the principal; handlers
call `decode_token` / `next_page_token` without carrying the key around.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
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
# A 128-bit tag: forging one is out of reach, and tokens stay short enough for a URL.
_TAG_BYTES = 16
MIN_KEY_BYTES = 32


def page_size(requested: int) -> int:
    """0 → the default; above the maximum → the maximum (the proto rules refuse above PAGE_SIZE_LIMIT)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _filters_digest(filters: Mapping[str, object]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class PageTokens:
    """Signs and checks the page tokens of one service (one key for all its replicas)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a page-token key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, last_key: str, filters: Mapping[str, object]) -> str:
        payload = json.dumps({"k": last_key, "f": _filters_digest(filters)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, token: str, filters: Mapping[str, object]) -> str | None:
        """The last key of the previous page, or None for the first page."""
        if not token:
            return None
        refused = InvalidArgument.one("page_token", "is not a token this service issued")
        body, dot, tag = token.partition(".")
        if not dot:
            raise refused
        try:
            payload, given = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise refused from None
        if not hmac.compare_digest(given, self._tag(payload)):
            raise refused
        # Signed by us: its shape is ours.
        decoded = json.loads(payload)
        if decoded["f"] != _filters_digest(filters):
            raise InvalidArgument.one("page_token", "was issued for other filters; start again without it")
        key: str = decoded["k"]
        return key


_current: contextvars.ContextVar[PageTokens | None] = contextvars.ContextVar(
    "parcours_page_tokens", default=None
)


def _tokens() -> PageTokens:
    tokens = _current.get()
    if tokens is None:
        # Only reachable if a handler runs outside the kit's server.
        raise RuntimeError("no page-token signer for this call (handlers run inside the kit's server)")
    return tokens


def use_page_tokens(tokens: PageTokens) -> contextvars.Token[PageTokens | None]:
    """Make `tokens` the signer of the calls run in the current context (the kit's server, for each call;
    tests of handler code)."""
    return _current.set(tokens)


def reset_page_tokens(token: contextvars.Token[PageTokens | None]) -> None:
    """Undo `use_page_tokens`."""
    _current.reset(token)


def encode_token(last_key: str, filters: Mapping[str, object]) -> str:
    return _tokens().encode(last_key, filters)


def decode_token(token: str, filters: Mapping[str, object]) -> str | None:
    """The last key of the previous page (None for the first page); INVALID_ARGUMENT for a bad token."""
    return _tokens().decode(token, filters)


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
