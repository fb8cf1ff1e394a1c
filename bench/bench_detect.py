"""The detect command on one core: packets/s end to end and peak RSS, numpy detector vs. torch scoring.

    .venv/bin/python bench/bench_detect.py [--repeats 3] [--seconds 2400]
The README example: a camera model (traffic.train_device), a 2400 s capture with a 60 s Mirai ACK flood.
Each variant runs as its own process pinned to one core (taskset, one BLAS/numba thread), alternated
`--repeats` times after one warm-up run each (numba's cached kernel compiled once):
* numpy: `python -m detect MODEL --pcap FILE` as users run it (model/lean.py; no torch, no FedML);
* torch: the same run_detection with model.detector.Detector (torch) scoring, for comparison.
A third run scores a benign-only capture of the same length: memory without a flood's new streams.
Goals: numpy RSS <= 200 MB, >= 100,000 packets/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE = "Provision_PT_737E_Security_Camera"
# Measures a command's own peak RSS (ru_maxrss of the child) and prints it after the command's output.
TORCH_VARIANT = """
import json, sys
import detect
from model.detector import Detector
from traffic.packets import read_capture
det = Detector.load(sys.argv[1])
with open(sys.argv[3], "w") as sink:
    print(json.dumps(detect.run_detection(det, read_capture(sys.argv[2], batch_size=4096), sys.argv[4], 5, sink)))
"""
RSS_WRAPPER = """
import resource, subprocess, sys, time
started = time.monotonic()
code = subprocess.run(sys.argv[1:]).returncode
print("RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.monotonic() - started, flush=True)
sys.exit(code)
"""


def one_core_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    return env


def run(cmd: list[str]) -> tuple[dict, float, float]:
    """(detect summary, peak RSS in MB, whole command's wall seconds incl. start-up) of one pinned run."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    proc = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *pin, *cmd], cwd=REPO, env=one_core_env(),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:4])} failed:\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    _, rss_kb, wall = lines[-1].split()
    summary = json.loads(next(ln for ln in reversed(lines[:-1]) if ln.startswith("{")))
    return summary, int(rss_kb) / 1024, float(wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2400)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    model, pcap, benign_pcap = tmp / "cam-model.pt", tmp / "cam.pcap", tmp / "cam-benign.pcap"
    subprocess.run([sys.executable, "-m", "traffic.train_device", DEVICE, "--out", str(model)], cwd=REPO, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "traffic.simulator", DEVICE, "--out", str(pcap), "--duration", str(a.seconds),
                    "--attack", "mirai_ack", "--attack-start", str(a.seconds / 2), "--attack-duration", "60", "--seed", "7"],
                   cwd=REPO, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "traffic.simulator", DEVICE, "--out", str(benign_pcap), "--duration",
                    str(a.seconds), "--seed", "7"], cwd=REPO, check=True, capture_output=True)
    variants = {
        "numpy (python -m detect)": [sys.executable, "-m", "detect", str(model), "--pcap", str(pcap), "--device", DEVICE,
                                     "--out", str(tmp / "alerts-numpy.jsonl")],
        "torch scoring": [sys.executable, "-c", TORCH_VARIANT, str(model), str(pcap), str(tmp / "alerts-torch.jsonl"), DEVICE],
        "numpy, benign-only capture": [sys.executable, "-m", "detect", str(model), "--pcap", str(benign_pcap),
                                       "--device", DEVICE, "--out", str(tmp / "alerts-benign.jsonl")],
    }
    results: dict[str, list[tuple[dict, float, float]]] = {k: [] for k in variants}
    for cmd in variants.values():
        run(cmd)  # warm-up: numba cache, page cache
    for _ in range(a.repeats):
        for name, cmd in variants.items():
            results[name].append(run(cmd))
    packets = results["numpy (python -m detect)"][0][0]["packets"]
    print(f"{packets:,} packets ({DEVICE}, {a.seconds:g} s, 60 s mirai_ack; the benign-only capture: same "
          f"length, no attack), one core, median of {a.repeats}")
    print("packets/s: read -> features -> scores -> alerts, from the first packet; command wall time: the whole\n"
          "process (imports, model load, numba's cached kernels) as a user waits for it")
    print("| variant | packets | packets/s end to end | command wall time (s) | peak RSS (MB) | packet alerts |\n"
          "|---|---|---|---|---|---|")
    med = {}
    for name, runs in results.items():
        pps = statistics.median(s["packets_per_s"] for s, _, _ in runs)
        rss = statistics.median(r for _, r, _ in runs)
        wall = statistics.median(w for _, _, w in runs)
        med[name] = (pps, rss)
        print(f"| {name} | {runs[0][0]['packets']:,} | {pps:,.0f} | {wall:.2f} | {rss:,.0f} | {runs[0][0]['packet_alerts']:,} |")
    (n_pps, n_rss), (t_pps, t_rss) = med["numpy (python -m detect)"], med["torch scoring"]
    print(f"numpy / torch: speed {n_pps / t_pps:.2f}x, RSS {n_rss / t_rss:.2f}x")
    print(f"goals: RSS <= 200 MB: {'met' if n_rss <= 200 else 'NOT met'}; >= 100,000 packets/s: "
          f"{'met' if n_pps >= 100_000 else 'NOT met'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
