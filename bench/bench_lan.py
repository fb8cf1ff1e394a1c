"""The LAN of network namespaces end to end, repeated, with what each run measured (root; mosquitto).

    .venv/bin/python bench/bench_lan.py [--runs 3]

Runs tests/test_lan.py's scenario (three boards capture simulated cameras on their interfaces, federate over
gRPC + mutual TLS, detect --follow; a SYN flood from a fourth host at one camera) `--runs` times and prints per
run: the attacked board's first window alert on the attacker after its first packet (alert latency), the MQTT alert
received by a subscriber on the server's broker for the attacker's host (MQTT latency), the other boards' window alerts
per packet (false alarms), the attacked board's window alerts before the attack, each detector's peak RSS; then the
worst of each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    results = []
    for i in range(a.runs):
        record = Path(tempfile.mkdtemp(prefix="bench-lan-")) / "record.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_lan.py", "-k",
                               "capture_learn"], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "FEDIOT_LAN_RECORD": str(record)})
        if proc.returncode != 0 or not record.is_file():
            sys.exit(f"run {i + 1} failed:\n{proc.stdout[-3000:]}")
        r = json.loads(record.read_text())
        results.append(r)
        fa = {d: v["window_alerts"] / max(v["packets"], 1) for d, v in r["false_alarms"].items()}
        print(f"run {i + 1}: alert latency {r['alert_latency_s']:.2f} s, MQTT latency {r['mqtt_latency_s']:.2f} s, "
              f"false alarms per packet {fa} (of which during the attack {r['unattacked_window_alerts_during_attack']}), "
              f"the attacked board's window alerts before the attack "
              f"{r['attacked_board_window_alerts_before_attack']}, detector peak RSS {r['detect_peak_rss_mb']} MB, captured rows "
              f"{r['captured_rows']}", flush=True)
    print(f"worst of {a.runs}: alert latency {max(r['alert_latency_s'] for r in results):.2f} s, MQTT latency "
          f"{max(r['mqtt_latency_s'] for r in results):.2f} s, false alarms per packet "
          f"{max(v['window_alerts'] / max(v['packets'], 1) for r in results for v in r['false_alarms'].values()):.4f}, "
          f"detector peak RSS {max(max(r['detect_peak_rss_mb']) for r in results):.0f} MB")


if __name__ == "__main__":
    main()
