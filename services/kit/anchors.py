"""Anchors of the audit chains: each chain's head, signed and written outside PostgreSQL (issue 9.7).

Rows are keyed (services/kit/audit.py), so whoever rewrites the table without the key is caught row by row.
What a keyed chain alone cannot show is rows missing at its end: remove the newest rows and move
`audit.chain_heads` back, and what is left is a well-formed, shorter chain. An anchor records that row `seq`
of a chain existed with hash `hash` at `anchored_at`, under an HMAC of the audit key (a key id travels with it
so keys rotate), in a store the database owner does not control; `audit verify` then requires every anchored
row to still be there with that hash, and names the first one that is not.

Each process that writes a chain anchors the head it last committed, every
`PARCOURS_AUDIT_ANCHOR_INTERVAL_SECONDS` when it moved, and once more when it stops (`AuditAnchorer`). Rows
appended since the last anchor are the window an attacker with the database could still cut unnoticed: the
interval bounds it.

Stores implement `AnchorStore`. `FolderAnchorStore` appends JSON lines to one file per writer (component and
host) in a folder (`PARCOURS_AUDIT_ANCHOR_DIR`): under `make run`, `.data/audit-anchors/`; in production a
volume the database's administrators cannot write (docs/operations.md). An object store fits the same
interface (one object per anchor, written if absent, in a bucket with object lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from services.kit.audit import AuditKeys, AuditLog

log = logging.getLogger(__name__)

# What an anchor's MAC covers is told apart from what a row's covers.
_ANCHOR_DOMAIN = b"parcours-audit-anchor\x00"
ANCHOR_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Anchor:
    """Row `seq` of `chain` had hash `hash` at `anchored_at`; `mac` signs that under key `key_id`."""

    chain: str
    seq: int
    hash: bytes
    anchored_at: datetime
    key_id: str
    mac: bytes

    @staticmethod
    def signed_bytes(chain: str, seq: int, hash_: bytes, anchored_at: datetime) -> bytes:
        body = [chain, seq, hash_.hex(), anchored_at.astimezone(UTC).isoformat(timespec="microseconds")]
        return _ANCHOR_DOMAIN + json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def sign(cls, keys: AuditKeys, chain: str, seq: int, hash_: bytes, anchored_at: datetime) -> Anchor:
        key_id = keys.signing_id
        mac = keys.mac(key_id, cls.signed_bytes(chain, seq, hash_, anchored_at))
        assert mac is not None
        return cls(chain, seq, hash_, anchored_at, key_id, mac)

    def signed_by(self, keys: AuditKeys) -> bool:
        expected = keys.mac(self.key_id, self.signed_bytes(self.chain, self.seq, self.hash, self.anchored_at))
        return expected is not None and keys.same(expected, self.mac)

    def to_line(self) -> str:
        return json.dumps(
            {
                "chain": self.chain,
                "seq": self.seq,
                "hash": self.hash.hex(),
                "anchored_at": self.anchored_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "key_id": self.key_id,
                "mac": self.mac.hex(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_line(cls, line: str) -> Anchor:
        """ValueError when the line is not an anchor."""
        try:
            found = json.loads(line)
            anchor = cls(
                chain=str(found["chain"]),
                seq=int(found["seq"]),
                hash=bytes.fromhex(found["hash"]),
                anchored_at=datetime.fromisoformat(found["anchored_at"]),
                key_id=str(found["key_id"]),
                mac=bytes.fromhex(found["mac"]),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an anchor ({type(exc).__name__})") from None
        if anchor.anchored_at.tzinfo is None or anchor.seq < 1 or len(anchor.hash) != 32:
            raise ValueError("not an anchor (instant without zone, sequence below 1 or hash not 32 bytes)")
        return anchor


@dataclass
class AnchorReading:
    """What a store holds: its anchors, and where a line is not one (named, to be reported)."""

    anchors: list[Anchor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class AnchorStore(Protocol):
    """Where anchors go: append-only, outside the database, out of its administrators' reach."""

    def append(self, anchor: Anchor) -> None:
        """Write one anchor durably (returns once it is stored)."""

    def read(self) -> AnchorReading:
        """Every anchor written so far, by every writer."""


class FolderAnchorStore:
    """Append-only JSON-lines files in one folder, one per writer (`<writer>.jsonl`), read all together.

    One file per writer, so writers on several hosts never share a file (appends to one file from several
    hosts of a network file system are not atomic); appends of one line are one `write` on a file opened
    with O_APPEND, and are synced before `append` returns.
    """

    def __init__(self, folder: Path, writer: str | None = None) -> None:
        self.folder = folder
        self.writer = writer

    def append(self, anchor: Anchor) -> None:
        if not self.writer:
            raise ValueError("this anchor store reads only (no writer name)")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.writer}{ANCHOR_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (anchor.to_line() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> AnchorReading:
        reading = AnchorReading()
        if not self.folder.is_dir():
            return reading
        for path in sorted(self.folder.glob(f"*{ANCHOR_SUFFIX}")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    reading.anchors.append(Anchor.from_line(line))
                except ValueError as exc:
                    reading.problems.append(f"{path.name} line {number}: {exc}")
        return reading


def writer_name(component: str) -> str:
    """This process's anchor file name: its component and host (a pod's name in Kubernetes)."""
    host = socket.gethostname().split(".")[0] or "host"
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{component}-{host}")
    return safe[:120]


class AuditAnchorer:
    """Anchors the head its audit log last committed, every `interval` seconds when it moved, and at stop.

    A failed write is logged and tried again at the next tick: the chain is still written (anchoring only
    narrows the window in which a cut of the newest rows would go unnoticed).
    """

    name = "audit-anchor"

    def __init__(self, audit_log: AuditLog, store: AnchorStore, keys: AuditKeys, interval: float) -> None:
        self._log = audit_log
        self._store = store
        self._keys = keys
        self._interval = interval
        self._anchored: tuple[int, bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    async def anchor_now(self) -> Anchor | None:
        """Anchor the current head if it moved since the last anchor; the anchor written, if any."""
        head = self._log.head
        if head is None or head == self._anchored:
            return None
        anchor = Anchor.sign(self._keys, self._log.chain, head[0], head[1], datetime.now(UTC))
        await asyncio.to_thread(self._store.append, anchor)
        self._anchored = head
        return anchor

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def ready(self) -> None:
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.anchor_now()
        except OSError:
            log.exception("the final audit anchor of chain %s could not be written", self._log.chain)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.anchor_now()
            except OSError:
                log.exception(
                    "audit anchor of chain %s not written; next try in %ss", self._log.chain, self._interval
                )


def anchors_by_chain(anchors: Sequence[Anchor]) -> dict[str, list[Anchor]]:
    found: dict[str, list[Anchor]] = {}
    for anchor in sorted(anchors, key=lambda a: (a.chain, a.seq, a.anchored_at)):
        found.setdefault(anchor.chain, []).append(anchor)
    return found
