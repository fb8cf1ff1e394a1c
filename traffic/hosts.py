"""Which hosts of your LAN a capture holds: the inventory to name your devices from (issue 36: finding a device's
address needed tcpdump).

One row per LAN address (private, link-local; IPv4 or IPv6) that sent packets: the MAC(s) it sent from, packets and
bytes it sent, packets it received, first and last seen. Addresses outside the LAN are summed, not listed (the gateway
forwards them all from its one MAC). Bounded: at most `max_hosts` addresses are kept (the rest counted).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable

from traffic.packets import PacketBatch

MAX_MACS_PER_HOST = 8  # a host seen from more MACs than this (a spoofer, a bridge) lists the first ones


@dataclass
class Host:
    ip: str
    macs: list[str] = field(default_factory=list)
    sent: int = 0
    sent_bytes: int = 0
    received: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class HostTable:
    """The LAN hosts of a stream of packet batches (`traffic.packets`)."""

    def __init__(self, max_hosts: int) -> None:
        self.max_hosts = max_hosts
        self.hosts: dict[bytes, Host] = {}
        self.lan: dict[bytes, bool] = {}  # address -> whether it is a LAN address (cached; bounded with `hosts`)
        self.not_kept = 0  # packets of LAN hosts beyond max_hosts
        self.remote_packets = 0  # packets from addresses outside the LAN

    def _is_lan(self, address: bytes) -> bool:
        known = self.lan.get(address)
        if known is None:
            ip = ipaddress.ip_address(address)
            known = (bool(ip.is_private or ip.is_link_local) and not ip.is_loopback and not ip.is_multicast
                     and not ip.is_unspecified)  # 0.0.0.0 and :: are a host with no address yet (DHCP, DAD)
            if len(self.lan) < 4 * self.max_hosts:
                self.lan[address] = known
        return known

    def add(self, batch: PacketBatch) -> None:
        for t, size, mac, src, dst in zip(batch.time, batch.size, batch.src_mac, batch.src_ip, batch.dst_ip):
            if self._is_lan(src):
                host = self.hosts.get(src)
                if host is None:
                    if len(self.hosts) >= self.max_hosts:
                        self.not_kept += 1
                        continue
                    host = self.hosts[src] = Host(str(ipaddress.ip_address(src)), first_seen=t)
                host.sent += 1
                host.sent_bytes += size
                host.last_seen = max(host.last_seen, t)
                m = mac.hex(":")
                if m not in host.macs and len(host.macs) < MAX_MACS_PER_HOST:
                    host.macs.append(m)
            else:
                self.remote_packets += 1
            receiver = self.hosts.get(dst)
            if receiver is not None:
                receiver.received += 1

    def rows(self) -> list[Host]:
        """The hosts, busiest first."""
        return sorted(self.hosts.values(), key=lambda h: (-h.sent - h.received, h.ip))

    def as_dict(self) -> dict[str, Any]:
        return {"hosts": [vars(h) for h in self.rows()], "remote_packets": self.remote_packets,
                "lan_packets_not_kept": self.not_kept, "max_hosts": self.max_hosts}


def list_hosts(batches: Iterable[tuple[PacketBatch, Any]], max_hosts: int) -> HostTable:
    table = HostTable(max_hosts)
    for batch, _skipped in batches:
        table.add(batch)
    return table


def table_text(table: HostTable) -> str:
    """The inventory as a table for a person: address, MAC(s), packets, first and last seen (UTC)."""
    import time

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    lines = [f"{'address':<40} {'MAC':<17} {'sent':>9} {'received':>9} {'first seen (UTC)':<19}  last seen (UTC)"]
    for h in table.rows():
        lines.append(f"{h.ip:<40} {', '.join(h.macs):<17} {h.sent:>9,} {h.received:>9,} {when(h.first_seen):<19}  "
                     f"{when(h.last_seen)}")
    beyond = f"; {table.not_kept:,} packet(s) of hosts beyond the first {table.max_hosts}" if table.not_kept else ""
    lines.append(f"{len(table.hosts)} LAN host(s); {table.remote_packets:,} packet(s) from outside the LAN{beyond}")
    return "\n".join(lines)
