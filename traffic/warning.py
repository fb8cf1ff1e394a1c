"""Federated early warning (issue 37): one board's detection becomes every board's warning, without sharing traffic.

A board whose detector raises an alert publishes an **indicator**: the remote endpoint (address, a few ports, the
protocol), the alert's time and score and the feature groups its score came from — never packets or rows. The relay
(`relay.py`, beside the server) takes it from the board's certificate, checks it (`parse_indicator`: the one
definition of the message and its bounds), applies `RelayRules` — rate limit per board, de-duplication, private
addresses kept home, and the liar bound: an endpoint named by one board is a *warning*; it is *confirmed* only when
`detect_args.warn_confirm_boards` boards' own detectors are *sure* of it: each raised at least
`detect_args.warn_confirm_windows` window alerts on it, and they were at least `detect_args.warn_confirm_share` of its
packets since the first (an honest board's passing false alarm names an endpoint but is not sure of it, so a liar and
a false alarm confirm nothing) — and sends what passes to every other board.
A board keeps what it was sent in an `IndicatorStore` (bounded in count and time) and `detect` alerts at the first
packet from or to an indicated endpoint, marked as an early warning naming the board that saw it first; its own
detector then confirms it (its own indicator goes back to the relay) or, after `warn_confirm_s`, clears it.
"""
from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from data import nbaiot
from fediot.settings import is_int

INDICATOR_VERSION = 1
MAX_INDICATOR_BYTES = 2048  # one indicator's JSON line; longer is refused before it is parsed
MAX_PORTS = 8
MAX_GROUPS = 3
PROTOCOLS = ("tcp", "udp", "icmp", "other")
EARLIEST_TIME = 946684800.0  # 2000-01-01: an indicator's time is after it (a replayed capture's packets may be old)
CLOCK_SKEW_S = 86400.0  # ... and at most a day ahead of the receiver's clock
MAX_COUNT = 1_000_000_000  # an indicator's counts of window alerts and packets (a day of a 10,000 packet/s flood fits)


class IndicatorError(ValueError):
    """An indicator that is not one: the reason, for the refusal's count and log line."""


@dataclass(frozen=True)
class Indicator:
    """What one board saw: never packets or rows."""

    endpoint: str  # the remote address (canonical text)
    ports: tuple[int, ...]
    proto: str
    time: float  # the alert's packet time (epoch s)
    score: float
    groups: tuple[str, ...]  # the feature groups the score came from (detect's explanation)
    windows: int = 1  # window alerts the board's detector raised on the endpoint so far (within warn_ttl_s) ...
    packets: int = 1  # ... of this many packets from or to it since the first of them
    board: str = ""  # set by the relay from the sender's certificate, never taken from the message
    status: str = "warning"  # relayed: "warning" (one board) or "confirmed" (warn_confirm_boards boards)
    boards: tuple[str, ...] = ()  # relayed: the boards that named it, first first

    def to_wire(self) -> dict[str, Any]:
        return {"v": INDICATOR_VERSION, "endpoint": self.endpoint, "ports": list(self.ports), "proto": self.proto,
                "time": self.time, "score": self.score, "groups": list(self.groups), "windows": self.windows,
                "packets": self.packets, "board": self.board,
                "status": self.status, "boards": list(self.boards)}


def parse_indicator(fields: Any, now: float, relayed: bool = False) -> Indicator:
    """The one check of an indicator, in order: type, keys, each field's type, size, range and finiteness.
    IndicatorError says what is wrong. A board's own message carries no board, status or boards (relayed=False: they
    are refused, the relay sets them); a relayed one must."""
    if not isinstance(fields, dict):
        raise IndicatorError("not a JSON object")
    allowed = {"v", "endpoint", "ports", "proto", "time", "score", "groups", "windows", "packets"} | (
        {"board", "status", "boards"} if relayed else set())
    extra = set(fields) - allowed
    if extra:
        raise IndicatorError(f"unexpected fields {sorted(extra)[:4]}")
    if fields.get("v") != INDICATOR_VERSION:
        raise IndicatorError(f"version {str(fields.get('v'))[:10]!r}; expected {INDICATOR_VERSION}")
    ep = fields.get("endpoint")
    if not isinstance(ep, str) or len(ep) > 45:
        raise IndicatorError("endpoint: expected an IP address")
    try:
        endpoint = str(ipaddress.ip_address(ep))
    except ValueError:
        raise IndicatorError("endpoint: expected an IP address") from None
    ports = fields.get("ports", [])
    if not isinstance(ports, list) or len(ports) > MAX_PORTS or not all(
            is_int(p) and 0 <= p <= 65535 for p in ports):
        raise IndicatorError(f"ports: expected at most {MAX_PORTS} integers 0..65535")
    proto = fields.get("proto")
    if proto not in PROTOCOLS:
        raise IndicatorError(f"proto: expected one of {', '.join(PROTOCOLS)}")
    t, score = fields.get("time"), fields.get("score")
    for name, v in (("time", t), ("score", score)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise IndicatorError(f"{name}: expected a finite number")
    if not EARLIEST_TIME <= float(t) <= now + CLOCK_SKEW_S:
        raise IndicatorError("time: expected epoch seconds after 2000 and at most a day ahead")
    if score < 0:
        raise IndicatorError("score: expected >= 0")
    groups = fields.get("groups", [])
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS or not all(g in nbaiot.GROUP_MEANINGS for g in groups):
        raise IndicatorError(f"groups: expected at most {MAX_GROUPS} of {', '.join(nbaiot.GROUP_MEANINGS)}")
    windows = fields.get("windows", 1)
    if not is_int(windows) or not 1 <= windows <= MAX_COUNT:
        raise IndicatorError(f"windows: expected an integer 1..{MAX_COUNT}")
    packets = fields.get("packets", windows)
    if not is_int(packets) or not windows <= packets <= MAX_COUNT:
        raise IndicatorError(f"packets: expected an integer windows..{MAX_COUNT} (each window alert is a packet)")
    extra_fields: dict[str, Any] = {"windows": windows, "packets": packets}
    if relayed:
        board, status, boards = fields.get("board"), fields.get("status"), fields.get("boards", [])
        if not isinstance(board, str) or not 0 < len(board) <= 64:
            raise IndicatorError("board: expected the name of the board that saw it")
        if status not in ("warning", "confirmed"):
            raise IndicatorError("status: expected warning or confirmed")
        if not isinstance(boards, list) or len(boards) > 64 or not all(isinstance(b, str) and len(b) <= 64
                                                                      for b in boards):
            raise IndicatorError("boards: expected at most 64 board names")
        extra_fields |= {"board": board, "status": status, "boards": tuple(boards)}
    return Indicator(endpoint, tuple(ports), proto, float(t), float(score), tuple(groups), **extra_fields)


HOUSEHOLD_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "fc00::/7", "fe80::/10", "::1/128"))  # RFC 1918, carrier-grade NAT, loopback, link-local, IPv6 ULA


def is_private(endpoint: str) -> bool:
    """Addresses that mean something only inside one household (HOUSEHOLD_NETWORKS), multicast, unspecified."""
    a = ipaddress.ip_address(endpoint)
    return a.is_multicast or a.is_unspecified or any(a in n for n in HOUSEHOLD_NETWORKS if n.version == a.version)


@dataclass
class _Seen:
    boards: OrderedDict = field(default_factory=OrderedDict)  # board -> (last time it named the endpoint, sure of it)
    relayed: str | None = None  # the status last relayed
    relayed_at: float = 0.0


class RelayRules:
    """What the relay does with a board's indicator (pure: the relay's socket code calls it; tests call it)."""

    def __init__(self, confirm_boards: int, ttl_s: float, rate_per_min: float, burst: int, share_private: bool,
                 max_endpoints: int, *, confirm_windows: int, confirm_share: float) -> None:
        self.confirm_boards, self.ttl_s = confirm_boards, ttl_s
        self.confirm_windows, self.confirm_share = confirm_windows, confirm_share
        self.rate_per_s, self.burst = rate_per_min / 60.0, float(burst)
        self.share_private, self.max_endpoints = share_private, max_endpoints
        self.buckets: dict[str, tuple[float, float]] = {}  # board -> (tokens, at)
        self.seen: OrderedDict[str, _Seen] = OrderedDict()  # endpoint -> who named it (least recent first)
        self.counts: dict[str, int] = {"relayed": 0, "confirmed": 0, "refused_rate": 0, "kept_private": 0,
                                       "duplicate": 0}

    def sure(self, ind: Indicator) -> bool:
        """The board's detector keeps alerting on the endpoint: confirm_windows window alerts or more, and at least
        confirm_share of its packets since the first (a passing false alarm on a busy endpoint is neither)."""
        return ind.windows >= self.confirm_windows and ind.windows >= self.confirm_share * ind.packets

    def _admit(self, board: str, now: float) -> bool:
        tokens, at = self.buckets.get(board, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        if tokens < 1.0:
            self.buckets[board] = (tokens, now)
            return False
        self.buckets[board] = (tokens - 1.0, now)
        return True

    def offer(self, board: str, ind: Indicator, now: float) -> tuple[str, Indicator | None]:
        """(what happened, the indicator to send to every other board or None). A board's indicators beyond its
        rate are refused (counted); a private address stays home unless share_private; an endpoint already relayed
        with the same status within ttl_s is not sent again; it is confirmed once confirm_boards boards are sure of
        it (`sure`), each by an indicator of its own within ttl_s."""
        if not self._admit(board, now):
            self.counts["refused_rate"] += 1
            return "refused_rate", None
        if not self.share_private and is_private(ind.endpoint):
            self.counts["kept_private"] += 1
            return "kept_private", None
        s = self.seen.pop(ind.endpoint, None) or _Seen()
        for b, (t, _) in list(s.boards.items()):
            if now - t > self.ttl_s:
                del s.boards[b]
        _, sure = s.boards.pop(board, (now, False))
        s.boards[board] = (now, sure or self.sure(ind))
        self.seen[ind.endpoint] = s
        while len(self.seen) > self.max_endpoints:
            self.seen.popitem(last=False)
        status = "confirmed" if sum(sure for _, sure in s.boards.values()) >= self.confirm_boards else "warning"
        if s.relayed == status and now - s.relayed_at <= self.ttl_s:
            self.counts["duplicate"] += 1
            return "duplicate", None
        s.relayed, s.relayed_at = status, now
        boards = tuple(s.boards)
        out = Indicator(ind.endpoint, ind.ports, ind.proto, ind.time, ind.score, ind.groups, windows=ind.windows,
                        packets=ind.packets, board=boards[0], status=status, boards=boards)
        self.counts["confirmed" if status == "confirmed" else "relayed"] += 1
        return status, out


@dataclass
class Entry:
    indicator: Indicator
    until: float
    warned: bool = False  # this board raised its early warning for it
    warned_at: float = 0.0
    confirmed_here: bool = False


class IndicatorStore:
    """A board's indicators from the relay: at most `max_entries`, each for `ttl_s` (packet time), looked up by the
    address bytes packets carry."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self.by_ip: OrderedDict[bytes, Entry] = OrderedDict()
        self.inbox: deque[Indicator] = deque(maxlen=max_entries)  # filled by the relay link's thread

    def put(self, ind: Indicator, now: float) -> None:
        key = ipaddress.ip_address(ind.endpoint).packed
        old = self.by_ip.pop(key, None)
        entry = Entry(ind, now + self.ttl_s)
        if old is not None:  # an update (warning -> confirmed): what this board already did stays
            entry.warned, entry.warned_at, entry.confirmed_here = old.warned, old.warned_at, old.confirmed_here
        self.by_ip[key] = entry
        while len(self.by_ip) > self.max_entries:
            self.by_ip.popitem(last=False)

    def take_inbox(self, now: float) -> None:
        """Move what the link thread received into the store (on detect's own thread, between batches)."""
        while self.inbox:
            self.put(self.inbox.popleft(), now)

    def unwarned(self, address: bytes) -> bool:
        """An endpoint indicated and not yet warned of here (live capture ends a batch at its packet). Called on
        detect's thread between packets: what the link thread received is taken in first."""
        if self.inbox:
            self.take_inbox(time.time())
        e = self.by_ip.get(address)
        return e is not None and not e.warned

    def get(self, address: bytes, now: float) -> Entry | None:
        e = self.by_ip.get(address)
        if e is not None and now > e.until:
            del self.by_ip[address]
            return None
        return e


class WarningWatch:
    """detect's side of the early warning: which packet is the first from or to an indicated endpoint (the warning),
    whether the board's own detector then confirms it, and which warnings lapse unconfirmed (cleared)."""

    def __init__(self, store: IndicatorStore, confirm_s: float) -> None:
        self.store, self.confirm_s = store, confirm_s
        self.warned: list[tuple[bytes, Entry]] = []  # raised here and not yet confirmed or cleared
        self.counts = {"raised": 0, "confirmed_here": 0, "cleared": 0}

    def first_packets(self, src: list[bytes], dst: list[bytes], times: list[float],
                      positions) -> list[tuple[int, bytes, Entry]]:
        """(position, endpoint, entry) of each packet among `positions` that is the first from or to an indicated
        endpoint this board has not warned of yet."""
        by_ip = self.store.by_ip
        if not by_ip:
            return []
        out = []
        for n in positions:
            for address in (src[n], dst[n]):
                e = by_ip.get(address)
                if e is None or e.warned:
                    continue
                if times[n] > e.until:
                    del by_ip[address]
                    continue
                e.warned, e.warned_at = True, times[n]
                self.warned.append((address, e))
                self.counts["raised"] += 1
                out.append((int(n), address, e))
        return out

    def confirm(self, address: bytes) -> Entry | None:
        """The board's own detector alerted on this endpoint: its warning, if one is open, is confirmed here."""
        e = self.store.by_ip.get(address)
        if e is None or not e.warned or e.confirmed_here:
            return None
        e.confirmed_here = True
        self.counts["confirmed_here"] += 1
        self.warned = [(a, x) for a, x in self.warned if x is not e]
        return e

    def lapsed(self, now: float) -> list[tuple[bytes, Entry]]:
        """Warnings raised here more than confirm_s ago (packet time) that this board's detector did not confirm."""
        out = [(a, e) for a, e in self.warned if now - e.warned_at > self.confirm_s]
        if out:
            self.warned = [(a, e) for a, e in self.warned if now - e.warned_at <= self.confirm_s]
            self.counts["cleared"] += len(out)
        return out
