"""Detect attacks in live or recorded traffic with a trained FedIoT model.

    python -m detect MODEL (--pcap FILE | --interface IFACE) [--device NAME] [--window 5] [--out alerts.jsonl]

MODEL is a checkpoint (model.pt) or a run directory. Packets -> N-BaIoT features (traffic/afterimage.py)
-> the checkpoint's normalisation and autoencoder -> per-packet score vs. threshold (the device's
own threshold with --device, else the global one), plus N-BaIoT's majority vote over the last
`--window` packets of the same source host. Alerts are JSON lines (to --out, else stdout):
{"time", "host", "score", "threshold", "packet_alert", "window_alert"}; a summary line follows.
"""
from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import IO, Iterable

from fediot.errors import FedIoTError
from model.detector import Detector
from traffic.afterimage import FeatureExtractor
from traffic.packets import PacketBatch, SkipCounts, live_capture, read_capture


class WindowVote:
    """Majority vote over the last `window` packets of each source host."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.recent: dict[bytes, collections.deque] = {}

    def push(self, host: bytes, flag: bool) -> bool:
        q = self.recent.setdefault(host, collections.deque(maxlen=self.window))
        q.append(flag)
        return 2 * sum(q) > len(q) if len(q) == self.window else False


def run_detection(detector: Detector, batches: Iterable[tuple[PacketBatch, SkipCounts]], device: str | None,
                  window: int, sink: IO[str]) -> dict[str, object]:
    """Score every packet; write alert lines; return the summary."""
    threshold = detector.threshold_for(device)
    extractor = FeatureExtractor()
    vote = WindowVote(window)
    packets = alerts = window_alerts = 0
    skipped = SkipCounts()
    started = time.perf_counter()
    for batch, skipped in batches:
        if len(batch) == 0:
            continue
        scores = detector.score(extractor.transform(batch))
        for t, host, score in zip(batch.time, batch.src_ip, scores):
            flag = bool(score > threshold)
            win = vote.push(host, flag)
            if flag or win:
                alerts += flag
                window_alerts += win
                sink.write(json.dumps({"time": round(t, 6), "host": str(ipaddress.ip_address(host)),
                                       "device": device, "score": float(score), "threshold": threshold,
                                       "packet_alert": flag, "window_alert": win}) + "\n")
        packets += len(batch)
    seconds = time.perf_counter() - started
    return {"summary": True, "packets": packets, "packet_alerts": alerts, "window_alerts": window_alerts,
            "window": window, "threshold": threshold, "seconds": round(seconds, 3),
            "packets_per_s": round(packets / seconds, 1) if seconds > 0 else None, "skipped": skipped.as_dict()}


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
        try:
            detector = Detector.load(a.model)
        except (FileNotFoundError, ValueError) as exc:
            raise FedIoTError(str(exc)) from None
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
