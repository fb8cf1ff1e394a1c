"""Packet-level traffic simulator for the N-BaIoT device kinds and the ten attacks; writes pcap.

Benign behaviour per device kind: TLS heartbeats to the vendor cloud, DNS lookups, NTP syncs,
cloud polling bursts, and for cameras / baby monitor / webcam a low-rate upstream video stream with
high-rate bursts on motion events (doorbells: on button presses). Attacks follow the bots' code:
Mirai ack/syn/udp/udpplain floods and telnet scanning; Gafgyt (BASHLITE) combo/junk/scan/tcp/udp.
Rates are scaled down (hundreds to a few thousand packets per second) to keep captures small.
Deterministic for a given seed.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, replace
from pathlib import Path

import dpkt

from data import nbaiot

EPOCH = 1_505_000_000.0  # timestamps near N-BaIoT's capture dates (2017)
GATEWAY_IP = "192.168.1.1"
GATEWAY_MAC = bytes.fromhex("0a0000000001")


@dataclass(frozen=True)
class DeviceKind:
    heartbeat_s: float       # TLS keep-alive period
    poll_s: float            # cloud polling period
    poll_packets: int        # packets per polling burst
    stream_pps: float        # idle upstream video packets/s (0 = no camera)
    event_every_s: float     # mean time between events (motion / button)
    event_pps: float         # video packets/s during an event
    event_s: float           # event duration
    frame_bytes: int         # typical video frame size
    dns_every_s: float = 60.0   # mean time between DNS lookups
    ntp_min_s: float = 300.0    # NTP sync period, drawn uniformly in [ntp_min_s, ntp_max_s]
    ntp_max_s: float = 600.0

    def every_behaviour_within(self, s: float) -> "DeviceKind":
        """This kind with every recurring behaviour (keep-alive, DNS, NTP, cloud poll, the gap between events and an
        event's length) capped at `s` seconds, so that a capture of a few times `s` holds every behaviour the device
        shows later, in each of its chronological splits (tools/lan.py replay --behaviour-every; a real device needs
        captures of hours for that)."""
        if s <= 0:
            raise ValueError(f"behaviour period {s}: expected > 0 seconds")
        ntp_max = min(self.ntp_max_s, s)
        return replace(self, heartbeat_s=min(self.heartbeat_s, s), poll_s=min(self.poll_s, s),
                       event_every_s=min(self.event_every_s, s) if self.event_every_s > 0 else 0.0,
                       event_s=min(self.event_s, s), dns_every_s=min(self.dns_every_s, s),
                       ntp_min_s=min(self.ntp_min_s, ntp_max / 2), ntp_max_s=ntp_max)


KINDS: dict[str, DeviceKind] = {
    "doorbell": DeviceKind(20, 60, 8, 0, 240, 80, 25, 1200),
    "thermostat": DeviceKind(30, 45, 12, 0, 0, 0, 0, 0),
    "baby_monitor": DeviceKind(15, 90, 6, 25, 180, 90, 30, 1300),
    "camera": DeviceKind(15, 120, 6, 12, 150, 120, 20, 1400),
    "webcam": DeviceKind(20, 120, 6, 15, 200, 100, 20, 1350),
}
DEVICE_KIND = {
    "Danmini_Doorbell": "doorbell", "Ecobee_Thermostat": "thermostat", "Ennio_Doorbell": "doorbell",
    "Philips_B120N10_Baby_Monitor": "baby_monitor", "Provision_PT_737E_Security_Camera": "camera",
    "Provision_PT_838_Security_Camera": "camera", "Samsung_SNH_1011_N_Webcam": "webcam",
    "SimpleHome_XCS7_1002_WHT_Security_Camera": "camera", "SimpleHome_XCS7_1003_WHT_Security_Camera": "camera",
}
ATTACK_PPS: dict[str, float] = {
    "mirai_ack": 1500, "mirai_syn": 1500, "mirai_udp": 1200, "mirai_udpplain": 2000, "mirai_scan": 150,
    "gafgyt_combo": 600, "gafgyt_junk": 400, "gafgyt_scan": 200, "gafgyt_tcp": 800, "gafgyt_udp": 900,
}


def _ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def device_ip(device: str) -> str:
    return f"192.168.1.{10 + nbaiot.device_index(device)}"


def device_mac(device: str) -> bytes:
    return bytes([0x02, 0, 0, 0, 0, nbaiot.device_index(device)])


class _Frames:
    """Builds Ethernet/IPv4/TCP|UDP frames of a requested size."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def frame(self, src_mac: bytes, dst_mac: bytes, src: bytes, dst: bytes, proto: str, sport: int, dport: int,
              size: int, flags: int = dpkt.tcp.TH_ACK) -> bytes:
        header = 14 + 20 + (20 if proto == "tcp" else 8)
        payload = b"\x00" * max(0, size - header)
        if proto == "tcp":
            l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=self.rng.getrandbits(32), data=payload)
            p = dpkt.ip.IP_PROTO_TCP
        else:
            l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
            l4.ulen = len(l4)
            p = dpkt.ip.IP_PROTO_UDP
        ip = dpkt.ip.IP(src=src, dst=dst, p=p, ttl=64, data=l4)
        ip.len = len(ip)
        return bytes(dpkt.ethernet.Ethernet(src=src_mac, dst=dst_mac, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


class TrafficSimulator:
    """Generates (timestamp, frame) pairs for one device, with an optional attack interval."""

    def __init__(self, device: str, seed: int = 0, ip: str | None = None, mac: bytes | None = None,
                 gateway_mac: bytes = GATEWAY_MAC) -> None:
        """device: the N-BaIoT device whose kind of traffic is simulated; ip/mac: addresses to send it from instead
        of the simulated LAN's (a namespace's, or your own device's for simulated attacks: every attack then);
        gateway_mac: the router's MAC its frames go to (one per simulated LAN segment, so a bridge keeps them apart)."""
        nbaiot.check_device(device)
        self.device = device
        self.kind = KINDS[DEVICE_KIND[device]]
        self.rng = random.Random(seed * 1009 + nbaiot.device_index(device))
        self.frames = _Frames(self.rng)
        self.mac = mac if mac is not None else device_mac(device)
        self.ip = _ip(ip) if ip is not None else _ip(device_ip(device))
        self.own_address = ip is not None
        self.gateway_mac = gateway_mac
        idx = nbaiot.device_index(device)
        self.cloud = _ip(f"52.{10 + idx}.{self.rng.randrange(1, 250)}.{self.rng.randrange(1, 250)}")
        self.dns, self.ntp = _ip(GATEWAY_IP), _ip("129.6.15.28")
        self.app = _ip("192.168.1.100")  # the owner's phone on the LAN

    # -- benign
    def _out(self, t: float, dst: bytes, proto: str, sport: int, dport: int, size: int, flags: int = dpkt.tcp.TH_ACK):
        return t, self.frames.frame(self.mac, self.gateway_mac, self.ip, dst, proto, sport, dport, size, flags)

    def _in(self, t: float, src: bytes, proto: str, sport: int, dport: int, size: int, flags: int = dpkt.tcp.TH_ACK):
        return t, self.frames.frame(self.gateway_mac, self.mac, src, self.ip, proto, sport, dport, size, flags)

    def benign(self, start: float, end: float) -> list[tuple[float, bytes]]:
        k, r = self.kind, self.rng
        out: list[tuple[float, bytes]] = []
        tls_port = r.randrange(40000, 60000)
        t = start + r.uniform(0, k.heartbeat_s)
        while t < end:  # TLS keep-alive + ACK
            out.append(self._out(t, self.cloud, "tcp", tls_port, 443, r.randint(90, 140), dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH))
            out.append(self._in(t + r.uniform(0.02, 0.08), self.cloud, "tcp", 443, tls_port, 66))
            t += k.heartbeat_s * r.uniform(0.9, 1.1)
        t = start + r.uniform(0, k.dns_every_s)
        while t < end:  # DNS
            q = r.randrange(1024, 65535)
            out.append(self._out(t, self.dns, "udp", q, 53, r.randint(70, 90)))
            out.append(self._in(t + r.uniform(0.005, 0.03), self.dns, "udp", 53, q, r.randint(110, 200)))
            t += r.expovariate(1 / k.dns_every_s)
        t = start + r.uniform(0, k.ntp_min_s)
        while t < end:  # NTP
            out.append(self._out(t, self.ntp, "udp", 123, 123, 90))
            out.append(self._in(t + r.uniform(0.02, 0.1), self.ntp, "udp", 123, 123, 90))
            t += r.uniform(k.ntp_min_s, k.ntp_max_s)
        t = start + r.uniform(0, k.poll_s)
        while t < end:  # cloud polling burst (request/response)
            port = r.randrange(40000, 60000)
            tt = t
            for i in range(k.poll_packets):
                if i % 2 == 0:
                    out.append(self._out(tt, self.cloud, "tcp", port, 443, r.randint(120, 600)))
                else:
                    out.append(self._in(tt, self.cloud, "tcp", 443, port, r.randint(200, 1450)))
                tt += r.uniform(0.01, 0.05)
            t += k.poll_s * r.uniform(0.8, 1.2)
        if k.stream_pps > 0:  # idle upstream video (RTP over UDP)
            port = r.randrange(20000, 30000)
            t = start
            while t < end:
                out.append(self._out(t, self.cloud, "udp", port, 10000, r.randint(k.frame_bytes - 300, k.frame_bytes)))
                t += r.expovariate(k.stream_pps)
        if k.event_every_s > 0:  # motion events / button presses: streaming to the owner's app
            t = start + r.expovariate(1 / k.event_every_s)
            while t < end:
                port = r.randrange(30000, 40000)
                tt, stop = t, min(end, t + k.event_s * r.uniform(0.7, 1.3))
                while tt < stop:
                    out.append(self._out(tt, self.app, "udp", port, 5004, r.randint(k.frame_bytes - 400, k.frame_bytes)))
                    if r.random() < 0.05:
                        out.append(self._in(tt + 0.001, self.app, "udp", 5004, port, r.randint(60, 120)))
                    tt += r.expovariate(k.event_pps)
                t = stop + r.expovariate(1 / k.event_every_s)
        return out

    def firmware_update(self, start: float, end: float, pps: float = 300.0) -> list[tuple[float, bytes]]:
        """A benign event the device's capture never showed: a firmware download from a CDN address it never talked
        to, full-size TCP segments in and an ACK out every second segment. What a user calls "this was me updating the
        camera" (issue 36): it alerts until a benign verdict teaches the device's model."""
        r = self.rng
        cdn, port = _ip(f"23.{r.randrange(32, 64)}.{r.randrange(256)}.{r.randrange(1, 255)}"), r.randrange(40000, 60000)
        out: list[tuple[float, bytes]] = [self._out(start, cdn, "tcp", port, 443, 74, dpkt.tcp.TH_SYN)]
        t, n = start + 0.03, 0
        while t < end:
            out.append(self._in(t, cdn, "tcp", 443, port, 1514))
            n += 1
            if n % 2 == 0:
                out.append(self._out(t + 0.0005, cdn, "tcp", port, 443, 66))
            t += r.expovariate(pps)
        return out

    # -- attacks
    def attack(self, name: str, start: float, end: float) -> list[tuple[float, bytes]]:
        names = nbaiot.all_attack_names() if self.own_address else nbaiot.attack_names(self.device)
        if name not in names:
            raise ValueError(f"{self.device} has no {name} traffic in N-BaIoT; expected one of {names}")
        r = self.rng
        victim = _ip(f"203.0.113.{r.randrange(1, 250)}")
        cnc = _ip(f"198.51.100.{r.randrange(1, 250)}")
        out: list[tuple[float, bytes]] = []
        pps = ATTACK_PPS[name]
        family, _, kind = name.partition("_")
        fixed_dport = r.randrange(1, 65535)
        fixed_sport = r.randrange(1024, 65535)
        t = start
        while t < end:
            if kind in ("scan",):
                dst = bytes([r.randrange(1, 224), r.randrange(256), r.randrange(256), r.randrange(1, 255)])
                port = 23 if family == "gafgyt" or r.random() < 0.9 else 2323
                out.append(self._out(t, dst, "tcp", r.randrange(1024, 65535), port, 60 if family == "mirai" else 74,
                                     dpkt.tcp.TH_SYN))
                if r.random() < 0.02:  # the odd RST from a live host
                    out.append(self._in(t + 0.05, dst, "tcp", port, 40000, 60, dpkt.tcp.TH_RST))
            elif name == "mirai_ack":
                out.append(self._out(t, victim, "tcp", r.randrange(1024, 65535), r.randrange(1, 65535), 566, dpkt.tcp.TH_ACK))
            elif name == "mirai_syn":
                out.append(self._out(t, victim, "tcp", r.randrange(1024, 65535), r.randrange(1, 65535), 74, dpkt.tcp.TH_SYN))
            elif name == "mirai_udp":
                out.append(self._out(t, victim, "udp", r.randrange(1024, 65535), r.randrange(1, 65535), 554))
            elif name == "mirai_udpplain":
                out.append(self._out(t, victim, "udp", fixed_sport, fixed_dport, 554))
            elif name == "gafgyt_udp":
                out.append(self._out(t, victim, "udp", fixed_sport, r.randrange(1, 65535), 554))
            elif name == "gafgyt_tcp":
                flags = r.choice([dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_RST, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH])
                out.append(self._out(t, victim, "tcp", fixed_sport, r.randrange(1, 65535), 60, flags))
            elif name == "gafgyt_junk":
                out.append(self._out(t, victim, "tcp", fixed_sport, fixed_dport, r.randint(100, 1024),
                                     dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH))
            elif name == "gafgyt_combo":  # junk + connection attempts + C&C chatter
                x = r.random()
                if x < 0.6:
                    out.append(self._out(t, victim, "tcp", fixed_sport, fixed_dport, r.randint(100, 1024)))
                elif x < 0.95:
                    out.append(self._out(t, victim, "tcp", r.randrange(1024, 65535), fixed_dport, 74, dpkt.tcp.TH_SYN))
                else:
                    out.append(self._out(t, cnc, "tcp", 45000, 6667, r.randint(60, 200), dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH))
            t += r.expovariate(pps)
        return out

    def capture(self, duration_s: float, attack: str | None = None, attack_start_s: float = 0.0,
                attack_duration_s: float = 0.0, start: float = EPOCH) -> list[tuple[float, bytes]]:
        """Benign traffic for `duration_s` with an optional attack interval, sorted by time."""
        packets = self.benign(start, start + duration_s)
        if attack:
            a0 = start + attack_start_s
            packets += self.attack(attack, a0, a0 + attack_duration_s)
        packets.sort(key=lambda p: p[0])
        return packets


def inbound_flood(attacker_ip: str, attacker_mac: bytes, target_ip: str, target_mac: bytes, start: float, end: float,
                  pps: float, seed: int = 0, dport: int = 23) -> list[tuple[float, bytes]]:
    """A SYN flood at a device from one attacker, a new source port per packet (Mirai's telnet brute force opens
    this way): what a compromised host on the LAN sends to infect its neighbours."""
    rng = random.Random(seed)
    frames = _Frames(rng)
    src, dst = _ip(attacker_ip), _ip(target_ip)
    out, t = [], start
    while t < end:
        out.append((t, frames.frame(attacker_mac, target_mac, src, dst, "tcp", rng.randrange(1024, 65535), dport, 74,
                                    dpkt.tcp.TH_SYN)))
        t += rng.expovariate(pps)
    return out


def write_pcap(path: str | Path, packets: list[tuple[float, bytes]]) -> Path:
    """Write (timestamp, frame) pairs as a classic pcap (Ethernet, microsecond timestamps)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    with open(tmp, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        for t, frame in packets:
            writer.writepkt(frame, ts=t)
    tmp.replace(p)
    return p


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a simulated pcap for one N-BaIoT device kind.")
    ap.add_argument("device", choices=nbaiot.DEVICES)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default %(default)s)")
    ap.add_argument("--attack", choices=nbaiot.all_attack_names(), default=None)
    ap.add_argument("--attack-start", type=float, default=300.0)
    ap.add_argument("--attack-duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    sim = TrafficSimulator(a.device, a.seed)
    try:
        packets = sim.capture(a.duration, a.attack, a.attack_start, a.attack_duration)
    except ValueError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        return 2
    write_pcap(a.out, packets)
    print(f"{a.out}: {len(packets)} packets, {a.duration:g}s"
          + (f", {a.attack} from {a.attack_start:g}s for {a.attack_duration:g}s" if a.attack else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
