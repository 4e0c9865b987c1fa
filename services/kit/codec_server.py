"""Codec server: lets authorised people read encrypted payloads in the Temporal Web UI and CLI.

Implements the Temporal remote codec protocol: `POST .../encode` and `POST .../decode` take and return a
`temporal.api.common.v1.Payloads` message in protobuf JSON (`{"payloads": [{"metadata": {k: base64},
"data": base64}]}`); only the last path segment is looked at, so the server can be mounted under any prefix
(e.g. `/{namespace}/decode`). Errors are 400 (bad JSON, undecryptable payload), 401 (token), 404, 405, 413.

Every POST needs `Authorization: Bearer <token>`, checked by the `verify` callable given (the hub's token
verifier: returns the principal, or raises; it may also be async and is where access is audited). CORS
preflights (`OPTIONS`) are answered without a token, as browsers send them without credentials; CORS headers
are only granted to the configured origins (the Web UI's). Decoded responses carry `Cache-Control: no-store`
so health data does not stay in browser caches.

The Web UI only sends the user's access token to an `https://` codec endpoint (`codec.passAccessToken`):
serve it with `ssl=` or behind a TLS-terminating ingress. Built on asyncio streams, one request per
connection, to avoid a web framework dependency for two endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import ssl as ssl_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from urllib.parse import urlsplit

import temporalio.converter
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from services.kit.codec import PayloadDecryptionError

logger = logging.getLogger(__name__)

# The verifier returns the principal (unused here) or raises; it may return an awaitable.
TokenVerifier = Callable[[str], object]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
_NAMESPACE = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass
class _Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}"]
        headers = {
            "Content-Length": str(len(self.body)),
            "Connection": "close",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            **self.headers,
        }
        if self.body:
            headers["Content-Type"] = self.content_type
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def _text(status: HTTPStatus, message: str, **headers: str) -> _Response:
    return _Response(status, (message + "\n").encode(), headers=dict(headers))


class CodecServer:
    """HTTP endpoint running a payload codec for the Temporal Web UI / CLI.

    `await server.start(host, port)` then `await server.close()`; `async with` starts it on 127.0.0.1 with a
    free port (see `port`) unless it was started already.
    """

    def __init__(
        self,
        codec: temporalio.converter.PayloadCodec,
        verify: TokenVerifier,
        *,
        allowed_origins: Iterable[str] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout: float = 30.0,
    ) -> None:
        self._codec = codec
        self._verify = verify
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins)
        self._max_body = max_body_bytes
        # Bounds how long a slow or stalled client can hold a connection.
        self._timeout = request_timeout
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, ssl=ssl, limit=_MAX_HEAD_BYTES)
        logger.info("codec server listening on %s:%d", host, self.port)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("codec server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CodecServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._respond(reader, writer)
            except TimeoutError:
                response = _text(HTTPStatus.REQUEST_TIMEOUT, "request timed out")
            except Exception:
                logger.exception("codec server request failed")
                response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            if response is not None:
                writer.write(response.encode())
                await writer.drain()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl_module.SSLError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Response | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            return _text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _text(HTTPStatus.BAD_REQUEST, "malformed request line")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                return _text(HTTPStatus.BAD_REQUEST, "malformed header")
            headers[name.strip().lower()] = value.strip()

        response = await self._route(method, target, headers, reader, writer)
        response.headers.update(self._cors(headers.get("origin")))
        return response

    def _cors(self, origin: str | None) -> dict[str, str]:
        cors = {"Vary": "Origin"}
        if origin is not None and origin.rstrip("/") in self._origins:
            cors["Access-Control-Allow-Origin"] = origin
            # The UI's `codec.includeCredentials` sends cookies; the token travels in Authorization anyway.
            cors["Access-Control-Allow-Credentials"] = "true"
        return cors

    async def _route(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> _Response:
        operation = urlsplit(target).path.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("encode", "decode"):
            return _text(HTTPStatus.NOT_FOUND, "not found (POST .../encode or .../decode)")
        if method == "OPTIONS":
            return _Response(
                HTTPStatus.NO_CONTENT,
                headers={
                    "Access-Control-Allow-Methods": "POST, OPTIONS",
                    "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                    "Access-Control-Max-Age": "600",
                },
            )
        if method != "POST":
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", Allow="POST, OPTIONS")

        # Authenticate before reading the body: an anonymous client never gets the server to buffer or
        # decrypt anything.
        refusal = await self._authenticate(headers.get("authorization", ""))
        if refusal is not None:
            return refusal

        if "transfer-encoding" in headers:
            return _text(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length body")
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return _text(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if length < 0:
            return _text(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > self._max_body:
            return _text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await reader.readexactly(length)

        payloads = Payloads()
        try:
            json_format.Parse(body.decode("utf-8"), payloads)
        except (json_format.ParseError, UnicodeDecodeError):
            return _text(HTTPStatus.BAD_REQUEST, "body is not a Payloads JSON message")
        try:
            if operation == "encode":
                result = await self._codec.encode(payloads.payloads)
            else:
                result = await self._codec.decode(payloads.payloads)
        except PayloadDecryptionError as exc:
            # These messages name key ids only, never payload bytes.
            return _text(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:
            logger.warning("codec %s failed: %s", operation, type(exc).__name__)
            return _text(HTTPStatus.BAD_REQUEST, f"payloads could not be {operation}d")

        namespace = headers.get("x-namespace", "")
        logger.info(
            "codec %s of %d payloads (namespace %s)",
            operation,
            len(result),
            namespace if _NAMESPACE.fullmatch(namespace) else "?",
        )
        message = json_format.MessageToDict(Payloads(payloads=result))
        message.setdefault("payloads", [])  # proto JSON omits empty lists; clients expect the key
        return _Response(HTTPStatus.OK, json.dumps(message).encode(), content_type="application/json")

    async def _authenticate(self, authorization: str) -> _Response | None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _text(HTTPStatus.UNAUTHORIZED, "bearer token required", **{"WWW-Authenticate": "Bearer"})
        try:
            principal = self._verify(token)
            if inspect.isawaitable(principal):
                await principal
        except Exception as exc:
            # The verifier's message may describe the token; it stays in the server log at debug level.
            logger.info("codec request refused: %s", type(exc).__name__)
            logger.debug("token verification failed: %s", exc)
            return _text(
                HTTPStatus.UNAUTHORIZED,
                "invalid token",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return None
