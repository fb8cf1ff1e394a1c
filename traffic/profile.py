"""A device's endpoints: which services it talks to, learnt from its own capture, so `detect` can tell its traffic
from another device's (issue 33).

Why not the autoencoder alone: its 135 features describe how a host sends (sizes, rates, jitter, fan-out), and two
IoT devices' benign traffic looks alike to it (a lock hub's held-out windows scored as another lock hub: 0-5 %
flagged, bench/household.py). What differs is whom they talk to: on the three real captures each device's own
held-out packets went 100 % to endpoints of its captured time, the others' 1-3 %.

An endpoint is (scope, side, port): scope is where the other side is (`lan`: a private, link-local or loopback
address; `multicast`: multicast or broadcast; `internet`: anything else); the port is the service's: the other
side's port (`remote`) unless that is an ephemeral one (>= detect_args.ephemeral_port_from: a client's), then the
device's own (`local`: a service the device offers, e.g. to its phone app), and `EPHEMERAL` when both are (a
peer-to-peer session); 0 for packets without ports. Not "the lower port": embedded stacks pick low ephemeral ports
(a lock hub talked to port 9999 from ports 1101-9723, each new one a new "service"). Cloud addresses are
deliberately not part of it: a week of a camera's captured traffic went to four /24 networks of one cloud, one
after the other, and a new address of the same service is not another device. The profile lives beside the device's rows (`endpoints.json`, written by
`capture`) and never leaves the board: the federation learns nothing of it.
"""
from __future__ import annotations

import ipaddress
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fediot.errors import FedIoTError
from traffic.packets import PacketBatch

PROFILE_FILE = "endpoints.json"
PROFILE_FORMAT = "fediot-endpoints-v1"
SCOPES = ("lan", "multicast", "internet")
SIDES = ("remote", "local")  # whose port is the service's: the other side's, or the device's own
EPHEMERAL = -1  # the port of a packet whose two ports are both ephemeral
BROADCAST_V4 = ipaddress.ip_address("255.255.255.255").packed

Endpoint = tuple[str, str, int]


def scope_of(address: bytes, cache: dict[bytes, str]) -> str:
    """Where the other side of a packet is (cached per address: a board sees few)."""
    s = cache.get(address)
    if s is None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            s = "internet"
        else:
            if ip.is_multicast or address == BROADCAST_V4 or (ip.version == 4 and address[3] == 255):
                s = "multicast"
            elif ip.is_private or ip.is_link_local or ip.is_loopback:
                s = "lan"
            else:
                s = "internet"
        if len(cache) < 65536:
            cache[address] = s
    return s


def endpoints_of(batch: PacketBatch, idx: np.ndarray, own_ips: set[bytes] | dict[bytes, Any],
                 ephemeral_from: int, cache: dict[bytes, str] | None = None) -> list[Endpoint]:
    """The endpoint of each packet batch[idx] as seen from the device whose addresses are `own_ips`: the side that is
    not the device is the other side (a packet from the device: its destination)."""
    cache = {} if cache is None else cache
    out: list[Endpoint] = []
    src, dst, sp, dp = batch.src_ip, batch.dst_ip, batch.src_port, batch.dst_port
    for n in idx:
        if src[n] in own_ips:
            other, local, remote = dst[n], sp[n], dp[n]
        else:
            other, local, remote = src[n], dp[n], sp[n]
        if remote < ephemeral_from:
            out.append((scope_of(other, cache), "remote", int(remote)))
        elif local < ephemeral_from:
            out.append((scope_of(other, cache), "local", int(local)))
        else:
            out.append((scope_of(other, cache), "remote", EPHEMERAL))
    return out


@dataclass
class EndpointProfile:
    """The endpoints one device was captured talking to, with the packets seen of each."""

    packets: Counter = field(default_factory=Counter)

    def add(self, endpoints: list[Endpoint]) -> None:
        self.packets.update(endpoints)

    def unknown(self, endpoints: list[Endpoint]) -> np.ndarray:
        """True where a packet's endpoint is not in the profile."""
        known = self.packets
        return np.fromiter((e not in known for e in endpoints), dtype=bool, count=len(endpoints))

    def to_json(self) -> str:
        rows = [[scope, side, port, int(c)] for (scope, side, port), c in sorted(self.packets.items())]
        return json.dumps({"format": PROFILE_FORMAT, "endpoints": rows}, indent=1)

    def write(self, device_dir: Path) -> Path:
        """endpoints.json in the device's directory, written beside it and renamed into place."""
        path = device_dir / PROFILE_FILE
        tmp = device_dir / f".{PROFILE_FILE}.tmp"
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path, max_endpoints: int) -> "EndpointProfile":
        """A device's endpoints.json, checked: size before parsing, then format, count, each entry's types and
        ranges. One error naming the file and what was expected."""
        def bad(what: str) -> FedIoTError:
            return FedIoTError(f"{path}: not a FedIoT endpoint profile: {what} (capture the device again to rewrite it)")

        if not path.is_file():
            raise FedIoTError(f"{path}: no endpoint profile (capture writes one per device; capture the device again)")
        if path.stat().st_size > 64 * (max_endpoints + 16):  # an entry is ~40 bytes as written
            raise bad(f"larger than {max_endpoints} endpoints can be (detect_args.max_profile_endpoints)")
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise bad(f"unreadable JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != PROFILE_FORMAT:
            raise bad(f'"format" must be {PROFILE_FORMAT!r}')
        rows = d.get("endpoints")
        if not isinstance(rows, list) or len(rows) > max_endpoints:
            raise bad(f'"endpoints" must be a list of at most {max_endpoints} entries')
        prof = cls()
        for i, r in enumerate(rows):
            ok = (isinstance(r, list) and len(r) == 4 and r[0] in SCOPES and r[1] in SIDES
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in r[2:])
                  and EPHEMERAL <= r[2] <= 65535 and r[3] >= 1)
            if not ok:
                raise bad(f"entry {i} must be [scope in {SCOPES}, side in {SIDES}, port {EPHEMERAL}..65535, "
                          f"packets >= 1], got {r!r}"[:300])
            prof.packets[(r[0], r[1], r[2])] = r[3]
        return prof


def load_profiles(directory: Path, devices: list[str], max_endpoints: int) -> dict[str, EndpointProfile]:
    """Each watched device's profile from a capture directory (DIR/<device>/endpoints.json)."""
    if not directory.is_dir():
        raise FedIoTError(f"--profiles {directory}: not a directory (capture's --out, e.g. data/local)")
    return {d: EndpointProfile.load(directory / d / PROFILE_FILE, max_endpoints) for d in devices}
