"""An attacker on the LAN, as real processes on 127.0.0.1: pickled payloads, no or foreign certificates,
expired and revoked certificates, rank spoofing, oversized messages, hostile boards with valid certificates.
Nothing runs code, every refusal is logged (and counted when it reaches FedIoT), and the run goes on."""
import datetime as dt
import json
import pickle

import grpc
import yaml

from deployment.certs import _load_ca, _make_node, make_certs
from federation.inprocess import Faults
from federation.messages import C2S_HELLO, S2C_TRAIN
from federation.wire import encode
from tests.deploy_helpers import (
    Canary, client, deploy_config, fedml_log, ipconfig_ports, read_rounds, refused, run_dir_of, send_raw, server,
)
from tests.rounds import assert_same_metrics, metrics_of, run


def test_an_attacker_on_the_lan_is_refused_and_the_run_learns_what_it_would_have(tmp_path):
    """One TLS deployment, every channel an attacker on the LAN has: pickled canaries, garbage and oversized messages
    (with no, a foreign or a valid board certificate), an expired certificate, a revoked board, rank spoofing, a
    rogue server, a board posing as the server. Nothing runs code, every refusal is logged (and counted when it
    reaches FedIoT), and the two boards that may take part learn exactly what the in-process grid learns for them
    (TLS changes who may talk, not what is learned). Plaintext mode: tests/test_deployment.py's resumed run."""
    canary = tmp_path / "canary"
    evil = pickle.dumps(Canary(canary))
    certs, foreign = tmp_path / "certs", tmp_path / "foreign"
    make_certs(certs, 3, [])
    make_certs(foreign, 3, [])  # another CA: a rogue board or a rogue server
    expired = tmp_path / "expired"
    expired.mkdir()
    ca, ca_key = _load_ca(certs)
    _make_node(expired, "client1", 1, [], ca, ca_key, days=1,
               not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10))
    (expired / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    # the server does not wait for a revoked rank (it can never join): it starts once boards 1 and 2 have joined
    cfg = deploy_config(tmp_path, comm_args={"tls_dir": str(certs), "revoked_ranks": [3], "wait_for_clients_s": 120,
                                             "max_message_mb": 1})
    ports = ipconfig_ports(cfg)
    hello_as_1 = encode(C2S_HELLO, 1, 0, {"device": "Danmini_Doorbell", "n_train": 10})
    srv = server(cfg)
    clients = []
    try:
        srv.wait_for("server listening")
        assert refused(ports[0], evil) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
        assert refused(ports[0], evil, certs) == grpc.StatusCode.UNAVAILABLE  # TLS, no client certificate
        for payload in (evil, b"\x00garbage", b"FIOT1" + bytes(1_500_000)):  # the last: over max_message_mb
            # with a valid board certificate: read, refused before it is queued (never unpickled, never decoded),
            # counted; the sender is told
            assert refused(ports[0], payload, certs, "client1") == grpc.StatusCode.RESOURCE_EXHAUSTED
        # far over the limit: refused at its first chunk past max_message_mb (counted; 4 of board 1's certificate's
        # messages were not FedIoT messages, under comm_args.quarantine_after_malformed = 5)
        assert refused(ports[0], bytes(3 * 2**20), certs, "client1") == grpc.StatusCode.RESOURCE_EXHAUSTED
        send_raw(ports[0], hello_as_1, certs, "client2")  # client 2's certificate, claiming rank 1
        assert refused(ports[0], hello_as_1, foreign, "client1", ca=certs / "ca.pem") == grpc.StatusCode.UNAVAILABLE
        assert refused(ports[0], hello_as_1, expired, "client1") == grpc.StatusCode.UNAVAILABLE
        hello_as_3 = encode(C2S_HELLO, 3, 0, {"device": "Ennio_Doorbell", "n_train": 10})
        assert refused(ports[0], hello_as_3, certs, "client3") == grpc.StatusCode.PERMISSION_DENIED  # revoked
        # a board trusts only its own CA's server: a rogue server is refused at the handshake
        assert refused(ports[0], hello_as_1, foreign, "client1") == grpc.StatusCode.UNAVAILABLE
        # the revoked board first: it is refused (and gives up) while the server still waits for the others, however
        # long its start takes beside the other test processes
        revoked = client(3, cfg)
        assert revoked.finish(120) == 5
        clients = [client(n, cfg) for n in (1, 2)] + [revoked]
        clients[0].wait_for("connecting to the server")
        assert refused(ports[1], evil) == grpc.StatusCode.UNAVAILABLE
        assert refused(ports[1], evil, certs, receiver=1) == grpc.StatusCode.UNAVAILABLE
        # another board's certificate: a board takes messages from the server only, refused before a byte is read
        assert refused(ports[1], evil, certs, "client2", receiver=1) == grpc.StatusCode.PERMISSION_DENIED
        train_as_server = encode(S2C_TRAIN, 0, 1, {"round": 0})  # a board posing as the server
        assert refused(ports[1], train_as_server, certs, "client2", receiver=1) == grpc.StatusCode.PERMISSION_DENIED
        assert refused(ports[1], train_as_server, foreign, "server", receiver=1, ca=certs / "ca.pem") \
            == grpc.StatusCode.UNAVAILABLE  # a rogue server's certificate
        assert "the server refused this board" in clients[2].stderr and "revoked" in clients[2].stderr
        assert srv.finish(240) == 0, srv.stdout + srv.stderr
        assert all(c.finish(60) == 0 for c in clients[:2]), [c.stderr for c in clients]
    finally:
        for p in (srv, *clients):
            p.kill()
    assert not canary.exists(), "a pickled payload ran code"
    assert not any("comm_args.tls is false" in line for line in srv.lines + clients[0].lines)
    run_dir = run_dir_of(srv)
    rounds = read_rounds(run_dir)
    assert sum(r["rejected"] for r in rounds) == rounds[0]["rejected"]  # all of it before the first round closed
    rejections = rounds[0]["rejections"]
    by_board_1 = [r["reason"] for r in rejections if r["from"].startswith("rank 1 (certificate")]
    assert sum("bad magic" in r for r in by_board_1) == 2 and sum("over comm_args.max_message_mb" in r for r in by_board_1) == 2
    reasons = [r["reason"] for r in rejections]
    assert "claims to be rank 1 (rank spoofing)" in reasons
    assert sum("rank 3 is revoked" in r for r in reasons) >= 2  # ours, then the real client 3's hello
    assert rounds[0]["clients"] == ["Danmini_Doorbell", "Ecobee_Thermostat"]
    log = fedml_log(run_dir)
    assert "Handshake failed" in log  # gRPC's own line for the callers without a good certificate
    assert "certificate has expired" in log
    client_log = fedml_log(run_dir_of(clients[0]))
    assert "rank 2 does not send to this node (not read)" in client_log  # refused before reading
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["global"]["tpr"] > 0.9 and sorted(m["devices"]) == ["Danmini_Doorbell", "Ecobee_Thermostat"]
    values = yaml.safe_load(cfg.read_text())
    values["common_args"]["run_dir_root"] = str(tmp_path / "in-process")
    _, _, in_process = run(values, Faults(absent_until={"Ennio_Doorbell": 10**6}))
    assert_same_metrics(m, metrics_of(in_process))


def test_hostile_boards_neither_crash_exhaust_nor_stall_the_server(tmp_path):
    """Issue 22's reproductions 1-3 and issue 34's quarantine with real processes, in one deployment
    (bench/bench_flood.py --overflow): board 2 sends feature statistics whose sums overflow (its hellos are refused
    and, breaking the protocol's bounds again and again, quarantine it), board 3 validation statistics whose square
    overflows (this crashed the server at every evaluation) while its certificate also sends decoding bombs at the
    limits, one after another (8): the fifth message of its that is not a FedIoT message quarantines it, and the
    server goes on without it at once (the round deadline is 120 s). Board 1 is honest: it takes part in every round. The
    server's RSS grows by at most 300 MB."""
    import subprocess
    import sys

    from tests.helpers import REPO

    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_flood.py"), "--messages", "8", "--threads", "1",
                           "--rounds", "20", "--epochs", "2", "--rows", "3000", "--overflow", "--bomb-cert", "3",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
    assert r["run_finished"] and r["rounds"] == list(range(1, 21)) and r["rss_growth_mb"] <= 300
    assert r["quarantined"] == [2, 3], r["quarantined"]
    assert all("Danmini_Doorbell" in c and "Ecobee_Thermostat" not in c for c in r["clients_of_rounds"])
    with_3 = ["Ennio_Doorbell" in c for c in r["clients_of_rounds"]]
    assert with_3 == sorted(with_3, reverse=True)  # board 3 until its quarantine, never after
    assert any(k.startswith("PERMISSION_DENIED: quarantined") for k in r["outcomes"]), r["outcomes"]  # the last bombs: the
    # fifth strike is counted when the receive thread has decoded the fifth bomb, so the sixth may still be read
    assert all(s < 60 for s in r["eval_seconds"]) and r["devices_evaluated"] == ["Danmini_Doorbell"]
    reasons = r["rejections"]
    assert any(x["from"].startswith("rank 2") and "feature_stats: feature 0" in x["reason"] for x in reasons)
    assert sum(x["from"].startswith("rank 3 (certificate") and "tensor(s)" in x["reason"] for x in reasons) >= 1
