"""Detect attacks in live or recorded traffic with a trained FedIoT model.

    python -m detect MODEL (--pcap FILE | --interface IFACE) [--device NAME] [--window 5] [--out alerts.jsonl]

MODEL is a checkpoint (model.pt, or its numpy export model.npz) or a run directory. Runs on numpy
(model/lean.py): no torch, no FedML. A model.pt without model.npz beside it is exported once (needs torch).
Packets -> N-BaIoT features (traffic/afterimage.py)
-> the checkpoint's normalisation and autoencoder -> per-packet score vs. threshold (the device's
own threshold with --device, else the global one), plus N-BaIoT's majority vote over the last
`--window` packets of the same source host. Alerts are JSON lines (to --out, else stdout):
{"time", "host", "score", "threshold", "packet_alert", "window_alert"}; a summary line follows.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Iterable

import numpy as np
from numba import njit

from data import nbaiot
from fediot.errors import FedIoTError
from model.lean import LeanDetector, lean_path
from traffic.afterimage import FeatureExtractor
from traffic.packets import PacketBatch, SkipCounts, live_capture, read_capture


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

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 packet, got {window}")
        self.window = window
        self.host_ids: dict[bytes, int] = {}
        self.seen = np.zeros(0, dtype=np.int64)
        self.votes = np.zeros(0, dtype=np.int64)
        self.ring = np.zeros((0, window), dtype=np.int64)

    def push(self, hosts: list[bytes], flags: np.ndarray) -> np.ndarray:
        """Window alerts for a batch of packets (in time order) with their per-packet flags."""
        ids_of = self.host_ids
        ids = np.fromiter((ids_of.setdefault(h, len(ids_of)) for h in hosts), dtype=np.int64, count=len(hosts))
        grow = len(ids_of) - len(self.seen)
        if grow > 0:
            grow = max(grow, len(self.seen))  # amortised doubling
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=np.int64)])
            self.votes = np.concatenate([self.votes, np.zeros(grow, dtype=np.int64)])
            self.ring = np.vstack([self.ring, np.zeros((grow, self.window), dtype=np.int64)])
        out = np.zeros(len(flags), dtype=np.bool_)
        _vote(ids, np.asarray(flags, dtype=np.bool_), self.seen, self.ring, self.votes, self.window, out)
        return out


def _number(x: float) -> str:
    """A float as json.dumps writes it."""
    return repr(x) if math.isfinite(x) else json.dumps(x)


class AlertLines:
    """Alert lines exactly as json.dumps({"time", "host", "device", "score", "threshold", "packet_alert",
    "window_alert"}) writes them, built from pieces: a flood can mean one alert per packet."""

    def __init__(self, device: str | None, threshold: float) -> None:
        self.middle = f', "device": {json.dumps(device)}, "score": '
        self.tail = f', "threshold": {_number(threshold)}, "packet_alert": '
        self.hosts: dict[bytes, str] = {}

    def line(self, t: float, host: bytes, score: float, packet_alert: bool, window_alert: bool) -> str:
        h = self.hosts.get(host)
        if h is None:
            h = self.hosts[host] = json.dumps(str(ipaddress.ip_address(host)))
        return (f'{{"time": {_number(round(t, 6))}, "host": {h}{self.middle}{_number(score)}{self.tail}'
                f'{"true" if packet_alert else "false"}, "window_alert": {"true" if window_alert else "false"}}}\n')


def run_detection(detector: LeanDetector, batches: Iterable[tuple[PacketBatch, SkipCounts]], device: str | None,
                  window: int, sink: IO[str]) -> dict[str, object]:
    """Score every packet; write alert lines; return the summary."""
    threshold = detector.threshold_for(device)
    extractor = FeatureExtractor()
    vote = WindowVote(window)
    lines = AlertLines(device, threshold)
    extractor.warm_up()  # compiled kernels load before the clock starts: packets_per_s is the steady rate
    vote.push([], np.zeros(0, dtype=bool))
    packets = alerts = window_alerts = 0
    skipped = SkipCounts()
    started = time.perf_counter()
    for batch, skipped in batches:
        if len(batch) == 0:
            continue
        scores = detector.score(extractor.transform(batch))
        flags = scores > threshold
        wins = vote.push(batch.src_ip, flags)
        alerts += int(flags.sum())
        window_alerts += int(wins.sum())
        sink.write("".join(lines.line(batch.time[n], batch.src_ip[n], float(scores[n]), bool(flags[n]), bool(wins[n]))
                           for n in np.flatnonzero(flags | wins)))
        packets += len(batch)
    seconds = time.perf_counter() - started
    return {"summary": True, "packets": packets, "packet_alerts": alerts, "window_alerts": window_alerts,
            "window": window, "threshold": threshold, "seconds": round(seconds, 3),
            "packets_per_s": round(packets / seconds, 1) if seconds > 0 else None, "skipped": skipped.as_dict()}


def load_detector(model: Path) -> LeanDetector:
    """The numpy detector for MODEL; a model.pt without its model.npz is exported once (needs torch)."""
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
    if detector.input_dim != nbaiot.N_FEATURES:
        raise FedIoTError(f"{model}: the model takes {detector.input_dim} features; packets give N-BaIoT's {nbaiot.N_FEATURES}")
    return detector


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", type=Path, help="pcap or pcapng file")
    src.add_argument("--interface", help="live capture from this interface (Linux, root)")
    p.add_argument("--device", help="use this device's own threshold")
    p.add_argument("--window", type=int, default=5, help="majority-vote window in packets (default %(default)s)")
    p.add_argument("--out", type=Path, help="write alert lines here (default: stdout)")
    p.add_argument("--duration", type=float, default=None, help="live capture: stop after this many seconds")
    a = p.parse_args(argv)
    try:
        if a.window < 1:
            raise FedIoTError(f"--window must be at least 1 packet, got {a.window}")
        detector = load_detector(a.model)
        if a.pcap:
            batches = read_capture(a.pcap, batch_size=4096)
        else:
            batches = live_capture(a.interface, duration_s=a.duration)
            print(f"capturing on {a.interface}" + (f" for {a.duration:g}s" if a.duration else " (Ctrl-C to stop)"),
                  file=sys.stderr, flush=True)
        sink = open(a.out, "w") if a.out else sys.stdout
        try:
            summary = run_detection(detector, batches, a.device, a.window, sink)
        finally:
            if a.out:
                sink.close()
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
