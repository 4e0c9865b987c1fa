"""End-to-end encryption of Temporal payloads (AES-256-GCM).

Temporal stores workflow inputs, results, activity arguments, signals, memos and (with the failure converter
below) failure messages in its database and shows them in its Web UI. Case data is health data, so every
payload is encrypted by the client or worker before it leaves the process; the Temporal server only ever holds
ciphertext. Authorised people read it through the codec server (`services.kit.codec_server`).

Wire format of an encrypted payload (compatible in spirit with the Temporal encryption samples):

* metadata `encoding` = `binary/encrypted`, `encryption-key-id` = the key id (UTF-8);
* data = 12-byte random nonce || AES-GCM ciphertext and tag of the serialized original `Payload`
  (its metadata included, so the original encoding is hidden too);
* associated data = the key id bytes, so moving a ciphertext under another key id header fails authentication
  instead of being decrypted with whatever key that id names.

Keys rotate through the keyring: the first key encrypts, every key decrypts. Add the new key in front, keep
the old one until no running workflow's history still needs it, then drop it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Sequence

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

logger = logging.getLogger(__name__)

ENCODING = b"binary/encrypted"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16

# Key ids travel in clear in every payload's metadata: keep them short and printable.
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class PayloadDecryptionError(Exception):
    """An encrypted payload could not be decrypted. Messages never contain payload or key bytes."""


class Keyring:
    """Named AES-256 keys; the first one encrypts, all of them decrypt.

    The repr shows key ids only, so a keyring that ends up in a log or a traceback does not leak key material.
    """

    __slots__ = ("_ciphers", "_primary_id")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        for index, (key_id, key) in enumerate(keys, start=1):
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"payload key {index}: key id must match {_KEY_ID.pattern}")
            if key_id in ciphers:
                raise ValueError(f"payload key {index} ({key_id!r}): duplicate key id")
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"payload key {index} ({key_id!r}): key must be {KEY_BYTES} bytes, got {len(key)}"
                )
            ciphers[key_id] = AESGCM(key)
        self._ciphers = ciphers
        self._primary_id = keys[0][0]

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse the settings format `k1:<base64url 32 bytes>,k0:<base64url 32 bytes>`.

        Errors name the entry (position and key id) and never repeat the key material.
        """
        keys: list[tuple[str, bytes]] = []
        entries = [entry.strip() for entry in spec.split(",")]
        if not any(entries):
            raise ValueError("no payload keys given (expected key_id:base64url,...)")
        for index, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id, encoded = key_id.strip(), encoded.strip()
            if not sep or not key_id:
                # Without a separator the entry may be a bare key: do not echo any of it.
                raise ValueError(f"payload key {index}: expected key_id:base64url")
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"payload key {index}: key id must match {_KEY_ID.pattern}")
            keys.append((key_id, _decode_key(index, key_id, encoded)))
        return cls(keys)

    @property
    def primary_id(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return self._primary_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def cipher(self, key_id: str) -> AESGCM | None:
        return self._ciphers.get(key_id)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._ciphers)!r})"


def _decode_key(index: int, key_id: str, encoded: str) -> bytes:
    # urlsafe_b64decode silently skips characters outside the alphabet; check the alphabet first so a
    # mangled key is refused rather than shortened.
    if not _B64URL.fullmatch(encoded):
        raise ValueError(f"payload key {index} ({key_id!r}): not base64url")
    try:
        key = base64.urlsafe_b64decode(encoded.rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"payload key {index} ({key_id!r}): not base64url") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"payload key {index} ({key_id!r}): key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


class AesGcmPayloadCodec(temporalio.converter.PayloadCodec):
    """Encrypts every payload with the keyring's primary key; decrypts with whichever key the payload names.

    Payloads that are not `binary/encrypted` are returned unchanged on decode, so histories written before
    encryption was switched on stay readable.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._keyring.primary_id
        cipher = self._keyring.cipher(key_id)
        assert cipher is not None  # the primary id is always in the keyring
        key_id_bytes = key_id.encode()
        # A random 96-bit nonce per payload: at our volumes (far below 2^32 payloads per key) the collision
        # probability is negligible, and no counter state has to be shared between processes.
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = cipher.encrypt(nonce, payload.SerializeToString(), key_id_bytes)
        return Payload(
            metadata={METADATA_ENCODING: ENCODING, METADATA_KEY_ID: key_id_bytes},
            data=nonce + ciphertext,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            return payload
        raw_id = payload.metadata.get(METADATA_KEY_ID)
        if raw_id is None:
            raise PayloadDecryptionError(f"encrypted payload has no {METADATA_KEY_ID} metadata")
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self._keyring.cipher(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload encrypted with unknown key id {key_id[:64]!r} "
                f"(keyring has {', '.join(self._keyring.key_ids)})"
            )
        if len(payload.data) < NONCE_BYTES + _TAG_BYTES:
            raise PayloadDecryptionError(f"encrypted payload too short (key id {key_id!r})")
        nonce, ciphertext = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plaintext = cipher.decrypt(nonce, ciphertext, raw_id)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"encrypted payload failed authentication (key id {key_id!r}): tampered or wrong key"
            ) from None
        decrypted = Payload()
        decrypted.ParseFromString(plaintext)
        return decrypted


def data_converter(keyring: Keyring) -> temporalio.converter.DataConverter:
    """The default converter with every payload encrypted.

    Failures use the encoded-attributes converter: an exception's message and stack trace would otherwise be
    stored in clear, and they are exactly where a stray patient name ends up ("no booking for Mme X").
    """
    return temporalio.converter.DataConverter(
        payload_codec=AesGcmPayloadCodec(keyring),
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )
