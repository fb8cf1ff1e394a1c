"""A private CA and one certificate per node, for mutual TLS between the server and the boards.

    bash make_certs.sh OUT_DIR N [SERVER_HOST ...]      (python -m deployment.certs OUT_DIR N [HOST ...])

Writes `ca.pem` + `ca.key` (the CA: keep `ca.key` off the boards), `server.pem` + `server.key`, and
`client<r>.pem` + `client<r>.key` for r = 1..N. Identities are names a certificate carries, not
addresses: the server's certificate holds `fediot-rank-0` plus 127.0.0.1, localhost and every
SERVER_HOST given (IPs or DNS names, what boards dial); client r's holds `fediot-rank-<r>`, its
common name `fediot-client-<r>`. Every node also runs a gRPC server that its peers dial, so every
certificate is good for both TLS ends. Run it again with a larger N to add boards: an existing CA
and existing certificates are kept, only missing ones are made.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fediot.console import say
from fediot.errors import ConfigError

RANK_NAME = "fediot-rank-{}"
_RANK_RE = re.compile(r"^fediot-rank-(\d+)$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FedIoT"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
    return cert, key


def _make_ca(out: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("FedIoT CA")).issuer_name(_name("FedIoT CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(out / "ca.key", key)
    (out / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_node(out: Path, stem: str, rank: int, hosts: list[str], ca: x509.Certificate,
               ca_key: ec.EllipticCurvePrivateKey, days: int, not_before: dt.datetime | None = None) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    common = "fediot-server" if rank == 0 else f"fediot-client-{rank}"
    names = [x509.DNSName(RANK_NAME.format(rank)), *(_san(h) for h in hosts)]
    cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(out / f"{stem}.key", key)
    (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_certs(out: Path, n_clients: int, server_hosts: list[str], days: int = 825) -> list[str]:
    """Create what is missing in `out` (CA, server, client1..N); returns the file stems written."""
    if not 1 <= n_clients <= 1000:
        raise ConfigError(f"N = {n_clients}; expected a number of clients in 1..1000")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if (out / "ca.pem").is_file() and (out / "ca.key").is_file():
        ca, ca_key = _load_ca(out)
    elif (out / "ca.pem").exists() or (out / "ca.key").exists():
        raise ConfigError(f"{out}: ca.pem or ca.key is there without the other; remove it or restore the pair")
    else:
        ca, ca_key = _make_ca(out, days)
        written.append("ca")
    hosts = list(dict.fromkeys([*LOOPBACK_HOSTS, *server_hosts]))
    if not (out / "server.pem").is_file():
        _make_node(out, "server", 0, hosts, ca, ca_key, days)
        written.append("server")
    for rank in range(1, n_clients + 1):
        if not (out / f"client{rank}.pem").is_file():
            _make_node(out, f"client{rank}", rank, [], ca, ca_key, days)
            written.append(f"client{rank}")
    return written


def rank_of(cert_pem: bytes) -> int | None:
    """The node rank a certificate names (`fediot-rank-<r>` in its subject alternative names)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return None
    return rank_in_names(names)


def rank_in_names(names: list[str] | list[bytes]) -> int | None:
    """The rank among a certificate's names (as gRPC's auth context lists them); None unless exactly one."""
    texts = [n.decode("ascii", "replace") if isinstance(n, bytes) else n for n in names]
    ranks = [int(m.group(1)) for m in map(_RANK_RE.match, texts) if m]
    return ranks[0] if len(ranks) == 1 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="directory for the certificates and keys")
    p.add_argument("n", type=int, help="number of clients (boards): client1..clientN")
    p.add_argument("hosts", nargs="*", help="server IPs / DNS names boards dial (127.0.0.1 and localhost always)")
    p.add_argument("--days", type=int, default=825, help="validity in days (default %(default)s)")
    a = p.parse_args(argv)
    try:
        written = make_certs(a.out, a.n, a.hosts, a.days)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"{a.out}: " + (f"wrote {', '.join(written)}" if written else "everything was already there")
        + "; copy ca.pem, client<r>.pem and client<r>.key to board r, keep ca.key off the boards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
