"""What the server knows about a run while it goes, for the status page and /metrics: the run, its boards (address,
certificate identity, last seen, dropped and rejoined, their health), its rounds (the rounds.jsonl records), the
messages it rejected and why, and its outputs when done.

The server node and the run's outputs write here (from the receive and driver threads); the status server reads
copies (`snapshot`). Nothing here is ever sent back to a peer. Sizes are bounded: the latest `keep_rounds` round
records and `keep_rejections` rejection reasons are kept; counters are exact.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from monitor.refusals import add_count, kind_of

# files of a finished run the page links to (served from the run directory, nothing else), and its figures/*.png
RUN_FILES = ("report.md", "metrics.json", "rounds.jsonl", "curves.json")
KEEP_REJECTIONS = 50  # latest rejection reasons on the page (the counts are exact; rounds.jsonl keeps each round's)


def run_files(run_dir: Path) -> list[str]:
    """The finished run's files the page may serve, relative to the run directory."""
    figures = sorted(f"figures/{p.name}" for p in (run_dir / "figures").glob("*.png")) \
        if (run_dir / "figures").is_dir() else []
    return [f for f in RUN_FILES if (run_dir / f).is_file()] + figures


class StatusStore:
    """The run as the status page and /metrics show it; thread-safe."""

    def __init__(self, run: dict[str, Any], keep_rounds: int, keep_rejections: int = KEEP_REJECTIONS) -> None:
        """run: kind, run_dir, rounds, clients ({rank: [client, ...]}), config (the validated values)."""
        self._lock = threading.Lock()
        self.run = dict(run, started_at=time.time(), state="waiting for clients")
        self.boards: dict[int, dict[str, Any]] = {
            rank: {"rank": rank, "clients": clients, "state": "not connected", "address": None, "identity": None,
                   "joined_at": None, "last_seen": None, "dropped": 0, "rejoined": 0, "health": None,
                   "health_at": None, "health_messages": 0}
            for rank, clients in run["clients"].items()}
        self.rounds: deque[dict[str, Any]] = deque(maxlen=keep_rounds)
        self.rejections: deque[dict[str, Any]] = deque(maxlen=keep_rejections)
        self.counters = {"rounds_completed": 0, "evaluations": 0, "messages_rejected": 0, "health_rejected": 0,
                         "clients_dropped": 0, "updates_screened_out": 0, "thresholds_left_out": 0,
                         "bytes_sent": 0, "bytes_received": 0, "page_requests": 0, "page_refused": 0}
        self.rejected_by: dict[str, dict[str, int]] = {}  # sender -> kind -> count, for the whole run (bounded)
        self.finished: dict[str, Any] | None = None
        self.devices: dict[str, dict[str, Any]] = {}  # device -> its threshold and rates at the last evaluation

    # -- the server node (receive thread)
    def board_hello(self, rank: int, address: str | None, identity: str | None) -> None:
        with self._lock:
            b = self.boards.get(rank)
            if b is None or b["state"] == "quarantined":
                return
            if b["state"] == "dropped":
                b["rejoined"] += 1
            if b["state"] != "connected":
                b["joined_at"] = time.time()
            b.update(state="connected", address=address or b["address"], identity=identity or b["identity"],
                     last_seen=time.time())

    def board_seen(self, rank: int) -> None:
        with self._lock:
            if rank in self.boards:
                self.boards[rank]["last_seen"] = time.time()

    def board_dropped(self, rank: int) -> None:
        with self._lock:
            if rank in self.boards and self.boards[rank]["state"] == "connected":
                self.boards[rank]["state"] = "dropped"
                self.boards[rank]["dropped"] += 1

    def board_quarantined(self, rank: int) -> None:
        """The server refuses the board for the rest of the run (comm_args.quarantine_after_malformed)."""
        with self._lock:
            if rank in self.boards:
                self.boards[rank]["state"] = "quarantined"

    def board_health(self, rank: int, health: dict[str, Any]) -> None:
        """A validated HEALTH message's fields (`federation.messages`)."""
        with self._lock:
            if rank in self.boards:
                b = self.boards[rank]
                b.update(health=health, health_at=time.time(), last_seen=time.time())
                b["health_messages"] += 1

    def rejected(self, sender: str, reason: str, count: int, health: bool = False) -> None:
        with self._lock:
            self.counters["messages_rejected"] += count
            if health:
                self.counters["health_rejected"] += count
            self.rejections.append({"time": time.time(), "from": sender[:200], "reason": reason[:300], "count": count})
            add_count(self.rejected_by, sender, kind_of(reason), count)

    def set_state(self, state: str) -> None:
        with self._lock:
            self.run["state"] = state

    # -- the run's outputs (driver thread)
    def round_record(self, record: dict[str, Any]) -> None:
        """A rounds.jsonl record, as written."""
        with self._lock:
            self.rounds.append(copy.deepcopy(record))
            c = self.counters
            c["rounds_completed"] = max(c["rounds_completed"], int(record.get("round", 0)))
            c["evaluations"] += "eval" in record
            c["clients_dropped"] += len(record.get("dropped", []))
            c["updates_screened_out"] += len(record.get("screened_out", {}))
            c["thresholds_left_out"] += len(record.get("threshold_excluded", {}))
            c["bytes_sent"] += int(record.get("bytes_sent", 0))
            c["bytes_received"] += int(record.get("bytes_received", 0))
            self.run["state"] = f"round {c['rounds_completed']}/{self.run['rounds']}"

    def evaluation(self, after_round: int, devices: dict[str, dict[str, Any]]) -> None:
        """Each device's detection at the latest evaluation (its own threshold; row and window rates)."""
        with self._lock:
            self.devices = {d: dict(v, round=after_round) for d, v in devices.items()}

    def finish(self, error: str | None) -> None:
        """The run is over (error: why it stopped early); its files become links."""
        with self._lock:
            if self.finished is not None:
                return
            self.finished = {"at": time.time(), "error": error, "files": run_files(Path(self.run["run_dir"]))}
            self.run["state"] = "failed" if error else "finished"

    # -- the status server (its threads)
    def page_request(self, refused: bool) -> None:
        with self._lock:
            self.counters["page_requests"] += 1
            self.counters["page_refused"] += refused

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything, JSON-ready."""
        with self._lock:
            return copy.deepcopy({"run": self.run, "boards": [self.boards[r] for r in sorted(self.boards)],
                                  "rounds": list(self.rounds), "rejections": list(self.rejections),
                                  "rejected_by": self.rejected_by, "devices": self.devices,
                                  "counters": self.counters, "finished": self.finished, "now": time.time()})
