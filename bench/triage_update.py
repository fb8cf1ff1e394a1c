""""This was me updating the device": is a benign verdict on a firmware update taken, and does it teach the model?
(issue 36)

    .venv/bin/python bench/triage_update.py [--pcaps DIR] [--ratios 1,1.5,2,3] [--epochs 10]

For each real week-long capture (../shared/data/real-iot-pcaps/): `capture` of the capture with the device's own
simulated attacks (seed 0) and again with an attacker's (seed 1; 8 kinds, the attacker's episode = its first
detect_args.evidence_rows rows), and twice more with a firmware update appended 60 s after the capture's end
(`TrafficSimulator.firmware_update` at the device's address, 300 packets/s for 30 s, seeds 7 and 8: two updates from
two CDN addresses, scored after the device's whole week as a board watching it would), and with an attacker's SYN
floods at the device at 1, 5, 50 and 500 a second (between capture's inbound references), the same way.
1. The refusal (`traffic.triage.attack_likeness`): at each ratio, the share of rows like the nearest simulated attack,
   for each attacker episode and flood (should be refused: above detect_args.verdict_attack_share) and the controls (should
   be taken): update 7's rows (evenly spaced, evidence_rows of them) and the 500 held-out benign rows (last 20 %)
   farthest from the earlier ones.
2. The lesson: the device's detector (`Detector.fit`, log1p + z-score, the federation's defaults: first 60 % of its
   benign rows, threshold on the next 20 %) without a verdict, with update 7's first evidence_rows rows (what an
   episode kept before issue 36's fix), and with its first half and a uniform sample of the rest (what
   `traffic.triage.Evidence` keeps now), each cut to detect_args.benign_verdict_share of the device's rows (the kept
   rows cut to their first ones, as stop 46's `triage benign` did, and evenly, as `traffic.triage.verdict_rows` does
   now): the share of update 7's and update 8's rows over the threshold, and the held-out FPR (last 20 %).
Writes results.json and table.md to a run directory and prints it last.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from data import nbaiot  # noqa: E402
from data.loader import read_feature_csv  # noqa: E402
from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, finish_table, write_json  # noqa: E402
from traffic.triage import Evidence, _nearest, _signed_log, attack_likeness, verdict_rows  # noqa: E402

DEVICES = {"blink-cam-01.pcap": ("cam", "192.168.1.129", "f4:b8:5e:ff:2b:1b"),
           "lockly-hub-01.pcap": ("lockly", "192.168.1.128", "24:6f:28:d9:a7:64"),
           "sifely-hub-01.pcap": ("sifely", "192.168.1.127", "f4:cf:a2:eb:59:c4")}
ATTACKS = ("mirai_syn,mirai_ack,mirai_udp,mirai_scan,gafgyt_udp,gafgyt_combo,gafgyt_scan,inbound_syn,inbound_syn_slow,"
           "inbound_syn_trickle")
# an attacker's SYN floods at the device at rates between capture's references (200, 20, 2 a second)
FLOOD_PPS = (1.0, 5.0, 50.0, 500.0)
ATTACKER_IP, ATTACKER_MAC = "192.168.1.66", "3c71bf000066"
GATEWAY_MAC = "001c7f53d028"  # the captures' gateway (their README)
UPDATE_S, UPDATE_PPS = 30.0, 300.0


def captured(pcap: Path, device: str, out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "capture", "--pcap", str(pcap), "--device", device, "--out", str(out),
                    *extra], cwd=REPO, check=True, capture_output=True, timeout=3600)


def with_event(pcap: Path, ip: str, mac: str, seed: int, out: Path, flood_pps: float | None = None) -> tuple[Path, int]:
    """The capture with a firmware update (or an attacker's SYN flood at flood_pps, at least 1,200 packets) appended
    60 s after its end; the event's packet count."""
    import dpkt

    from traffic.simulator import TrafficSimulator, inbound_flood, write_pcap

    with pcap.open("rb") as fh:
        packets = [(t, bytes(b)) for t, b in dpkt.pcap.Reader(fh)]
    t = packets[-1][0] + 60.0
    mac_bytes = bytes.fromhex(mac.replace(":", ""))
    if flood_pps:
        event = inbound_flood(ATTACKER_IP, bytes.fromhex(ATTACKER_MAC), ip, mac_bytes, t,
                              t + max(UPDATE_S, 1200 / flood_pps), flood_pps, seed)
    else:
        sim = TrafficSimulator("Provision_PT_737E_Security_Camera", seed, ip=ip, mac=mac_bytes,
                               gateway_mac=bytes.fromhex(GATEWAY_MAC))
        event = sim.firmware_update(t, t + UPDATE_S, UPDATE_PPS)
    return write_pcap(out, packets + event), len(event)


def kept_by_evidence(rows: np.ndarray, k: int, directory: Path) -> np.ndarray:
    """What detect --triage keeps of an episode of these rows (traffic.triage.Evidence, k rows), as triage reads them."""
    cols = nbaiot.CAPTURED_COLUMNS
    evidence = Evidence(directory, k, cols)
    evidence.start(0, "update", 1.0, "", None)
    for i, row in enumerate(rows):
        evidence.add(0, 1.0 + i, row, "203.0.113.1")
    return read_feature_csv(directory / f"{evidence.end(0)}.csv", cols)


def main() -> int:
    import torch

    from model.detector import Detector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcaps", type=Path, default=REPO.parent / "shared" / "data" / "real-iot-pcaps")
    p.add_argument("--ratios", default="1,1.5,2,3")
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = validate({})
    ratios = [float(x) for x in a.ratios.split(",")]
    k = cfg.detect.evidence_rows
    cols = nbaiot.CAPTURED_COLUMNS
    out = create_run_dir(REPO / "runs", "bench", "triage_update")
    results: list[dict] = []
    for pcap_name, (name, ip, mac) in DEVICES.items():
        pcap = a.pcaps / pcap_name
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            print(f"{pcap_name}: captures", file=sys.stderr, flush=True)
            captured(pcap, f"{name}={mac}", tmp / "dev", "--simulate-attacks", ATTACKS)
            captured(pcap, f"{name}={mac}", tmp / "atk", "--simulate-attacks", ATTACKS, "--seed", "1")
            updates, floods = [], {}
            for seed, pps in ((7, None), (8, None), *((11 + i, x) for i, x in enumerate(FLOOD_PPS))):
                path, n = with_event(pcap, ip, mac, seed, tmp / f"event{seed}.pcap", pps)
                captured(path, f"{name}={mac}", tmp / f"event{seed}", "--simulate-attacks", "none")
                rows = read_feature_csv(tmp / f"event{seed}" / name / nbaiot.BENIGN_FILE, cols)[-n:]
                if pps:
                    floods[pps] = rows[:k]
                else:
                    updates.append(rows)
            benign = read_feature_csv(tmp / "dev" / name / nbaiot.BENIGN_FILE, cols)
            own = {f.stem: read_feature_csv(f, cols) for f in sorted((tmp / "dev" / name / "simulated_attacks").glob("*.csv"))}
            attacker = {f.stem: read_feature_csv(f, cols)[:k]
                        for f in sorted((tmp / "atk" / name / "simulated_attacks").glob("*.csv"))}
        n = len(benign)
        train, val, test = benign[:int(0.6 * n)], benign[int(0.6 * n):int(0.8 * n)], benign[int(0.8 * n):]
        lz = _signed_log(benign)
        novel = int(0.8 * n) + np.sort(np.argsort(_nearest(lz[int(0.8 * n):], lz[:int(0.8 * n)]))[::-1][:k])
        cases = {**{f"attack {x}": (rows, True) for x, rows in attacker.items()},
                 **{f"attack: SYN flood at {x:g}/s": (rows, True) for x, rows in floods.items()},
                 "control: firmware update": (updates[0][np.linspace(0, len(updates[0]) - 1, k).astype(int)], False),
                 "control: most novel held-out rows": (benign[novel], False)}
        for case, (rows, is_attack) in cases.items():
            likeness = {r: max(attack_likeness(rows, benign, own, r).items(), key=lambda kv: kv[1]) for r in ratios}
            r = {"capture": pcap_name, "case": case, "attack": is_attack,
                 "likeness": {str(x): {"nearest": v[0], "share": v[1]} for x, v in likeness.items()}}
            results.append(r)
            print(r, file=sys.stderr, flush=True)
        allowed = int(cfg.detect.benign_verdict_share * n)
        kept = kept_by_evidence(updates[0], k, out / name)
        # what triage benign takes when the share cuts a verdict: stop 46 took the kept rows' first ones, now rows
        # evenly spaced over them (traffic.triage.verdict_rows)
        for label, verdict in (("no verdict", updates[0][:0]), ("first rows", updates[0][:k][:allowed]),
                               ("first half + sample, its first rows", kept[:allowed]),
                               ("first half + sample, evenly cut", verdict_rows(kept, allowed))):
            det, _ = Detector.fit({name: np.vstack([train, verdict])}, {name: val}, transform="log1p",
                                  normalization="zscore", epochs=a.epochs, batch_size=cfg.train.batch_size,
                                  lr=cfg.train.learning_rate, seed=0, k=cfg.validation.threshold_k)
            thr = det.threshold_for(name)
            r = {"capture": pcap_name, "verdict": label, "verdict_rows": len(verdict), "benign_rows": n,
                 "update_flagged": float(np.mean(det.score(updates[0]) > thr)),
                 "other_update_flagged": float(np.mean(det.score(updates[1]) > thr)),
                 "fpr": float(np.mean(det.score(test) > thr))}
            results.append(r)
            print(r, file=sys.stderr, flush=True)
        write_json(out / "results.json", results)
    lines = ["| capture | case | " + " | ".join(f"ratio {x:g}" for x in ratios) + " |", "|---|---|" + "---|" * len(ratios)]
    for r in results:
        if "case" in r:
            cells = [f"{v['share']:.2f} ({v['nearest']})" for v in r["likeness"].values()]
            lines.append(f"| {r['capture']} | {r['case']} | " + " | ".join(cells) + " |")
    lines += ["", "| capture | verdict | rows | this update flagged | another update flagged | held-out FPR |",
              "|---|---|---|---|---|---|"]
    for r in results:
        if "verdict" in r:
            lines.append(f"| {r['capture']} | {r['verdict']} | {r['verdict_rows']} | {r['update_flagged']:.3f} | "
                         f"{r['other_update_flagged']:.3f} | {r['fpr']:.4f} |")
    return finish_table(out, lines)


if __name__ == "__main__":
    sys.exit(main())
