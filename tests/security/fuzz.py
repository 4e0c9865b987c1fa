"""A seeded request generator over the API's message descriptors, for the fuzzer (test_fuzz.py).

Three kinds of bodies, each reproducible from the seed:
- messages built from the descriptor: every field type with its edge values (empty, huge, negative, NaN,
  unknown enum numbers, instants of year 1 and 9999 and beyond, nanos out of range, invalid names, real names
  of the world, long Unicode), repeated fields and maps, oneofs, nested messages;
- well-formed requests (the matrix's) with one to three fields replaced by such values, or cleared;
- bytes that are not protobuf, or barely: random bytes, a valid body truncated or with bits flipped, bad
  varints, deeply nested or unterminated groups, invalid UTF-8 in a string field, wrong wire types.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Sequence

from google.protobuf import descriptor
from google.protobuf.message import Message

FieldDescriptor = descriptor.FieldDescriptor

INT32 = (0, 1, -1, 2**31 - 1, -(2**31), 7, 100, 1000, 1001, 50, 500)
INT64 = (*INT32, 2**63 - 1, -(2**63), 10**12)
UINT32 = (0, 1, 2**32 - 1, 500)
UINT64 = (0, 1, 2**64 - 1)
FLOATS = (0.0, -1.0, 1e308, float("inf"), float("-inf"), float("nan"), 0.5)
TIMESTAMP_SECONDS = (
    0,
    -62_135_596_800,  # 0001-01-01
    -62_135_596_801,
    253_402_300_799,  # 9999-12-31T23:59:59
    253_402_300_800,
    1_767_225_600,  # 2026-01-01
    2**62,
    -(2**62),
)
DURATION_SECONDS = (0, 1, -1, 60, 86_400, 315_576_000_000, 315_576_000_001, -315_576_000_001, 2**62)
NANOS = (0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_000, 2**31 - 1)
STRINGS = (
    "",
    " ",
    "a",
    "x" * 300,
    "é" * 2000,
    "\u0000",
    "\ud7ff\ue000\U0010ffff",
    "null",
    "'; DROP TABLE audit.events; --",
    "../../etc/passwd",
    "%s%n",
    "patients/",
    "patients/not-a-uuid",
    "patients/00000000-0000-0000-0000-000000000000",
    "practitioners/10000000101",
    "practitioners/00000000000",
    "establishments/420000017",
    "establishments/2A0000031",
    "establishments/999999999",
    "ghts/ght-loire",
    "regions/84",
    "regions/00",
    "slots/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "schedules/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "appointments/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "teleexpertiseRequests/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "charges/6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "catalogs/ngap-telemedicine",
    "6f1c2b0e-5d47-4b53-9a43-9d0c1f4a7e21",
    "248034221800109",
    "1.2.250.1.213.1.4.10",
    "EUR",
    "TCG",
    "Europe/Paris",
)


class Generator:
    """Seeded bodies for the request types of one service."""

    def __init__(self, rng: random.Random, names: Sequence[str]) -> None:
        self.rng = rng
        # Real names of the world the fuzzer runs against, so some requests reach deep into the handlers.
        self.names = list(names)

    # --- values -------------------------------------------------------------------------------------

    def string(self) -> str:
        roll = self.rng.random()
        if roll < 0.35 and self.names:
            return self.rng.choice(self.names)
        if roll < 0.85:
            return self.rng.choice(STRINGS)
        return "".join(
            chr(self.rng.choice((self.rng.randint(32, 126), self.rng.randint(160, 0xD7FF))))
            for _ in range(self.rng.randint(0, 64))
        )

    def scalar(self, field: FieldDescriptor) -> object:
        kind = field.type
        rng = self.rng
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string()
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.choice((b"", b"%PDF-1.4 x", b"\x89PNG\r\n\x1a\n", rng.randbytes(rng.randint(1, 64))))
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            assert enum is not None
            numbers = [v.number for v in enum.values]
            return rng.choice([*numbers, *numbers, 999, -1])  # unknown numbers too (open enums keep them)
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            value = rng.choice(FLOATS)
            if kind == FieldDescriptor.TYPE_FLOAT and value == 1e308:
                return 3.0e38
            return value
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice(UINT32)
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice(UINT64)
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
            return rng.choice(INT32)
        return rng.choice(INT64)

    def fill(self, message: Message, depth: int = 0) -> Message:
        """Set a random selection of the message's fields (a oneof gets one member at most)."""
        desc = message.DESCRIPTOR
        if desc.full_name == "google.protobuf.Timestamp":
            message.seconds = self.rng.choice(TIMESTAMP_SECONDS)  # type: ignore[attr-defined]
            message.nanos = self.rng.choice(NANOS) if self.rng.random() < 0.3 else 0  # type: ignore[attr-defined]
            return message
        if desc.full_name == "google.protobuf.Duration":
            message.seconds = self.rng.choice(DURATION_SECONDS) * self.rng.choice((1, -1))  # type: ignore[attr-defined]
            message.nanos = self.rng.choice(NANOS) if self.rng.random() < 0.3 else 0  # type: ignore[attr-defined]
            return message
        chosen_oneofs: set[str] = set()
        for field in desc.fields:
            if self.rng.random() < 0.35:
                continue
            oneof = field.containing_oneof
            if oneof is not None:
                if oneof.name in chosen_oneofs:
                    continue
                chosen_oneofs.add(oneof.name)
            self.set_field(message, field, depth)
        return message

    def set_field(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        rng = self.rng
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, field.name)
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(rng.randint(0, 3)):
                key = self.scalar(key_field)
                if value_field.message_type is not None:
                    if depth < 3:
                        self.fill(target[key], depth + 1)
                else:
                    try:
                        target[key] = self.scalar(value_field)
                    except (TypeError, ValueError):
                        continue
            return
        if field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(rng.choice((0, 1, 1, 2, 3, 60))):
                if field.message_type is not None:
                    if depth < 3:
                        self.fill(target.add(), depth + 1)
                else:
                    try:
                        target.append(self.scalar(field))
                    except (TypeError, ValueError):
                        continue
            return
        if field.message_type is not None:
            if depth < 3:
                self.fill(getattr(message, field.name), depth + 1)
            else:
                getattr(message, field.name).SetInParent()
            return
        # A value the Python runtime itself refuses for that field is left out.
        with contextlib.suppress(TypeError, ValueError):
            setattr(message, field.name, self.scalar(field))

    # --- bodies ---------------------------------------------------------------------------------------

    def built(self, request_type: type[Message]) -> bytes:
        return self.fill(request_type()).SerializeToString()

    def mutated(self, seed: Message) -> bytes:
        message = type(seed)()
        message.CopyFrom(seed)
        fields = list(message.DESCRIPTOR.fields)
        for field in self.rng.sample(fields, k=min(len(fields), self.rng.randint(1, 3))):
            if self.rng.random() < 0.25:
                message.ClearField(field.name)
            else:
                message.ClearField(field.name)
                self.set_field(message, field, 1)
        return message.SerializeToString()

    def garbage(self, seed: bytes) -> bytes:
        rng = self.rng
        choice = rng.randrange(9)
        if choice == 0:
            return rng.randbytes(rng.randint(1, 200))
        if choice == 1 and len(seed) > 1:
            return seed[: rng.randrange(1, len(seed))]  # truncated
        if choice == 2 and seed:
            flipped = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            return bytes(flipped)
        if choice == 3:
            return bytes([0x08]) + b"\xff" * rng.randint(10, 12) + b"\x01"  # a varint too long
        if choice == 4:
            depth = rng.choice((5, 99, 100, 101, 300, 2000))
            return b"\x0b" * depth + b"\x0c" * depth  # nested groups of field 1
        if choice == 5:
            return b"\x0b" + seed  # a group never closed
        if choice == 6:
            return b"\x0a\x04\xc3\x28\xff\xfe" + seed  # field 1, length 4, not UTF-8
        if choice == 7:
            # A known field number with every wire type, including the deprecated and the invalid ones.
            tag = (rng.randint(1, 20) << 3) | rng.randrange(8)
            return _varint(tag) + rng.randbytes(rng.randint(0, 12))
        return seed + struct.pack("<I", rng.getrandbits(32))  # trailing bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
