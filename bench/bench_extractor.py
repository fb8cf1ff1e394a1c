"""Feature extractor throughput on one core: pcap parsing, feature computation, end to end.

    NUMBA_NUM_THREADS=1 .venv/bin/python bench/bench_extractor.py [--seconds 1800] [--device ...]
Goal: >= 100,000 packets/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traffic.afterimage import FeatureExtractor  # noqa: E402
from traffic.packets import read_capture  # noqa: E402
from traffic.simulator import TrafficSimulator, write_pcap  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="Provision_PT_737E_Security_Camera")
    p.add_argument("--seconds", type=float, default=1800)
    p.add_argument("--attack", default="mirai_udp")
    a = p.parse_args()
    path = Path(tempfile.mkdtemp()) / "bench.pcap"
    packets = TrafficSimulator(a.device, 0).capture(a.seconds, a.attack, a.seconds / 2, 60)
    write_pcap(path, packets)
    FeatureExtractor().transform(next(read_capture(path, batch_size=100))[0])  # compile the kernel first

    t0 = time.perf_counter()
    batches = [b for b, _ in read_capture(path)]
    t_parse = time.perf_counter() - t0
    n = sum(len(b) for b in batches)

    ex = FeatureExtractor()
    ids_time = 0.0
    for b in batches:
        s = time.perf_counter()
        ex._ids(b)
        ids_time += time.perf_counter() - s
    ex = FeatureExtractor()
    t0 = time.perf_counter()
    for b in batches:
        ex.transform(b)
    t_feat = time.perf_counter() - t0
    kernel_time = t_feat - ids_time
    print(f"{n:,} packets ({a.device}, {a.seconds:g}s with a 60s {a.attack} flood), one core")
    print("| stage | packets/s |\n|---|---|")
    print(f"| pcap reading + header decoding | {n / t_parse:,.0f} |")
    print(f"| stream-key ids (numpy keys, a dict lookup per distinct stream) | {n / ids_time:,.0f} |")
    print(f"| damped statistics (numba kernel) | {n / max(kernel_time, 1e-9):,.0f} |")
    print(f"| features from parsed packets (keys + kernel) | {n / t_feat:,.0f} |")
    print(f"| end to end (parse + features) | {n / (t_parse + t_feat):,.0f} |")


if __name__ == "__main__":
    main()
