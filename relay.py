"""The early-warning relay (issue 37): boards' indicators in, to every other board out, over mutual TLS.

    python -m relay --tls-dir certs/lan [--host 0.0.0.0] [--port 8899] [--status-port 8766] [--config YAML]

Runs beside the federation's server with the deployment's certificates (server.pem/.key and ca.pem in --tls-dir):
a board proves who it is with its own (`fediot-rank-<r>`, made by make_certs.sh), exactly as for training. Each
board keeps one connection (`RelayLink`, started by `detect --relay HOST:PORT --tls-dir DIR --rank R`) and sends its
detector's indicators as JSON lines; the relay checks each (`traffic.warning.parse_indicator`: size before parsing,
then type, fields, ranges), applies the rules (`traffic.warning.RelayRules`: rate per board, private addresses kept
home, de-duplication, confirmation by a second board) and sends what passes to every other connected board; a board
that connects later is sent what is in force (each endpoint's latest, within detect_args.warn_ttl_s). A bad
line is counted and logged with its board (at most detect_args.warn_log_per_minute lines a minute a board), and
the relay goes on. Nothing here sees a packet or a row. Its status page (--status-port; the status server's access
rules: status_args.host, status_args.token) lists the boards connected and the latest early warnings (endpoint,
status, the boards that named it, when, why), as HTML, /api/status and Prometheus /metrics.
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import queue
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

from data import nbaiot
from deployment.certs import rank_in_names
from fediot.config import load, validate
from traffic.settings import DetectArgs
from fediot.errors import FedIoTError
from monitor.refusals import RefusalLog
from traffic.warning import MAX_INDICATOR_BYTES, Indicator, IndicatorStore, RelayRules, parse_indicator

log = logging.getLogger("fediot.relay")
HANDSHAKE_TIMEOUT_S = 10.0  # a connection that has not finished its TLS handshake by then is closed
RECONNECT_S = 2.0  # a board's link retries the relay this often
RECENT_KEPT = 200  # relayed indicators the status page lists (the newest)
OUTBOX_LINES = 1024  # relayed lines waiting for one board (beyond: dropped and counted)
MAX_HANDSHAKES = 32  # connections still in their TLS handshake at once; more are closed at once (counted): a LAN host
# opening connections without a certificate costs the relay at most this many threads, each for HANDSHAKE_TIMEOUT_S


def board_name(rank: int) -> str:
    return f"board{rank}"


def _server_context(tls_dir: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls_dir / "server.pem", tls_dir / "server.key")
    ctx.load_verify_locations(tls_dir / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    # no TLS 1.3 session tickets: they arrive after the handshake, and a board's link reads (its receive thread) while
    # it writes (its send thread) on one SSL socket; a ticket read during a write broke a CI run's link
    # (SSLV3_ALERT_UNEXPECTED_MESSAGE at the relay, tests/test_early_warning.py). Links never resume sessions anyway
    ctx.num_tickets = 0
    return ctx


def _client_context(tls_dir: Path, rank: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls_dir / f"client{rank}.pem", tls_dir / f"client{rank}.key")
    ctx.load_verify_locations(tls_dir / "ca.pem")
    return ctx


def _rank_of(conn: ssl.SSLSocket) -> int | None:
    cert = conn.getpeercert() or {}
    return rank_in_names([v for k, v in cert.get("subjectAltName", ()) if k == "DNS"])


def _end(q: "queue.Queue[bytes | None]") -> None:
    """Tell a board's sender thread to stop (a full queue: its closed connection stops it)."""
    try:
        q.put_nowait(None)
    except queue.Full:
        pass


def _lines(conn: socket.socket, limit: int):
    """JSON lines from a connection, each at most `limit` bytes (a longer one: ValueError, the connection ends)."""
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
        if len(buf) > limit:
            raise ValueError(f"a line longer than {limit} bytes")


class Relay:
    """The relay's sockets around `RelayRules`: a thread per board connection, one connection per board."""

    def __init__(self, host: str, port: int, tls_dir: Path, cfg: DetectArgs, max_boards: int = 256) -> None:
        self.rules = RelayRules(cfg.warn_confirm_boards, cfg.warn_ttl_s, cfg.warn_rate_per_min, cfg.warn_burst,
                                cfg.warn_share_private, cfg.warn_max_indicators,
                                confirm_windows=cfg.warn_confirm_windows, confirm_share=cfg.warn_confirm_share)
        self.context = _server_context(tls_dir)
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.max_boards = max_boards
        self.boards: dict[str, ssl.SSLSocket] = {}
        self.outboxes: dict[str, queue.Queue[bytes | None]] = {}  # board -> lines waiting for its sender thread
        self.dropped: dict[str, int] = {}  # board -> relayed lines dropped (its queue was full)
        self.lock = threading.Lock()
        self.refusals = RefusalLog(log, cfg.warn_log_per_minute)
        self.refused: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)  # the latest relayed, for the status page
        self.live: OrderedDict[str, tuple[set[str], float, bytes]] = OrderedDict()  # endpoint -> (boards, at, line)
        self.started = time.time()
        self.handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self.stopped = threading.Event()

    def start(self) -> "Relay":
        threading.Thread(target=self._accept, name="fediot-relay", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        with self.lock:
            for c in self.boards.values():
                c.close()

    def _refuse(self, board: str, why: str) -> None:
        self.refused[board] = self.refused.get(board, 0) + 1
        self.refusals.warn(board, why)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                raw, address = self.sock.accept()
            except OSError:
                return
            if not self.handshakes.acquire(blocking=False):
                self._refuse(f"{address[0]} (before its certificate)", f"more than {MAX_HANDSHAKES} handshakes at once")
                raw.close()
                continue
            threading.Thread(target=self._serve, args=(raw, address), daemon=True).start()

    def _serve(self, raw: socket.socket, address: Any) -> None:
        board = f"{address[0]} (before its certificate)"
        conn: ssl.SSLSocket | None = None
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                conn = self.context.wrap_socket(raw, server_side=True)
            finally:
                self.handshakes.release()
            rank = _rank_of(conn)
            if rank is None or rank == 0:
                self._refuse(board, "a certificate that names no board")
                conn.close()
                return
            board = board_name(rank)
            with self.lock:
                if board not in self.boards and len(self.boards) >= self.max_boards:
                    self._refuse(board, f"more than {self.max_boards} boards")
                    conn.close()
                    return
                old = self.boards.get(board)
                self.boards[board] = conn  # a board's newest connection replaces its older one
                old_q = self.outboxes.get(board)
                out_q: queue.Queue[bytes | None] = queue.Queue(maxsize=OUTBOX_LINES)
                self.outboxes[board] = out_q
                # a board that joins (a reboot, detect waiting for its first model) gets what is in force now
                for named, at, data in list(self.live.values())[-OUTBOX_LINES // 2:]:
                    if time.time() - at <= self.rules.ttl_s and board not in named:
                        out_q.put_nowait(data)
            if old is not None:
                old.close()
            if old_q is not None:
                _end(old_q)
            threading.Thread(target=self._sender, args=(board, conn, out_q), daemon=True).start()
            conn.settimeout(None)  # boards are quiet for days; a line's size is bounded instead
            log.info("%s connected from %s", board, address[0])
            for line in _lines(conn, MAX_INDICATOR_BYTES):
                self._line(board, line)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._refuse(board, f"connection ended: {exc}"[:200])
        finally:
            with self.lock:
                if conn is not None and self.boards.get(board) is conn:
                    del self.boards[board]
                    _end(self.outboxes.pop(board))
            (conn or raw).close()

    def _line(self, board: str, line: bytes) -> None:
        try:
            ind = parse_indicator(json.loads(line.decode("utf-8")), time.time())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # IndicatorError is a ValueError
            self._refuse(board, f"indicator refused: {exc}"[:200])
            return
        what, out = self.rules.offer(board, ind, time.time())
        if what == "refused_rate":
            self._refuse(board, "indicators beyond detect_args.warn_rate_per_min")
        if out is not None:
            wire = out.to_wire()
            data = (json.dumps(wire) + "\n").encode()  # one line, for the boards now and those that join later
            self.recent.appendleft({"at": time.time(), **wire})
            with self.lock:  # in force for boards that join later: the endpoint's latest status
                self.live.pop(out.endpoint, None)
                self.live[out.endpoint] = (set(out.boards), time.time(), data)
                while len(self.live) > self.rules.max_endpoints:
                    self.live.popitem(last=False)
            self.broadcast(out, data, exclude=board)

    def broadcast(self, ind: Indicator, data: bytes, exclude: str) -> None:
        """`data` (the indicator's line) onto the queue of every board that did not name it: a board that reads slowly
        (or not at all) delays only itself; its queue full, what does not fit is dropped and counted."""
        with self.lock:
            targets = [(b, q) for b, q in self.outboxes.items() if b != exclude and b not in ind.boards]
        for b, q in targets:
            try:
                q.put_nowait(data)
            except queue.Full:
                self.dropped[b] = self.dropped.get(b, 0) + 1

    def _sender(self, board: str, conn: ssl.SSLSocket, q: "queue.Queue[bytes | None]") -> None:
        """One board's relayed lines, in order. No timeout on the socket: its reading thread shares it (a send timeout
        ended every board's connection after 5 s of quiet, a CI run); a board that stops reading blocks only this
        thread, and its queue drops what does not fit."""
        while True:
            data = q.get()
            if data is None:
                return
            try:
                conn.sendall(data)
            except OSError as exc:
                log.warning("%s: relaying to it failed (%s): disconnected", board, exc)
                conn.close()
                return

    def snapshot(self) -> dict[str, Any]:
        """What the status page shows (JSON; board names and addresses are the relay's own, endpoints validated)."""
        with self.lock:
            boards = sorted(self.boards)
        return {"boards": boards, "counts": dict(self.rules.counts), "refused": dict(self.refused),
                "dropped": dict(self.dropped),
                "recent": list(self.recent), "started_at": self.started, "now": time.time()}

    def metrics_families(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        yield GaugeMetricFamily("fediot_relay_boards_connected", "boards connected to the relay",
                                value=len(snap["boards"]))
        c = CounterMetricFamily("fediot_relay_indicators", "indicators by what the relay did with them",
                                labels=["outcome"])
        for k, v in snap["counts"].items():
            c.add_metric([k], v)
        yield c
        r = CounterMetricFamily("fediot_relay_refused", "lines refused, per board", labels=["board"])
        for k, v in snap["refused"].items():
            r.add_metric([k], v)
        yield r


def render_page(snap: dict[str, Any], refresh_s: float) -> str:
    """The relay's page: server-side HTML, every value escaped (endpoints are validated addresses, board names the
    relay's own; groups are checked against the known ones), refreshed by the browser every refresh_s."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(r['at'])))}</td><td>{esc(r['endpoint'])}</td>"
        f"<td class='{esc(r['status'])}'>{esc(r['status'])}</td><td>{esc(', '.join(r['boards']))}</td>"
        f"<td>{esc(', '.join(str(p) for p in r['ports']))}</td><td>{r['score']:.3g}</td>"
        f"<td>{esc('; '.join(nbaiot.GROUP_MEANINGS[g] for g in r['groups']))}</td></tr>" for r in snap["recent"])
    boards = esc(", ".join(snap["boards"])) or "none"
    counts = esc(", ".join(f"{k} {v}" for k, v in snap["counts"].items()))
    refused = esc(", ".join(f"{k} {v}" for k, v in snap["refused"].items())) or "none"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta http-equiv='refresh' "
            f"content='{refresh_s:g}'><title>FedIoT early warning</title><style>body{{font:14px system-ui,sans-serif;"
            f"margin:16px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ddd;padding:3px 6px}}"
            f" .confirmed{{color:#a00;font-weight:bold}} .warning{{color:#a60}}</style></head><body>"
            f"<h1>FedIoT early warning</h1><p>boards connected: <span id='boards'>{boards}</span></p>"
            f"<p>indicators: {counts}; refused: {refused}</p><h2>Latest early warnings</h2><table id='warnings'>"
            f"<thead><tr><th>relayed (UTC)</th><th>endpoint</th><th>status</th><th>boards</th><th>ports</th>"
            f"<th>score</th><th>why</th></tr></thead><tbody>{rows}</tbody></table></body></html>")


def serve_status(relay: Relay, port: int, host: str, token: str | None, refresh_s: float):
    """The relay's status server (monitor.http.StatusServer: loopback unless a token; GET only; bounded)."""
    from monitor.http import StatusServer
    from monitor.metrics import exposition

    return StatusServer(host, port, token, relay.snapshot, exposition(relay.metrics_families, "fediot_relay"),
                        lambda snap: render_page(snap, refresh_s)).start()


class RelayLink:
    """A board's connection to the relay (a thread): its own indicators out (a bounded queue: a full one drops and
    counts), the others' in, checked and put in the store's inbox. Reconnects every RECONNECT_S."""

    def __init__(self, address: str, tls_dir: Path, rank: int, store: IndicatorStore,
                 say: Callable[[str], None] = lambda text: None, capacity: int = 256) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise FedIoTError(f"--relay {address!r}: expected HOST:PORT")
        self.host, self.port = host.strip("[]"), int(port)
        self.context = _client_context(tls_dir, rank)
        self.store, self.say = store, say
        self.outbox: queue.Queue[Indicator] = queue.Queue(maxsize=capacity)
        self.counts = {"sent": 0, "dropped": 0, "received": 0, "refused": 0}
        self.connected = threading.Event()
        self.stopped = threading.Event()
        self.conn: ssl.SSLSocket | None = None

    def start(self) -> "RelayLink":
        threading.Thread(target=self._run, name="fediot-relay-link", daemon=True).start()
        threading.Thread(target=self._send_loop, name="fediot-relay-send", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self.conn is not None:
            self.conn.close()

    def publish(self, ind: Indicator) -> None:
        try:
            self.outbox.put_nowait(ind)
        except queue.Full:
            self.counts["dropped"] += 1

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                raw = socket.create_connection((self.host, self.port), timeout=HANDSHAKE_TIMEOUT_S)
                conn = self.context.wrap_socket(raw, server_hostname=self.host)
                conn.settimeout(None)
                self.conn = conn
                self.connected.set()
                self.say(f"relay: connected to {self.host}:{self.port}")
                for line in _lines(conn, MAX_INDICATOR_BYTES):
                    try:
                        ind = parse_indicator(json.loads(line.decode("utf-8")), time.time(), relayed=True)
                    except (UnicodeDecodeError, ValueError, RecursionError):
                        self.counts["refused"] += 1
                        continue
                    self.counts["received"] += 1
                    self.store.inbox.append(ind)
            except (OSError, ssl.SSLError, ValueError) as exc:
                if not self.stopped.is_set() and self.connected.is_set():
                    self.say(f"relay: connection lost ({exc}); retrying every {RECONNECT_S:g}s")
            self.connected.clear()
            self.conn = None
            self.stopped.wait(RECONNECT_S)

    def _send_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                ind = self.outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            conn = self.conn
            fields = ind.to_wire()
            for k in ("board", "status", "boards"):  # the relay names the board from its certificate
                fields.pop(k)
            try:
                if conn is None:
                    raise OSError("not connected")
                conn.sendall((json.dumps(fields) + "\n").encode())
                self.counts["sent"] += 1
            except OSError:
                self.counts["dropped"] += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tls-dir", type=Path, required=True, help="server.pem, server.key and ca.pem (make_certs.sh)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; the LAN: its address)")
    p.add_argument("--port", type=int, default=None, help="port (default detect_args.warn_relay_port)")
    p.add_argument("--config", type=Path, help="YAML whose detect_args set the relay's rules (default: defaults)")
    p.add_argument("--status-port", type=int, default=None,
                   help="serve the relay's status page here (0 = a free port; default: none); status_args.host and "
                        "status_args.token say who may look")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        full = load(a.config) if a.config else validate({})
        cfg = full.detect
        for name in ("server.pem", "server.key", "ca.pem"):
            if not (a.tls_dir / name).is_file():
                raise FedIoTError(f"--tls-dir: {a.tls_dir / name} not found (bash make_certs.sh makes it)")
        relay = Relay(a.host, a.port if a.port is not None else cfg.warn_relay_port, a.tls_dir, cfg).start()
    except (FedIoTError, OSError, ssl.SSLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"relay: listening on {relay.host}:{relay.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    if a.status_port is not None:
        try:
            page = serve_status(relay, a.status_port, full.status.host, full.status.token, full.status.refresh_s)
        except OSError as exc:
            print(f"error: --status-port {a.status_port}: {exc.strerror or exc}", file=sys.stderr)
            relay.stop()
            return 2
        print(f"relay status page: {page.url}", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(60)
            print(f"relay: {len(relay.boards)} boards connected; {relay.rules.counts}; refused {relay.refused}",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
