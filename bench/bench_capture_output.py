"""What `python -m capture` writes and how long it takes, per device-day, with every simulated attack kept whole
(attack_rows_kept 0: before 2026-12-07) and bounded (the default), side by side on the real week-long captures; and
the two CSV writers (pandas' to_csv with a float format, used before; numpy's, used now) on the same rows (issue 36).

    .venv/bin/python bench/bench_capture_output.py [--pcaps DIR] [--attack-seconds 30]

Writes results.json to a run directory and prints a markdown table, then the directory.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from data import nbaiot  # noqa: E402
from data.csvfile import write_feature_csv  # noqa: E402
from data.loader import read_feature_csv  # noqa: E402
from fediot.rundir import create_run_dir, write_json  # noqa: E402

DEVICES = {"blink-cam-01.pcap": "cam=f4:b8:5e:ff:2b:1b", "lockly-hub-01.pcap": "lockly=24:6f:28:d9:a7:64",
           "sifely-hub-01.pcap": "sifely=f4:cf:a2:eb:59:c4"}


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_capture(pcap: Path, device: str, keep: int, attack_seconds: float, out: Path) -> dict:
    cfg = out.parent / f"keep{keep}.yaml"
    cfg.write_text(f"detect_args:\n  attack_rows_kept: {keep}\n")
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "capture", "--pcap", str(pcap), "--device", device, "--out", str(out),
                           "--attack-seconds", str(attack_seconds), "--config", str(cfg)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"capture failed on {pcap}: {proc.stderr[-500:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-2])
    name = device.split("=")[0]
    d = summary["devices"][name]
    return {"wall_s": round(wall, 1), "rows": d["rows"], "seconds": d["seconds"], "mb": round(dir_mb(out / name), 1),
            "attack_mb": round(dir_mb(out / name / "simulated_attacks"), 1)}


def csv_writers(rows: np.ndarray) -> dict:
    import pandas as pd

    t = time.monotonic()
    buf = io.StringIO()
    pd.DataFrame(rows, columns=list(nbaiot.CAPTURED_COLUMNS)).to_csv(buf, index=False, float_format="%.10g")
    pandas_s = time.monotonic() - t
    t = time.monotonic()
    buf2 = io.StringIO()
    write_feature_csv(buf2, rows, nbaiot.CAPTURED_COLUMNS)
    numpy_s = time.monotonic() - t
    return {"rows": len(rows), "pandas_s": round(pandas_s, 2), "numpy_s": round(numpy_s, 2),
            "same_text": buf.getvalue().replace("\r", "") == buf2.getvalue()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcaps", type=Path, default=REPO.parent / "shared" / "data" / "real-iot-pcaps")
    p.add_argument("--attack-seconds", type=float, default=30.0)
    a = p.parse_args()
    out = create_run_dir(REPO / "runs", "bench", "capture_output")
    results = []
    for pcap_name, device in DEVICES.items():
        pcap = a.pcaps / pcap_name
        if not pcap.is_file():
            print(f"skipped {pcap}: not found", file=sys.stderr)
            continue
        row = {"capture": pcap_name}
        for keep in (0, 2000):
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                print(f"{pcap_name}: attack_rows_kept {keep}", file=sys.stderr, flush=True)
                r = run_capture(pcap, device, keep, a.attack_seconds, Path(tmp) / "local")
                if keep == 0:
                    rows = read_feature_csv(next((Path(tmp) / "local").rglob("mirai_udp.csv")), nbaiot.CAPTURED_COLUMNS)
                    row["writers"] = csv_writers(rows)
            row[f"keep{keep}"] = r
        results.append(row)
        write_json(out / "results.json", results)
    lines = ["| capture | days | all attack rows: MB / s (per day) | kept 2,000 each: MB / s (per day) | "
             "CSV writer on one attack's rows: pandas s / numpy s |", "|---|---|---|---|---|"]
    for r in results:
        days = r["keep0"]["seconds"] / 86400
        k0, k2 = r["keep0"], r["keep2000"]
        w = r["writers"]
        lines.append(f"| {r['capture']} | {days:.1f} | {k0['mb']:.0f} / {k0['wall_s']:.0f} "
                     f"({k0['mb'] / days:.0f} / {k0['wall_s'] / days:.0f}) | {k2['mb']:.1f} / {k2['wall_s']:.0f} "
                     f"({k2['mb'] / days:.1f} / {k2['wall_s'] / days:.0f}) | {w['rows']:,} rows: {w['pandas_s']} / "
                     f"{w['numpy_s']} (same text: {w['same_text']}) |")
    print("\n".join(lines))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
