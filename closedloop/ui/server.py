"""The browser views' web server (aiohttp): two pages, their files, a status API, a control API.

Routes, and nothing else:

- ``GET /`` the operator's page, ``GET /participant`` the participant's page;
- ``GET /static/NAME`` one of the package's own files (:data:`STATIC`), read once at start; no
  path ever reaches the file system, so ``..``, encoded dots and absolute paths find nothing;
- ``GET /api/status`` JSON (../shared/CONTRACTS.md, "Browser views");
- ``GET /ws?role=operator|participant`` the WebSocket the pages read;
- ``POST /api/control`` ``{"action": "pause" | "resume" | "stop"}`` with the token printed at start
  in the ``X-Closedloop-Token`` header: compared in constant time (``hmac.compare_digest``);
  without it, or with another, 403 and nothing happens.

Every other request is answered 404, and any path holding ``..``, an encoded dot or slash, a
backslash or an empty segment is refused before routing. Bound to 127.0.0.1, the server also
refuses requests whose ``Host`` is not this machine's address (so that a web page elsewhere
cannot reach it through a DNS name that points here), and requests from another origin to the
WebSocket or the control API. Pages get a content security policy that allows only this server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from importlib import resources

from aiohttp import WSMsgType, web

from closedloop.ui.feeds import Hub, Page

logger = logging.getLogger("closedloop.ui")

#: The package's files the pages load: name -> content type.
STATIC = {
    "operator.html": "text/html; charset=utf-8",
    "participant.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "operator.js": "text/javascript; charset=utf-8",
    "participant.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGES = {"/": "operator.html", "/participant": "participant.html"}
#: Token header of control requests.
TOKEN_HEADER = "X-Closedloop-Token"
#: Paths refused before routing (traversal in any spelling).
_BAD_PATH = re.compile(r"(\.\.|%2e|%2f|%5c|\\|//|%00)", re.IGNORECASE)
LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")


def new_token() -> str:
    """A fresh control token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def token_ok(given: str | None, token: str) -> bool:
    """True when ``given`` is the token; constant time whatever ``given`` is."""
    if not isinstance(given, str):
        given = ""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def load_static() -> dict[str, tuple[bytes, str]]:
    """Every file of :data:`STATIC`, read from the package."""
    folder = resources.files("closedloop.ui") / "static"
    return {name: ((folder / name).read_bytes(), ctype) for name, ctype in STATIC.items()}


class ViewServer:
    """The application for one session's views.

    Parameters
    ----------
    hub : Hub
        What the pages see (fed by the readers).
    token : str
        The control token.
    control : ControlClient or None
        The control path into the run; None: view-only (control requests get 409).
    host, port : str, int
        Where to listen (port 0: any free port; :attr:`port` then says which).
    """

    def __init__(self, hub: Hub, token: str, control=None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hub = hub
        self.token = token
        self.control = control
        self.host = host
        self.port = port
        self.files = load_static()
        self.loopback_only = host in LOOPBACK
        self.refused = 0
        self.control_log: list[dict] = []
        self.app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        self.app.router.add_get("/", self._page)
        self.app.router.add_get("/participant", self._page)
        self.app.router.add_get("/static/{name}", self._static)
        self.app.router.add_get("/api/status", self._status)
        self.app.router.add_get("/ws", self._ws)
        self.app.router.add_post("/api/control", self._control)
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # the bound port (0: chosen)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for page in list(self.hub.pages):
            await page.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def urls(self) -> dict[str, str]:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        base = f"http://{host if ':' not in host or host.startswith('[') else '[' + host + ']'}:{self.port}"
        return {"operator": f"{base}/#token={self.token}", "participant": f"{base}/participant",
                "status": f"{base}/api/status"}

    # ------------------------------------------------------------------ guards
    def _host_ok(self, request: web.Request) -> bool:
        if not self.loopback_only:
            return True
        host = request.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        return origin == f"http://{request.headers.get('Host', '')}"

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        raw = request.raw_path.split("?", 1)[0]
        if _BAD_PATH.search(raw) or not raw.startswith("/"):
            self.refused += 1
            return web.Response(status=404, text="not found\n")
        if not self._host_ok(request):
            self.refused += 1
            return web.Response(status=403, text="this server answers to 127.0.0.1 only\n")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                self.refused += 1
            raise
        if not isinstance(response, web.WebSocketResponse):
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Cache-Control"] = "no-store"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["X-Frame-Options"] = "DENY"
        return response

    # ------------------------------------------------------------------ handlers
    def _file(self, name: str) -> web.Response:
        body, ctype = self.files[name]
        response = web.Response(body=body, headers={"Content-Type": ctype})
        if name.endswith(".html"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        return response

    async def _page(self, request: web.Request) -> web.Response:
        return self._file(PAGES[request.path])

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound(text="not found\n")
        return self._file(name)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.hub.api_status(), dumps=lambda o: json.dumps(o, default=str))

    async def _control(self, request: web.Request) -> web.Response:
        if not self._origin_ok(request):
            return web.json_response({"ok": False, "error": "requests from another origin are refused"}, status=403)
        if not token_ok(request.headers.get(TOKEN_HEADER), self.token):
            logger.warning("closedloop ui: a control request without the token was refused")
            return web.json_response(
                {"ok": False, "error": f"refused: the {TOKEN_HEADER} header must carry the token "
                                       "that closedloop ui printed at start"}, status=403)
        try:
            body = await request.json()
            action = body["action"]
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"ok": False, "error": 'expected a JSON body {"action": "pause" | "resume" | "stop"}'}, status=400)
        if action not in ("pause", "resume", "stop"):
            return web.json_response(
                {"ok": False, "error": f"unknown action {action!r}; accepted: pause, resume, stop"}, status=400)
        if self.control is None:
            return web.json_response({"ok": False, "error": "this ui is view-only: " + self.hub.control_note},
                                     status=409)
        reply = await asyncio.get_running_loop().run_in_executor(None, self.control.request, action)
        self.control_log.append({"time": time.time(), "action": action, "reply": reply})
        return web.json_response(reply, status=200 if reply.get("ok") else 502)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        if not self._origin_ok(request):
            raise web.HTTPForbidden(text="requests from another origin are refused\n")
        role = request.query.get("role", "operator")
        if role not in ("operator", "participant"):
            raise web.HTTPBadRequest(text="role must be operator or participant\n")
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=64 * 1024, compress=False)
        await ws.prepare(request)
        page = Page(ws, role)
        for text in self.hub.hello(role):
            page.send(text)
        self.hub.pages.add(page)
        writer = asyncio.ensure_future(self._writer(page))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                self._on_page_message(page, msg.data)
        finally:
            self.hub.pages.discard(page)
            writer.cancel()
        return ws

    async def _writer(self, page: Page) -> None:
        try:
            while True:
                text = await page.queue.get()
                await page.ws.send_str(text)
        except (asyncio.CancelledError, ConnectionResetError, RuntimeError):
            return

    def _on_page_message(self, page: Page, data: str) -> None:
        import pylsl

        try:
            msg = json.loads(data)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("t")
        if kind == "ping":  # clock round trip: the page's time and ours (LSL clock, seconds)
            page.send(json.dumps({"t": "pong", "id": msg.get("id"), "server": pylsl.local_clock()}))
        elif kind == "traces" and page.role == "operator":
            names = msg.get("names")
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                self.hub.trace_channels = names[:8] or None
