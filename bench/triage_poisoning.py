"""How much a LAN attacker gains by getting the household to call its attack "benign" once (issue 36).

    .venv/bin/python bench/triage_poisoning.py [--pcaps DIR] [--attacks mirai_syn,gafgyt_udp,mirai_scan]
        [--shares 0,0.005,0.02,0.05] [--seeds 0] [--epochs 10]

For each real week-long capture (python -m capture with simulated attacks) and attack: the device's detector
(model.detector.Detector.fit, log1p + z-score, the federation's defaults) trained on its first 60 % of benign rows
plus a "benign verdict" made of the attacker's rows — the strongest a single click gives: detect_args.evidence_rows
(500) rows of the episode, cut to `share` of the device's captured benign rows (detect_args.benign_verdict_share) —
threshold on the next 20 % (mean + k std), then TPR on the attacker's other rows (never trained on) and FPR on the
last 20 % of benign rows. share 0 is the model without verdicts. The attacker's rows are the attack simulated with
another seed than the device's own simulated attacks (capture --seed 1 vs 0), and whether `python -m triage benign`
would refuse the verdict (traffic.triage.attack_likeness against the device's own simulated attacks,
detect_args.verdict_attack_share) is reported beside. Control: the 500 held-out benign rows the plain model scores
highest (what a household would rightly call benign) must be taken. Writes results.json and table.md to a run
directory and prints it last.
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
from traffic.triage import attack_likeness  # noqa: E402

DEVICES = {"blink-cam-01.pcap": "cam=f4:b8:5e:ff:2b:1b", "lockly-hub-01.pcap": "lockly=24:6f:28:d9:a7:64",
           "sifely-hub-01.pcap": "sifely=f4:cf:a2:eb:59:c4"}


def main() -> int:
    import torch

    from model.detector import Detector

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcaps", type=Path, default=REPO.parent / "shared" / "data" / "real-iot-pcaps")
    p.add_argument("--attacks", default="mirai_syn,gafgyt_udp,mirai_scan")
    p.add_argument("--shares", default="0,0.005,0.02,0.05")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = validate({})
    attacks = a.attacks.split(",")
    shares = [float(x) for x in a.shares.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    out = create_run_dir(REPO / "runs", "bench", "triage_poisoning")
    results = []
    for pcap_name, device in DEVICES.items():
        name = device.split("=")[0]
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{pcap_name}: capture", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "capture", "--pcap", str(a.pcaps / pcap_name), "--device", device,
                            "--out", tmp, "--simulate-attacks", ",".join(attacks)], cwd=REPO, check=True,
                           capture_output=True, timeout=3600)
            # the attacker's traffic: the same attack kinds simulated again with another seed (capture --seed 1),
            # never the rows the device keeps as its simulated attacks (what the refusal compares with)
            subprocess.run([sys.executable, "-m", "capture", "--pcap", str(a.pcaps / pcap_name), "--device", device,
                            "--out", str(Path(tmp) / "attacker"), "--simulate-attacks", ",".join(attacks),
                            "--seed", "1"], cwd=REPO, check=True, capture_output=True, timeout=3600)
            benign = read_feature_csv(Path(tmp) / name / nbaiot.BENIGN_FILE, nbaiot.CAPTURED_COLUMNS)
            rows = {x: read_feature_csv(Path(tmp) / name / "simulated_attacks" / f"{x}.csv", nbaiot.CAPTURED_COLUMNS)
                    for x in attacks}
            attacker = {x: read_feature_csv(Path(tmp) / "attacker" / name / "simulated_attacks" / f"{x}.csv",
                                            nbaiot.CAPTURED_COLUMNS) for x in attacks}
        n = len(benign)
        train, val, test = benign[:int(0.6 * n)], benign[int(0.6 * n):int(0.8 * n)], benign[int(0.8 * n):]
        control = None  # what a household would rightly call benign: the held-out rows the plain model flags most
        for attack in attacks:
            episode = attacker[attack][:cfg.detect.evidence_rows]
            held_out = attacker[attack][cfg.detect.evidence_rows:]
            for share in shares:
                verdict = episode[:int(share * n)]
                likeness = attack_likeness(verdict, benign, rows, cfg.detect.verdict_attack_ratio) if len(verdict) else {}
                refused = bool(likeness) and max(likeness.values()) > cfg.detect.verdict_attack_share
                for seed in seeds:
                    det, _ = Detector.fit({name: np.vstack([train, verdict])}, {name: val}, transform="log1p",
                                          normalization="zscore", epochs=a.epochs, batch_size=cfg.train.batch_size,
                                          lr=cfg.train.learning_rate, seed=seed, k=cfg.validation.threshold_k)
                    thr = det.threshold_for(name)
                    if control is None and share == 0:
                        worst = np.argsort(det.score(test))[::-1][:cfg.detect.evidence_rows]
                        like = attack_likeness(test[np.sort(worst)], benign[:int(0.8 * n)], rows,
                                              cfg.detect.verdict_attack_ratio)
                        control = {"capture": pcap_name, "control": True, "rows": len(worst),
                                   "flagged": int(np.sum(det.score(test) > thr)), "likeness": like,
                                   "refused": max(like.values()) > cfg.detect.verdict_attack_share}
                        results.append(control)
                        print(control, file=sys.stderr, flush=True)
                    r = {"capture": pcap_name, "likeness": likeness.get(attack), "refused": refused, "attack": attack, "share": share, "verdict_rows": len(verdict),
                         "seed": seed, "benign_rows": n, "tpr": float(np.mean(det.score(held_out) > thr)),
                         "fpr": float(np.mean(det.score(test) > thr)), "attack_rows_tested": len(held_out)}
                    results.append(r)
                    print(r, file=sys.stderr, flush=True)
                    write_json(out / "results.json", results)
    lines = ["| capture | attack | " + " | ".join(f"share {s:g}: TPR (FPR)" for s in shares) + " |",
             "|---|---|" + "---|" * len(shares)]
    for pcap_name in DEVICES:
        for attack in attacks:
            cells = []
            for s in shares:
                rs = [r for r in results if r.get("attack") == attack and r["capture"] == pcap_name and r["share"] == s]
                if rs:
                    taken = "refused" if rs[0]["refused"] else "taken"
                    cells.append(f"{np.mean([r['tpr'] for r in rs]):.3f} ({np.mean([r['fpr'] for r in rs]):.3f}; "
                                 f"{rs[0]['verdict_rows']} rows, {taken})")
            lines.append(f"| {pcap_name} | {attack} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| capture | control: the 500 held-out benign rows the plain model scores highest | nearest to an attack "
                 "(largest share) | verdict |")
    lines.append("|---|---|---|---|")
    for r in results:
        if r.get("control"):
            top = max(r["likeness"].items(), key=lambda kv: kv[1])
            lines.append(f"| {r['capture']} | {r['rows']} rows ({r['flagged']} over the threshold) | {top[0]} "
                         f"{top[1]:.2f} | {'refused' if r['refused'] else 'taken'} |")
    return finish_table(out, lines)


if __name__ == "__main__":
    sys.exit(main())
