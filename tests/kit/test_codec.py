"""AES-GCM payload codec and keyring parsing."""

from __future__ import annotations

import base64
import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter

from services.kit.codec import (
    ENCODING,
    METADATA_ENCODING,
    METADATA_KEY_ID,
    AesGcmPayloadCodec,
    Keyring,
    PayloadDecryptionError,
    data_converter,
)

SECRET = "NIR 1 85 05 78 006 084 36 — Mme Probe"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


K0, K1, K2 = (os.urandom(32) for _ in range(3))


def keyring(*ids: str) -> Keyring:
    keys = {"k0": K0, "k1": K1, "k2": K2}
    return Keyring.parse(",".join(f"{i}:{b64(keys[i])}" for i in ids))


def payloads() -> list[Payload]:
    return DataConverter.default.payload_converter.to_payloads(
        [SECRET, {"n": 1, "ok": True}, None, b"\x00\x01"]
    )


async def test_round_trip_restores_every_payload() -> None:
    codec = AesGcmPayloadCodec(keyring("k1", "k0"))
    originals = payloads()

    encoded = await codec.encode(originals)
    decoded = await codec.decode(encoded)

    assert decoded == originals
    assert DataConverter.default.payload_converter.from_payloads(decoded) == [
        SECRET,
        {"n": 1, "ok": True},
        None,
        b"\x00\x01",
    ]


async def test_encoded_payloads_hide_plaintext_and_original_metadata() -> None:
    codec = AesGcmPayloadCodec(keyring("k1", "k0"))
    originals = payloads()

    encoded = await codec.encode(originals)

    for original, payload in zip(originals, encoded, strict=True):
        assert dict(payload.metadata) == {METADATA_ENCODING: ENCODING, METADATA_KEY_ID: b"k1"}
        raw = payload.SerializeToString()
        if original.data:
            assert original.data not in raw
        assert b"Mme Probe" not in raw
        assert original.metadata[METADATA_ENCODING] not in raw


async def test_same_payload_encrypts_differently_each_time() -> None:
    codec = AesGcmPayloadCodec(keyring("k1"))
    payload = payloads()[0]

    first, second = await codec.encode([payload, payload])

    assert first.data != second.data
    assert first.data[:12] != second.data[:12]  # a fresh nonce per payload


async def test_rotated_keyring_still_reads_payloads_of_a_kept_key() -> None:
    [encoded] = await AesGcmPayloadCodec(keyring("k1", "k0")).encode(payloads()[:1])

    [decoded] = await AesGcmPayloadCodec(keyring("k2", "k1")).decode([encoded])

    assert decoded == payloads()[0]


async def test_keyring_without_the_key_fails_clearly() -> None:
    [encoded] = await AesGcmPayloadCodec(keyring("k1", "k0")).encode(payloads()[:1])

    with pytest.raises(PayloadDecryptionError, match=r"unknown key id 'k1'") as info:
        await AesGcmPayloadCodec(keyring("k0")).decode([encoded])
    assert "Mme Probe" not in str(info.value)


async def test_tampered_ciphertext_is_refused() -> None:
    codec = AesGcmPayloadCodec(keyring("k1"))
    [encoded] = await codec.encode(payloads()[:1])
    data = bytearray(encoded.data)
    data[20] ^= 0x01
    encoded.data = bytes(data)

    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([encoded])


async def test_truncated_ciphertext_is_refused() -> None:
    codec = AesGcmPayloadCodec(keyring("k1"))
    [encoded] = await codec.encode(payloads()[:1])
    encoded.data = encoded.data[:20]

    with pytest.raises(PayloadDecryptionError, match="too short"):
        await codec.decode([encoded])


async def test_swapped_key_id_header_is_refused_even_with_the_right_key_bytes() -> None:
    # The same key under two ids: only the associated data can tell the ciphertext was relabelled.
    both = Keyring([("k1", K1), ("k9", K1)])
    codec = AesGcmPayloadCodec(both)
    [encoded] = await codec.encode(payloads()[:1])
    encoded.metadata[METADATA_KEY_ID] = b"k9"

    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([encoded])


async def test_swapped_key_id_header_to_another_key_is_refused() -> None:
    codec = AesGcmPayloadCodec(keyring("k1", "k0"))
    [encoded] = await codec.encode(payloads()[:1])
    encoded.metadata[METADATA_KEY_ID] = b"k0"

    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([encoded])


async def test_missing_key_id_is_refused() -> None:
    codec = AesGcmPayloadCodec(keyring("k1"))
    [encoded] = await codec.encode(payloads()[:1])
    del encoded.metadata[METADATA_KEY_ID]

    with pytest.raises(PayloadDecryptionError, match=METADATA_KEY_ID):
        await codec.decode([encoded])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = AesGcmPayloadCodec(keyring("k1"))
    plain = payloads()

    assert await codec.decode(plain) == plain


async def test_data_converter_round_trips_values_and_encrypts_failures() -> None:
    converter = data_converter(keyring("k1"))

    [encoded] = await converter.encode([SECRET])

    assert encoded.metadata[METADATA_ENCODING] == ENCODING
    assert await converter.decode([encoded], [str]) == [SECRET]

    # Failure messages and stack traces go into an encrypted payload rather than in clear.
    failure = Failure()
    await converter.encode_failure(ValueError(f"no booking for {SECRET}"), failure)
    assert b"Mme Probe" not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert "Mme Probe" in str(decoded)


def test_keyring_parse_accepts_padding_whitespace_and_orders_keys() -> None:
    padded = base64.urlsafe_b64encode(K0).decode()
    ring = Keyring.parse(f" k1:{b64(K1)} , k0:{padded}")

    assert ring.primary_id == "k1"
    assert ring.key_ids == ("k1", "k0")
    assert b64(K1) not in repr(ring)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"k1:{b64(K1)},k0:{b64(K0)[:-2]}!!", r"payload key 2 \('k0'\): not base64url"),
        (f"k1:{b64(K1)},k0:{b64(K0[:16])}", r"payload key 2 \('k0'\): key must be 32 bytes, got 16"),
        (f"k1:{b64(K1)},k1:{b64(K0)}", r"payload key 2 \('k1'\): duplicate key id"),
        (f"{b64(K1)}", r"payload key 1: expected key_id:base64url"),
        (f"k1:{b64(K1)},", r"payload key 2: expected key_id:base64url"),
        ("", r"no payload keys"),
        (f"k 1:{b64(K1)}", r"payload key 1: key id must match"),
    ],
)
def test_keyring_parse_names_the_bad_entry_without_echoing_key_material(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Keyring.parse(spec)

    for key in (K0, K1):
        assert b64(key) not in str(info.value)
        assert b64(key)[:8] not in str(info.value)
