"""Decision documents are rendered and verified in a child process of the contracts service, not in it.

ReportLab with Pillow, pyHanko and asn1crypto take about 23 MB of a process once loaded, and a process never
gives loaded modules back: a contracts service that had previewed or served a single decision kept them for
its whole life, above the other services (issue 15's idle RSS ≤ 120 MB per service process). Decisions are
rare (a handful per case, previewed and downloaded by officers), so the libraries live in one child process,
`python -m services.contracts.document_process`, started by the first render or verification and ended once
it has been idle for `idle_seconds`. The child's work is CPU-bound (a render takes tens of milliseconds): out
of the service's process it no longer holds a thread of it either.

The parent speaks to the child over its stdin and stdout, one request at a time. A message is a JSON header
and a binary part (the PDF), each preceded by its 4-byte big-endian length; nothing else writes to those
pipes (what the child prints goes to its stderr). Nothing sent holds patient data: a decision names a case,
its promoter and its activity.

Failures: a content the template refuses comes back as `decisions.DecisionError`, as in-process. A child that
dies, hangs past `timeout_seconds` or answers garbage is killed and `DocumentProcessFailed` is raised (the
servicer answers UNAVAILABLE with a stable reason, and the caller retries); the next call starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import struct
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import IO, Any

from services.contracts import decisions

log = logging.getLogger(__name__)

MODULE = "services.contracts.document_process"
# Parts: a 4-byte big-endian length, then the bytes. A decision is under a few hundred KB; the bound only
# stops a corrupted length from asking for gigabytes.
_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024

RENDER = "render"
VERIFY = "verify"


class DocumentProcessFailed(RuntimeError):
    """The document process did not answer (it died, hung or answered garbage); the call may be retried."""


class _Garbled(ValueError):
    """A message that is not one of the protocol's."""


Header = dict[str, Any]
Message = tuple[Header, bytes]


class DocumentProcess:
    """The parent's side: renders and verifies decisions in the child, starting it when needed.

    Also a background task of the service (`services.kit.server.BackgroundTask`): its `stop` ends the child
    when the service stops.
    """

    name = "document-process"

    def __init__(self, *, idle_seconds: float = 60.0, timeout_seconds: float = 60.0) -> None:
        self._idle_seconds = idle_seconds
        self._timeout_seconds = timeout_seconds
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._idle: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        return self._child.pid if self._child is not None and self._child.returncode is None else None

    @property
    def busy(self) -> bool:
        """Whether a call is under way (the child serves one at a time)."""
        return self._lock.locked()

    async def render(self, content: decisions.DecisionContent) -> bytes:
        """`decisions.render(content)`, in the child."""
        _, pdf = await self._call({"operation": RENDER, "content": _content_out(content)}, b"")
        return pdf

    async def verify(self, pdf: bytes, trust_roots_pem: Sequence[bytes]) -> decisions.Verification:
        """`decisions.verify(pdf, trust_roots_pem)`, in the child."""
        roots = [root.decode("ascii") for root in trust_roots_pem]
        header, _ = await self._call({"operation": VERIFY, "trust_roots": roots}, pdf)
        try:
            return _verification_in(header["verification"])
        except (KeyError, TypeError, ValueError):
            raise DocumentProcessFailed("the document process answered garbage") from None

    async def _call(self, request: Header, blob: bytes) -> Message:
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            header, answer = await self._exchange_once_more_with_a_new_child(request, blob)
            self._idle = asyncio.get_running_loop().call_later(self._idle_seconds, self._retire)
        status = header.get("status")
        if status == "refused":
            raise decisions.DecisionError(str(header.get("reason", "")))
        if status != "ok":
            log.warning("the document process failed on %s: %s", request["operation"], header.get("reason"))
            raise DocumentProcessFailed(f"the document process failed ({header.get('reason')})")
        return header, answer

    async def _exchange_once_more_with_a_new_child(self, request: Header, blob: bytes) -> Message:
        """The exchange; a child that died while idle (killed, out of memory) is replaced once, since
        rendering and verifying are pure. A child that hangs, or dies on this request, fails the call."""
        while True:
            reused = self._child is not None and self._child.returncode is None
            child: asyncio.subprocess.Process | None = None
            try:
                child = await self._running()
                return await asyncio.wait_for(self._exchange(child, request, blob), self._timeout_seconds)
            except asyncio.CancelledError:
                # The caller gave up (its deadline, its client gone) with the request maybe sent: the child's
                # answer would reach the next call as its own. That child is never read again.
                if child is not None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    self._child = None
                raise
            except (OSError, asyncio.IncompleteReadError, TimeoutError, _Garbled) as failure:
                if child is not None:
                    await self._kill(child)
                problem = type(failure).__name__
                if reused and isinstance(failure, (BrokenPipeError, ConnectionResetError)):
                    log.warning("the idle document process had ended (%s); starting another", problem)
                    continue
                log.warning("the document process failed (%s); the next call starts another", problem)
                raise DocumentProcessFailed(f"the document process did not answer ({problem})") from None

    async def _running(self) -> asyncio.subprocess.Process:
        if self._child is None or self._child.returncode is not None:
            self._child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULE,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=child_environment(),
            )
            log.info("document process %s started", self._child.pid)
        return self._child

    @staticmethod
    async def _exchange(child: asyncio.subprocess.Process, header: Header, blob: bytes) -> Message:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.write(_frame(header, blob))
        await child.stdin.drain()
        stream = child.stdout

        async def part() -> bytes:
            (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
            if length > MAX_FRAME_BYTES:
                raise _Garbled(f"a part of {length} bytes")
            return await stream.readexactly(length)

        return _header(await part()), await part()

    def _retire(self) -> None:
        """Idle long enough: the child ends (its stdin closes, it exits), unless a call is under way."""
        self._idle = None
        if self.busy or self._child is None:
            return
        child, self._child = self._child, None
        task = asyncio.get_running_loop().create_task(self._end(child))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _end(self, child: asyncio.subprocess.Process) -> None:
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            await self._kill(child)
        log.info("document process %s ended", child.pid)

    @staticmethod
    async def _kill(child: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()

    async def retired(self) -> None:
        """Returns once no child runs: at once if none does, else when the idle one has ended."""
        while self._retiring:
            await asyncio.gather(*self._retiring)

    # --- a background task of the service ------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def stop(self) -> None:
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            child, self._child = self._child, None
        if child is not None and child.returncode is None:
            await self._end(child)
        await self.retired()


def child_environment() -> dict[str, str]:
    """The service's environment without its settings (`PARCOURS_*`: the database's address and password,
    keys) and telemetry exporter's, which the child has no use for; its log level is kept."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PARCOURS_", "OTEL_"))}
    if "PARCOURS_LOG_LEVEL" in os.environ:
        kept["PARCOURS_LOG_LEVEL"] = os.environ["PARCOURS_LOG_LEVEL"]
    return kept


# --- the messages ------------------------------------------------------------------------------------------


def _frame(header: Header, blob: bytes) -> bytes:
    encoded = json.dumps(header, ensure_ascii=False).encode()
    return _LENGTH.pack(len(encoded)) + encoded + _LENGTH.pack(len(blob)) + blob


def _header(data: bytes) -> Header:
    try:
        header = json.loads(data)
    except ValueError:
        raise _Garbled("a header that is not JSON") from None
    if not isinstance(header, dict):
        raise _Garbled("a header that is not an object")
    return header


_DATES = ("valid_from", "valid_until", "decided_on")
_TUPLES = ("items", "extra_legal_basis")


def _content_out(content: decisions.DecisionContent) -> Header:
    fields = dataclasses.asdict(content)
    for name in _DATES:
        fields[name] = fields[name].isoformat() if fields[name] is not None else None
    return fields


def _content_in(fields: Header) -> decisions.DecisionContent:
    values = dict(fields)
    for name in _DATES:
        values[name] = date.fromisoformat(values[name]) if values.get(name) is not None else None
    for name in _TUPLES:
        values[name] = tuple(values.get(name, ()))
    return decisions.DecisionContent(**values)


def _verification_out(verification: decisions.Verification) -> Header:
    fields = dataclasses.asdict(verification)
    fields["signed_at"] = verification.signed_at.isoformat() if verification.signed_at is not None else None
    return fields


def _verification_in(fields: Header) -> decisions.Verification:
    values = dict(fields)
    signed_at = values.pop("signed_at", None)
    return decisions.Verification(
        **values, signed_at=datetime.fromisoformat(signed_at) if signed_at is not None else None
    )


# --- the child ---------------------------------------------------------------------------------------------


def _answer(header: Header, blob: bytes) -> Message:
    operation = header.get("operation")
    try:
        if operation == RENDER:
            return {"status": "ok"}, decisions.render(_content_in(header["content"]))
        if operation == VERIFY:
            roots = [root.encode("ascii") for root in header["trust_roots"]]
            return {"status": "ok", "verification": _verification_out(decisions.verify(blob, roots))}, b""
        return {"status": "failed", "reason": f"no operation {operation!r}"}, b""
    except decisions.DecisionError as refused:
        return {"status": "refused", "reason": str(refused)}, b""
    except Exception as error:
        # The parent gets the failure's type; the child goes on with the next request.
        log.exception("document operation %s failed", operation)
        return {"status": "failed", "reason": type(error).__name__}, b""


def _read_part(stream: IO[bytes]) -> bytes | None:
    size = stream.read(_LENGTH.size)
    if len(size) != _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(size)
    if length > MAX_FRAME_BYTES:
        return None
    data = stream.read(length)
    return data if len(data) == length else None


def main() -> int:
    """Answer the parent's requests until its end of stdin closes."""
    logging.basicConfig(level=os.environ.get("PARCOURS_LOG_LEVEL", "INFO"), stream=sys.stderr)
    requests = sys.stdin.buffer
    # The protocol owns the pipe the parent reads; whatever else writes to stdout (a print, a library) goes to
    # stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    while (encoded := _read_part(requests)) is not None:
        blob = _read_part(requests)
        if blob is None:
            return 1
        try:
            header = _header(encoded)
        except _Garbled as garbled:
            answers.write(_frame({"status": "failed", "reason": str(garbled)}, b""))
        else:
            answers.write(_frame(*_answer(header, blob)))
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
