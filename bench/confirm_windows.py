"""How many of its own window alerts a board needs on an endpoint before its indicator may confirm it
(`detect_args.warn_confirm_windows`, issue 37): a liar plus one honest board's passing false alarm must not confirm a
benign endpoint, and an attacker must still be confirmed soon.

    .venv/bin/python bench/confirm_windows.py [--seeds 0,1,2] [--lengths 1800,3600] [--devices ...]

Grid: simulated devices (a camera, a doorbell, a thermostat) x seeds x benign run lengths, each with each inbound
attack of bench/bench_early_warning.py (SYN flood, port scan, telnet brute force: 20 s from one public address, in
the middle of the run). Each device's detector is its own (`traffic.train_device`, trained on another seed's
benign packets), run by `detect.run_detection` as a board runs it. Measured from its alert lines:
- benign: for every remote endpoint other than the attacker, how many window alerts the board raised on it in the
  run (a run is at most warn_ttl_s long, so this is what the board would report within one indicator lifetime);
- attack: the packet time from the attacker's first packet to the board's k-th window alert on it, for each k of K.
A rule (k, share) confirms a benign endpoint a liar names only when an honest board reaches k window alerts on it
while they are at least share of its packets since the first: the table gives the benign endpoints that would (of
all alerted on) and the attacks' delay to it.
Writes results.json and table.md to a run directory and prints it last.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import detect  # noqa: E402
from bench_early_warning import ATTACKER, batches, inbound  # noqa: E402  (a sibling: bench/ is the script's directory)
from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, write_json  # noqa: E402
from traffic.packets import frames_batch  # noqa: E402
from traffic.simulator import EPOCH, TrafficSimulator, device_ip  # noqa: E402

K = (1, 5, 10, 20, 50)
SHARES = (0.0, 0.5, 0.9)  # the share of the endpoint's packets since the board's first window alert on it that alerted
DEVICES = ("Provision_PT_737E_Security_Camera", "Danmini_Doorbell", "Ecobee_Thermostat")
KINDS = ("syn_flood", "scan", "telnet_brute")
ATTACK_S = 20.0


def window_alerts(model, frames, device: str, out: Path, cfg) -> list[dict]:
    with out.open("w") as sink:
        detect.run_detection(model, batches(frames), None, 5, sink,
                             [detect.parse_watch(f"{device}={device_ip(device)}")], cfg)
    return [x for x in map(json.loads, out.read_text().splitlines()) if x.get("window_alert")]


def first_sure(times: list[float], alerted: list[bool], k: int, share: float) -> float | None:
    """The packet time at which an endpoint's window alerts (counted from the first) reach k while they are at least
    `share` of its packets since that first one; None if never."""
    count = seen = 0
    for t, a in zip(times, alerted):
        if count == 0 and not a:
            continue
        seen += 1
        count += a
        if a and count >= k and count >= share * seen:
            return t
    return None


def other_sides(frames, own: str) -> dict[float, str]:
    """Packet time (as alert lines round it) -> the other side of the packet (a line names its source and time)."""
    b, mine = frames_batch(frames), ipaddress.ip_address(own).packed
    return {round(b.time[n], 6): str(ipaddress.ip_address(b.dst_ip[n] if b.src_ip[n] == mine else b.src_ip[n]))
            for n in range(len(b))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lengths", default="1800,3600", help="benign seconds per run (at most warn_ttl_s)")
    p.add_argument("--devices", default=",".join(DEVICES))
    p.add_argument("--kinds", default=",".join(KINDS))
    a = p.parse_args()
    out = create_run_dir(REPO / "runs", "bench", "confirm_windows")
    cfg = validate({}).detect
    results = []
    for device in a.devices.split(","):
        path = out / f"{device}.pt"
        print(f"training {device}'s detector", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "traffic.train_device", device, "--out", str(path)], cwd=REPO,
                       check=True, capture_output=True, timeout=1800)
        model = detect.load_detector(path, allow_row_model=True)
        own = device_ip(device)
        for length in [float(x) for x in a.lengths.split(",")]:
            if length > cfg.warn_ttl_s:
                sys.exit(f"--lengths {length:g}: longer than warn_ttl_s ({cfg.warn_ttl_s:g} s)")
            for seed in [int(s) for s in a.seeds.split(",")]:
                sim = TrafficSimulator(device, seed=seed + 10)  # train_device trains on another seed's packets
                benign = sim.capture(length)
                for kind in a.kinds.split(","):
                    start = EPOCH + length / 2
                    frames = sorted(benign + inbound(sim, kind, start, ATTACK_S, seed), key=lambda f: f[0])
                    t0 = time.perf_counter()
                    alerts = window_alerts(model, frames, device, out / "alerts.jsonl", cfg)
                    side = other_sides(frames, own)
                    alerted_at = {x["time"] for x in alerts}
                    packets: dict[str, tuple[list[float], list[bool]]] = {}
                    for t, remote in side.items():  # in time order (frames are)
                        ts, flags = packets.setdefault(remote, ([], []))
                        ts.append(t)
                        flags.append(t in alerted_at)
                    alerted_remotes = {side[x["time"]] for x in alerts}
                    sure = {f"{k}@{share}": {"benign": sum(first_sure(*packets[r], k, share) is not None
                                                           for r in alerted_remotes if r != ATTACKER),
                                             "attack_delay_s": (None if ATTACKER not in packets or
                                                                first_sure(*packets[ATTACKER], k, share) is None
                                                                else round(first_sure(*packets[ATTACKER], k, share)
                                                                           - start, 4))}
                            for k in K for share in SHARES}
                    r = {"device": device, "seconds": length, "seed": seed, "kind": kind,
                         "benign_endpoints_alerted": len(alerted_remotes - {ATTACKER}),
                         "benign_counts": sorted((sum(packets[x][1]) for x in alerted_remotes - {ATTACKER}),
                                                 reverse=True)[:20],
                         "attack_windows": sum(packets.get(ATTACKER, ([], []))[1]), "rules": sure,
                         "wall_s": round(time.perf_counter() - t0, 1)}
                    results.append(r)
                    print({k: v for k, v in r.items() if k != "benign_counts"}, file=sys.stderr, flush=True)
                    write_json(out / "results.json", results)
    lines = ["| k (window alerts) | share of the endpoint's packets since the first | benign endpoints that would confirm "
             "(of those alerted on) | runs whose attacker would | attack delay: median / max |",
             "|---|---|---|---|---|"]
    alerted = sum(r["benign_endpoints_alerted"] for r in results)
    for k in K:
        for share in SHARES:
            key = f"{k}@{share}"
            delays = [r["rules"][key]["attack_delay_s"] for r in results if r["rules"][key]["attack_delay_s"] is not None]
            lines.append(f"| {k} | {share:g} | {sum(r['rules'][key]['benign'] for r in results)} of {alerted} | "
                         f"{len(delays)} of {len(results)} | "
                         + (f"{statistics.median(delays):.3f} s / {max(delays):.3f} s |" if delays else "- |"))
    lines.append("")
    lines.append(f"grid: devices {a.devices}; benign seconds {a.lengths}; seeds {a.seeds}; attacks {a.kinds}, "
                 f"{ATTACK_S:g} s each from {ATTACKER} in the middle of the run")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
