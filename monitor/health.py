"""What a board says about itself in its HEALTH messages: versions, memory, CPU, disk, uptime, the last round it
trained, its detector's packet rate and alerts (when `detect --follow` runs beside it), and its recent warnings.

Collected on the board (`HealthProbe`); the server validates every field like any message's
(`federation.messages`, C2S_HEALTH) before it shows or counts anything. A board can only lie about itself here: the
server uses none of these numbers for training or thresholds.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import fediot

# detect --follow RUN_DIR writes its counters here (atomically, every few seconds); the board's client reads them
DETECT_STATUS_FILE = "detect_status.json"
LEVELS = ("WARNING", "ERROR", "CRITICAL")


def software_version(repo: Path | None = None) -> str:
    """FedIoT's version, with the git commit when the code runs from a checkout (read from .git, no subprocess)."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = repo / ".git" / head[5:]
            commit = ref.read_text().strip() if ref.is_file() else _packed_ref(repo, head[5:])
        else:
            commit = head
        return f"{fediot.__version__}+g{commit[:7]}" if commit else fediot.__version__
    except OSError:
        return fediot.__version__


def _packed_ref(repo: Path, ref: str) -> str:
    for line in (repo / ".git" / "packed-refs").read_text().splitlines():
        if line.endswith(" " + ref):
            return line.split()[0]
    return ""


def current_rss_mb() -> float:
    """This process's resident set size now, in MB (Linux /proc; 0 where it is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class WarningBuffer(logging.Handler):
    """The board's recent warnings and errors, for its HEALTH messages: at most `keep` of them between two messages
    (the count of the rest is exact), each cut to `max_chars`. Installed on the root logger; console warnings
    (`fediot.console.say("warning: ...")`) are logged too, so they arrive here."""

    def __init__(self, keep: int, max_chars: int) -> None:
        super().__init__(logging.WARNING)
        self.keep, self.max_chars = keep, max_chars
        self.items: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.total = 0
        self._items_lock = threading.Lock()  # logging.Handler's own `lock` is for emit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the board
            text = str(record.msg)
        with self._items_lock:
            self.total += 1
            self.items.append({"time": round(record.created, 3), "level": record.levelname if record.levelname in LEVELS
                               else "WARNING", "message": text[:self.max_chars]})

    def take(self) -> tuple[int, list[dict[str, Any]]]:
        """Warnings since the last call: how many in all, and the latest `keep`."""
        with self._items_lock:
            out = (self.total, list(self.items))
            self.items.clear()
            self.total = 0
        return out


class HealthProbe:
    """Measures the board for its HEALTH messages (`fields`): cheap (a few /proc reads), called every
    `status_args.health_interval_s`."""

    def __init__(self, run_dir: Path, warnings: WarningBuffer, detect_fresh_s: float, report_file: Path) -> None:
        """run_dir: where detect --follow leaves its counters (a board's run directory); report_file: where the last
        report sent is kept (for whoever looks on the board)."""
        self.run_dir = run_dir
        self.report_file = report_file
        self.warnings = warnings
        self.detect_fresh_s = detect_fresh_s
        self.started = time.monotonic()
        self.version = software_version()
        self.last_cpu = (time.monotonic(), _cpu_seconds())
        self.warnings_total = 0

    def fields(self, last_round: int | None) -> dict[str, Any]:
        """The report: `last_round` is the last round this process trained in (None before its first)."""
        now, cpu = time.monotonic(), _cpu_seconds()
        wall = max(now - self.last_cpu[0], 1e-6)
        cpu_percent = max(0.0, (cpu - self.last_cpu[1]) / wall * 100.0)
        self.last_cpu = (now, cpu)
        n_warnings, recent = self.warnings.take()
        self.warnings_total += n_warnings
        try:
            disk_free_mb = shutil.disk_usage(self.run_dir).free / 2**20
        except OSError:
            disk_free_mb = 0.0
        detect = self.detect()
        return {
            "version": self.version,
            "features_version": detect["features_version"] if detect else None,
            "rss_mb": round(current_rss_mb(), 1),
            "cpu_percent": round(cpu_percent, 1),
            "disk_free_mb": round(disk_free_mb, 1),
            "uptime_s": round(now - self.started, 1),
            "last_round": last_round,
            "detect": None if detect is None else {k: detect[k] for k in DETECT_FIELDS},  # without features_version
            "warnings_total": self.warnings_total,
            "warnings": recent,
        }

    def detect(self) -> dict[str, Any] | None:
        """The counters `detect --follow` wrote into this run directory, if fresh (a detector that stopped is not
        reported as running)."""
        path = self.run_dir / DETECT_STATUS_FILE
        try:
            d = json.loads(path.read_text())
            if time.time() - float(d["written_at"]) > self.detect_fresh_s:
                return None
            return {k: d[k] for k in (*DETECT_FIELDS, "features_version")}
        except (OSError, ValueError, KeyError, TypeError):
            return None


DETECT_FIELDS = ("packets", "packets_per_s", "packet_alerts", "window_alerts", "model_round", "alerts")
# detect's latest alert messages a board reports (what syslog / MQTT carried: device, remote host, score, threshold,
# why), shown per device on the server's status page; the protocol's bound (federation.messages checks it)
DETECT_ALERTS = 10
ALERT_FIELDS = ("time", "device", "host", "score", "threshold", "state", "why")
ALERT_NAME_CHARS = 128  # a device's name or a remote host in that list
ALERT_WHY_CHARS = 300  # an alert's explanation in that list


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
