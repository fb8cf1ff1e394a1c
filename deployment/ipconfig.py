"""The gRPC address book: CSV `eid,rank,grpc_server_ip,grpc_server_port,ingress_ip` (FedML's format)."""
from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from fediot.errors import ConfigError

HEADER = ["eid", "rank", "grpc_server_ip", "grpc_server_port", "ingress_ip"]


@dataclass(frozen=True)
class Peer:
    rank: int
    bind_ip: str
    port: int
    ingress_ip: str

    @property
    def dial_ip(self) -> str:
        """The IP others dial to reach this peer."""
        return self.ingress_ip or self.bind_ip

    @property
    def address(self) -> str:
        """Where others reach this peer."""
        return f"{self.dial_ip}:{self.port}"


def load_ipconfig(path: str | Path) -> dict[int, Peer]:
    """Read and validate the CSV; raises ConfigError naming the file and row."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"comm_args.grpc_ipconfig_path: {p} not found (CSV with header {','.join(HEADER)})")
    with open(p, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        raise ConfigError(f"{p}: header must be {','.join(HEADER)}")
    peers: dict[int, Peer] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(HEADER):
            raise ConfigError(f"{p}: line {line_no} has {len(row)} fields; expected {len(HEADER)} ({','.join(HEADER)})")
        eid, rank, ip, port, ingress = (c.strip() for c in row)
        try:
            eid_i, rank_i, port_i = int(eid), int(rank), int(port)
        except ValueError:
            raise ConfigError(f"{p}: line {line_no}: eid, rank and grpc_server_port must be integers") from None
        if eid_i != rank_i:
            raise ConfigError(f"{p}: line {line_no}: eid {eid_i} must equal rank {rank_i}")
        if not 1 <= port_i <= 65535:
            raise ConfigError(f"{p}: line {line_no}: port {port_i} out of range 1..65535")
        for label, value in (("grpc_server_ip", ip), ("ingress_ip", ingress)):
            if value:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise ConfigError(f"{p}: line {line_no}: {label} {value!r} is not an IP address") from None
        if rank_i in peers:
            raise ConfigError(f"{p}: line {line_no}: rank {rank_i} appears twice")
        peers[rank_i] = Peer(rank_i, ip, port_i, ingress)
    if 0 not in peers:
        raise ConfigError(f"{p}: no row for rank 0 (the server)")
    return peers
