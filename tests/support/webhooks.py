"""A tiny webhook endpoint for the tests (aiohttp): it answers each POST with the next status of a script
(then 200) and keeps what it received."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class Endpoint:
    """answer(event_type) → the HTTP status to answer (the script)."""

    answer: Callable[[bytes], int]
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/parcours/events"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answer(body)
        self.received.append(Received(body, dict(request.headers), status))
        return web.Response(status=status)

    async def start(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/parcours/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
