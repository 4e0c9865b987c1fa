"""Codec server over real HTTP (stdlib http.client in a thread)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from temporalio.converter import DataConverter

from services.kit.codec import AesGcmPayloadCodec, Keyring
from services.kit.codec_server import CodecServer

UI_ORIGIN = "https://temporal.parcours.test"
GOOD_TOKEN = "good-token"
SECRET = "Mme Probe, née le 12/05/1985"


class InvalidToken(Exception):
    pass


def verify(token: str) -> object:
    if token != GOOD_TOKEN:
        raise InvalidToken(f"rejected {token}")
    return {"sub": "dr-house"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _request(port: int, path: str, method: str, body: bytes | None, headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


async def call(
    server: CodecServer,
    path: str,
    *,
    method: str = "POST",
    body: object = None,
    token: str | None = GOOD_TOKEN,
    origin: str | None = None,
    raw: bytes | None = None,
) -> Reply:
    headers = {"Content-Type": "application/json", "X-Namespace": "default"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return await asyncio.to_thread(_request, server.port, path, method, data, headers)


def payloads_json(*values: object) -> dict[str, object]:
    payloads = DataConverter.default.payload_converter.to_payloads(list(values))
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


@pytest_asyncio.fixture
async def server() -> AsyncIterator[CodecServer]:
    keyring = Keyring([("k1", os.urandom(32))])
    async with CodecServer(AesGcmPayloadCodec(keyring), verify, allowed_origins=[UI_ORIGIN]) as srv:
        yield srv


async def test_encode_then_decode_round_trips_and_hides_plaintext(server: CodecServer) -> None:
    original = payloads_json(SECRET, {"act": "TE2"})

    encoded = await call(server, "/encode", body=original)
    assert encoded.status == 200
    assert encoded.headers["content-type"] == "application/json"
    assert b"Mme Probe" not in encoded.body
    assert base64.b64encode(b"Mme Probe") not in encoded.body
    encoded_json = json.loads(encoded.body)
    assert {p["metadata"]["encoding"] for p in encoded_json["payloads"]} == {
        base64.b64encode(b"binary/encrypted").decode()
    }

    # Mounted under a namespace prefix, as the UI and CLI may do: only the last segment counts.
    decoded = await call(server, "/default/decode", body=encoded_json)
    assert decoded.status == 200
    assert json.loads(decoded.body) == original
    assert decoded.headers["cache-control"] == "no-store"


async def test_decode_passes_unencrypted_payloads_through(server: CodecServer) -> None:
    original = payloads_json("already clear")

    reply = await call(server, "/decode", body=original)

    assert reply.status == 200
    assert json.loads(reply.body) == original


async def test_empty_payloads_list_keeps_the_key(server: CodecServer) -> None:
    reply = await call(server, "/decode", body={"payloads": []})

    assert reply.status == 200
    assert json.loads(reply.body) == {"payloads": []}


@pytest.mark.parametrize(
    ("token", "challenge"),
    [(None, "Bearer"), ("forged", 'Bearer error="invalid_token"'), ("", "Bearer")],
)
async def test_missing_or_bad_token_is_401(server: CodecServer, token: str | None, challenge: str) -> None:
    encoded = await call(server, "/encode", body=payloads_json(SECRET))
    assert encoded.status == 200

    reply = await call(server, "/decode", body=json.loads(encoded.body), token=token, origin=UI_ORIGIN)

    assert reply.status == 401
    assert reply.headers["www-authenticate"] == challenge
    assert b"Mme Probe" not in reply.body
    assert b"forged" not in reply.body  # the verifier's message is not passed on
    # CORS headers on the refusal, so the UI can tell a 401 from a network error.
    assert reply.headers["access-control-allow-origin"] == UI_ORIGIN


async def test_non_bearer_scheme_is_401(server: CodecServer) -> None:
    headers = {"Authorization": f"Basic {GOOD_TOKEN}", "Content-Type": "application/json"}
    reply = await asyncio.to_thread(_request, server.port, "/decode", "POST", b'{"payloads":[]}', headers)

    assert reply.status == 401


async def test_async_verifier_is_awaited() -> None:
    async def verify_async(token: str) -> object:
        if token != GOOD_TOKEN:
            raise InvalidToken
        return "principal"

    codec = AesGcmPayloadCodec(Keyring([("k1", os.urandom(32))]))
    async with CodecServer(codec, verify_async) as srv:
        assert (await call(srv, "/encode", body={"payloads": []})).status == 200
        assert (await call(srv, "/encode", body={"payloads": []}, token="nope")).status == 401


async def test_preflight_grants_cors_to_the_ui_origin_only(server: CodecServer) -> None:
    allowed = await call(server, "/decode", method="OPTIONS", token=None, origin=UI_ORIGIN)
    assert allowed.status == 204
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = {h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed_headers

    other = await call(server, "/decode", method="OPTIONS", token=None, origin="https://evil.test")
    assert other.status == 204
    assert "access-control-allow-origin" not in other.headers


async def test_bad_json_is_400(server: CodecServer) -> None:
    reply = await call(server, "/decode", raw=b"{not json")

    assert reply.status == 400


async def test_undecryptable_payload_is_400_naming_the_key_only(server: CodecServer) -> None:
    other = AesGcmPayloadCodec(Keyring([("k0", os.urandom(32))]))
    [foreign] = await other.encode(DataConverter.default.payload_converter.to_payloads([SECRET]))
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in foreign.metadata.items()},
                "data": base64.b64encode(foreign.data).decode(),
            }
        ]
    }

    reply = await call(server, "/decode", body=body)

    assert reply.status == 400
    assert b"unknown key id 'k0'" in reply.body


async def test_unknown_path_and_method(server: CodecServer) -> None:
    assert (await call(server, "/metrics", body={})).status == 404
    assert (await call(server, "/decode", method="GET")).status == 405


async def test_oversized_body_is_413() -> None:
    codec = AesGcmPayloadCodec(Keyring([("k1", os.urandom(32))]))
    async with CodecServer(codec, verify, max_body_bytes=100) as srv:
        reply = await call(srv, "/encode", body=payloads_json("x" * 200))

    assert reply.status == 413
