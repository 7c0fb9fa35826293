"""The page's HTTP server: a Starlette app under uvicorn, on a thread of its own.

Endpoints (docs/page.md):

``/``
    the page (``static/index.html``, ``page.js``, ``page.css``: no CDN, no build step);
``/events``
    Server-Sent Events: ``hello`` (everything the page shows, at once), then ``live`` (the
    vehicle at the booth), ``crossing`` (a stored crossing), ``reads`` (tag reads, batched),
    ``status`` (the status document, every ``status_interval_s`` and at once when a fault is
    raised or cleared), ``snapshot`` (a new camera snapshot is worth loading), ``dropped``
    (this page was too slow and missed messages);
``/api/status``, ``/api/crossing``
    the status document and the vehicle at the booth, as JSON;
``/snapshot.jpg``, ``/plate/<crossing_id>.jpg``
    the camera's newest frame with the region of interest drawn; a plate crop;
``/metrics``
    Prometheus exposition (:mod:`agent.page.metrics`).

The server runs its own asyncio loop on its thread; the engine thread only ever touches the
:class:`~agent.page.feed.PageFeed`. The listening socket is bound in :meth:`PageServer.start`,
on the caller's thread, so a port in use is an error there and not a thread dying later.
uvicorn installs no signal handlers off the main thread: the agent's SIGTERM handling stays as
it is, and :meth:`PageServer.stop` ends the event streams and the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.page.auth import CredentialCheck
from agent.page.feed import PageFeed, PageMessage, Subscription
from agent.page.metrics import CONTENT_TYPE, exposition

logger = logging.getLogger(__name__)

DEFAULT_STATUS_INTERVAL_S = 2.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
RETRY_MS = 2000
"""How soon a page's EventSource reconnects after the stream broke (e.g. an agent restart)."""

_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_REALM = 'Basic realm="lane-agent", charset="UTF-8"'


def _static_files() -> dict[str, bytes]:
    folder = resources.files("agent.page") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC}


def sse(kind: str, data: object) -> str:
    """One Server-Sent Event (compact JSON holds no newline)."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _batch(messages: Sequence[PageMessage]) -> list[str]:
    """The messages as events, each run of tag reads as one ``reads`` event."""
    chunks: list[str] = []
    reads: list[Mapping[str, Any]] = []
    for message in messages:
        if message.kind == "read":
            reads.append(message.data)
            continue
        if reads:
            chunks.append(sse("reads", {"reads": reads}))
            reads = []
        chunks.append(sse(message.kind, message.data))
    if reads:
        chunks.append(sse("reads", {"reads": reads}))
    return chunks


class _Guard:
    """Every response gets the security headers; without the credential, a 401."""

    def __init__(self, app: ASGIApp, check: CredentialCheck | None) -> None:
        self.app = app
        self.check = check
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        if self.check is not None and not self.check.allows(
            Headers(scope=scope).get("authorization")
        ):
            self.refused += 1
            logger.debug("page request without a valid credential refused")
            response = PlainTextResponse(
                "a credential is required (page.credential_file)",
                status_code=401,
                headers={"WWW-Authenticate": _REALM},
            )
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def build_app(
    feed: PageFeed,
    registry: CollectorRegistry,
    *,
    check: CredentialCheck | None = None,
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S,
) -> _Guard:
    """The page's ASGI app (wrapped in the credential check and the security headers)."""
    static = _static_files()

    async def page(_request: Request) -> Response:
        return Response(static["index.html"], media_type=_STATIC["index.html"])

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static or name == "index.html":
            return PlainTextResponse("not found", status_code=404)
        return Response(static[name], media_type=_STATIC[name])

    async def status(_request: Request) -> Response:
        return JSONResponse(dict(await run_in_threadpool(feed.status)))

    async def crossing(_request: Request) -> Response:
        return JSONResponse({"crossing": feed.current()})

    async def snapshot(_request: Request) -> Response:
        if feed.snapshot is None:
            return PlainTextResponse("no camera on this lane", status_code=404)
        jpeg = await run_in_threadpool(feed.snapshot)
        if jpeg is None:
            return PlainTextResponse("no camera frame yet", status_code=503)
        return Response(jpeg, media_type="image/jpeg")

    async def plate(request: Request) -> Response:
        jpeg = feed.plate_crop(request.path_params["crossing_id"])
        if jpeg is None:
            return PlainTextResponse("no plate image for this crossing", status_code=404)
        return Response(jpeg, media_type="image/jpeg")

    async def metrics(_request: Request) -> Response:
        body = await run_in_threadpool(exposition, registry)
        return Response(body, media_type=CONTENT_TYPE)

    async def events(_request: Request) -> Response:
        if feed.clients() >= feed.max_clients:
            return PlainTextResponse(
                "too many pages open on this lane", status_code=503, headers={"Retry-After": "5"}
            )
        return StreamingResponse(
            _event_stream(feed, status_interval_s),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", asset),
            Route("/events", events),
            Route("/api/status", status),
            Route("/api/crossing", crossing),
            Route("/snapshot.jpg", snapshot),
            Route("/plate/{crossing_id}.jpg", plate),
            Route("/metrics", metrics),
        ]
    )
    return _Guard(app, check)


async def _event_stream(feed: PageFeed, status_interval_s: float) -> AsyncIterator[str]:
    """One page's events until it goes away or the server stops.

    The client subscribes here, inside the stream, so that its subscription ends with the
    stream however that ends (the client left, the server stops).
    """
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(ready.set)  # from the engine thread: never blocks

    client: Subscription | None = feed.subscribe(wake)
    if client is None:
        yield sse("full", {"message": "too many pages open on this lane"})
        return
    try:
        hello = feed.hello()
        hello["status"] = dict(await run_in_threadpool(feed.status))
        snapshots = 0
        yield f"retry: {RETRY_MS}\n\n" + sse("hello", hello)
        next_status = loop.time() + status_interval_s
        while not client.closed:
            left = next_status - loop.time()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), left)
            ready.clear()
            messages, dropped, status_due = client.take()
            chunks = _batch(messages)
            if dropped:
                chunks.append(sse("dropped", {"count": dropped}))
            if status_due or loop.time() >= next_status:
                chunks.append(sse("status", dict(await run_in_threadpool(feed.status))))
                next_status = loop.time() + status_interval_s
                if feed.snapshot is not None:
                    snapshots += 1
                    chunks.append(sse("snapshot", {"n": snapshots}))
            if chunks:
                yield "".join(chunks)
    finally:
        feed.unsubscribe(client)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host``:``port`` (0: a free port)."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class PageServer:
    """The page's uvicorn server on its own thread."""

    def __init__(
        self,
        app: ASGIApp,
        feed: PageFeed,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.feed = feed
        self.host = host
        self.requested_port = port
        self.tls = tls
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._port = port

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when ``port`` was 0)."""
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("page server already started")
        uvicorn_log = logging.getLogger("uvicorn.error")
        if uvicorn_log.level == logging.NOTSET:
            # Its "Started server process" lines at INFO say nothing the agent's own line does
            # not; its warnings and errors still reach the journal.
            uvicorn_log.setLevel(logging.WARNING)
        self._sock = bind(self.host, self.requested_port)
        self._port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        config.load()
        config.ssl = self.tls  # our context: TLS 1.2+, loaded (and checked) before the start
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="page server", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not server.started and self._thread.is_alive() and waited < timeout_s:
            deadline.wait(0.01)
            waited += 0.01
        if not server.started:
            self.stop()
            raise OSError(f"page server did not start: {self._failed!r}")
        logger.info("lane page on %s", self.url)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End every event stream, then the server; returns when its thread has ended."""
        self.feed.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("page server did not stop within %.0f s", 2 * timeout_s)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as error:  # uvicorn exits (SystemExit) on a failed start
            self._failed = error
            logger.error("page server stopped: %r", error)
