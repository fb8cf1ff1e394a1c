"""The read-only status server: the status page (`/`), its data (`/api/status`), Prometheus metrics (`/metrics`) and
a finished run's files (`/files/...`), on Python's own HTTP server in daemon threads.

Who may look: by default it listens on loopback only. On another address it needs an access token (the config
refuses the setting without one), and every request from an address that is not loopback must carry it
(`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a browser). With a token set, every request needs it. A refused
request is answered 401/403, counted (`fediot_status_refused_total`) and logged at most once a minute. Only GET and
HEAD; at most `MAX_CONNECTIONS` at a time and `MAX_PER_CLIENT` from one address (more are closed unanswered); a
request line and headers within Python's limits and within `HEADER_DEADLINE_S` of the connection (a client sending a
byte every few seconds is cut off then, not when it pauses: issue 34, 16 such connections held every slot), a
socket idle for `REQUEST_TIMEOUT_S` closed. Without a token (loopback only), the request's Host header must name
loopback (localhost, 127.0.0.1, [::1]): a page on another site whose name an attacker points at 127.0.0.1 (DNS
rebinding) sends its own name and is refused.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("fediot.status")

MAX_CONNECTIONS = 16
MAX_PER_CLIENT = 4
HEADER_DEADLINE_S = 5.0
REQUEST_TIMEOUT_S = 10.0
LOG_REFUSALS_EVERY_S = 60.0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class StatusServer:
    """Serves `snapshot()` as a page and as JSON, `metrics()` in Prometheus' text format, and `files` of `run_dir`."""

    def __init__(self, host: str, port: int, token: str | None, snapshot: Callable[[], dict[str, Any]] | None,
                 metrics: Callable[[], bytes], page: Callable[[dict[str, Any]], str] | None = None,
                 run_dir: Path | None = None, on_request: Callable[[bool], None] | None = None) -> None:
        """Binds now (OSError when the port is taken); `start` serves. snapshot/page None: /metrics only (detect)."""
        self.token = token
        self.snapshot, self.metrics, self.page, self.run_dir = snapshot, metrics, page, run_dir
        self.on_request = on_request or (lambda refused: None)
        self.refused = 0
        self.views = 0  # answered requests for the page or its data: someone is watching (the linger after a run)
        self._last_refusal_log = 0.0
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        outer = self

        class Handler(_Handler):
            server_ref = outer

        self.httpd = _Server((host, port), Handler, self._slots)
        self.host, self.port = self.httpd.server_address[:2]
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "StatusServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 1.0},
                                       name="fediot-status", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- access
    def allowed(self, client_host: str, headers, query: dict[str, list[str]]) -> tuple[int, str] | None:
        """None when the request may be answered; else (status, why)."""
        given = None
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        elif query.get("token"):
            given = query["token"][0]
        if self.token is None:
            if not is_loopback(client_host):
                return 403, f"{client_host} is not loopback and status_args.token is not set"
            host = _host_name(headers.get("Host") or "localhost")  # a browser always sends one; curl -0 may not
            if not is_loopback(host):
                return 403, (f"Host {host[:80]!r} is not a loopback name (a page of another site reaching this "
                             "server through its name: DNS rebinding)")
            return None
        if given is None:
            return 401, "no access token"
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return 401, "wrong access token"
        return None

    def refuse(self, client_host: str, why: str) -> None:
        self.refused += 1
        self.on_request(True)
        now = time.monotonic()
        if now - self._last_refusal_log >= LOG_REFUSALS_EVERY_S:
            self._last_refusal_log = now
            log.warning("status page: refused a request from %s (%s); %d refused so far", client_host, why,
                        self.refused)


def _host_name(header: str) -> str:
    """The name of a Host header without its port ("[::1]:8080" -> "::1", "localhost:80" -> "localhost")."""
    h = header.strip()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, slots: threading.BoundedSemaphore) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = slots
        self.per_client: dict[str, int] = {}
        self.per_client_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        host = client_address[0]
        with self.per_client_lock:
            mine = self.per_client.get(host, 0)
            if mine >= MAX_PER_CLIENT or not self.slots.acquire(blocking=False):  # closed unanswered
                self.shutdown_request(request)
                return
            self.per_client[host] = mine + 1
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.per_client_lock:
                left = self.per_client.get(client_address[0], 1) - 1
                if left > 0:
                    self.per_client[client_address[0]] = left
                else:
                    self.per_client.pop(client_address[0], None)
            self.slots.release()


class _Handler(BaseHTTPRequestHandler):
    server_ref: StatusServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "FedIoT-status"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # the whole request line and headers within HEADER_DEADLINE_S: the socket timeout alone restarts with each
        # byte, so a byte every few seconds held the connection (and its slot) for as long as the client liked
        self._deadline = threading.Timer(HEADER_DEADLINE_S, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def parse_request(self) -> bool:
        ok = super().parse_request()  # reads the headers too
        self._deadline.cancel()  # the request line and headers are in
        return ok

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("status page: %s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; "
                                                    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        self._send(405, b"read-only\n", "text/plain; charset=utf-8")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_GET(self) -> None:  # noqa: N802
        s = self.server_ref
        url = urlsplit(self.path)
        client = self.client_address[0]
        refusal = s.allowed(client, self.headers, parse_qs(url.query))
        if refusal is not None:
            s.refuse(client, refusal[1])
            self._send(refusal[0], (refusal[1] + "\n").encode(), "text/plain; charset=utf-8")
            return
        s.on_request(False)
        path = url.path
        try:
            if path == "/metrics":
                self._send(200, s.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif s.snapshot is None:
                self._send(404, b"only /metrics here\n", "text/plain; charset=utf-8")
            elif path == "/api/status":
                s.views += 1
                self._send(200, json.dumps(s.snapshot()).encode(), "application/json")
            elif path in ("/", "/index.html") and s.page is not None:
                s.views += 1
                self._send(200, s.page(s.snapshot()).encode(), "text/html; charset=utf-8")
            elif path.startswith("/files/") and s.run_dir is not None:
                self._file(unquote(path[len("/files/"):]))
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _file(self, name: str) -> None:
        """A finished run's file, only one the snapshot lists (no path from the request reaches the file system)."""
        s = self.server_ref
        finished = s.snapshot().get("finished") or {}
        if name not in finished.get("files", []):
            self._send(404, b"not a file of this run\n", "text/plain; charset=utf-8")
            return
        kind = {".md": "text/markdown; charset=utf-8", ".json": "application/json", ".png": "image/png",
                ".jsonl": "application/x-ndjson"}.get(Path(name).suffix, "application/octet-stream")
        self._send(200, (s.run_dir / name).read_bytes(), kind)
