"""Turn your own devices' traffic into their benign rows (data_args.dataset: local), with simulated attacks for TPR.

    python -m capture (--pcap FILE [FILE ...] | --interface IFACE --duration SECONDS)
        --device NAME=ADDR[,ADDR...] [--device ...] [--out data/local] [--append]
        [--simulate-attacks all|none|ATTACK,...] [--attack-seconds 30] [--config YAML]
    python -m capture (--pcap FILE ... | --interface IFACE --duration SECONDS) --list-hosts [--json]

--list-hosts writes nothing: it lists the LAN hosts the capture holds (address, MAC(s), packets sent and received,
first and last seen), busiest first, to find your devices' addresses (traffic/hosts.py).

Each --device names one of your devices and its addresses (IPs; MACs, whose IPs are learnt from the packets they
send): a board on a mirror port, or acting as a gateway, sees many hosts and one command writes every device named.
Every packet goes through the same feature extractor as `python -m detect` (traffic/afterimage.py, with the same
detect_args memory bounds), so the rows a device learns from are the features its detector will score; a device's
rows are those of the packets from or to its addresses. Written per device, atomically (nothing half-written on an
error or Ctrl-C), in N-BaIoT's per-device layout under --out:

  NAME/benign_traffic.csv         its rows (--append: after the rows of earlier captures)
  NAME/provenance.json            source, filter, time span, packet counts, feature version of every capture
  NAME/endpoints.json             the services it talks to (scope, port; traffic/profile.py), for
                                  detect --profiles: traffic to others' services is flagged as not the device's.
                                  It stays on the board: the federation never reads it
  NAME/simulated_attacks/*.csv    --simulate-attacks: the traffic simulator's Mirai/Gafgyt attacks sent from the
                                  device's own address for --attack-seconds in the middle of its captured traffic;
                                  the rows of its packets in that window (as N-BaIoT recorded infected devices);
                                  and inbound_syn*.csv: a LAN host's telnet SYNs at the device at 200, 20 and 2
                                  a second (triage only: a benign verdict like them is refused; not evaluated)

Only capture traffic you are allowed to capture, and only benign traffic: the rows are what "normal" means.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from data import nbaiot
from data.csvfile import write_feature_csv
from data.loader import SIMULATED_ATTACKS_DIR, read_feature_csv
from data.sources import PROVENANCE_FILE
from fediot.config import DEVICE_NAME, load, validate
from traffic.settings import DetectArgs
from fediot.errors import FedIoTError
from traffic.afterimage import FEATURES_VERSION, FeatureExtractor
from traffic.packets import PACKET_FIELDS, PacketBatch, SkipCounts, frames_batch, live_capture, read_capture
from traffic.profile import PROFILE_FILE, EndpointProfile, endpoints_of
from traffic.simulator import TrafficSimulator, inbound_flood
from traffic.watch import Watch, Watcher, parse_watch

PROGRESS_EVERY_S = 5.0  # seconds between progress lines
ATTACK_PROFILE = "Danmini_Doorbell"  # the simulator's device kind whose rng drives a simulated attack's packets
# Attacks *at* the device from a LAN host (N-BaIoT's ten are the device's own outbound bot traffic): simulated for
# triage only (a benign verdict whose rows look like them is refused), never evaluated. inbound_syn: SYN packets to
# telnet from one host, a new source port each (Mirai's scanner and brute force opening connections), at these rates:
# a verdict on a flood far slower than the one reference (200/s) was taken (a 20/s flood called benign at a lock hub
# then taught its model to miss floods at 2-200/s: doc/benchmarks.md "Triage"), so slower ones are references too.
INBOUND_ATTACKS = {"inbound_syn": 200.0, "inbound_syn_slow": 20.0, "inbound_syn_trickle": 2.0}
# a slow inbound kind is simulated long enough for this many rows (at 2/s: 300 s, whatever --attack-seconds says)
INBOUND_MIN_ROWS = 600
INBOUND_ATTACKER = "192.0.2.66"  # TEST-NET-1: features never see the address itself, only its streams
INBOUND_ATTACKER_MAC = bytes.fromhex("020000c00242")


@dataclass
class DeviceCapture:
    """What one capture gives one device: its rows and its packets (kept for the simulated attacks)."""

    watch: Watch
    rows: list[np.ndarray] = field(default_factory=list)
    packets: PacketBatch = field(default_factory=PacketBatch)
    endpoints: EndpointProfile = field(default_factory=EndpointProfile)  # whom it talks to (traffic/profile.py)
    first: float | None = None
    last: float | None = None
    longest_silence_s: float = 0.0  # the longest time between two of its packets (detect's silence alert learns it)

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows)


def take(batch: PacketBatch, idx: np.ndarray, into: PacketBatch) -> None:
    for name in PACKET_FIELDS:
        src, dst = getattr(batch, name), getattr(into, name)
        dst.extend(src[i] for i in idx)


def capture_rows(batches: Iterable[tuple[PacketBatch, SkipCounts]], watches: list[Watch], cfg: DetectArgs,
                 keep_packets: bool, progress: bool = True) -> tuple[dict[str, DeviceCapture], dict[str, Any]]:
    """One pass of the extractor over every packet; each device's rows (and packets, when kept)."""
    watcher = Watcher(watches)
    extractor = FeatureExtractor.configured(cfg)
    out = {w.device: DeviceCapture(w) for w in watches}
    seen, skipped, started, said = 0, SkipCounts(), time.monotonic(), time.monotonic()
    scopes: dict[bytes, str] = {}
    for batch, skipped in batches:
        if len(batch) == 0:
            continue
        rows = extractor.transform(batch)
        which = watcher.of(batch)
        seen += len(batch)
        for i, w in enumerate(watches):
            idx = np.flatnonzero(which == i)
            if len(idx) == 0:
                continue
            d = out[w.device]
            d.rows.append(rows[idx].astype(np.float64))
            d.endpoints.add(endpoints_of(batch, idx, watcher.ips_of(i), cfg.ephemeral_port_from, scopes))
            times = np.asarray([batch.time[j] for j in idx]) if d.last is None else \
                np.asarray([d.last, *(batch.time[j] for j in idx)])
            if len(times) > 1:
                d.longest_silence_s = max(d.longest_silence_s, float(np.diff(times).max()))
            d.first = batch.time[idx[0]] if d.first is None else d.first
            d.last = batch.time[idx[-1]]
            if keep_packets:
                take(batch, idx, d.packets)
        if progress and time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            print(f"  {seen:,} packets ({seen / (said - started):,.0f}/s); rows: "
                  + ", ".join(f"{name} {d.n_rows:,}" for name, d in out.items()), file=sys.stderr, flush=True)
    for i, w in enumerate(watches):  # a device named by MAC only: the IPs learnt from its packets are its addresses too
        w.ips |= watcher.ips_of(i)
    return out, {"packets_seen": seen, "skipped": skipped.as_dict(), "seconds": round(time.monotonic() - started, 1),
                 "learnt_ips": {d: sorted(v) for d, v in watcher.learnt.items()}}


def simulated_seconds(attack: str, seconds: float) -> float:
    """How long `attack` is simulated: --attack-seconds, a slow inbound kind long enough for INBOUND_MIN_ROWS."""
    return max(seconds, INBOUND_MIN_ROWS / INBOUND_ATTACKS[attack]) if attack in INBOUND_ATTACKS else seconds


def simulated_attack_rows(device: DeviceCapture, attack: str, seconds: float, cfg: DetectArgs,
                          seed: int) -> np.ndarray:
    """Rows of the device's packets while the simulator's `attack` is sent from its address, in the middle of its
    captured traffic: the attack's packets merged in time order with the device's own, one extractor pass."""
    own = device.packets
    if len(own) == 0 or not device.watch.ips:
        return np.zeros((0, nbaiot.N_CAPTURED_FEATURES))
    ip = next(iter(sorted(device.watch.ips)))
    mac = next(iter(sorted(device.watch.macs)), None)
    if mac is None:  # the MAC its packets carry
        mac = next((own.src_mac[i] for i in range(len(own)) if own.src_ip[i] == ip), b"\x02\x00\x00\x00\x00\x01")
    seconds = simulated_seconds(attack, seconds)
    span = own.time[-1] - own.time[0]
    start = own.time[0] + max(0.0, (span - seconds) / 2)
    end = start + seconds
    if attack in INBOUND_ATTACKS:
        frames = inbound_flood(INBOUND_ATTACKER, INBOUND_ATTACKER_MAC, str(ipaddress.ip_address(ip)), mac, start, end,
                               INBOUND_ATTACKS[attack], seed)
    else:
        frames = TrafficSimulator(ATTACK_PROFILE, seed, ip=str(ipaddress.ip_address(ip)), mac=mac).attack(attack, start,
                                                                                                        end)
    attack_batch = frames_batch(frames)
    merged = PacketBatch()
    order = np.argsort(np.concatenate([own.time, attack_batch.time]), kind="stable")
    for name in PACKET_FIELDS:
        both = getattr(own, name) + getattr(attack_batch, name)
        getattr(merged, name).extend(both[i] for i in order)
    rows = FeatureExtractor.configured(cfg).transform(merged)
    t = np.asarray(merged.time)
    return rows[(t >= start) & (t < end)]


ATTACK_BLOCKS = 4  # kept attack rows come in this many contiguous blocks: the attack's start, middle and end, each
# long enough for detect's majority-vote windows


def kept_rows(rows: np.ndarray, keep: int) -> np.ndarray:
    """At most `keep` of a simulated attack's rows (0 = all): ATTACK_BLOCKS contiguous blocks spread evenly from its
    first row to its last, so what is written is sized by what measuring a TPR needs, not by the flood's rate."""
    if keep <= 0 or len(rows) <= keep:
        return rows
    size = max(1, keep // ATTACK_BLOCKS)
    starts = np.linspace(0, len(rows) - size, ATTACK_BLOCKS).astype(int)
    return np.concatenate([rows[s:s + size] for s in starts])


def write_rows(path: Path, rows: np.ndarray) -> None:
    """A captured rows' CSV (header + N-BaIoT's 115 columns and the fan-out extension's), written to a temp file
    beside it and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            write_feature_csv(fh, rows, nbaiot.CAPTURED_COLUMNS)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_device(out: Path, device: DeviceCapture, record: dict[str, Any], append: bool,
                 attacks: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """The device's directory, built beside the old one and swapped in (os.replace of each file; the directory of
    simulated attacks replaced whole): rows, provenance, endpoints and simulated attacks together."""
    ddir = out / device.watch.device
    benign = ddir / nbaiot.BENIGN_FILE
    new = np.vstack(device.rows) if device.rows else np.zeros((0, nbaiot.N_CAPTURED_FEATURES))
    provenance: dict[str, Any] = {"device": device.watch.device, "captures": []}
    if append and benign.is_file():
        old = read_feature_csv(benign, nbaiot.CAPTURED_COLUMNS)
        prov_path = ddir / PROVENANCE_FILE
        if prov_path.is_file():
            provenance = json.loads(prov_path.read_text())
        if provenance.get("features_version", FEATURES_VERSION) != FEATURES_VERSION:
            raise FedIoTError(f"{ddir}: its rows were made with feature version {provenance.get('features_version')}, "
                              f"this extractor is version {FEATURES_VERSION}; capture again without --append")
        new = np.vstack([old, new])
    elif benign.is_file() and not append:
        raise FedIoTError(f"{benign} exists: --append to add this capture's rows after it, or remove {ddir}")
    provenance["captures"].append(record)
    provenance.update(features_version=FEATURES_VERSION, rows=len(new),
                      first_packet=min(c["first_packet"] for c in provenance["captures"] if c["first_packet"] is not None),
                      last_packet=max(c["last_packet"] for c in provenance["captures"] if c["last_packet"] is not None),
                      sources=sorted({c["source"] for c in provenance["captures"]}),
                      longest_silence_s=max(c.get("longest_silence_s", 0.0) for c in provenance["captures"]),
                      seconds=round(sum(c["last_packet"] - c["first_packet"] for c in provenance["captures"]
                                        if c["first_packet"] is not None and c["last_packet"] is not None), 3))
    ddir.mkdir(parents=True, exist_ok=True)
    if attacks is not None:
        staging = Path(tempfile.mkdtemp(prefix=".simulated.", dir=ddir))
        try:
            for name, rows in attacks.items():
                write_rows(staging / f"{name}.csv", rows)
            target = ddir / SIMULATED_ATTACKS_DIR
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        inbound = {name: simulated_seconds(name, record["attack_seconds"])
                   for name in attacks if name in INBOUND_ATTACKS}
        provenance["simulated_attacks"] = {name: len(rows) for name, rows in attacks.items()} | {
            "seconds_each": record["attack_seconds"], "from_capture": len(provenance["captures"])} | (
            {"inbound_seconds": inbound} if inbound else {})
    write_rows(benign, new)
    profile = device.endpoints
    if append and (ddir / PROFILE_FILE).is_file():  # an earlier capture's endpoints are the device's too
        profile = EndpointProfile(EndpointProfile.load(ddir / PROFILE_FILE, 1 << 20).packets + device.endpoints.packets)
    profile.write(ddir)
    tmp = ddir / f".{PROVENANCE_FILE}.tmp"
    tmp.write_text(json.dumps(provenance, indent=1))
    os.replace(tmp, ddir / PROVENANCE_FILE)
    return provenance


def list_hosts_of(a: argparse.Namespace, cfg) -> int:
    """capture --list-hosts: the LAN hosts of the capture, busiest first (nothing written)."""
    from traffic.hosts import list_hosts, table_text

    if a.pcap:
        missing = [str(f) for f in a.pcap if not f.is_file()]
        if missing:
            raise FedIoTError(f"capture file(s) not found: {', '.join(missing)}")
        batches: Iterable = (b for f in a.pcap for b in read_capture(f, batch_size=cfg.batch_packets))
    else:
        batches = live_capture(a.interface, duration_s=a.duration, ring_mb=cfg.capture_ring_mb)
        print(f"listening on {a.interface} for {a.duration:g}s", file=sys.stderr, flush=True)
    table = list_hosts(batches, cfg.max_hosts)
    print(json.dumps(table.as_dict()) if a.json else table_text(table))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", type=Path, nargs="+", help="pcap or pcapng file(s), read in the order given")
    src.add_argument("--interface", help="live capture from this interface (Linux, root)")
    p.add_argument("--duration", type=float, help="live capture: seconds to capture (required with --interface)")
    p.add_argument("--device", action="append", metavar="NAME=ADDR[,ADDR...]",
                   help="one of your devices and its IP/MAC addresses; repeat for several")
    p.add_argument("--list-hosts", action="store_true",
                   help="write nothing: list the LAN hosts the capture holds (address, MAC, packets, first and last "
                        "seen), to find your devices' addresses")
    p.add_argument("--json", action="store_true", help="with --list-hosts: one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=Path("data/local"), help="data_args.local_data_dir (default %(default)s)")
    p.add_argument("--append", action="store_true", help="add this capture's rows after a device's earlier ones")
    p.add_argument("--simulate-attacks", default="all",
                   help="all, none, or a comma-separated list of N-BaIoT attack names and "
                        f"{', '.join(INBOUND_ATTACKS)} (default %(default)s)")
    p.add_argument("--attack-seconds", type=float, default=30.0, help="seconds of each simulated attack (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated attacks")
    p.add_argument("--config", type=Path, help="YAML whose detect_args bound the extractor's memory (as detect's)")
    a = p.parse_args(argv)
    try:
        if a.interface and not a.duration:
            raise FedIoTError("--interface needs --duration SECONDS (how long to capture)")
        cfg = (load(a.config) if a.config else validate({})).detect
        if a.list_hosts:
            return list_hosts_of(a, cfg)
        if not a.device:
            raise FedIoTError("--device NAME=ADDR is needed (which of the capture's hosts is your device: "
                              "--list-hosts lists them)")
        watches = [parse_watch(spec) for spec in a.device]
        bad = [w.device for w in watches if not DEVICE_NAME.fullmatch(w.device)]
        if bad:
            raise FedIoTError(f"--device {bad[0]!r}: a device name is 1-64 letters, digits, _ . - (it names a directory)")
        if a.simulate_attacks == "all":
            attacks = list(nbaiot.all_attack_names()) + list(INBOUND_ATTACKS)
        elif a.simulate_attacks == "none":
            attacks = []
        else:
            attacks = [x.strip() for x in a.simulate_attacks.split(",") if x.strip()]
            known = list(nbaiot.all_attack_names()) + list(INBOUND_ATTACKS)
            unknown = [x for x in attacks if x not in known]
            if unknown:
                raise FedIoTError(f"--simulate-attacks: unknown {unknown}; expected all, none or names from "
                                  f"{', '.join(known)}")
        if a.attack_seconds <= 0:
            raise FedIoTError("--attack-seconds must be > 0")
        for w in watches:  # refuse before reading a single packet
            benign = a.out / w.device / nbaiot.BENIGN_FILE
            if benign.is_file() and not a.append:
                raise FedIoTError(f"{benign} exists: --append to add this capture's rows after it, or remove "
                                  f"{a.out / w.device}")
        if a.pcap:
            missing = [str(f) for f in a.pcap if not f.is_file()]
            if missing:
                raise FedIoTError(f"capture file(s) not found: {', '.join(missing)}")
            batches: Iterable = (b for f in a.pcap for b in read_capture(f, batch_size=cfg.batch_packets))
            source = ", ".join(str(f) for f in a.pcap)
        else:
            batches = live_capture(a.interface, duration_s=a.duration, ring_mb=cfg.capture_ring_mb)
            source = f"interface {a.interface}"
            print(f"capturing on {a.interface} for {a.duration:g}s", file=sys.stderr, flush=True)
        captured_at = time.time()
        devices, info = capture_rows(batches, watches, cfg, keep_packets=bool(attacks))
        results = {}
        for w in watches:
            d = devices[w.device]
            if d.n_rows == 0:
                spec = next(x for x in a.device if x.startswith(f"{w.device}="))
                print(f"{w.device}: no packet from or to {spec.partition('=')[2]} in the capture: nothing written",
                      file=sys.stderr)
                results[w.device] = {"rows": 0}
                continue
            sim = None
            if attacks:
                sim = {}
                for i, attack in enumerate(attacks):
                    made = simulated_attack_rows(d, attack, a.attack_seconds, cfg, a.seed * 100 + i)
                    sim[attack] = kept_rows(made, cfg.attack_rows_kept)
                    print(f"{w.device}: simulated attack {i + 1}/{len(attacks)} {attack}: {len(made):,} rows, "
                          f"{len(sim[attack]):,} kept (detect_args.attack_rows_kept)", file=sys.stderr, flush=True)
            record = {"source": source, "filter": {"ips": sorted(ipaddress.ip_address(x).exploded for x in w.ips),
                                                   "macs": sorted(m.hex(":") for m in w.macs)},
                      "captured_at": captured_at, "first_packet": d.first, "last_packet": d.last,
                      "longest_silence_s": round(d.longest_silence_s, 3),
                      "packets_seen": info["packets_seen"], "packets_of_device": d.n_rows, "skipped": info["skipped"],
                      "features_version": FEATURES_VERSION, "attack_seconds": a.attack_seconds if attacks else None,
                      "max_streams": cfg.max_streams}
            prov = write_device(a.out, d, record, a.append, sim)
            results[w.device] = {"rows": prov["rows"], "this_capture": d.n_rows, "seconds": prov["seconds"],
                                 "dir": str(a.out / w.device)}
            if prov["seconds"] < cfg.min_capture_s:
                print(f"warning: {w.device}: {prov['seconds']:.0f} s of its traffic in all; what it does every few "
                      f"minutes or hours (cloud polls, motion events, updates) may be missing from its rows, and detect "
                      f"will flag it. Capture at least {cfg.min_capture_s:.0f} s (detect_args.min_capture_s; --append "
                      f"adds a later capture)", file=sys.stderr)
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    print(json.dumps({"packets_seen": info["packets_seen"], "seconds": info["seconds"], "devices": results}))
    print(a.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
