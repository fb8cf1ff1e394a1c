"""Detect attacks in live or recorded traffic with a trained FedIoT model.

    python -m detect (MODEL | --follow RUN_DIR) (--pcap FILE | --interface IFACE)
        [--device NAME | --watch NAME=ADDR[,ADDR...] ...] [--profiles DIR] [--window 5] [--out alerts.jsonl]
        [--config YAML]

MODEL is a checkpoint (model.pt, or its numpy export model.npz) or a run directory. Runs on numpy
(model/lean.py): no torch, no FedML. A model.pt without model.npz beside it is exported once (needs torch).
--follow RUN_DIR: the newest model a board's client kept after the federation's latest evaluation
(RUN_DIR/detector/model.npz; RUN_DIR may also be the board's run_dir_root: its newest run is followed), swapped in
between packet batches whenever a newer one appears (each swap logged).
Packets -> N-BaIoT features (traffic/afterimage.py, memory bounded by detect_args.max_streams)
-> the model's normalisation and autoencoder -> per-packet score vs. threshold, plus N-BaIoT's majority vote over
the last `--window` packets of the same source host. Which threshold: --device NAME, that device's own for every
packet; --watch NAME=ADDR (IP or MAC, repeatable): only the packets from or to each watched device, each with its
own device's threshold; neither: the global threshold (for devices outside the federation). Alerts are JSON lines
(to --out, else stdout): {"time", "host", "device", "score", "threshold", "packet_alert", "window_alert"}; window
alerts also go to syslog and MQTT when detect_args configures them (rate-limited, never blocking). A summary line
follows. --profiles DIR (capture's --out): each watched device's endpoints.json (traffic/profile.py); a window whose
majority of packets went to or came from services outside the device's profile is a window alert too (another
device's traffic, or the device doing what it never did), and each line says "new_endpoint"; and a watched device
that sends nothing for detect_args.silence_factor times its longest silence in its capture (provenance.json) is a
line {..., "host": "silent", "silent": true, "silent_s", "silent_after_s"} (and a network alert, host "silent").
A watched device that had no packet at all is named on stderr (its address may have changed: watch it by its MAC)
and in the summary's "silent_devices", and detect exits with status 3: it was not watched.
"""
from __future__ import annotations

import argparse
import io
import ipaddress
import json
import math
import signal
import socket
import sys
import time
import zipfile
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
from numba import njit

from data import nbaiot
from fediot.config import load, validate
from traffic.settings import DetectArgs
from fediot.errors import FedIoTError
from fediot.rundir import peak_rss_mb, write_atomic_bytes, write_json
from fediot.checks import MAX_VALUE
from monitor.health import ALERT_NAME_CHARS, ALERT_WHY_CHARS, DETECT_ALERTS, DETECT_STATUS_FILE, current_rss_mb
from model.lean import LeanDetector, check_npz_sizes, lean_path
from traffic.afterimage import FEATURES_VERSION, STATE_MAX_STREAMS_FACTOR, FeatureExtractor
from traffic.alerts import Alert, AlertPublisher, MqttSink, RateLimiter, Sink, SyslogSink
from traffic.packets import PacketBatch, SkipCounts, live_capture, read_capture
from traffic.profile import EndpointProfile, endpoints_of, load_profiles
from traffic.triage import EVIDENCE_DIR, Evidence, TriageFollower
from traffic.warning import Indicator, IndicatorStore, WarningWatch
from traffic.watch import SilenceWatch, Watch, Watcher, parse_watch

if TYPE_CHECKING:
    from relay import RelayLink

LIVE_MODEL = Path("detector") / "model.npz"  # where a board's client keeps the newest evaluated model (its run dir)
HOST_LOW_WATER = 0.75  # WindowVote over max_hosts keeps this share (the most recently seen hosts)
EXPLAIN_GROUPS = 3  # feature groups an alert's explanation names
SILENT_EXIT = 3  # exit status when a watched device had no packet: it was not watched (not to be taken for calm)


@njit(cache=True)
def _vote(ids, flags, seen, ring, votes, window, out):
    """Per packet: put its flag in its host's ring of the last `window` flags; alert on a full-window majority."""
    for n in range(ids.shape[0]):
        h = ids[n]
        slot = seen[h] % window
        f = 1 if flags[n] else 0
        votes[h] += f - ring[h, slot]
        ring[h, slot] = f
        seen[h] += 1
        out[n] = seen[h] >= window and 2 * votes[h] > window


class WindowVote:
    """Majority vote over the last `window` packets of each source host, a batch at a time.

    A packet's window alert: its host has sent at least `window` packets and more than half of the
    last `window` (this one included) were flagged.
    """

    def __init__(self, window: int, max_hosts: int = 2**62) -> None:
        """max_hosts: hosts remembered; over it the least recently seen are forgotten (their window starts over)."""
        if window < 1:
            raise ValueError(f"window must be at least 1 packet, got {window}")
        self.window, self.max_hosts = window, max_hosts
        self.host_ids: dict[bytes, int] = {}
        self.seen = np.zeros(0, dtype=np.int64)
        self.votes = np.zeros(0, dtype=np.int64)
        self.ring = np.zeros((0, window), dtype=np.int64)
        self.last = np.zeros(0, dtype=np.int64)  # per host: the push it was last seen in
        self.pushes = 0
        self.forgotten = 0

    def push(self, hosts: list[bytes], flags: np.ndarray) -> np.ndarray:
        """Window alerts for a batch of packets (in time order) with their per-packet flags."""
        if len(self.host_ids) > self.max_hosts:
            self._forget()
        self.pushes += 1
        ids_of = self.host_ids
        ids = np.fromiter((ids_of.setdefault(h, len(ids_of)) for h in hosts), dtype=np.int64, count=len(hosts))
        grow = len(ids_of) - len(self.seen)
        if grow > 0:
            grow = max(grow, len(self.seen))  # amortised doubling
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=np.int64)])
            self.votes = np.concatenate([self.votes, np.zeros(grow, dtype=np.int64)])
            self.ring = np.vstack([self.ring, np.zeros((grow, self.window), dtype=np.int64)])
            self.last = np.concatenate([self.last, np.zeros(grow, dtype=np.int64)])
        self.last[ids] = self.pushes
        out = np.zeros(len(flags), dtype=np.bool_)
        _vote(ids, np.asarray(flags, dtype=np.bool_), self.seen, self.ring, self.votes, self.window, out)
        return out

    def _forget(self) -> None:
        """Keep the HOST_LOW_WATER x max_hosts most recently seen hosts, renumbered in their old order."""
        n = len(self.host_ids)
        keep = np.zeros(n, dtype=bool)
        keep[np.argsort(-self.last[:n], kind="stable")[:int(self.max_hosts * HOST_LOW_WATER)]] = True
        new_id = np.cumsum(keep) - 1
        self.host_ids = {h: int(new_id[i]) for h, i in self.host_ids.items() if keep[i]}
        idx = np.flatnonzero(keep)
        self.seen, self.votes, self.ring, self.last = (self.seen[idx].copy(), self.votes[idx].copy(),
                                                       self.ring[idx].copy(), self.last[idx].copy())
        self.forgotten += n - len(idx)


def host_text(address: bytes) -> str:
    """An address as JSON text ("10.0.0.1")."""
    return json.dumps(str(ipaddress.ip_address(address)))


def _number(x: float) -> str:
    """A float as json.dumps writes it."""
    return repr(x) if math.isfinite(x) else json.dumps(x)


class AlertLines:
    """Alert lines exactly as json.dumps({"time", "host", "device", "score", "threshold", "packet_alert",
    "window_alert"}) writes them, built from pieces: a flood can mean one alert per packet."""

    def __init__(self, device: str | None, threshold: float, max_hosts: int = 65536) -> None:
        self.middle = f', "device": {json.dumps(device)}, "score": '
        self.tail = f', "threshold": {_number(threshold)}, "packet_alert": '
        self.hosts: dict[bytes, str] = {}
        self.max_hosts = max_hosts

    def line(self, t: float, host: bytes, score: float, packet_alert: bool, window_alert: bool,
             new_endpoint: bool | None = None, why: list[dict[str, Any]] | None = None,
             extra: dict[str, Any] | None = None) -> str:
        """One alert line; with endpoint profiles (detect --profiles) also "new_endpoint": whether the packet went to
        or came from a service outside the device's profile; the first window alert of an episode also "why"
        (`explain`)."""
        h = self.hosts.get(host)
        if h is None:
            if len(self.hosts) >= self.max_hosts:  # a cache of formatted addresses: bounded, rebuilt as needed
                self.hosts.clear()
            h = self.hosts[host] = host_text(host)
        end = "}\n" if new_endpoint is None else f', "new_endpoint": {"true" if new_endpoint else "false"}}}\n'
        if extra:  # an episode's first line: "remote", "episode"; a muted alert: "muted"
            end = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items()) + end
        if why is not None:
            end = f', "why": {json.dumps(why)}{end}'
        return (f'{{"time": {_number(round(t, 6))}, "host": {h}{self.middle}{_number(score)}{self.tail}'
                f'{"true" if packet_alert else "false"}, "window_alert": {"true" if window_alert else "false"}{end}')



# ------------------------------------------------------------------------------------- the model, fixed or followed
def load_detector(model: Path, allow_row_model: bool = False) -> LeanDetector:
    """The numpy detector for MODEL; a model.pt without its model.npz is exported once (needs torch). A model trained
    on synthetic rows never saw features of packets: refused unless allow_row_model."""
    if not model.exists():
        raise FedIoTError(f"{model}: model not found (expected model.pt, model.npz or a run directory)")
    try:
        if not lean_path(model).is_file():
            checkpoint = model / "model.pt" if model.is_dir() else model.with_suffix(".pt")
            if not checkpoint.is_file():
                raise FedIoTError(f"{model}: no model.npz or model.pt there (expected a run directory or a checkpoint)")
            try:
                from model.detector import Detector
            except ImportError:
                raise FedIoTError(f"{lean_path(model)} is missing and torch is not installed here to make it: run "
                                  f"`python -m model.export {model}` where the model was trained and copy "
                                  "model.npz beside it") from None
            print(f"exporting {lean_path(model)} (once) from the checkpoint", file=sys.stderr, flush=True)
            Detector.load(model).export_lean(model)
        detector = LeanDetector.load(model)
    except (FileNotFoundError, ValueError) as exc:
        raise FedIoTError(str(exc)) from None
    if detector.input_dim not in (nbaiot.N_FEATURES, nbaiot.N_CAPTURED_FEATURES):
        raise FedIoTError(f"{model}: the model takes {detector.input_dim} features; packets give N-BaIoT's "
                          f"{nbaiot.N_FEATURES} and, with the fan-out extension, {nbaiot.N_CAPTURED_FEATURES}")
    data = detector.meta.get("data") if isinstance(detector.meta.get("data"), dict) else {}
    if data.get("generator") == "rows" and not allow_row_model:
        raise FedIoTError(f"{model}: this model was trained on synthetic rows (data_args.dataset: synthetic, "
                          "data/synthetic.py), which are shaped like N-BaIoT's but were never computed from packets: on "
                          "real packets it flags nearly everything. Use a model trained on N-BaIoT, on your own "
                          "captures (data_args.dataset: local) or on simulated packets (synthetic_generator: packets); "
                          "--allow-row-model runs it anyway")
    return detector


def thresholds_for(detector: LeanDetector, devices: list[str | None], where: str) -> list[float]:
    """Each device's own threshold (None: the global one); a device the model does not know is an error."""
    unknown = [d for d in devices if d is not None and d not in detector.device_thresholds]
    if unknown:
        known = ", ".join(sorted(detector.device_thresholds)) or "none: it has only the global threshold"
        raise FedIoTError(f"{where}: no threshold for {', '.join(unknown)} in this model (its devices: {known}); "
                          "name a device of the federation, or leave out --device/--watch to use the global threshold")
    return [detector.threshold_for(d) for d in devices]


def live_model_path(run_dir: Path, devices: list[str | None] | None = None) -> Path | None:
    """The model a board's client keeps (RUN_DIR/detector/model.npz), a run's final model (RUN_DIR/model.npz), or,
    for a run_dir_root, the newest run's that has a threshold for each of `devices` (boards tried on one machine keep
    their runs side by side, each model with its own device's threshold); None while there is none yet."""
    for candidate in (run_dir / LIVE_MODEL, run_dir / "model.npz"):
        if candidate.is_file():
            return candidate
    runs = sorted((p for p in run_dir.glob(f"*/{LIVE_MODEL}") if p.is_file()), key=lambda p: p.stat().st_mtime)
    wanted = {d for d in devices or [] if d is not None}
    for path in reversed(runs):
        if not wanted or wanted <= _devices_of(path):
            return path
    return runs[-1] if runs else None


_DEVICES_OF: dict[tuple[Path, int], frozenset[str]] = {}  # (model, mtime_ns) -> its devices: polled every few s


def _devices_of(model: Path) -> frozenset[str]:
    """The devices a board's model.npz has thresholds for (empty when it cannot be read: loading it later says why)."""
    try:
        key = (model, model.stat().st_mtime_ns)
    except OSError:
        return frozenset()
    if key not in _DEVICES_OF:
        try:
            _DEVICES_OF[key] = frozenset(LeanDetector.load(model).device_thresholds)
        except (OSError, ValueError):
            _DEVICES_OF[key] = frozenset()
        while len(_DEVICES_OF) > 256:  # bounded: old stamps of rewritten files
            del _DEVICES_OF[next(iter(_DEVICES_OF))]
    return _DEVICES_OF[key]


class ModelFollower:
    """The newest model of a federation (`live_model_path`), checked every `poll_s` seconds; a newer file is loaded
    and validated before it replaces the current one (a bad one is logged and the current one kept)."""

    def __init__(self, run_dir: Path, poll_s: float, devices: list[str | None], allow_row_model: bool) -> None:
        self.run_dir, self.poll_s, self.devices, self.allow_row_model = run_dir, poll_s, devices, allow_row_model
        self.path: Path | None = None
        self.stamp: tuple[int, int] | None = None
        self.next_poll = 0.0
        self.swaps: list[dict[str, Any]] = []
        self.refused = 0

    def wait_first(self, timeout_s: float | None = None) -> tuple[LeanDetector, list[float]]:
        """Block until the federation has evaluated a model this board can use."""
        said = False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            got = self.poll(force=True)
            if got is not None:
                return got
            if not said:
                print(f"waiting for the federation's first evaluated model in {self.run_dir} "
                      f"({LIVE_MODEL} of a board's run)", file=sys.stderr, flush=True)
                said = True
            if deadline is not None and time.monotonic() > deadline:
                raise FedIoTError(f"--follow {self.run_dir}: no model appeared within {timeout_s:g}s")
            time.sleep(self.poll_s)

    def poll(self, force: bool = False) -> tuple[LeanDetector, list[float]] | None:
        """A newer usable model and its thresholds, or None."""
        now = time.monotonic()
        if not force and now < self.next_poll:
            return None
        self.next_poll = now + self.poll_s
        path = live_model_path(self.run_dir, self.devices)
        if path is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if path == self.path and stamp == self.stamp:
            return None
        same_file = path == self.path
        self.path, self.stamp = path, stamp
        try:
            detector = load_detector(path, self.allow_row_model)
            thresholds = thresholds_for(detector, self.devices, str(path))
            new_round, old_round = detector.meta.get("round"), self.swaps[-1]["round"] if self.swaps else None
            if (same_file and isinstance(new_round, int) and isinstance(old_round, int) and new_round < old_round):
                raise FedIoTError(f"{path}: holds the model of round {new_round}, older than round {old_round}'s in "
                                  "use (a replayed or restored file)")
        except FedIoTError as exc:
            self.refused += 1
            print(f"follow: kept the current model; {exc}", file=sys.stderr, flush=True)
            return None
        record = {"path": str(path), "round": detector.meta.get("round"), "loaded_at": time.time(),
                  "thresholds": dict(zip([d or "global" for d in self.devices], thresholds))}
        self.swaps.append(record)
        print(f"follow: using {path} (after round {record['round']}), thresholds {record['thresholds']}",
              file=sys.stderr, flush=True)
        return detector, thresholds


# ------------------------------------------------------------------------------------- live counters
class LiveCounters:
    """detect's counters while it runs: for its /metrics (detect_args.metrics_port) and, with --follow, for the board's
    health reports (RUN_DIR/detect_status.json, rewritten atomically every `every_s`; the client sends it on)."""

    def __init__(self, every_s: float, follower: "ModelFollower | None") -> None:
        self.every_s, self.follower = every_s, follower
        self.values: dict[str, Any] = {"packets": 0, "packets_scored": 0, "packet_alerts": 0, "window_alerts": 0,
                                       "packets_per_s": 0.0, "model_round": None, "model_swaps": 0, "devices": {},
                                       "tracked_streams": 0, "alerts": []}
        # the latest alert messages (what syslog / MQTT carry), for the server's page through the health reports
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=DETECT_ALERTS)
        self.mark = (time.monotonic(), 0)
        self.next_write = 0.0

    def send(self, alert: Alert) -> None:
        """A sink of the alert publisher (its thread): keep the message for the board's status file."""
        def bounded(v: float) -> float:
            return min(max(float(v), 0.0), MAX_VALUE) if math.isfinite(v) else MAX_VALUE
        self.recent_alerts.append({"time": bounded(alert.time), "device": alert.device[:ALERT_NAME_CHARS],
                                   "host": str(alert.host)[:ALERT_NAME_CHARS], "score": bounded(alert.score),
                                   "threshold": bounded(alert.threshold), "state": alert.state,
                                   "why": alert.why[:ALERT_WHY_CHARS]})

    def close(self) -> None:
        """(a sink's: nothing to close)"""

    def update(self, packets: int, scored: int, packet_alerts: int, window_alerts: int,
               per_device: dict[str, dict[str, int]], model_round: int | None,
               tracked_streams: Callable[[], int]) -> None:
        """After every batch: the counts now; the rest (rate, per device, streams, the file) every `every_s`."""
        self.values.update(packets=packets, packets_scored=scored, packet_alerts=packet_alerts,
                           window_alerts=window_alerts)
        now = time.monotonic()
        if now < self.next_write:
            return
        t0, p0 = self.mark
        self.values.update(packets_per_s=round((packets - p0) / max(now - t0, 1e-6), 1),
                           model_round=model_round, devices={d: dict(v) for d, v in per_device.items()},
                           model_swaps=len(self.follower.swaps) if self.follower else 0,
                           tracked_streams=tracked_streams(), alerts=list(self.recent_alerts))
        self.mark, self.next_write = (now, packets), now + self.every_s
        if self.follower is not None and self.follower.path is not None:  # RUN_DIR/detector/model.npz -> RUN_DIR
            try:
                write_json(self.follower.path.parent.parent / DETECT_STATUS_FILE,
                           {**self.values, "features_version": FEATURES_VERSION, "written_at": time.time()})
            except OSError as exc:
                print(f"detect: cannot write {DETECT_STATUS_FILE}: {exc}", file=sys.stderr, flush=True)

    def metrics(self):
        """Prometheus metric families of the counters (read at each scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        v = self.values
        yield CounterMetricFamily("fediot_detect_packets", "packets read", value=v["packets"])
        yield CounterMetricFamily("fediot_detect_packets_scored", "packets of watched devices scored",
                                  value=v["packets_scored"])
        yield GaugeMetricFamily("fediot_detect_packets_per_second", "packets/s over the last interval",
                                value=v["packets_per_s"])
        for name, key, help_ in (("fediot_detect_packet_alerts", "packet_alerts", "packets over their threshold"),
                                 ("fediot_detect_window_alerts", "window_alerts", "majority-vote window alerts")):
            fam = CounterMetricFamily(name, help_, labels=["device"])
            for device, counts in v["devices"].items():
                fam.add_metric([device], counts[key])
            yield fam
        if v["model_round"] is not None:
            yield GaugeMetricFamily("fediot_detect_model_round", "federation round of the model in use",
                                    value=v["model_round"])
        yield CounterMetricFamily("fediot_detect_model_swaps", "models swapped in (--follow)", value=v["model_swaps"])
        yield GaugeMetricFamily("fediot_detect_tracked_streams", "streams the extractor tracks",
                                value=v["tracked_streams"])
        yield GaugeMetricFamily("fediot_detect_resident_memory_bytes", "detect's resident memory",
                                value=current_rss_mb() * 2**20)


def serve_metrics(counters: LiveCounters, port: int, host: str, token: str | None):
    """detect's /metrics (the status server's access rules: loopback, or the token); OSError when the port is taken."""
    from monitor.http import StatusServer
    from monitor.metrics import exposition

    return StatusServer(host, port, token, None, exposition(counters.metrics)).start()


# ------------------------------------------------------------------------------------- detection
def network_sinks(cfg: DetectArgs, board: str, devices: list[str]) -> list[Sink]:
    sinks: list[Sink] = []
    if cfg.syslog:
        sinks.append(SyslogSink(cfg.syslog, board))
    if cfg.mqtt_broker:
        sinks.append(MqttSink(cfg.mqtt_broker, board, devices, cfg.mqtt_topic_prefix, cfg.mqtt_discovery_prefix,
                              cfg.alert_queue, cfg.mqtt_username, cfg.mqtt_password_file))
    return sinks


# a state file's bound: bytes per stream (every table's row of 5 decay rates as float64, and its key: 1,574 measured
# when every kind holds as many streams, 2026-12-08) times the streams a state may hold
STATE_BYTES_PER_STREAM = 2048
STATE_MAX_ARRAYS = 32  # FeatureExtractor.state() writes 21


def load_state(extractor: FeatureExtractor, path: Path, cfg: DetectArgs) -> bool:
    """The extractor's memory from `path` (detect --state): True when taken. A missing file is a first start; a file
    that is too large, not an npz of plain arrays or fails FeatureExtractor.load's checks is said on stderr and the
    board starts afresh — never a crash, never half a state."""
    if not path.is_file():
        return False
    limit = STATE_BYTES_PER_STREAM * STATE_MAX_STREAMS_FACTOR * cfg.max_streams
    try:
        size = path.stat().st_size
        if size > limit:
            raise ValueError(f"{size:,} bytes, over the {limit:,} a state of detect_args.max_streams can take")
        check_npz_sizes(path, limit, limit, STATE_MAX_ARRAYS)  # what each array claims, before any is read
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        extractor.load(arrays)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        print(f"state: {path} not used ({exc}): started afresh", file=sys.stderr, flush=True)
        return False
    print(f"state: {path}: {sum(extractor.tracked().values()):,} streams remembered, the newest packet at "
          f"{extractor.last_time:.3f}", file=sys.stderr, flush=True)
    return True


def save_state(extractor: FeatureExtractor, path: Path) -> int:
    """Write the extractor's memory to `path` whole (temp file + rename); 1 if written, 0 if there is nothing yet or
    the disk refused (said on stderr: detection goes on)."""
    if extractor.packets == 0:
        return 0
    buf = io.BytesIO()
    np.savez(buf, **extractor.state())
    try:
        write_atomic_bytes(path, buf.getvalue())
    except OSError as exc:
        print(f"state: cannot write {path}: {exc}", file=sys.stderr, flush=True)
        return 0
    return 1


def run_detection(detector: LeanDetector, batches: Iterable[tuple[PacketBatch, SkipCounts]], device: str | None,
                  window: int, sink: IO[str], watches: list[Watch] | None = None, cfg: DetectArgs | None = None,
                  follower: ModelFollower | None = None, publisher: AlertPublisher | None = None,
                  live: LiveCounters | None = None,
                  profiles: dict[str, EndpointProfile] | None = None,
                  silence: SilenceWatch | None = None, triage: TriageFollower | None = None,
                  evidence: Evidence | None = None, warning: WarningWatch | None = None,
                  link: "RelayLink | None" = None, state_path: Path | None = None) -> dict[str, object]:
    """Score every packet (with watches: every watched device's packets, each at its device's threshold); write alert
    lines; hand window alerts to the publisher (rate-limited); swap in the follower's newer models between batches;
    return the summary. With endpoint profiles (one per watched device), a window whose majority of packets went to
    or came from services outside the device's profile is a window alert too: traffic that is not the device's.
    With a triage file, a window alert its mutes match is written (marked "muted") and counted but not published; with
    evidence, each alert episode's rows and remote hosts are kept for a verdict (traffic/triage.py). With an early
    warning watch (issue 37), the first packet from or to an endpoint another board indicated is an alert at once
    ("early_warning"), this board's own window alert on it confirms it, and none within warn_confirm_s clears it;
    with a relay link, each window alert's remote endpoint is published as this board's indicator at its first window
    alert and again once the board is sure of it (warn_confirm_windows, warn_confirm_share; per endpoint and
    warn_ttl_s). With a state path, the extractor's memory of every stream is read from it at the start (when it is
    older than the first packet) and written to it every state_every_s and at the end: a restarted board's features
    go on as if it had watched through the gap."""
    cfg = cfg or validate({}).detect
    watcher = Watcher(watches) if watches else None
    devices: list[str | None] = list(watcher.devices) if watcher else [device]
    thresholds = thresholds_for(detector, devices, "--watch" if watcher else "--device")
    extractor = FeatureExtractor.configured(cfg)
    vote = WindowVote(window, cfg.max_hosts)
    if profiles is not None and watcher is None:
        raise FedIoTError("endpoint profiles (--profiles) need --watch: a device's addresses say which side of a "
                          "packet is the device")
    by_index = [profiles[d] for d in devices] if profiles is not None else None  # type: ignore[index]
    endpoint_vote = WindowVote(window, cfg.max_hosts)
    scopes: dict[bytes, str] = {}
    lines = [AlertLines(d, t, cfg.max_hosts) for d, t in zip(devices, thresholds)]
    limiter = RateLimiter(cfg.alert_interval_s, cfg.max_hosts)
    last_alert: dict[int, float] = {}  # device index -> packet time of its latest window alert (state ON)
    explained: dict[int, set[bytes]] = {}  # device index -> remote endpoints its current alert episode explained
    state = {"restored": load_state(extractor, state_path, cfg) if state_path is not None else False, "saved": 0}
    state_saved_at, state_checked = time.monotonic(), False
    extractor.warm_up()  # compiled kernels load before the clock starts: packets_per_s is the steady rate
    vote.push([], np.zeros(0, dtype=bool))
    packets = scored = alerts = window_alerts = 0
    per_device = {d or "global": {"packets": 0, "packet_alerts": 0, "window_alerts": 0, "muted_window_alerts": 0}
                  for d in devices}
    # remote -> what this board's detector said of it within warn_ttl_s: its indicator goes out at the first window
    # alert (the fast warning) and again once the board is sure of it (what may confirm it at the relay)
    published: OrderedDict[str, Named] = OrderedDict()
    # each window alert's remote endpoint is needed (mutes, evidence, early warning); else only an episode's first
    per_alert = triage is not None or evidence is not None or warning is not None or link is not None
    if by_index is not None:
        for entry in per_device.values():
            entry |= {"new_endpoint_packets": 0, "new_endpoint_window_alerts": 0}
    skipped = SkipCounts()
    started = time.perf_counter()
    interrupted = False
    try:
        for batch, skipped in batches:
            if follower is not None:
                swapped = follower.poll()
                if swapped is not None:
                    detector, thresholds = swapped
                    lines = [AlertLines(d, t, cfg.max_hosts) for d, t in zip(devices, thresholds)]
                    # what the models before this one scored: each model's share of the packets, in the summary
                    follower.swaps[-1]["packets_before"] = {d: e["packets"] for d, e in per_device.items()}
            tri = triage.poll() if triage is not None else None
            if warning is not None:
                warning.store.take_inbox(batch.time[-1] if len(batch) else time.time())
                _say_lapsed(warning, batch.time[-1] if len(batch) else time.time(), devices, sink)
            if len(batch) == 0:
                _clear_quiet(last_alert, time.time(), cfg, devices, thresholds, publisher, evidence, explained)
                _say_silent(silence, time.time(), devices, sink, publisher)
                continue
            which = watcher.of(batch) if watcher else np.zeros(len(batch), dtype=np.int64)
            if warning is not None:  # early warnings first: at the endpoint's first packet, before features or scores
                _say_early(warning, batch, np.flatnonzero(which >= 0), which, devices, thresholds, sink, publisher)
            if state["restored"] and not state_checked:  # the first packets only: live batches may overlap a little
                state_checked = True
                if batch.time[0] < extractor.last_time:
                    print(f"state: {state_path} is newer than the packets (a capture replayed?): started afresh",
                          file=sys.stderr, flush=True)
                    extractor, state["restored"] = FeatureExtractor.configured(cfg), False
            full = extractor.transform(batch)  # the captured rows' columns (what a benign verdict adds)
            if state_path is not None and time.monotonic() - state_saved_at >= cfg.state_every_s:
                state["saved"] += save_state(extractor, state_path)
                state_saved_at = time.monotonic()
            rows = full[:, :detector.input_dim]  # an N-BaIoT model: its 115 columns
            packets += len(batch)
            if silence is not None:  # who was heard, then who has been silent too long (packet time)
                for d in np.unique(which[which >= 0]):
                    silence.heard(int(d), batch.time[int(np.flatnonzero(which == d)[-1])])
                _say_silent(silence, batch.time[-1], devices, sink, publisher)
            idx = np.flatnonzero(which >= 0)
            if len(idx) == 0:
                continue
            if detector.device_scales:  # each watched device's rows with its own (widened) normalisation
                scores = np.empty(len(idx))
                for d in np.unique(which[idx]):
                    mine = which[idx] == d
                    scores[mine] = detector.score(rows[idx[mine]], devices[d])
            else:  # one normalisation for every device: one pass over the batch, as before widening existed
                scores = detector.score(rows[idx])
            limits = np.asarray(thresholds)[which[idx]]
            flags = scores > limits
            hosts = [batch.src_ip[n] + bytes([int(which[n]) % 256]) for n in idx]  # one vote window per host and device
            wins = vote.push(hosts, flags)
            new_endpoint = endpoint_wins = None
            if by_index is not None and watcher is not None:
                new_endpoint = np.zeros(len(idx), dtype=bool)
                for d in np.unique(which[idx]):
                    mine = which[idx] == d
                    new_endpoint[mine] = by_index[d].unknown(
                        endpoints_of(batch, idx[mine], watcher.ips_of(d), cfg.ephemeral_port_from, scopes))
                endpoint_wins = endpoint_vote.push(hosts, new_endpoint)
                wins = wins | endpoint_wins
            scored += len(idx)
            alerts += int(flags.sum())
            window_alerts += int(wins.sum())
            out = []
            shown = flags | wins if new_endpoint is None else flags | wins | new_endpoint
            own_ips: dict[int, set[bytes]] = {}
            for j in np.flatnonzero(shown):
                n, d = int(idx[j]), int(which[idx[j]])
                # an alert episode's first window alert says why, and so does the first of each other remote endpoint
                # in it (up to explain_remotes): an attacker that starts while a false alarm is on is explained too
                reasons = None
                extra: dict[str, Any] = {}
                new_remote = False
                if wins[j]:
                    if d not in own_ips:  # the device's addresses, once a batch (a flood's lines are many)
                        own_ips[d] = watcher.ips_of(d) if watcher is not None else set()
                    other = _other_side(batch, n, own_ips[d])
                    new_remote = len(explained.setdefault(d, set())) < cfg.explain_remotes and other not in explained[d]
                if wins[j] and (per_alert or d not in last_alert or new_remote):  # a flood's lines: only what is asked
                    remote = str(ipaddress.ip_address(other))
                    if warning is not None:
                        confirmed = warning.confirm(other)
                        if confirmed is not None:
                            extra["early_warning_confirmed"] = confirmed.indicator.board
                    mute = tri.matching(devices[d] or "global", remote, batch.time[n]) if tri is not None else None
                    if mute is not None:
                        extra["muted"] = mute.id
                    if d not in last_alert or new_remote:
                        errors, expected = detector.reconstruction(rows[n:n + 1], devices[d])
                        reasons = explain(errors[0], rows[n], expected[0])
                        extra["remote"] = remote
                        explained[d].add(other)
                    if d not in last_alert:
                        if evidence is not None:
                            extra["episode"] = evidence.start(
                                d, devices[d] or "global", batch.time[n], why_text(reasons),
                                None if mute is None else mute.id)
                    if evidence is not None:
                        evidence.add(d, batch.time[n], full[n], remote,
                                     batch.frame[n] if batch.frame is not None else None)
                    named = None if link is None else published.get(remote)
                    if link is not None and (named is None or batch.time[n] - named.first > cfg.warn_ttl_s):
                        # this board's indicator: never packets or rows
                        groups = reasons or explain(detector.feature_errors(rows[n:n + 1], devices[d])[0])
                        port = batch.dst_port[n] if other == batch.dst_ip[n] else batch.src_port[n]
                        named = published[remote] = Named(other, Indicator(
                            remote, (int(port),) if 0 <= port <= 65535 else (), "other", float(batch.time[n]),
                            float(scores[j]), tuple(r["group"] for r in groups)))
                        while len(published) > cfg.warn_max_indicators:
                            published.popitem(last=False)
                        link.publish(named.said)
                    elif named is not None:
                        named.windows += 1
                        named.score = max(named.score, float(scores[j]))
                        published.move_to_end(remote)
                out.append(lines[d].line(batch.time[n], batch.src_ip[n], float(scores[j]), bool(flags[j]), bool(wins[j]),
                                         None if new_endpoint is None else bool(new_endpoint[j]), reasons, extra))
                if wins[j]:
                    why = why_text(reasons) if reasons else ""
                    last_alert[d] = batch.time[n]
                    if "muted" in extra:
                        per_device[devices[d] or "global"]["muted_window_alerts"] += 1
                    elif publisher is not None:
                        host = str(ipaddress.ip_address(batch.src_ip[n]))
                        count = limiter.admit(devices[d] or "global", host, batch.time[n])
                        if count is not None:
                            publisher.offer(Alert(devices[d] or "global", host, batch.time[n], float(scores[j]),
                                                  float(thresholds[d]), count, why=why))
            sink.write("".join(out))
            if published:
                _publish_sure(published, batch, link, cfg)
            for d in range(len(devices)):
                mine = which[idx] == d
                entry = per_device[devices[d] or "global"]
                entry["packets"] += int(mine.sum())
                entry["packet_alerts"] += int((flags & mine).sum())
                entry["window_alerts"] += int((wins & mine).sum())
                if new_endpoint is not None and endpoint_wins is not None:
                    entry["new_endpoint_packets"] += int((new_endpoint & mine).sum())
                    entry["new_endpoint_window_alerts"] += int((endpoint_wins & mine).sum())
            _clear_quiet(last_alert, batch.time[-1], cfg, devices, thresholds, publisher, evidence, explained)
            if live is not None:
                live.update(packets, scored, alerts, window_alerts, per_device, detector.meta.get("round"),
                            lambda: sum(extractor.tracked().values()))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: detection stops here, the summary still comes
        interrupted = True
    finally:
        if evidence is not None:  # the open episodes' rows, written whole
            evidence.close()
        if state_path is not None:
            state["saved"] += save_state(extractor, state_path)
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {
        "summary": True, "packets": packets, "packets_scored": scored, "packet_alerts": alerts,
        "window_alerts": window_alerts, "window": window,
        "threshold": thresholds[0] if len(thresholds) == 1 else dict(zip(devices, thresholds)),
        "seconds": round(seconds, 3), "packets_per_s": round(packets / seconds, 1) if seconds > 0 else None,
        "skipped": skipped.as_dict(), "devices": per_device, "interrupted": interrupted,
        "memory": {"tracked": extractor.tracked(), "evicted_streams": dict(extractor.evicted), "sweeps": extractor.sweeps,
                   "hosts_forgotten": vote.forgotten, "peak_rss_mb": peak_rss_mb()}}
    if state_path is not None:
        summary["state"] = {"path": str(state_path), "restored": state["restored"], "saved": state["saved"]}
    if watcher and watcher.learnt:
        summary["learnt_ips"] = {d: sorted(v) for d, v in watcher.learnt.items()}
    if silence is not None:
        for d, name in enumerate(devices):
            per_device[name or "global"]["silent_alerts"] = silence.alerts[d]
    if watches:  # a watched device with no packet is not watched at all (issue 36: its DHCP address had changed)
        summary["silent_devices"] = [w.device for w in watches if per_device[w.device]["packets"] == 0]
    if follower is not None:
        summary["model_swaps"] = follower.swaps
        summary["models_refused"] = follower.refused
    if publisher is not None:
        summary["network_alerts"] = dict(publisher.counts)
    if evidence is not None:
        summary["episodes"] = list(evidence.written)
    if warning is not None:
        summary["early_warnings"] = dict(warning.counts)
    if link is not None:
        summary["relay"] = dict(link.counts)
    return summary


def explain(errors: np.ndarray, value: np.ndarray | None = None,
            expected: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Which groups of features an alert's score comes from: the EXPLAIN_GROUPS groups with the largest share of the
    packet's reconstruction error, in a household's words (data.nbaiot.GROUP_MEANINGS); with the packet's `value`s
    and what the device's model `expected` of them (LeanDetector.reconstruction), each group's most deviating feature
    against its normal: "feature", "value", "normal" and "times" (value / normal, when both are above zero)."""
    by_group: dict[str, float] = {}
    worst: dict[str, int] = {}
    for i, (column, e) in enumerate(zip(nbaiot.CAPTURED_COLUMNS, errors)):
        g = nbaiot.group_of(column)
        by_group[g] = by_group.get(g, 0.0) + float(e)
        if g not in worst or e > errors[worst[g]]:
            worst[g] = i
    total = sum(by_group.values()) or 1.0
    top = sorted(by_group.items(), key=lambda ge: -ge[1])[:EXPLAIN_GROUPS]
    out = [{"group": g, "meaning": nbaiot.GROUP_MEANINGS[g], "share": round(e / total, 3)} for g, e in top]
    if value is not None and expected is not None:
        for r in out:
            i = worst[r["group"]]
            v, n = float(value[i]), float(expected[i])
            r |= {"feature": nbaiot.CAPTURED_COLUMNS[i], "value": _round(v), "normal": _round(n)}
            if v > 0 and n > 0 and math.isfinite(v / n):
                r["times"] = _round(v / n)
    return out


def _round(x: float) -> float:
    """Four significant digits: what a person reads (and a JSON line does not need more of)."""
    return float(f"{x:.4g}") if math.isfinite(x) else 0.0


def _times(t: float) -> str:
    """A ratio as a person reads it: 1.5, 40, 7,217 (never 7.22e+03)."""
    return f"{t:,.0f}" if t >= 100 else f"{t:.2g}"


def why_text(reasons: list[dict[str, Any]]) -> str:
    """The explanation as one sentence for syslog and MQTT: each group's share of the score and, where known, how far
    from the device's normal its most deviating feature was."""
    def against(r: dict[str, Any]) -> str:
        if "times" in r:
            t = r["times"]
            return f"; {_times(t)}x its normal" if t >= 1 else f"; 1/{_times(1 / t)} of its normal"
        return f"; {r['value']:.4g} where its normal is {r['normal']:.4g}" if "value" in r else ""

    return "; ".join(f"{r['meaning']} ({r['share']:.0%} of the score{against(r)})" for r in reasons)


def _say_silent(silence: SilenceWatch | None, now: float, devices: list[str | None], sink: IO[str],
                publisher: AlertPublisher | None) -> None:
    """A line (and a network alert, host "silent") for each watched device that has just gone silent for longer than
    its own normal: unplugged, dead, moved to another address or network, or silenced."""
    if silence is None:
        return
    for d, seconds in silence.check(now):
        name, limit = devices[d] or "global", float(silence.limits[d] or 0.0)
        sink.write(json.dumps({"time": now, "host": "silent", "device": name, "score": round(seconds, 1),
                               "threshold": round(limit, 1), "packet_alert": False, "window_alert": False,
                               "silent": True, "silent_s": round(seconds, 1),
                               "silent_after_s": round(limit, 1)}) + "\n")
        if publisher is not None:
            publisher.offer(Alert(name, "silent", now, float(seconds), limit, 1))


def silence_limits(profiles: Path, watches: list[Watch], cfg: DetectArgs) -> list[float | None]:
    """Each watched device's silence that is an alert: silence_factor x its longest silence in its capture
    (DIR/<device>/provenance.json), at least silence_min_s; None (said on stderr) when its capture did not record it."""
    limits: list[float | None] = []
    for w in watches:
        path = profiles / w.device / "provenance.json"
        try:
            longest = json.loads(path.read_text()).get("longest_silence_s")
        except (OSError, ValueError, AttributeError):
            longest = None
        if not isinstance(longest, (int, float)) or not math.isfinite(longest) or longest < 0:
            print(f"note: {path} holds no longest silence (a capture before silence alerts): {w.device} is not "
                  "watched for silence; capture it again (--append) to learn it", file=sys.stderr)
            limits.append(None)
        else:
            limits.append(max(cfg.silence_min_s, cfg.silence_factor * float(longest)))
    return limits


@dataclass
class Named:
    """An endpoint this board's detector raised window alerts on, within warn_ttl_s: what it published first, and the
    counts that make it sure (detect_args.warn_confirm_windows and warn_confirm_share)."""

    address: bytes
    said: Indicator  # the first indicator (its time, port and groups)
    windows: int = 1
    packets: int = 0  # from or to the endpoint, in the batches since the first window alert (that batch whole)
    score: float = 0.0
    sure: bool = False

    @property
    def first(self) -> float:
        return self.said.time


def _publish_sure(published: OrderedDict[str, Named], batch: PacketBatch, link: RelayLink, cfg: DetectArgs) -> None:
    """Count this batch's packets of the endpoints this board is not yet sure of; publish the indicator of each that
    now is: enough window alerts, and a large enough share of its packets (an attacker's flood or scan alerts on
    nearly every packet, a benign endpoint's passing false alarm on a few of many). Nothing to do while nobody alerts."""
    open_ = [x for x in published.values() if not x.sure]
    if not open_:
        return
    seen = Counter(batch.src_ip)
    seen.update(batch.dst_ip)
    for x in open_:
        x.packets += seen.get(x.address, 0)
        x.packets = max(x.packets, x.windows)  # its first batch counted whole: at least every window alert
        if x.windows >= cfg.warn_confirm_windows and x.windows >= cfg.warn_confirm_share * x.packets:
            x.sure = True
            s = x.said
            link.publish(Indicator(s.endpoint, s.ports, s.proto, float(batch.time[-1]), max(s.score, x.score),
                                   s.groups, windows=x.windows, packets=x.packets))


def _say_early(warning: WarningWatch, batch: PacketBatch, idx: np.ndarray, which: np.ndarray,
               devices: list[str | None], thresholds: list[float], sink: IO[str],
               publisher: AlertPublisher | None) -> None:
    """An alert line (and a network alert) at the first packet from or to an endpoint another board indicated."""
    for n, address, e in warning.first_packets(batch.src_ip, batch.dst_ip, batch.time, idx):
        d = int(which[n])
        ind, name = e.indicator, devices[d] or "global"
        why = "; ".join(nbaiot.GROUP_MEANINGS[g] for g in ind.groups)
        sink.write(json.dumps({"time": batch.time[n], "host": ind.endpoint, "device": name, "score": ind.score,
                               "threshold": float(thresholds[d]), "packet_alert": False, "window_alert": False,
                               "early_warning": True, "status": ind.status, "from_board": ind.board,
                               "boards": list(ind.boards), "why": why}) + "\n")
        if publisher is not None:
            publisher.offer(Alert(name, ind.endpoint, batch.time[n], ind.score, float(thresholds[d]), 1,
                                  why=f"early warning ({ind.status}) from {ind.board}: {why}"))


def _say_lapsed(warning: WarningWatch, now: float, devices: list[str | None], sink: IO[str]) -> None:
    """A line for each early warning this board's own detector did not confirm within warn_confirm_s."""
    for _, e in warning.lapsed(now):
        sink.write(json.dumps({"time": now, "host": e.indicator.endpoint, "device": None, "score": 0.0,
                               "threshold": 0.0, "packet_alert": False, "window_alert": False, "early_warning": True,
                               "cleared": True, "from_board": e.indicator.board}) + "\n")


def _other_side(batch: PacketBatch, n: int, own_ips: set[bytes]) -> bytes:
    """The other side of packet n: its destination when the watched device sent it, else its source."""
    src = batch.src_ip[n]
    return batch.dst_ip[n] if src in own_ips else src


def _clear_quiet(last_alert: dict[int, float], now: float, cfg: DetectArgs, devices: list[str | None],
                 thresholds: list[float], publisher: AlertPublisher | None, evidence: Evidence | None = None,
                 explained: dict[int, set[bytes]] | None = None) -> None:
    """A device with no window alert for alert_interval_s is back to normal (state OFF on the network sinks); its
    alert episode ends (its evidence written; the endpoints it explained forgotten)."""
    for d, t in list(last_alert.items()):
        if now - t >= cfg.alert_interval_s:
            del last_alert[d]
            if explained is not None:
                explained.pop(d, None)
            if evidence is not None:
                evidence.end(d)
            if publisher is not None:
                publisher.offer(Alert(devices[d] or "global", "-", now, 0.0, float(thresholds[d]), 0, state="OFF"))


def _stop(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, nargs="?", help="model.pt, model.npz or a run directory (or use --follow)")
    p.add_argument("--follow", type=Path, metavar="RUN_DIR",
                   help="use the newest model the federation evaluated (a board's run directory or run_dir_root)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", type=Path, help="pcap or pcapng file")
    src.add_argument("--interface", help="live capture from this interface (Linux, root)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--device", help="every packet at this device's own threshold")
    who.add_argument("--watch", action="append", default=[], metavar="NAME=ADDR[,ADDR...]",
                     help="watch this device (its IPs/MACs) at its own threshold; repeat for several")
    p.add_argument("--profiles", type=Path, metavar="DIR",
                   help="capture's --out (e.g. data/local): each watched device's endpoints.json; a window of traffic "
                        "to or from services outside the device's profile is a window alert (needs --watch)")
    p.add_argument("--window", type=int, default=None,
                   help="majority-vote window in packets (default: validation_args.vote_window)")
    p.add_argument("--out", type=Path, help="write alert lines here (default: stdout)")
    p.add_argument("--duration", type=float, default=None, help="live capture: stop after this many seconds")
    p.add_argument("--config", type=Path, help="YAML with detect_args (memory bounds, syslog, MQTT); default: defaults")
    p.add_argument("--board", default=socket.gethostname(), help="this board's name in syslog and MQTT (default: host name)")
    p.add_argument("--triage", type=Path, metavar="FILE",
                   help="a triage file (python -m triage writes it; e.g. data/local/triage.json): its mutes are "
                        "applied, re-read when it changes; each alert episode's rows and remote hosts are kept in "
                        "evidence/ beside it for a benign verdict")
    p.add_argument("--relay", metavar="HOST:PORT",
                   help="early warning (python -m relay beside the server): this board's alerts' remote endpoints go "
                        "to the other boards, and theirs raise an alert here at the first packet (needs --tls-dir, "
                        "--rank)")
    p.add_argument("--tls-dir", type=Path, help="--relay: the deployment's certificates (ca.pem, client<R>.pem/.key)")
    p.add_argument("--rank", type=int, help="--relay: this board's rank (its certificate client<R>.pem)")
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="keep the feature extractor's memory of every stream in FILE across restarts (read at the "
                        "start, written every detect_args.state_every_s and at the end)")
    p.add_argument("--allow-row-model", action="store_true", help="run a model trained on synthetic rows anyway")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (default detect_args.metrics_port; 0 = a free port); "
                        "the status server's access rules (status_args.host, status_args.token)")
    a = p.parse_args(argv)
    publisher = None
    signal.signal(signal.SIGTERM, _stop)  # a service manager's stop ends detection like Ctrl-C: with the summary
    try:
        if (a.model is None) == (a.follow is None):
            raise FedIoTError("give a MODEL or --follow RUN_DIR (one of the two)")
        cfg = load(a.config) if a.config else validate({})
        window = a.window if a.window is not None else cfg.validation.vote_window
        if window < 1:
            raise FedIoTError(f"--window must be at least 1 packet, got {window}")
        watches = [parse_watch(w) for w in a.watch]
        devices: list[str | None] = [w.device for w in watches] if watches else [a.device]
        profiles = None
        if a.profiles is not None:
            if not watches:
                raise FedIoTError("--profiles needs --watch NAME=ADDR: a device's addresses say which side of a packet "
                                  "is the device")
            profiles = load_profiles(a.profiles, [w.device for w in watches], cfg.detect.max_profile_endpoints)
        follower = None
        if a.follow:
            follower = ModelFollower(a.follow, cfg.detect.follow_poll_s, devices, a.allow_row_model)
            detector, _ = follower.wait_first()
        else:
            detector = load_detector(a.model, a.allow_row_model)
            thresholds_for(detector, devices, "--watch" if watches else "--device")
        live = LiveCounters(cfg.detect.status_every_s, follower)
        port = a.metrics_port if a.metrics_port is not None else cfg.detect.metrics_port
        if port is not None:
            try:
                metrics_server = serve_metrics(live, port, cfg.status.host, cfg.status.token)
            except OSError as exc:
                raise FedIoTError(f"--metrics-port {port}: {exc.strerror or exc}") from None
            print(f"metrics: {metrics_server.url}metrics", file=sys.stderr, flush=True)
        sinks = network_sinks(cfg.detect, a.board, [d for d in devices if d] or ["global"])
        if follower is not None:  # a board's detector: its latest alert messages go to the server's page too
            sinks.append(live)
        publisher = AlertPublisher(sinks, cfg.detect.alert_queue) if sinks else None
        # indicators from the relay (its link starts below): a live packet of an indicated endpoint ends its batch
        store = IndicatorStore(cfg.detect.warn_max_indicators, cfg.detect.warn_ttl_s) if a.relay is not None else None
        if a.pcap:
            batches = read_capture(a.pcap, batch_size=cfg.detect.batch_packets, keep_frames=a.triage is not None)
        else:
            batches = live_capture(a.interface, duration_s=a.duration, ring_mb=cfg.detect.capture_ring_mb,
                                   keep_frames=a.triage is not None,
                                   max_wait_s=cfg.detect.live_max_wait_ms / 1000.0,
                                   urgent=None if store is None else store.unwarned)
            print(f"capturing on {a.interface}" + (f" for {a.duration:g}s" if a.duration else " (Ctrl-C to stop)"),
                  file=sys.stderr, flush=True)
        sink = open(a.out, "w") if a.out else sys.stdout
        try:
            silence = SilenceWatch(silence_limits(a.profiles, watches, cfg.detect)) if profiles is not None else None
            triage = evidence = None
            if a.triage is not None:
                triage = TriageFollower(a.triage, cfg.detect.max_triage_entries,
                                        lambda text: print(text, file=sys.stderr, flush=True))
                evidence = Evidence(a.triage.parent / EVIDENCE_DIR, cfg.detect.evidence_rows, nbaiot.CAPTURED_COLUMNS)
            warning = link = None
            if a.relay is not None:
                from relay import RelayLink  # the relay's socket code: only for a board that uses it

                if a.tls_dir is None or a.rank is None:
                    raise FedIoTError("--relay needs --tls-dir DIR and --rank R (the board's certificate)")
                for f in ("ca.pem", f"client{a.rank}.pem", f"client{a.rank}.key"):
                    if not (a.tls_dir / f).is_file():
                        raise FedIoTError(f"--tls-dir: {a.tls_dir / f} not found (bash make_certs.sh makes it)")
                warning = WarningWatch(store, cfg.detect.warn_confirm_s)
                link = RelayLink(a.relay, a.tls_dir, a.rank, store,
                                 lambda text: print(text, file=sys.stderr, flush=True)).start()
            summary = run_detection(detector, batches, a.device, window, sink, watches, cfg.detect, follower, publisher,
                                    live, profiles, silence, triage, evidence, warning, link, a.state)
        finally:
            if a.out:
                sink.close()
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if publisher is not None:
            publisher.close()
    if publisher is not None:
        summary["network_alerts"] = dict(publisher.counts)
    print(json.dumps(summary))
    silent = summary.get("silent_devices") or []
    for device in silent:
        watch = next(w for w in watches if w.device == device)
        addresses = [str(ipaddress.ip_address(ip)) for ip in sorted(watch.ips)]
        addresses += [m.hex(":") for m in sorted(watch.macs)]
        print(f"warning: {device} was not watched: no packet from or to {', '.join(addresses)} in "
              f"{a.pcap or a.interface}; its address may have changed (DHCP, a replaced unit): watch it by its MAC "
              f"address, which stays", file=sys.stderr)
    return SILENT_EXIT if silent else 0


if __name__ == "__main__":
    sys.exit(main())
