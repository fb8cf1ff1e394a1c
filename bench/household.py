"""The household path on real devices' captures (issue 33): capture -> federate -> score held-out time -> one table.

    .venv/bin/python bench/household.py [--pcaps DIR] [--seeds 0 1 2] [--rounds 10] [--train-share 0.8]
        [--budgets 1] [--out DIR] [--deployment]

Each capture of ../shared/data/real-iot-pcaps/ (README there: file, device, IP) is cut by time: its first
`--train-share` of time is what the household captures (`capture`'s own functions: the extractor, the simulated
attacks sent from the device's address, the device directory with provenance), the rest is held out. The devices
federate in process (`federation.inprocess`: the deployment's driver and clients, `data_args.dataset: local`,
defaults but `comm_round`) or, with --deployment, as a real loopback deployment (`run_server.sh` and one
`run_client.sh N` per device: processes, gRPC, mutual TLS, the same config), and the final model scores the held-out time from the extractor's state at its start
(one extractor pass over the whole capture, as a board that keeps watching). Per device, side by side for the
threshold rules (the same model and validation rows; thresholds by `model.threshold`):
- TPR per simulated attack kind at the device's threshold (rows of the federation's own held-out evaluation);
- false alarms on the held-out time: window alerts (N-BaIoT's majority vote over each source host's last packets,
  detect's `WindowVote`) and alert messages (what syslog / MQTT would carry: detect's `RateLimiter`, one per device
  and host per `detect_args.alert_interval_s`), per device-day;
- the cross-device matrix: the share of device B's held-out windows flagged at device A's threshold and scales
  (B's traffic presented under A's address), by the autoencoder alone and with A's endpoint profile
  (traffic/profile.py, learnt from A's captured time as `capture` writes it; `detect --profiles`);
- with the profiles, the false window alerts on each device's own held-out time;
- --alert-time: per attack kind, the attack merged into the held-out capture and scored as `detect` does: seconds
  to the first window alert and the share of the attack's packets in an alerting window, without and with the
  device's endpoint profile.
Writes results.json and table.md to the run directory and prints it last.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from capture import ATTACK_PROFILE, DeviceCapture, capture_rows, simulated_attack_rows, write_device  # noqa: E402
from data import nbaiot  # noqa: E402
from data.loader import load_device, split_device  # noqa: E402
from data.sources import block_rows_of, prepare_data  # noqa: E402
from detect import WindowVote  # noqa: E402
from federation.inprocess import run_in_process  # noqa: E402
from fediot.config import validate  # noqa: E402
from fediot.rundir import create_run_dir, write_config, write_json  # noqa: E402
from model.detector import ErrorStats  # noqa: E402
from model.lean import LeanDetector  # noqa: E402
from model.threshold import ThresholdRule  # noqa: E402
from traffic.afterimage import FEATURES_VERSION, FeatureExtractor  # noqa: E402
from traffic.alerts import RateLimiter  # noqa: E402
from traffic.packets import PACKET_FIELDS, PacketBatch, SkipCounts, frames_batch, read_capture  # noqa: E402
from traffic.profile import EndpointProfile, endpoints_of  # noqa: E402
from traffic.simulator import TrafficSimulator  # noqa: E402
from traffic.watch import Watcher, parse_watch  # noqa: E402

DEFAULT_PCAPS = REPO.parent / "shared" / "data" / "real-iot-pcaps"
DEVICES = {"blink-cam": ("blink-cam-01.pcap", "192.168.1.129"), "lockly-hub": ("lockly-hub-01.pcap", "192.168.1.128"),
           "sifely-hub": ("sifely-hub-01.pcap", "192.168.1.127")}
ATTACK_SECONDS = 30.0  # capture's default --attack-seconds
TRAIN_SHARE = 0.8  # --train-share's default: each capture's first 80 % of time is captured, the rest held out


def deploy(values: dict[str, Any], where: Path) -> Path:
    """The federation as a loopback deployment of real processes: run_server.sh and run_client.sh N for each device
    (gRPC, mutual TLS with loopback certificates), `values` plus the ports; the server's run directory."""
    from tests.deploy_helpers import client, free_ports, run_dir_of, server

    ports = free_ports(len(DEVICES) + 1)
    ipconfig = where / "ipconfig.csv"
    ipconfig.write_text("eid,rank,grpc_server_ip,grpc_server_port,ingress_ip\n"
                        + "".join(f"{r},{r},127.0.0.1,{p},\n" for r, p in enumerate(ports)))
    v = json.loads(json.dumps(values))
    v["comm_args"].update(grpc_ipconfig_path=str(ipconfig), connect_timeout_s=120, wait_for_clients_s=300)
    v["status_args"] = {"port": 0}
    path = where / "deploy.yaml"
    path.write_text(yaml.safe_dump(v))
    srv = server(path)
    boards = [client(n, path) for n in range(1, len(DEVICES) + 1)]
    try:
        rc = srv.finish(3600)
        if rc != 0:
            raise SystemExit(f"the deployment's server exited {rc}:\n" + srv.stdout[-3000:] + srv.stderr[-3000:])
        for b in boards:
            b.finish(120)
    finally:
        for proc in (srv, *boards):
            proc.kill()
    return run_dir_of(srv)


def packets_of(pcap: Path, batch: int) -> PacketBatch:
    """Every packet of a capture as one batch (these captures are a few MB)."""
    whole = PacketBatch()
    for b, _ in read_capture(pcap, batch_size=batch):
        for name in PACKET_FIELDS:
            getattr(whole, name).extend(getattr(b, name))
    return whole


def in_batches(packets: PacketBatch, size: int) -> Iterator[PacketBatch]:
    """The packets in batches of `size`, as read_capture hands them to capture and detect: the extractor sweeps its
    idle streams between batches, which the fan-out features see (an evicted peer is new when it comes back), so a
    whole capture in one batch would give rows neither capture nor detect gives."""
    for start in range(0, len(packets), size):
        yield packets.subset(range(start, min(start + size, len(packets))))


def rows_of(packets: PacketBatch, cfg: Any) -> np.ndarray:
    """Feature rows of every packet, from one extractor run as detect runs it (batches of detect_args.batch_packets)."""
    extractor = FeatureExtractor.configured(cfg)
    return np.vstack([extractor.transform(b) for b in in_batches(packets, cfg.batch_packets)])


def capture_device(name: str, pcap: Path, ip: str, share: float, out: Path, cfg: Any, seed: int) -> dict[str, Any]:
    """The device's captured share of time as `python -m capture` writes it; the held-out rows, times and hosts."""
    packets = packets_of(pcap, cfg.batch_packets)
    t = np.asarray(packets.time)
    cut = t[0] + share * (t[-1] - t[0])
    watch = parse_watch(f"{name}={ip}")
    # one extractor pass over the whole capture (the board keeps watching after its capture)
    rows = rows_of(packets, cfg)
    mine = np.flatnonzero(Watcher([watch]).of(packets) == 0)
    captured = mine[t[mine] < cut]
    held = mine[t[mine] >= cut]
    # the captured part through capture's own path (its extractor from the capture's start, its simulated attacks)
    devices, _ = capture_rows(((b, SkipCounts()) for b in in_batches(packets.subset(np.flatnonzero(t < cut)),
                                                                    cfg.batch_packets)),
                              [watch], cfg, keep_packets=True, progress=False)
    d: DeviceCapture = devices[name]
    attacks = {a: simulated_attack_rows(d, a, ATTACK_SECONDS, cfg, seed * 100 + i)
               for i, a in enumerate(nbaiot.all_attack_names())}
    record = {"source": str(pcap), "filter": {"ips": [ip], "macs": []}, "captured_at": time.time(),
              "first_packet": d.first, "last_packet": d.last, "packets_seen": int(len(captured)),
              "packets_of_device": d.n_rows, "skipped": {}, "features_version": FEATURES_VERSION,
              "attack_seconds": ATTACK_SECONDS, "max_streams": cfg.max_streams}
    write_device(out, d, record, False, attacks)
    src = np.asarray(packets.src_ip, dtype=object)
    return {"rows": rows[held], "time": t[held], "hosts": [src[i] for i in held], "captured_rows": d.n_rows,
            "captured_days": (d.last - d.first) / 86400, "held_out_days": (t[held][-1] - t[held][0]) / 86400}


def endpoint_info(pcap: Path, ip: str, share: float, cfg: Any) -> tuple[EndpointProfile, list[tuple[str, int]]]:
    """The device's endpoint profile from its captured share of time (capture's function) and the endpoints of its
    held-out packets, in the order of the held-out rows."""
    packets = packets_of(pcap, cfg.batch_packets)
    t = np.asarray(packets.time)
    cut = t[0] + share * (t[-1] - t[0])
    mine = np.flatnonzero(Watcher([parse_watch(f"x={ip}")]).of(packets) == 0)
    own = {ipaddress.ip_address(ip).packed}
    profile = EndpointProfile()
    profile.add(endpoints_of(packets, mine[t[mine] < cut], own, cfg.ephemeral_port_from))
    return profile, endpoints_of(packets, mine[t[mine] >= cut], own, cfg.ephemeral_port_from)


def first_alert_seconds(pcap: Path, ip: str, share: float, det: LeanDetector, device: str, threshold: float,
                        cfg: Any, window: int, seed: int, profile: EndpointProfile | None = None,
                        seconds: float = 10.0) -> dict[str, dict[str, float | None]]:
    """Per attack kind: seconds from the attack's first packet to the first window alert on the device's own address,
    the attack (capture's simulator, sent from the device's address) merged into the capture's packets in the middle
    of the held-out time, the whole capture through one extractor (a board that has been watching all along)."""
    packets = packets_of(pcap, cfg.batch_packets)
    t = np.asarray(packets.time)
    cut = t[0] + share * (t[-1] - t[0])
    start = cut + (t[-1] - cut) / 2
    mac = next((packets.src_mac[i] for i in range(len(packets)) if packets.src_ip[i] == ipaddress.ip_address(ip).packed),
               None)
    out: dict[str, dict[str, float | None]] = {}
    own = ipaddress.ip_address(ip).packed
    for i, attack in enumerate(nbaiot.all_attack_names()):
        sim = TrafficSimulator(ATTACK_PROFILE, seed * 100 + i, ip=ip, mac=mac)
        extra = frames_batch(sim.attack(attack, start, start + seconds))
        merged = PacketBatch()
        order = np.argsort(np.concatenate([t, np.asarray(extra.time)]), kind="stable")
        for name in PACKET_FIELDS:
            both = getattr(packets, name) + getattr(extra, name)
            setattr(merged, name, [both[j] for j in order])
        mt = np.asarray(merged.time)
        late = np.flatnonzero(mt >= cut)  # the extractor runs over everything; the detector watches the held-out time
        rows = rows_of(merged, cfg)[late]
        watch = Watcher([parse_watch(f"{device}={ip}")])
        mine = np.flatnonzero(watch.of(merged.subset(late)) == 0)
        flags = det.score(rows[mine], device) > threshold
        hosts = [merged.src_ip[late[j]] for j in mine]
        alerts = WindowVote(window).push(hosts, flags)
        times = mt[late[mine]]
        during = np.array([h == own for h in hosts]) & (times >= start) & (times < start + seconds)
        variants = {"": alerts}
        if profile is not None:
            unknown = profile.unknown(endpoints_of(merged, late[mine], {own}, cfg.ephemeral_port_from))
            variants["_with_profile"] = alerts | WindowVote(window).push(hosts, unknown)
        out[attack] = {}
        for suffix, a in variants.items():
            hit = times[a & during]
            out[attack]["first_alert_s" + suffix] = float(hit.min() - start) if len(hit) else None
            out[attack]["window_tpr" + suffix] = float(a[during].mean()) if during.any() else None
    return out


def false_alarms(scores: np.ndarray, hosts: list[bytes], times: np.ndarray, threshold: float, window: int,
                 interval_s: float, days: float, device: str) -> dict[str, float]:
    """Window alerts and alert messages (rate-limited per host) on held-out benign packets, per day."""
    alerts = WindowVote(window).push(hosts, scores > threshold)
    limiter = RateLimiter(interval_s, 1 << 16)
    messages = sum(limiter.admit(device, h.hex(), float(t)) is not None
                   for h, t, a in zip(hosts, times, alerts) if a)
    return {"window_alerts": int(alerts.sum()), "alert_messages": int(messages),
            "window_alerts_per_day": float(alerts.sum()) / days, "alert_messages_per_day": messages / days,
            "packet_fpr": float(np.mean(scores > threshold))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pcaps", type=Path, default=DEFAULT_PCAPS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--train-share", type=float, default=TRAIN_SHARE, help="share of each capture's time that is captured")
    p.add_argument("--budgets", type=float, nargs="+", default=[1.0, 5.0, 20.0],
                   help="false_alerts_per_day values to compare")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="reuse the captures already in --out")
    p.add_argument("--alert-time", action="store_true",
                   help="also the seconds from each attack's first packet to the first window alert (first budget)")
    p.add_argument("--reuse-run", action="store_true", help="reuse the latest federation run in --out too")
    p.add_argument("--deployment", action="store_true",
                   help="federate as a loopback deployment (run_server.sh + run_client.sh N) instead of in process")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config value for the federation (YAML value), e.g. train_args.epochs=1")
    a = p.parse_args(argv)
    study = a.out or create_run_dir(REPO / "runs", "bench", "household")
    study.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for seed in a.seeds:
        local = study / f"seed{seed}" / "local"
        values = {"common_args": {"training_type": "cross_silo", "random_seed": seed,
                                  "run_dir_root": str(study / f"seed{seed}" / "runs")},
                  "data_args": {"dataset": "local", "devices": list(DEVICES), "local_data_dir": str(local)},
                  "train_args": {"comm_round": a.rounds},
                  "validation_args": {"frequency_of_the_test": a.rounds}, "comm_args": {"backend": "GRPC"}}
        for item in a.set:
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            values.setdefault(section, {})[name] = yaml.safe_load(value)
        cfg = validate(values)
        held: dict[str, dict[str, Any]] = {}
        cache = study / f"seed{seed}" / "held_out.pkl"  # --reuse: the captures of an earlier run of this directory
        if a.reuse and cache.is_file():
            held = pickle.loads(cache.read_bytes())
        else:
            for name, (f, ip) in DEVICES.items():
                print(f"seed {seed}: capturing {name} ({f}, first {a.train_share:.0%} of its time)", file=sys.stderr,
                      flush=True)
                held[name] = capture_device(name, a.pcaps / f, ip, a.train_share, local, cfg.detect, seed)
            cache.write_bytes(pickle.dumps(held))
        data_root, data_info = prepare_data(cfg)
        started = time.monotonic()
        runs = sorted((study / f"seed{seed}" / "runs").glob("*-server-local"))
        if a.reuse_run and runs and (runs[-1] / "metrics.json").is_file():
            run_dir = runs[-1]
        elif a.deployment:
            print(f"seed {seed}: federating {len(DEVICES)} devices, {a.rounds} rounds, loopback deployment",
                  file=sys.stderr, flush=True)
            run_dir = deploy(values, study / f"seed{seed}")
        else:
            run_dir = create_run_dir(cfg.common.run_dir_root, "server", "local")
            write_config(run_dir, cfg)
            print(f"seed {seed}: federating {len(DEVICES)} devices, {a.rounds} rounds", file=sys.stderr, flush=True)
            run_in_process(cfg, run_dir, data_root, data_info, "federated-deployment", None, None, None)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        det = LeanDetector.load(run_dir)
        rules = {"mean_std k=5": ThresholdRule("mean_std", 5.0)} | {
            f"budget {b:g}/day": ThresholdRule("budget", 5.0, b, cfg.validation.tail_level, cfg.validation.alert_gap_s)
            for b in a.budgets} | {"budget 1/day, window alerts within 600 s as one": ThresholdRule(
                "budget", 5.0, 1.0, cfg.validation.tail_level, alert_gap_s=600.0)}
        row: dict[str, Any] = {"seed": seed, "seconds": round(time.monotonic() - started, 1), "run_dir": str(run_dir),
                               "devices": {}}
        scored = {n: {o: det.score(h["rows"], o) for o in DEVICES} for n, h in held.items()}  # scored[b][a]
        ends = {n: endpoint_info(a.pcaps / f, ip, a.train_share, cfg.detect) for n, (f, ip) in DEVICES.items()}
        for n, (_, held_ends) in ends.items():
            assert len(held_ends) == len(held[n]["rows"]), (n, len(held_ends), len(held[n]["rows"]))
        new_ep = {b: {o: ends[o][0].unknown(ends[b][1]) for o in DEVICES} for b in DEVICES}  # new_ep[b][a]
        endpoint_votes = {b: {o: WindowVote(cfg.validation.vote_window).push(held[b]["hosts"], new_ep[b][o])
                              for o in DEVICES} for b in DEVICES}
        for name, h in held.items():
            dd = load_device(local, name, local=True, attack_test_rows=cfg.data.attack_test_rows)
            sp = split_device(dd, cfg.data.train_fraction, cfg.data.validation_fraction, block_rows_of(cfg.data, dd))
            # the tail's clusters at 600 s too, for the declustered variant (rules with alert_gap_s 0 ignore them)
            val = ErrorStats.of(det.score(sp.validation, name), cfg.validation.vote_window, sp.rows_per_day,
                                rules["budget 1/day, window alerts within 600 s as one"])
            atk = {k: det.score(v, name) for k, v in sp.attacks.items()}
            per_rule = {}
            for label, rule in rules.items():
                thr = val.threshold_by(rule)
                per_rule[label] = {
                    "threshold": thr,
                    "tpr": {k: float(np.mean(v > thr)) for k, v in atk.items()},
                    **false_alarms(scored[name][name], h["hosts"], h["time"], thr, cfg.validation.vote_window,
                                   cfg.detect.alert_interval_s, h["held_out_days"], name),
                    "cross": {o: float(np.mean(WindowVote(cfg.validation.vote_window).push(
                        held[o]["hosts"], scored[o][name] > thr))) for o in DEVICES if o != name},
                    "cross_with_profile": {o: float(np.mean(WindowVote(cfg.validation.vote_window).push(
                        held[o]["hosts"], scored[o][name] > thr) | endpoint_votes[o][name]))
                        for o in DEVICES if o != name},
                    "window_alerts_with_profile": int((WindowVote(cfg.validation.vote_window).push(
                        h["hosts"], scored[name][name] > thr) | endpoint_votes[name][name]).sum()),
                    "new_endpoint_packets": int(new_ep[name][name].sum())}
            if a.alert_time:
                f, ip = DEVICES[name]
                thr = per_rule[f"budget {a.budgets[0]:g}/day"]["threshold"]
                print(f"seed {seed}: {name}: time to first alert per attack", file=sys.stderr, flush=True)
                per_rule[f"budget {a.budgets[0]:g}/day"]["attack_alerts"] = first_alert_seconds(
                    a.pcaps / f, ip, a.train_share, det, name, thr, cfg.detect, cfg.validation.vote_window, seed,
                    ends[name][0])
            row["devices"][name] = {"rules": per_rule, "rows_per_day": sp.rows_per_day,
                                    "federation_threshold": metrics["devices"][name]["thresholds"][name],
                                    "federation_tpr": metrics["devices"][name]["attacks"],
                                    "held_out_days": h["held_out_days"], "captured_rows": h["captured_rows"]}
        results.append(row)
        write_json(study / "results.json", results)
        print(f"seed {seed}: done in {row['seconds']} s", file=sys.stderr, flush=True)
    (study / "table.md").write_text(table(results))
    print(table(results))
    print(study)
    return 0


def table(results: list[dict[str, Any]]) -> str:
    """One line per seed x device x rule: threshold, lowest TPR (and its attack), scans, false alarms on the held-out
    time (counts, and per day of it; with the endpoint profile too), the cross-device share (lowest over the other
    devices; with the profile too); then, where --alert-time ran, one line per seed x device x attack."""
    lines = ["| seed | device | held-out days | rule | threshold | lowest TPR (attack) | scans TPR (mirai / gafgyt) |"
             " false window alerts (per day) | with profile (per day) | alert messages (per day) |"
             " other devices' windows flagged (min) | with profile (min) |",
             "|---" * 12 + "|"]
    timed = []
    for r in results:
        for name, d in r["devices"].items():
            for label, x in d["rules"].items():
                worst = min(x["tpr"], key=x["tpr"].get)
                days = d["held_out_days"]
                lines.append(f"| {r['seed']} | {name} | {days:.2f} | {label} | {x['threshold']:.4g} "
                             f"| {x['tpr'][worst]:.3f} ({worst}) | {x['tpr'].get('mirai_scan', float('nan')):.3f} / "
                             f"{x['tpr'].get('gafgyt_scan', float('nan')):.3f} | {x.get('window_alerts', 0)} "
                             f"({x['window_alerts_per_day']:.1f}) | {x['window_alerts_with_profile']} "
                             f"({x['window_alerts_with_profile'] / days if days > 0 else float('nan'):.1f}) | "
                             f"{x.get('alert_messages', 0)} ({x['alert_messages_per_day']:.1f}) | "
                             f"{min(x['cross'].values()):.4f} | {min(x['cross_with_profile'].values()):.4f} |")
                for attack, v in (x.get("attack_alerts") or {}).items():
                    timed.append(f"| {r['seed']} | {name} | {attack} | {_s(v['first_alert_s'])} | "
                                 f"{_f(v['window_tpr'])} | {_s(v.get('first_alert_s_with_profile'))} | "
                                 f"{_f(v.get('window_tpr_with_profile'))} |")
    if timed:
        lines += ["", "| seed | device | attack (10 s in the held-out time) | first window alert (s) | attack packets "
                  "in alerting windows | first alert, with profile (s) | with profile |", "|---" * 7 + "|", *timed]
    return "\n".join(lines) + "\n"


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.3f}"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    sys.exit(main())
