"""detect's memory under floods, with the stream cap (detect_args, defaults) vs without, side by side on one core.

    .venv/bin/python bench/bench_detect_memory.py [--flood-minutes 13] [--spray-minutes 15] [--spray-sockets 1200000]
        [--repeats 1]

Captures (the README's camera model, traffic.train_device Provision_PT_737E_Security_Camera):
* README example: 2,400 s of the camera with a 60 s Mirai ACK flood (bench/bench_detect.py's capture);
* SYN flood: the camera's traffic with a `--flood-minutes` Mirai SYN flood (1,500 packets/s, a new source port each;
  issue 23: 13 minutes, 1.19 M packets took detect to 727 MB);
* spray: `--spray-sockets` SYNs to the camera over `--spray-minutes`, each from a distinct source IP and port
  (spoofed), on top of its benign traffic.
Each capture is scored by `python -m detect` with the default detect_args (its max_streams cap) and with the cap
lifted (max_streams 10^12: the extractor never forgets, as before issue 23), each its own process pinned to one
core; peak RSS (ru_maxrss) and packets/s. Then `python -m capture` on the README example (one core, no simulated
attacks): packets/s of the capture pass. Goals (issue 23): RSS <= 200 MB with the cap during the SYN flood and the
spray; packets/s with the cap >= 0.95 x without on the README example; capture >= 100,000 packets/s.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_detect import DEVICE, one_core_env, run  # noqa: E402

UNBOUNDED = 10**12


def spray_pcap(path: Path, benign: list[tuple[float, bytes]], sockets: int, seconds: float, start: float) -> int:
    """The benign frames plus `sockets` SYNs to the camera, each from a distinct (source IP, port), written as a
    pcap; frames built by patching a template (checksums are not checked by the reader)."""
    from traffic.simulator import TrafficSimulator, _Frames, device_ip, device_mac

    sim = TrafficSimulator(DEVICE, 0)
    template = _Frames(random.Random(0)).frame(bytes.fromhex("0a0000000001"), device_mac(DEVICE),
                                               bytes([10, 0, 0, 1]), bytes(int(x) for x in device_ip(DEVICE).split(".")),
                                               "tcp", 1024, 23, 74, 0x02)
    del sim
    rng = random.Random(1)
    step = seconds / sockets
    spray = []
    ip_off, sport_off = 14 + 12, 14 + 20
    for i in range(sockets):
        f = bytearray(template)
        f[ip_off:ip_off + 4] = struct.pack(">I", 0x0B000000 + i // 50_000 * 65536 + rng.randrange(65536))  # 11.x.x.x
        f[sport_off:sport_off + 2] = struct.pack(">H", 1024 + i % 64000)
        spray.append((start + i * step, bytes(f)))
    frames = sorted(benign + spray, key=lambda p: p[0])
    with path.open("wb") as fh:  # pcap, microseconds
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, f in frames:
            sec = int(t)
            fh.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(f), len(f)))
            fh.write(f)
    return len(frames)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flood-minutes", type=float, default=13.0)
    p.add_argument("--spray-minutes", type=float, default=15.0)
    p.add_argument("--spray-sockets", type=int, default=1_200_000)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the captures and model (their directory is printed)")
    a = p.parse_args()
    from traffic.simulator import EPOCH, TrafficSimulator, device_ip, write_pcap

    tmp = Path(tempfile.mkdtemp(prefix="bench-detect-memory-"))
    model = tmp / "cam-model.pt"
    subprocess.run([sys.executable, "-m", "traffic.train_device", DEVICE, "--out", str(model)], cwd=REPO, check=True,
                   capture_output=True)
    flood_s = a.flood_minutes * 60
    captures = {}
    sim = TrafficSimulator(DEVICE, 7)
    write_pcap(tmp / "readme.pcap", sim.capture(2400.0, "mirai_ack", 1200.0, 60.0))
    captures["README example (60 s Mirai ACK)"] = tmp / "readme.pcap"
    total = flood_s + 600
    write_pcap(tmp / "syn.pcap", TrafficSimulator(DEVICE, 8).capture(total, "mirai_syn", 300.0, flood_s))
    captures[f"Mirai SYN flood, {a.flood_minutes:g} min"] = tmp / "syn.pcap"
    spray_s = a.spray_minutes * 60
    n = spray_pcap(tmp / "spray.pcap", TrafficSimulator(DEVICE, 9).capture(spray_s + 600), a.spray_sockets, spray_s,
                   EPOCH + 300)
    captures[f"spray of {a.spray_sockets:,} distinct sockets, {a.spray_minutes:g} min"] = tmp / "spray.pcap"
    print(f"captures in {tmp}; spray capture {n:,} packets", flush=True)
    unbounded_cfg = tmp / "unbounded.yaml"
    unbounded_cfg.write_text(f"detect_args:\n  max_streams: {UNBOUNDED}\n")
    rows = []
    for name, pcap in captures.items():
        cmds = {"cap (defaults)": [sys.executable, "-m", "detect", str(model), "--pcap", str(pcap), "--device", DEVICE,
                                   "--out", str(tmp / "a.jsonl")],
                "no cap": [sys.executable, "-m", "detect", str(model), "--pcap", str(pcap), "--device", DEVICE,
                           "--out", str(tmp / "b.jsonl"), "--config", str(unbounded_cfg)]}
        got = {k: [] for k in cmds}
        run(cmds["cap (defaults)"])  # warm-up (numba cache, page cache)
        for _ in range(a.repeats):
            for k, cmd in cmds.items():
                got[k].append(run(cmd))
        for k, runs in got.items():
            s = runs[0][0]
            rows.append((name, k, s["packets"], statistics.median(r[0]["packets_per_s"] for r in runs),
                         statistics.median(r[1] for r in runs), max(s["memory"]["tracked"][x] for x in ("mi", "h", "hh", "hp")),
                         s["memory"]["evicted_streams"], s["window_alerts"]))
        print(f"done: {name}", flush=True)
    cap_cmd = [sys.executable, "-c", CAPTURE_VARIANT, str(captures["README example (60 s Mirai ACK)"]),
               f"cam={device_ip(DEVICE)}", str(tmp / "local")]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cap = subprocess.run([*pin, *cap_cmd], cwd=REPO, env=one_core_env(), capture_output=True, text=True, timeout=1800)
    cap_result = json.loads(cap.stdout.strip().splitlines()[-1]) if cap.returncode == 0 else {"error": cap.stderr[-500:]}
    print("| capture | detect_args | packets | packets/s | peak RSS (MB) | largest stream table | evicted (idle / cap) | window alerts |")
    print("|---|---|---|---|---|---|---|---|")
    for name, k, packets, pps, rss, tracked, ev, wins in rows:
        print(f"| {name} | {k} | {packets:,} | {pps:,.0f} | {rss:,.0f} | {tracked:,} | {ev['idle']:,} / {ev['cap']:,} | {wins:,} |")
    by = {(r[0], r[1]): r for r in rows}
    readme = "README example (60 s Mirai ACK)"
    ratio = by[(readme, "cap (defaults)")][3] / by[(readme, "no cap")][3]
    worst = max(r[4] for r in rows if r[1] == "cap (defaults)" and r[0] != readme)
    print(f"packets/s with the cap / without, README example: {ratio:.3f} (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"peak RSS with the cap under the flood and the spray: {worst:,.0f} MB (goal <= 200: {'met' if worst <= 200 else 'NOT met'})")
    print(f"capture from pcap (one core, README example): {json.dumps(cap_result)}")
    if "packets_per_s" in cap_result:
        print(f"capture >= 100,000 packets/s: {'met' if cap_result['packets_per_s'] >= 100_000 else 'NOT met'}")
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)


# the capture pass of python -m capture (no simulated attacks), timed from the first packet like detect's packets/s
CAPTURE_VARIANT = """
import json, sys, time
import capture
from fediot.config import validate
from traffic.packets import read_capture
from traffic.watch import parse_watch
from traffic.afterimage import FeatureExtractor
FeatureExtractor().warm_up()
started = time.perf_counter()
devices, info = capture.capture_rows(read_capture(sys.argv[1], batch_size=4096), [parse_watch(sys.argv[2])],
                                     validate({}).detect, keep_packets=False, progress=False)
seconds = time.perf_counter() - started
print(json.dumps({"packets": info["packets_seen"], "rows": sum(d.n_rows for d in devices.values()),
                  "seconds": round(seconds, 2), "packets_per_s": round(info["packets_seen"] / seconds)}))
"""


if __name__ == "__main__":
    main()
