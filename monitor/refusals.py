"""Refused messages: counted exactly per sender and kind, logged at a bounded rate (issue 34).

A certified board can send refusable messages as fast as the transport lets it: 13,415 refused health reports in
20 s were 13,415 WARNING lines (2.09 MB; ~9 GB a day), and a page that kept the last 50 refusals showed only the
spam. So every refusal is counted (per sender and kind, for rounds.jsonl, the status page and /metrics), and a
sender's refusals are logged at most `per_minute` lines a minute, the ones held back summed into its next line.
"""
from __future__ import annotations

import logging
import threading
import time

MAX_REJECTIONS_KEPT = 20  # per round record: the count is exact, the detail keeps the first few
MAX_SENDERS = 256  # senders counted by name; beyond, "other senders" (a LAN has a few boards)
MAX_KINDS_PER_SENDER = 32
OTHER = "other senders"


def peer_of(sender: str) -> str:
    """Who a refusal is counted and rate-limited against: the rank (whatever connection or transport it came on), or
    a peer's host without its port. Keyed by the full sender, a board opening a new connection per message was a new
    sender each time: its own row per connection and ten more log lines a minute per connection."""
    if sender.startswith("rank "):
        return " ".join(sender.split()[:2])
    if sender.startswith("a peer (") and sender.endswith(")"):
        address = sender[len("a peer ("):-1]
        host = address.rsplit(":", 1)[0] if address.count(":") >= 2 else address  # ipv4:1.2.3.4:5 / ipv6:[::1]:5
        return f"a peer ({host})"
    return sender


def kind_of(reason: str) -> str:
    """What a refusal is about: its reason up to the first ':' (a message type, a field, 'bad magic', ...)."""
    return reason.split(":", 1)[0].strip()[:60] or "unspecified"


class RefusalTally:
    """Refusals since the last `take`: the total, the first `kept` (sender, reason) and counts per sender and kind.
    Bounded whatever the senders send; thread-safe (receive threads add, the driver takes)."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.total = 0
        self.first: list[dict[str, str]] = []
        self.by_sender: dict[str, dict[str, int]] = {}

    def add(self, sender: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self.total += count
            if len(self.first) < self.kept:
                self.first.append({"from": sender[:200], "reason": reason[:300]})
            add_count(self.by_sender, sender, kind_of(reason), count)

    def take(self) -> tuple[int, list[dict[str, str]], dict[str, dict[str, int]]]:
        with self._lock:
            out = (self.total, self.first, self.by_sender)
            self._reset()
            return out


def add_count(by_sender: dict[str, dict[str, int]], sender: str, kind: str, count: int) -> None:
    """by_sender[peer_of(sender)][kind] += count, with at most MAX_SENDERS senders and MAX_KINDS_PER_SENDER kinds each (the
    rest under OTHER / 'other kinds')."""
    sender = peer_of(sender)[:200]
    key = sender if sender in by_sender or len(by_sender) < MAX_SENDERS else OTHER
    kinds = by_sender.setdefault(key, {})
    k = kind if kind in kinds or len(kinds) < MAX_KINDS_PER_SENDER else "other kinds"
    kinds[k] = kinds.get(k, 0) + count


class RefusalLog:
    """At most `per_minute` log lines a minute per sender (`peer_of`); what is held back is counted into the sender's next line
    ("... (and 4211 more from it not logged: over 10 lines a minute)")."""

    def __init__(self, logger: logging.Logger, per_minute: int, clock=time.monotonic) -> None:
        self.logger, self.per_minute, self.clock = logger, per_minute, clock
        self._lock = threading.Lock()
        self._window: dict[str, tuple[float, int]] = {}  # sender -> (window start, lines in it)
        self._held: dict[str, int] = {}  # sender -> messages not logged since its last line

    def warn(self, sender: str, reason: str, count: int = 1) -> bool:
        """Log the refusal unless the sender has had its lines this minute; True when logged."""
        now = self.clock()
        peer = peer_of(sender)
        with self._lock:
            start, lines = self._window.get(peer, (now, 0))
            if now - start >= 60.0:
                start, lines = now, 0
            if lines >= self.per_minute:
                if peer in self._held or len(self._held) < MAX_SENDERS:
                    self._held[peer] = self._held.get(peer, 0) + count
                self._window[peer] = (start, lines)
                return False
            if peer not in self._window and len(self._window) >= MAX_SENDERS:
                self._window.pop(next(iter(self._window)))
            self._window[peer] = (start, lines + 1)
            held = self._held.pop(peer, 0)
        what = "message" if count == 1 else f"{count} messages"
        more = f" (and {held} more from it not logged: over {self.per_minute} lines a minute)" if held else ""
        self.logger.warning("%s from %s rejected: %s%s", what, sender[:200], reason[:300], more)
        return True
