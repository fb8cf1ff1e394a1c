"""Triage of detect's alerts: mutes, and "this was benign" verdicts that the next federation learns from (issue 36).

A household's alerts need answers: "that was me updating the camera" should neither be raised again nor need a
researcher. Two answers, kept in one triage file (JSON, `python -m triage` writes it, `detect --triage FILE` reads it
and re-reads it when it changes):
- a **mute**: a device, a remote host, or both, for a time (or until unmuted). A muted window alert is still written
  to the alert lines (marked "muted") and counted, but not raised on syslog or MQTT.
- a **benign verdict** on an alert episode: the rows detect kept of that episode (`Evidence`: at most
  detect_args.evidence_rows of its window-alerting packets) join the device's benign training rows
  (DEVICE/benign_verdicts/EPISODE.csv, recorded in its provenance.json), so the next federation's model learns them;
  and the episode's device and host are muted for detect_args.benign_mute_h meanwhile.
Bounded so that a LAN attacker who gets the user to click once cannot teach the model its own attack: one verdict
adds at most evidence_rows rows, and all verdicts of a device at most detect_args.benign_verdict_share of its
captured benign rows (refused beyond, and cut to it when rows are loaded: data/loader.py).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.csvfile import write_feature_csv
from fediot.errors import FedIoTError

TRIAGE_VERSION = 1
EPISODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}-\d{10,16}")  # DEVICE-<first alert's time in ms>: a file name
EVIDENCE_DIR = "evidence"  # beside the triage file: detect's kept rows and summary of each alert episode
MAX_TRIAGE_BYTES = 1_000_000  # a triage file larger than this is refused before it is parsed
MAX_REMOTES = 16  # remote hosts an episode's summary names (the most frequent)


def canonical_host(text: str) -> str:
    """An IP address as detect writes it (ipaddress' text), or FedIoTError."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise FedIoTError(f"{text!r} is not an IP address") from None


@dataclass(frozen=True)
class Mute:
    """Alerts of `device` (None: any) from or to `remote` (None: any) until `until` (epoch s; None: until unmuted)."""

    id: str
    device: str | None
    remote: str | None
    until: float | None
    reason: str
    added: float

    def matches(self, device: str, host: str, now: float) -> bool:
        return ((self.device is None or self.device == device) and (self.remote is None or self.remote == host)
                and (self.until is None or now < self.until))


@dataclass
class Triage:
    """The triage file's content: mutes and the benign verdicts given."""

    mutes: list[Mute] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, max_entries: int) -> "Triage":
        """The file's mutes and verdicts (an absent file: none), or one FedIoTError naming the file and what is wrong."""
        if not path.exists():
            return cls()
        try:
            size = path.stat().st_size
            if size > MAX_TRIAGE_BYTES:
                raise FedIoTError(f"{path}: {size:,} bytes; a triage file is at most {MAX_TRIAGE_BYTES:,}")
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FedIoTError(f"{path}: not a triage file (JSON written by python -m triage): {exc}") from None
        if not isinstance(data, dict) or data.get("version") != TRIAGE_VERSION:
            raise FedIoTError(f"{path}: expected a JSON object with \"version\": {TRIAGE_VERSION}")
        mutes, verdicts = data.get("mutes", []), data.get("verdicts", [])
        if not isinstance(mutes, list) or not isinstance(verdicts, list):
            raise FedIoTError(f"{path}: \"mutes\" and \"verdicts\" must be lists")
        if len(mutes) + len(verdicts) > max_entries:
            raise FedIoTError(f"{path}: {len(mutes) + len(verdicts)} entries; at most {max_entries} "
                              "(detect_args.max_triage_entries): remove old mutes with python -m triage unmute")
        out = cls(verdicts=[v for v in verdicts if isinstance(v, dict)])
        for i, m in enumerate(mutes):
            try:
                mute = Mute(id=str(m["id"]), device=m.get("device"), remote=m.get("remote"), until=m.get("until"),
                            reason=str(m.get("reason", "")), added=float(m.get("added", 0.0)))
                if mute.device is not None and not isinstance(mute.device, str):
                    raise TypeError("device")
                if mute.remote is not None:
                    canonical_host(str(mute.remote))
                if mute.until is not None and not (isinstance(mute.until, (int, float)) and np.isfinite(mute.until)):
                    raise TypeError("until")
            except (KeyError, TypeError, ValueError, FedIoTError) as exc:
                raise FedIoTError(f"{path}: mute {i + 1} is not valid ({exc}); expected id, device or null, remote "
                                  "(an IP) or null, until (epoch seconds) or null") from None
            out.mutes.append(mute)
        return out

    def save(self, path: Path) -> None:
        """Written beside and renamed into place: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": TRIAGE_VERSION, "mutes": [asdict(m) for m in self.mutes],
                           "verdicts": self.verdicts}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def mute(self, device: str | None, remote: str | None, hours: float | None, reason: str,
             now: float | None = None) -> Mute:
        if device is None and remote is None:
            raise FedIoTError("a mute names a device, a remote host, or both (muting everything is stopping detect)")
        now = time.time() if now is None else now
        taken = {m.id for m in self.mutes}
        n = len(self.mutes) + 1
        while f"m{n}" in taken:
            n += 1
        m = Mute(f"m{n}", device, canonical_host(remote) if remote else None,
                 None if hours is None else now + hours * 3600.0, reason, now)
        self.mutes.append(m)
        return m

    def matching(self, device: str, host: str, now: float) -> Mute | None:
        return next((m for m in self.mutes if m.matches(device, host, now)), None)


class TriageFollower:
    """detect's view of the triage file: re-read between packet batches when its modification time changes; a file
    that cannot be read keeps the mutes in force (said once per change)."""

    def __init__(self, path: Path, max_entries: int, say) -> None:
        self.path, self.max_entries, self.say = path, max_entries, say
        self.stamp: tuple[int, int] | None = None
        self.triage = Triage()
        self.poll()

    def poll(self) -> Triage:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self.stamp:
            self.stamp = stamp
            try:
                self.triage = Triage.load(self.path, self.max_entries)
            except FedIoTError as exc:
                self.say(f"warning: {exc}; the mutes read before stay in force")
        return self.triage


@dataclass
class _Episode:
    id: str
    device: str
    first: float
    last: float
    why: str
    rows: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    frames: list[bytes | None] = field(default_factory=list)
    window_alerts: int = 0
    muted: str | None = None
    remotes: dict[str, int] = field(default_factory=dict)
    rng: np.random.Generator | None = None


class Evidence:
    """What detect keeps of each alert episode of a watched device (its first window alert to the device's return to
    normal): the rows of its window-alerting packets (at most `max_rows`), the packets themselves when detect reads
    their frames (the same ones, for a look in Wireshark), the remote hosts, the explanation; written as
    DIR/EPISODE.csv, DIR/EPISODE.pcap and DIR/EPISODE.json when the episode ends (or detect stops).

    The rows kept are the episode's first max_rows // 2 (how it began) and a uniform sample of all the rest (reservoir
    sampling, seeded by the episode's id): a benign verdict then teaches the model the whole episode. Keeping only the
    first rows taught it the episode's first seconds: a detector's start-up or a camera's first update packets, not the
    half-minute download that followed (tests/test_triage.py)."""

    def __init__(self, directory: Path, max_rows: int, columns: tuple[str, ...]) -> None:
        self.directory, self.max_rows, self.columns = directory, max_rows, columns
        self.open: dict[int, _Episode] = {}
        self.written: list[str] = []

    def start(self, d: int, device: str, t: float, why: str, muted: str | None) -> str:
        """A new episode of device index `d`; its id (DEVICE-<ms>)."""
        if d in self.open:
            self.end(d)
        episode = _Episode(f"{device}-{int(round(t * 1000))}", device, t, t, why, muted=muted)
        self.open[d] = episode
        return episode.id

    def add(self, d: int, t: float, row: np.ndarray, remote: str, frame: bytes | None = None) -> None:
        e = self.open.get(d)
        if e is None:
            return
        e.last, e.window_alerts = t, e.window_alerts + 1
        n = e.window_alerts  # this row is the episode's n-th
        if len(e.rows) < self.max_rows:
            e.rows.append(row.reshape(-1).copy())
            e.times.append(t)
            e.frames.append(frame)
        else:
            head = self.max_rows // 2
            if e.rng is None:
                e.rng = np.random.default_rng(int(e.id.rsplit("-", 1)[1]))
            # reservoir over rows head+1..n: each is kept with probability (max_rows - head) / (n - head)
            slot = int(e.rng.integers(0, n - head))
            if slot < self.max_rows - head:
                i = head + slot
                e.rows[i], e.times[i], e.frames[i] = row.reshape(-1).copy(), t, frame
        if remote in e.remotes or len(e.remotes) < 4 * MAX_REMOTES:
            e.remotes[remote] = e.remotes.get(remote, 0) + 1

    def end(self, d: int) -> str | None:
        """Write the episode's rows and summary (each renamed into place); its id."""
        e = self.open.pop(d, None)
        if e is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        order = np.argsort(np.asarray(e.times), kind="stable")  # the kept rows in time order
        rows = np.vstack([e.rows[i] for i in order]) if e.rows else np.zeros((0, len(self.columns)))
        frames = [(e.times[i], e.frames[i]) for i in order if e.frames[i] is not None]
        csv_tmp = self.directory / f".{e.id}.csv.tmp"
        write_feature_csv(str(csv_tmp), rows[:, :len(self.columns)], self.columns)
        os.replace(csv_tmp, self.directory / f"{e.id}.csv")
        top = sorted(e.remotes.items(), key=lambda kv: -kv[1])[:MAX_REMOTES]
        summary = {"episode": e.id, "device": e.device, "first": e.first, "last": e.last, "why": e.why,
                   "window_alerts": e.window_alerts, "rows": int(len(rows)), "packets": len(frames), "muted": e.muted,
                   "remotes": [{"host": h, "window_alerts": c} for h, c in top]}
        if frames:  # the packets behind the rows (renamed into place by write_pcap)
            from traffic.simulator import write_pcap

            write_pcap(self.directory / f"{e.id}.pcap", frames)
        json_tmp = self.directory / f".{e.id}.json.tmp"
        json_tmp.write_text(json.dumps(summary) + "\n")
        os.replace(json_tmp, self.directory / f"{e.id}.json")
        self.written.append(e.id)
        return e.id

    def close(self) -> None:
        for d in list(self.open):
            self.end(d)


def verdict_rows_allowed(benign_rows: int, share: float) -> int:
    """Benign-verdict rows a device may hold in all: `share` of its captured benign rows."""
    return int(share * benign_rows)


def verdict_rows(rows: np.ndarray, room: int) -> np.ndarray:
    """The rows of a verdict's episode that fit the `room` its device's share leaves: all of them, or rows evenly
    spaced over the episode in time order (a long episode represented whole, not by its first minutes)."""
    room = max(0, int(room))
    return rows if len(rows) <= room else rows[(np.arange(room) * len(rows)) // room]


def _signed_log(rows: np.ndarray) -> np.ndarray:
    return np.sign(rows) * np.log1p(np.abs(rows))


def _nearest(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Each row of `a`: its squared distance to the nearest row of `b` (numpy, in chunks: boards have no sklearn)."""
    out = np.empty(len(a))
    bb = np.einsum("ij,ij->i", b, b)
    for i in range(0, len(a), chunk):
        x = a[i:i + chunk]
        d = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ b.T + bb[None, :]
        out[i:i + chunk] = np.maximum(d.min(axis=1), 0.0)
    return out


def attack_likeness(verdict: np.ndarray, benign: np.ndarray, attacks: dict[str, np.ndarray], ratio: float = 2.0,
                    max_rows: int = 5000) -> dict[str, float]:
    """For each simulated attack of the device: the share of the verdict's rows like that attack's rows, at least
    `ratio` times nearer to them than to any of the device's own benign rows (log scale, z-scored on the benign rows;
    at most `max_rows` rows of each, evenly spaced). An attacker's flood or scan called benign lies among its family's
    rows (the LAN test's flood: median distance 2.9 to inbound_syn's rows, 18.8 to the camera's). A firmware update is
    far from every attack and from the device alike, merely nearer to a flood than to the device: the LAN test's
    update, 85 % of its rows nearer to gafgyt_udp (median 20.6 against 23.9), which refused it when "nearer" was the
    rule; none at twice as near (doc/benchmarks.md 'Triage': the grid behind the default)."""
    def sample(rows: np.ndarray) -> np.ndarray:
        return rows if len(rows) <= max_rows else rows[np.linspace(0, len(rows) - 1, max_rows).astype(int)]

    b = _signed_log(sample(benign))
    mean, std = b.mean(axis=0), b.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    z = lambda rows: (_signed_log(rows) - mean) / std  # noqa: E731
    v, bz = z(verdict), (b - mean) / std
    to_benign = _nearest(v, bz)  # squared distances: the ratio is squared too
    return {name: float(np.mean(_nearest(v, z(sample(rows))) * ratio ** 2 < to_benign))
            for name, rows in attacks.items() if len(rows) and len(v)}

