"""make_certs.sh: a private CA and per-rank certificates that gRPC's own TLS accepts, and refuses
when they come from another CA or are missing."""
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from deployment.certs import make_certs, rank_of
from tests.deploy_helpers import free_ports
from tests.helpers import REPO


def _echo_server(certs, port: int) -> grpc.Server:
    """A gRPC server requiring client certificates from our CA; answers with the peer's names."""

    def who(_request: bytes, context) -> bytes:
        return b",".join(context.auth_context().get("x509_subject_alternative_name", []))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t", {"Who": grpc.unary_unary_rpc_method_handler(who)})])
    creds = grpc.ssl_server_credentials([((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
                                        root_certificates=(certs / "ca.pem").read_bytes(),
                                        require_client_auth=True)
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    return server


def _ask(port: int, ca, key=None, cert=None) -> bytes:
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        return channel.unary_unary("/t/Who")(b"", timeout=10)


def test_make_certs_command_and_identities(tmp_path):
    out = tmp_path / "certs"
    proc = subprocess.run(["bash", str(REPO / "make_certs.sh"), str(out), "2", "192.168.1.10", "fediot.lan"],
                          capture_output=True, text=True, timeout=60, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    for stem, rank in (("server", 0), ("client1", 1), ("client2", 2)):
        cert = x509.load_pem_x509_certificate((out / f"{stem}.pem").read_bytes())
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        assert rank_of((out / f"{stem}.pem").read_bytes()) == rank
        assert (out / f"{stem}.key").stat().st_mode & 0o077 == 0  # private keys: owner only
    san = x509.load_pem_x509_certificate((out / "server.pem").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "192.168.1.10"}
    assert {"localhost", "fediot.lan", "fediot-rank-0"} <= set(san.get_values_for_type(x509.DNSName))
    # adding boards later keeps the CA and the existing certificates
    before = (out / "client1.pem").read_bytes()
    assert make_certs(out, 3, []) == ["client3"]
    assert (out / "client1.pem").read_bytes() == before and rank_of((out / "client3.pem").read_bytes()) == 3


def test_grpc_mutual_tls_accepts_our_ranks_only(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_certs(ours, 2, [])
    make_certs(theirs, 2, [])  # another CA: a rogue board or a rogue server
    (port,) = free_ports(1)
    server = _echo_server(ours, port)
    try:
        ca = (ours / "ca.pem").read_bytes()
        names = _ask(port, ca, (ours / "client2.key").read_bytes(), (ours / "client2.pem").read_bytes())
        assert b"fediot-rank-2" in names.split(b",")  # the server reads the caller's rank from its certificate
        with pytest.raises(grpc.RpcError):  # no client certificate
            _ask(port, ca)
        with pytest.raises(grpc.RpcError):  # a client certificate from another CA
            _ask(port, ca, (theirs / "client1.key").read_bytes(), (theirs / "client1.pem").read_bytes())
        with pytest.raises(grpc.RpcError):  # a board that trusts only its own CA refuses a server from another
            _ask(port, (theirs / "ca.pem").read_bytes(), (ours / "client1.key").read_bytes(),
                 (ours / "client1.pem").read_bytes())
    finally:
        server.stop(0)


def test_bad_arguments_are_one_line(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "make_certs.sh"), str(tmp_path / "c"), "0"], capture_output=True,
                          text=True, timeout=60, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and proc.stderr.startswith("error: N = 0") and "Traceback" not in proc.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ca.pem").write_text("x")
    with pytest.raises(Exception, match="without the other"):
        make_certs(tmp_path / "half", 1, [])
