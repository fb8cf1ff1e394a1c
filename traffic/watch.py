"""Which device a packet belongs to: a device named with its addresses (IPs, MACs), as detect --watch and capture
--device take them. One definition for the rows a device learns from and the packets its detector scores."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import numpy as np

from fediot.errors import FedIoTError
from traffic.packets import PacketBatch

@dataclass
class Watch:
    """A watched device: its name (as in the federation) and its addresses (IPs, and MACs whose IPs are learnt from
    the packets they send)."""

    device: str
    ips: set[bytes] = field(default_factory=set)
    macs: set[bytes] = field(default_factory=set)


def parse_watch(spec: str) -> Watch:
    """NAME=ADDR[,ADDR...] with IPv4/IPv6 addresses or MACs (aa:bb:cc:dd:ee:ff)."""
    name, sep, addresses = spec.partition("=")
    if not sep or not name or not addresses:
        raise FedIoTError(f"{spec!r}: expected NAME=ADDR[,ADDR...] (an IP or a MAC address)")
    w = Watch(name)
    for a in addresses.split(","):
        a = a.strip()
        if re.fullmatch(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}", a):
            w.macs.add(bytes.fromhex(re.sub(r"[:-]", "", a)))
            continue
        try:
            w.ips.add(ipaddress.ip_address(a).packed)
        except ValueError:
            raise FedIoTError(f"{spec!r}: {a!r} is neither an IP nor a MAC address") from None
    return w


class Watcher:
    """Which watched device each packet belongs to (-1: none): a packet from or to one of its IPs, or from one of
    its MACs (whose source IP is then learnt as the device's)."""

    def __init__(self, watches: list[Watch]) -> None:
        self.devices = [w.device for w in watches]
        if len(set(self.devices)) != len(self.devices):
            raise FedIoTError(f"a device is named twice: {self.devices}")
        self.by_ip = {ip: i for i, w in enumerate(watches) for ip in w.ips}
        self.by_mac = {mac: i for i, w in enumerate(watches) for mac in w.macs}
        self.learnt: dict[str, set[str]] = {}

    def ips_of(self, index: int) -> set[bytes]:
        """The IPs of watched device `index`: those it was named with and those learnt from its MACs' packets."""
        return {ip for ip, i in self.by_ip.items() if i == index}

    def of(self, batch: PacketBatch) -> np.ndarray:
        out = np.full(len(batch), -1, dtype=np.int64)
        by_ip, by_mac = self.by_ip, self.by_mac
        for n in range(len(batch)):
            i = by_mac.get(batch.src_mac[n]) if by_mac else None
            if i is not None:
                if batch.src_ip[n] not in by_ip:
                    by_ip[batch.src_ip[n]] = i
                    self.learnt.setdefault(self.devices[i], set()).add(str(ipaddress.ip_address(batch.src_ip[n])))
                out[n] = i
                continue
            i = by_ip.get(batch.src_ip[n])
            if i is None:
                i = by_ip.get(batch.dst_ip[n])
            if i is not None:
                out[n] = i
        return out


class SilenceWatch:
    """Watched devices that have sent nothing for longer than their own normal silence (issue 36: a device whose
    address changed, unplugged or dead was silently unwatched). limits[d]: device d's silence that is an alert (None:
    not judged); the clock is packet time (a live capture's idle batches carry wall-clock time)."""

    def __init__(self, limits: list[float | None]) -> None:
        self.limits = limits
        self.last: list[float | None] = [None] * len(limits)
        self.silent = [False] * len(limits)
        self.alerts = [0] * len(limits)

    def heard(self, d: int, t: float) -> None:
        """Device d sent (or received) a packet at t: it is not silent."""
        self.last[d] = t if self.last[d] is None else max(self.last[d], t)
        self.silent[d] = False

    def check(self, now: float) -> list[tuple[int, float]]:
        """(device, seconds silent) for each device that has just become silent; each silence is said once. A device
        never heard is silent from when detection started."""
        out = []
        for d, limit in enumerate(self.limits):
            if limit is None:
                continue
            if self.last[d] is None:
                self.last[d] = now
            elif not self.silent[d] and now - self.last[d] > limit:
                self.silent[d] = True
                self.alerts[d] += 1
                out.append((d, now - self.last[d]))
        return out
