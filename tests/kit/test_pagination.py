"""Page tokens are signed: a client can hand back only what a replica of the service issued, unchanged."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.kit.errors import InvalidArgument
from services.kit.pagination import PageTokens
from services.kit.pki import DevPki
from tests.conftest import Minter
from tests.support import LOIRE, bearer, establishment_channel
from tests.support.calls import call, details

KEY = b"k" * 32
FILTERS = {"region": "regions/84"}


def _refused(tokens: PageTokens, token: str, filters: dict[str, object] = FILTERS) -> str:
    with pytest.raises(InvalidArgument) as refused:
        tokens.decode(token, filters)
    [violation] = refused.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_a_token_round_trips_for_the_filters_it_was_issued_for() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode("2026-11-29T10:00:00+00:00|0b6c", FILTERS)
    assert tokens.decode(token, FILTERS) == "2026-11-29T10:00:00+00:00|0b6c"
    # Another replica with the same key reads it; one with another key does not.
    assert PageTokens(KEY).decode(token, FILTERS) == "2026-11-29T10:00:00+00:00|0b6c"
    assert "not a token this service issued" in _refused(PageTokens(b"x" * 32), token)
    assert "other filters" in _refused(tokens, token, {"region": "regions/93"})
    assert tokens.decode("", FILTERS) is None


def test_altered_forged_and_garbage_tokens_are_refused_on_page_token() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode("last-key", FILTERS)
    body, _, tag = token.partition(".")
    # The payload rewritten to point elsewhere (the attack a client would try), keeping the old tag.
    forged_body = base64.urlsafe_b64encode(json.dumps({"k": "other", "f": "x"}).encode()).decode().rstrip("=")
    for bad in (
        f"{forged_body}.{tag}",
        f"{body}.{tag[:-2]}AA",
        body,  # the unsigned shape tokens had before
        base64.urlsafe_b64encode(b'["a list"]').decode(),  # base64 of another shape
        "%%%.%%%",
        "a.b.c",
        "é.ü",
    ):
        assert "not a token this service issued" in _refused(tokens, bad)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PageTokens(b"short")


async def test_an_altered_token_answers_invalid_argument_over_grpc(
    pki: DevPki, directory_address: str, mint: Minter
) -> None:
    stub = directory_pb2_grpc.DirectoryServiceStub(establishment_channel(pki, directory_address, LOIRE))
    gp = bearer(mint(rpps="10000000101"))
    first = await stub.ListPractitioners(directory_pb2.ListPractitionersRequest(page_size=2), metadata=gp)
    assert first.next_page_token
    second = await stub.ListPractitioners(
        directory_pb2.ListPractitionersRequest(page_size=2, page_token=first.next_page_token), metadata=gp
    )
    assert second.practitioners and second.practitioners[0].name != first.practitioners[0].name
    body, _, tag = first.next_page_token.partition(".")
    for bad in (body, body[:-1] + ("A" if body[-1] != "A" else "B") + "." + tag, "not-a-token"):
        error = await call(
            stub.ListPractitioners(
                directory_pb2.ListPractitionersRequest(page_size=2, page_token=bad), metadata=gp
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, violations = details(error)
        assert [field for field, _ in violations] == ["page_token"]
