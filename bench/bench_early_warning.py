"""Federated early warning side by side (issue 37): how long after an attacker's first packet at board B does B
alert, with and without the relay's indicator from board A.

    .venv/bin/python bench/bench_early_warning.py [--seeds 0,1,2] [--kinds syn_flood,scan,telnet_brute]

Per seed and kind of inbound attack: one public attacker address sends it first at board A's device (a simulated
camera) and 100 s later at board B's (a simulated doorbell), each beside the device's own simulated benign traffic.
Each board's detector is its device's own (`traffic.train_device`, 1,800 s of benign packets), run by
`detect.run_detection` on the board's packets in time order (a replay). With early warning: A and B each hold a
`relay.RelayLink` to a real `relay.Relay` over mutual TLS on loopback; A's alert publishes its indicator, the relay
sends it to B, then B's packets are scored. Reported per run, in packet time: the delay from the attacker's first
packet at B to B's first alert on the attacker (an early warning, or its own window alert), with and without;
whether B's own detector then confirmed the warning; and the wall time B's detection took per packet (what a live
board adds to the delay). Writes results.json and table.md to a run directory and prints it last.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dpkt

REPO = Path(__file__).resolve().parents[1]

import detect  # noqa: E402
from deployment.certs import make_certs  # noqa: E402
from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, write_json  # noqa: E402
from relay import Relay, RelayLink  # noqa: E402
from traffic.packets import SkipCounts, frames_batch  # noqa: E402
from traffic.simulator import EPOCH, TrafficSimulator, device_ip  # noqa: E402
from traffic.warning import IndicatorStore, WarningWatch  # noqa: E402

A_DEVICE, B_DEVICE = "Provision_PT_737E_Security_Camera", "Danmini_Doorbell"
ATTACKER = "198.51.100.77"
BENIGN_S, A_AT, B_AT, ATTACK_S = 600.0, 250.0, 350.0, 20.0


def inbound(sim: TrafficSimulator, kind: str, start: float, seconds: float, seed: int) -> list[tuple[float, bytes]]:
    """The attacker's packets at a device: a SYN flood (500/s to one port), a port scan (100/s over ports), or a
    telnet brute force (20 connections/s to 23 and 2323)."""
    r, src = random.Random(seed), ipaddress.ip_address(ATTACKER).packed
    out, t = [], start
    rate = {"syn_flood": 500.0, "scan": 100.0, "telnet_brute": 20.0}[kind]
    while t < start + seconds:
        if kind == "syn_flood":
            out.append(sim._in(t, src, "tcp", r.randrange(1024, 65535), 80, 60, dpkt.tcp.TH_SYN))
        elif kind == "scan":
            out.append(sim._in(t, src, "tcp", 40000, r.randrange(1, 65535), 60, dpkt.tcp.TH_SYN))
        else:
            out.append(sim._in(t, src, "tcp", r.randrange(1024, 65535), r.choice((23, 2323)), 74, dpkt.tcp.TH_SYN))
        t += r.expovariate(rate)
    return out


def batches(frames, size=256):
    for i in range(0, len(frames), size):
        yield frames_batch(frames[i:i + size]), SkipCounts()


def replay(model, frames, device, out: Path, cfg, warning=None, link=None) -> tuple[list[dict], float]:
    t = time.perf_counter()
    with out.open("w") as sink:
        detect.run_detection(model, batches(frames), None, 5, sink,
                             [detect.parse_watch(f"{device}={device_ip(device)}")], cfg, warning=warning, link=link)
    return [json.loads(x) for x in out.read_text().splitlines()], (time.perf_counter() - t) / max(1, len(frames))


def first_alert_on_attacker(lines: list[dict]) -> float | None:
    times = [x["time"] for x in lines if x.get("host") == ATTACKER and (x.get("window_alert") or
                                                                           (x.get("early_warning") and not x.get("cleared")))]
    return min(times) if times else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--kinds", default="syn_flood,scan,telnet_brute")
    a = p.parse_args()
    out = create_run_dir(REPO / "runs", "bench", "early_warning")
    cfg = validate({}).detect
    models = {}
    for dev in (A_DEVICE, B_DEVICE):
        path = out / f"{dev}.pt"
        subprocess.run([sys.executable, "-m", "traffic.train_device", dev, "--out", str(path)], cwd=REPO, check=True,
                       capture_output=True, timeout=1800)
        models[dev] = detect.load_detector(path, allow_row_model=True)
    certs = Path(tempfile.mkdtemp(dir=out)) / "certs"
    make_certs(certs, 2, [])
    results = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for kind in a.kinds.split(","):
            sa, sb = TrafficSimulator(A_DEVICE, seed=seed), TrafficSimulator(B_DEVICE, seed=seed + 100)
            fa = sorted(sa.capture(BENIGN_S) + inbound(sa, kind, EPOCH + A_AT, ATTACK_S, seed), key=lambda f: f[0])
            fb = sorted(sb.capture(BENIGN_S) + inbound(sb, kind, EPOCH + B_AT, ATTACK_S, seed + 1),
                        key=lambda f: f[0])
            attacker = ipaddress.ip_address(ATTACKER).packed
            bb = frames_batch(fb)
            first_b = min(bb.time[n] for n in range(len(bb)) if bb.src_ip[n] == attacker)
            # without: B alone
            lines, per_packet = replay(models[B_DEVICE], fb, B_DEVICE, out / "b_alone.jsonl", cfg)
            alone = first_alert_on_attacker(lines)
            # with: a relay, A's detection first (its indicator), then B's
            relay = Relay("127.0.0.1", 0, certs, cfg).start()
            stores = {r: IndicatorStore(cfg.warn_max_indicators, cfg.warn_ttl_s) for r in (1, 2)}
            links = {r: RelayLink(f"127.0.0.1:{relay.port}", certs, r, stores[r]).start() for r in (1, 2)}
            try:
                for link in links.values():
                    link.connected.wait(20)
                replay(models[A_DEVICE], fa, A_DEVICE, out / "a.jsonl", cfg, link=links[1])
                deadline = time.monotonic() + 10
                while not stores[2].inbox and time.monotonic() < deadline:
                    time.sleep(0.01)
                relayed = [i.endpoint for i in stores[2].inbox]
                warning = WarningWatch(stores[2], cfg.warn_confirm_s)
                lines_w, per_packet_w = replay(models[B_DEVICE], fb, B_DEVICE, out / "b_warned.jsonl", cfg, warning,
                                               links[2])
            finally:
                for link in links.values():
                    link.stop()
                relay.stop()
            warned = first_alert_on_attacker(lines_w)
            r = {"seed": seed, "kind": kind, "relayed": relayed,
                 "delay_without_s": None if alone is None else round(alone - first_b, 4),
                 "delay_with_s": None if warned is None else round(warned - first_b, 4),
                 "confirmed_here": warning.counts["confirmed_here"], "cleared": warning.counts["cleared"],
                 "us_per_packet_without": round(per_packet * 1e6, 1), "us_per_packet_with": round(per_packet_w * 1e6, 1)}
            results.append(r)
            print(r, file=sys.stderr, flush=True)
            write_json(out / "results.json", results)
    lines = ["| attack at B | seed | A's indicator relayed | B's first alert after the attacker's first packet: without "
             "| with early warning | confirmed by B's own detector | detect us/packet without / with |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        fmt = lambda v: "never" if v is None else f"{v:.3f} s"  # noqa: E731
        lines.append(f"| {r['kind']} | {r['seed']} | {', '.join(r['relayed']) or 'none'} | {fmt(r['delay_without_s'])} "
                     f"| {fmt(r['delay_with_s'])} | {'yes' if r['confirmed_here'] else 'no'} | "
                     f"{r['us_per_packet_without']} / {r['us_per_packet_with']} |")
    with_ = [r["delay_with_s"] for r in results if r["delay_with_s"] is not None]
    without = [r["delay_without_s"] for r in results if r["delay_without_s"] is not None]
    lines.append("")
    lines.append(f"median delay without {statistics.median(without) if without else None} s, with "
                 f"{statistics.median(with_) if with_ else None} s over {len(results)} runs")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
