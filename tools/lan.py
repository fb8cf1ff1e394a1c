"""A LAN of hosts on one machine with Linux network namespaces (root): a server, boards and an attacker on one bridge.

    python tools/lan.py up [--boards 3] [--prefix fiot]      # prints the hosts as JSON
    python tools/lan.py down [--prefix fiot]
    python tools/lan.py replay --interface IF --kind DEVICE --ip IP --mac MAC --gateway-mac MAC --seconds S [--seed N]
    python tools/lan.py flood --interface IF --src-ip IP --src-mac MAC --target-ip IP --target-mac MAC --seconds S
        [--pps 1500]
    python tools/lan.py update --interface IF --kind DEVICE --ip IP --mac MAC --gateway-mac MAC --seconds S [--seed N]

`up` makes namespaces PREFIX-sw (the switch: a bridge, no address), PREFIX-srv (10.231.0.1), PREFIX-b1..bN
(10.231.0.11..), PREFIX-atk (10.231.0.66), each joined to the bridge by a veth pair; traffic stays inside them.
`replay` (run inside a board's namespace) sends a simulated IoT device's benign traffic out of that namespace's
interface in real time: the traffic simulator's frames from the device's own IP/MAC (not an address of the
namespace: the board sees it as a mirror port would). `flood` sends a SYN flood at a device from the attacker;
`update` the device's firmware download (benign, but never in its capture: what a user calls "this was me").
Both write frames with an AF_PACKET socket (root or CAP_NET_RAW).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUBNET = "10.231.0"
SERVER_HOST, BOARD_HOST0, ATTACKER_HOST = 1, 11, 66


@dataclass
class Host:
    name: str  # its namespace
    ip: str
    interface: str  # its end of the veth pair, inside the namespace
    mac: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def hosts(prefix: str, boards: int) -> list[Host]:
    names = [("srv", SERVER_HOST)] + [(f"b{k}", BOARD_HOST0 + k - 1) for k in range(1, boards + 1)] + [("atk", ATTACKER_HOST)]
    return [Host(f"{prefix}-{n}", f"{SUBNET}.{h}", f"{prefix[:4]}{n}", f"02:00:0a:e7:00:{h:02x}") for n, h in names]


def up(prefix: str, boards: int) -> list[Host]:
    """Create the namespaces, the bridge and the links (fails if they exist: `down` first)."""
    switch = f"{prefix}-sw"
    _ip("netns", "add", switch)
    _ip("-n", switch, "link", "add", "br0", "type", "bridge")
    _ip("-n", switch, "link", "set", "br0", "up")
    made = hosts(prefix, boards)
    for i, h in enumerate(made):
        _ip("netns", "add", h.name)
        _ip("-n", h.name, "link", "set", "lo", "up")
        port = f"p{i}"
        _ip("link", "add", h.interface, "netns", h.name, "address", h.mac, "type", "veth", "peer", "name", port,
            "netns", switch)
        _ip("-n", switch, "link", "set", port, "master", "br0")
        _ip("-n", switch, "link", "set", port, "up")
        _ip("-n", h.name, "addr", "add", f"{h.ip}/24", "dev", h.interface)
        _ip("-n", h.name, "link", "set", h.interface, "up")
    return made


def down(prefix: str) -> None:
    """Delete every namespace of this LAN (their links go with them)."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(f"{prefix}-"):
            _ip("netns", "del", name, check=False)


def in_ns(host: Host | str, *cmd: str) -> list[str]:
    """A command line that runs `cmd` inside a host's namespace."""
    return ["ip", "netns", "exec", host if isinstance(host, str) else host.name, *cmd]


def send_frames(interface: str, frames: list[tuple[float, bytes]], stop_after_s: float | None = None) -> int:
    """Send frames out of `interface` at their relative times (real time); the number sent."""
    if not frames:
        return 0
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((interface, 0))
    t0, started, sent = frames[0][0], time.monotonic(), 0
    for t, frame in frames:
        due = started + (t - t0)
        if stop_after_s is not None and due - started > stop_after_s:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.send(frame)
        sent += 1
    s.close()
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--boards", type=int, default=3)
    u.add_argument("--prefix", default="fiot")
    d = sub.add_parser("down")
    d.add_argument("--prefix", default="fiot")
    r = sub.add_parser("replay")
    r.add_argument("--interface", required=True)
    r.add_argument("--kind", required=True, help="N-BaIoT device whose kind of traffic to simulate")
    r.add_argument("--ip", required=True)
    r.add_argument("--mac", required=True)
    r.add_argument("--gateway-mac", required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--behaviour-every", type=float, metavar="S",
                   help="cap every recurring behaviour of the device (keep-alive, DNS, NTP, cloud poll, time between "
                        "motion events and their length) at S seconds, so that a capture of a few times S holds every "
                        "behaviour the device shows later (a real device needs captures of hours for that)")
    r.add_argument("--realtime", action="store_true",
                   help="send at real-time priority (SCHED_FIFO, root): the emulated device's packet timing then does not "
                        "depend on what else the machine runs, as a real device's does not")
    f = sub.add_parser("flood")
    f.add_argument("--interface", required=True)
    f.add_argument("--src-ip", required=True)
    f.add_argument("--src-mac", required=True)
    f.add_argument("--target-ip", required=True)
    f.add_argument("--target-mac", required=True)
    f.add_argument("--seconds", type=float, required=True)
    f.add_argument("--pps", type=float, default=1500.0)
    w = sub.add_parser("update")
    for name in ("--interface", "--kind", "--ip", "--mac", "--gateway-mac"):
        w.add_argument(name, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.cmd == "up":
        print(json.dumps([asdict(h) for h in up(a.prefix, a.boards)]))
    elif a.cmd == "down":
        down(a.prefix)
    elif a.cmd == "replay":
        from traffic.simulator import TrafficSimulator

        sim = TrafficSimulator(a.kind, a.seed, ip=a.ip, mac=bytes.fromhex(a.mac.replace(":", "")),
                               gateway_mac=bytes.fromhex(a.gateway_mac.replace(":", "")))
        if a.behaviour_every is not None:
            sim.kind = sim.kind.every_behaviour_within(a.behaviour_every)
        frames = sim.capture(a.seconds, start=time.time())
        if a.realtime:  # after building the frames (seconds of CPU): only the sleeping sender runs at this priority
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        print(json.dumps({"first_packet_at": time.time(), "frames": len(frames)}), flush=True)
        print(json.dumps({"sent": send_frames(a.interface, frames, a.seconds)}), flush=True)
    elif a.cmd == "update":
        from traffic.simulator import TrafficSimulator

        sim = TrafficSimulator(a.kind, a.seed, ip=a.ip, mac=bytes.fromhex(a.mac.replace(":", "")),
                               gateway_mac=bytes.fromhex(a.gateway_mac.replace(":", "")))
        start = time.time()
        frames = sim.firmware_update(start, start + a.seconds)
        print(json.dumps({"first_packet_at": time.time(), "frames": len(frames)}), flush=True)
        print(json.dumps({"sent": send_frames(a.interface, frames)}), flush=True)
    else:
        from traffic.simulator import inbound_flood

        start = time.time()
        frames = inbound_flood(a.src_ip, bytes.fromhex(a.src_mac.replace(":", "")), a.target_ip,
                               bytes.fromhex(a.target_mac.replace(":", "")), start, start + a.seconds, a.pps)
        print(json.dumps({"first_packet_at": time.time(), "frames": len(frames)}), flush=True)
        print(json.dumps({"sent": send_frames(a.interface, frames)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
