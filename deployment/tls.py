"""Which certificates a deployment node uses, decided once at start with clear errors.

A node's identity is its certificate (`fediot-rank-<r>`, made by `make_certs.sh`), so a loopback
quick start gets certificates made for it on first use, and a LAN config without certificates is
an error, never a silent fallback to plaintext. Plaintext needs `comm_args.tls: false` and is
warned about on every start.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from deployment.certs import make_certs, rank_of
from deployment.ipconfig import Peer
from fediot.console import say
from fediot.errors import ConfigError
from fediot.rundir import repo_path

LOOPBACK_DIR = "loopback-certs"  # under common_args.run_dir_root (git-ignored, like the runs)
PLAINTEXT_WARNING = ("warning: comm_args.tls is false: models, statistics and counts travel in plaintext and any "
                     "host that can reach these ports can pose as any rank; use it on loopback only")


@dataclass(frozen=True)
class TlsIdentity:
    """What one node needs for mutual TLS: the CA it trusts and its own certificate and key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes
    revoked: frozenset[int]
    source: Path


def node_files(tls_dir: Path, rank: int) -> tuple[Path, Path]:
    stem = "server" if rank == 0 else f"client{rank}"
    return tls_dir / f"{stem}.pem", tls_dir / f"{stem}.key"


def is_loopback(peer: Peer) -> bool:
    """Whether others reach this peer on the loopback interface only."""
    try:
        return ipaddress.ip_address(peer.dial_ip).is_loopback
    except ValueError:
        return False


def _loopback_certs(root: Path, n_clients: int) -> Path:
    """Certificates for a loopback run, made once (server and clients may start at the same moment)."""
    out = root / LOOPBACK_DIR
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        written = make_certs(out, n_clients, [])
    if written:
        say(f"made loopback certificates for mutual TLS in {out} (first use; loopback only: for a LAN, "
            f"bash make_certs.sh and comm_args.tls_dir)")
    return out


def load_identity(tls_dir: Path, rank: int, revoked: list[int]) -> TlsIdentity:
    """Read and check this node's certificate files; ConfigError naming the file when one is unusable."""
    cert_path, key_path = node_files(tls_dir, rank)
    make = f"bash make_certs.sh {tls_dir} N [SERVER_HOST ...]"
    for path in (tls_dir / "ca.pem", cert_path, key_path):
        if not path.is_file():
            raise ConfigError(f"comm_args.tls_dir: {path} not found (make the files with {make} and copy ca.pem, "
                              f"{cert_path.name} and {key_path.name} to this node)")
    ca, cert, key = ((tls_dir / "ca.pem").read_bytes(), cert_path.read_bytes(), key_path.read_bytes())
    try:
        parsed = x509.load_pem_x509_certificate(cert)
        x509.load_pem_x509_certificate(ca)
    except ValueError as exc:
        raise ConfigError(f"comm_args.tls_dir: {cert_path} or ca.pem is not a PEM certificate ({exc})") from None
    named = rank_of(cert)
    if named != rank:
        raise ConfigError(f"{cert_path} names rank {named}, but this node is rank {rank}; every node needs its own "
                          f"certificate ({make})")
    now = dt.datetime.now(dt.timezone.utc)
    if not parsed.not_valid_before_utc <= now <= parsed.not_valid_after_utc:
        raise ConfigError(f"{cert_path} is valid from {parsed.not_valid_before_utc:%Y-%m-%d} to "
                          f"{parsed.not_valid_after_utc:%Y-%m-%d}, not now; make a new one with {make}")
    return TlsIdentity(ca, cert, key, frozenset(revoked), tls_dir)


def resolve(cfg, peers: dict[int, Peer], rank: int) -> TlsIdentity | None:
    """This node's TLS identity, or None for plaintext (`comm_args.tls: false`, warned here)."""
    if not cfg.comm.tls:
        say(PLAINTEXT_WARNING)
        return None
    if cfg.comm.tls_dir is not None:
        tls_dir = repo_path(cfg.comm.tls_dir)
        if not tls_dir.is_dir():
            raise ConfigError(f"comm_args.tls_dir: {tls_dir} is not a directory (make it with bash make_certs.sh "
                              f"{cfg.comm.tls_dir} {len(cfg.devices)} SERVER_HOST)")
    elif all(is_loopback(p) for p in peers.values()):
        tls_dir = _loopback_certs(repo_path(cfg.common.run_dir_root), len(cfg.devices))
    else:
        lan = sorted({p.dial_ip for p in peers.values() if not is_loopback(p)})
        raise ConfigError(f"comm_args.tls_dir is not set and the ipconfig has LAN addresses ({', '.join(lan)}): "
                          f"make certificates with bash make_certs.sh certs/lan {len(cfg.devices)} "
                          f"{peers[0].dial_ip}, set comm_args.tls_dir: certs/lan and copy "
                          f"ca.pem + client<r>.pem/.key to board r (or comm_args.tls: false for plaintext)")
    return load_identity(tls_dir, rank, list(cfg.comm.revoked_ranks))
