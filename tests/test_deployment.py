"""Real deployment as real processes on 127.0.0.1: run_server.sh + run_client.sh over gRPC.

What is about processes lives here (launchers, ports, TLS, start order, timeouts, a board killed and restarted, a
server killed and resumed, exit codes); the round rules (dropout, quorum, rejoin, resume, attacks vs defenses) run on
the in-process grid (tests/test_rounds.py)."""
import json
import pickle
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest

from tests.deploy_helpers import (
    DEVICES, Canary, client, deploy_config, fedml_log, ipconfig_ports, read_rounds, refused, run_dir_of, server,
)
from tests.rounds import assert_same_as_golden


def test_server_and_three_clients_one_started_before_the_server(tmp_path):
    # the clients' own config says lr 0.5 and no decay: only the server's plan decides what they train with
    cfg = deploy_config(tmp_path, train_args={"learning_rate": 0.004, "lr_decay": 0.5})
    client_cfg = deploy_config(tmp_path / "boards", train_args={"learning_rate": 0.5, "lr_decay": 1.0})
    import yaml
    raw = yaml.safe_load(client_cfg.read_text())
    raw["comm_args"]["grpc_ipconfig_path"] = yaml.safe_load(cfg.read_text())["comm_args"]["grpc_ipconfig_path"]
    # boards have their own run directories, so both configs name one set of certificates (make_certs.sh's)
    from deployment.certs import make_certs
    make_certs(tmp_path / "certs", 3, [])
    raw["comm_args"]["tls_dir"] = str(tmp_path / "certs")
    client_cfg.write_text(yaml.safe_dump(raw))
    server_raw = yaml.safe_load(cfg.read_text())
    server_raw["comm_args"]["tls_dir"] = str(tmp_path / "certs")
    cfg.write_text(yaml.safe_dump(server_raw))
    # board 1 starts before the server: it keeps retrying its hello until the server is there
    clients = [client(1, client_cfg)]
    srv = None
    try:
        clients[0].wait_for("connecting to the server")
        runs = Path(raw["common_args"]["run_dir_root"])
        deadline = time.monotonic() + 60  # until the board's log shows a hello that found no server
        while not any("send fediot_hello to 0 failed" in f.read_text() for f in runs.glob("*client1*/logs/*.log")):
            assert time.monotonic() < deadline and clients[0].p.poll() is None, clients[0].stderr
            time.sleep(0.1)
        assert clients[0].p.poll() is None
        srv = server(cfg)
        clients += [client(n, client_cfg) for n in (2, 3)]
        assert srv.finish(240) == 0, srv.stdout + srv.stderr
        assert all(c.finish(60) == 0 for c in clients), [c.stderr for c in clients]
    finally:
        for p in (srv, *clients):
            if p is not None:
                p.kill()
    run_dir = run_dir_of(srv)  # the run directory is the server's last line
    m = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(m["devices"]) == sorted(DEVICES)
    assert m["data"]["source"] == "synthetic"
    assert m["global"]["tpr"] > 0.9 and m["global"]["roc_auc"] > 0.9
    assert_same_as_golden(m, "deployment-3-boards.metrics.json")  # the in-process grid gives the same (test_rounds)
    rounds = read_rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [r["round"] for r in rounds if "eval" in r] == [2, 3]
    assert all(r["bytes_sent"] > 0 and not r["dropped"] for r in rounds)
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "report.md", "curves.json",
                 "figures/federated-deployment_roc.png"):
        assert (run_dir / name).is_file(), name
    assert "waiting for clients: 3/3 connected" in srv.stdout
    # a client never ships rows: its run directory holds its own training records only
    cdir = run_dir_of(clients[0])
    assert (cdir / "Danmini_Doorbell.jsonl").is_file()
    assert "FedML" not in srv.stdout and "Traceback" not in srv.stderr
    # the server owns the round's lr: every client trained with exactly the lr the server recorded
    server_lr = {r["round"]: r["lr"] for r in rounds}
    assert len(set(server_lr.values())) == 3  # the schedule decays, so a client recomputing it would show
    for c, device in zip(clients, DEVICES):
        trained = [json.loads(line) for line in (run_dir_of(c) / f"{device}.jsonl").read_text().splitlines()]
        assert {t["round"]: t["lr"] for t in trained} == server_lr, device
    assert server_lr == {1: 0.004, 2: 0.002, 3: 0.001}
    # each board keeps the newest evaluated model with its device's own threshold for detect --follow (issue 23)
    from model.lean import LeanDetector
    for c, device in zip(clients, DEVICES):
        live = LeanDetector.load(run_dir_of(c) / "detector" / "model.npz")
        assert live.meta["round"] == 3 and live.device_thresholds == {
            device: m["devices"][device]["modes"]["device"]["thresholds"][device]}, device


ROUNDS_KILLED = 8


def test_client_killed_mid_run_then_rejoins(tmp_path):
    # Board 1 is stopped (SIGSTOP) while board 3 is killed and comes back: the next round waits for board 1 (its
    # request's send, then its answer), so the run is still on when board 3 rejoins (~10 s), without training for
    # that long. (It trained 36 rounds x 10 epochs to last that long: a minute of CPU in CI.)
    cfg = deploy_config(tmp_path, train_args={"comm_round": ROUNDS_KILLED, "round_timeout_s": 240,
                                              "min_clients_per_round": 2},
                        validation_args={"frequency_of_the_test": ROUNDS_KILLED // 2},
                        comm_args={"send_timeout_s": 240})  # a stopped board is not "unreachable" within the test
    srv = server(cfg)
    clients = {n: client(n, cfg) for n in (1, 2, 3)}
    try:
        # the boards start, join and train a round before this; on a loaded CI machine that took over 120 s (issue
        # 34, item 9): the test is about the restart, not about speed
        srv.wait_for(f"round 2/{ROUNDS_KILLED}", timeout=300)
        clients[1].p.send_signal(signal.SIGSTOP)  # the run waits for board 1 ...
        clients[3].p.send_signal(signal.SIGKILL)  # ... while board 3 dies (no goodbye)
        clients[3].p.wait()
        said_before = len(srv.lines)
        clients[3] = client(3, cfg)  # and comes back
        deadline = time.monotonic() + 300  # board 3's own line (a CI run waiting for any "(re)joined" went on early)
        while not any("client 3 (Ennio_Doorbell) (re)joined" in line for line in srv.lines[said_before:]):
            assert time.monotonic() < deadline and srv.p.poll() is None, srv.stdout + srv.stderr
            time.sleep(0.2)
        clients[1].p.send_signal(signal.SIGCONT)
        assert srv.finish(300) == 0, srv.stdout + srv.stderr
        assert clients[1].finish(60) == 0 and clients[2].finish(60) == 0
        assert clients[3].finish(60) == 0
    finally:
        for p in (srv, *clients.values()):
            p.kill()  # SIGKILL ends a stopped process too
    run_dir = run_dir_of(srv)
    rounds = read_rounds(run_dir)
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS_KILLED + 1))  # every round done
    dropped_rounds = [r["round"] for r in rounds if "Ennio_Doorbell" in r["dropped"]]
    assert dropped_rounds, "the killed client is recorded as dropped"
    assert any("Ennio_Doorbell" in r["clients"] for r in rounds if r["round"] > max(dropped_rounds))  # rejoined
    assert "(re)joined" in srv.stdout
    assert (run_dir / "metrics.json").is_file() and (run_dir / "model.pt").is_file()


def test_server_killed_and_resumed_in_plaintext_mode(tmp_path):
    """The server killed (SIGKILL) and resumed from its checkpoint; in plaintext mode (comm_args.tls false), which is
    warned on every start and still refuses what is not a FedIoT message before decoding it."""
    canary = tmp_path / "canary"
    evil = pickle.dumps(Canary(canary))
    cfg = deploy_config(tmp_path, train_args={"comm_round": 10, "epochs": 1}, comm_args={"tls": False},
                        data_args={"synthetic_benign_rows": 3000}, validation_args={"frequency_of_the_test": 10})
    ports = ipconfig_ports(cfg)
    import deployment.grpc_transport  # noqa: F401 - send_raw's, imported now
    srv = server(cfg)
    clients = [client(1, cfg)]
    try:  # the server waits for all 3 boards: nothing starts before the attacks
        srv.wait_for("server listening")
        for payload in (evil, b"\x00garbage"):
            assert refused(ports[0], payload) == grpc.StatusCode.RESOURCE_EXHAUSTED
        clients[0].wait_for("connecting to the server")
        assert refused(ports[1], evil) == grpc.StatusCode.RESOURCE_EXHAUSTED
        clients += [client(n, cfg) for n in (2, 3)]
        srv.wait_for("round 3/10", timeout=300)
        run_dir = Path(srv.wait_for("run directory").split("run directory ")[-1])
        srv.p.send_signal(signal.SIGKILL)
        srv.p.wait()
        import torch
        done = torch.load(run_dir / "checkpoint.pt", weights_only=False)["round_done"]
        assert done >= 3
        srv2 = server(cfg, "--resume", str(run_dir))
        srv2.wait_for(f"resuming {run_dir} after round {done}")
        assert srv2.finish(240) == 0, srv2.stdout + srv2.stderr
        assert all(c.finish(60) == 0 for c in clients)
    finally:
        for p in (srv, *clients):
            p.kill()
    rounds = read_rounds(run_dir)
    numbers = [r["round"] for r in rounds]
    assert sorted(set(numbers)) == list(range(1, 11))  # no completed round lost
    assert numbers[-1] == 10 and (run_dir / "metrics.json").is_file()
    assert run_dir_of(srv2) == run_dir
    assert not canary.exists(), "a pickled payload ran code"
    # plaintext is warned on every start, by the server (twice: started and resumed) and by each board
    said = srv.lines + srv2.lines + [line for c in clients for line in c.lines]
    assert sum(line.startswith("warning: comm_args.tls is false") for line in said) == 5
    refusals = [r for record in rounds for r in record.get("rejections", [])]
    assert sum("bad magic" in r["reason"] and r["from"].startswith("a peer (ipv4:127.0.0.1") for r in refusals) == 2
    assert "rejected: not a FedIoT message (bad magic)" in fedml_log(run_dir_of(clients[0]))


def test_client_gives_up_after_connect_timeout(tmp_path):
    cfg = deploy_config(tmp_path, n_clients=1, comm_args={"connect_timeout_s": 2, "retry_interval_s": 0.5})
    c1 = client(1, cfg)
    assert c1.finish(60) == 4
    assert "server unreachable for comm_args.connect_timeout_s = 2s" in c1.stderr


@pytest.mark.parametrize("case", ["backend", "missing_csv", "bad_csv", "rank_missing", "n_range", "port_in_use",
                                  "lan_without_certs", "wildcard_bind", "tls_dir_incomplete", "wrong_certificate"])
def test_bad_deployment_config_is_one_clear_line(tmp_path, case):
    import yaml
    cfg = deploy_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    ipconfig = Path(raw["comm_args"]["grpc_ipconfig_path"])
    who, expect = "server", None
    blocker = None
    if case == "backend":
        raw["comm_args"]["backend"] = "MQTT_S3"
        expect = "comm_args.backend = 'MQTT_S3'"
    elif case == "missing_csv":
        raw["comm_args"]["grpc_ipconfig_path"] = str(tmp_path / "nope.csv")
        expect = "nope.csv not found"
    elif case == "bad_csv":
        ipconfig.write_text("eid,rank,ip\n0,0,127.0.0.1\n")
        expect = "header must be eid,rank,grpc_server_ip,grpc_server_port,ingress_ip"
    elif case == "rank_missing":
        lines = ipconfig.read_text().splitlines()
        ipconfig.write_text("\n".join(lines[:-1]) + "\n")
        expect = "no row for rank(s) 3"
    elif case == "n_range":
        who, expect = "client7", "client rank 7 out of range"
    elif case == "port_in_use":
        port = int(ipconfig.read_text().splitlines()[1].split(",")[3])
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        expect = f"cannot listen on 127.0.0.1:{port}"
    elif case == "lan_without_certs":  # a board on the LAN: never a silent fallback to plaintext
        lines = ipconfig.read_text().splitlines()
        lines[2] = lines[2].replace("127.0.0.1", "192.168.1.21")
        ipconfig.write_text("\n".join(lines) + "\n")
        expect = "comm_args.tls_dir is not set and the ipconfig has LAN addresses (192.168.1.21)"
    elif case == "wildcard_bind":
        ipconfig.write_text(ipconfig.read_text().replace("127.0.0.1", "0.0.0.0", 1))
        expect = "rank 0 has grpc_server_ip 0.0.0.0; put the address this node listens on"
    elif case == "tls_dir_incomplete":
        from deployment.certs import make_certs
        make_certs(tmp_path / "certs", 3, [])
        (tmp_path / "certs" / "server.key").unlink()
        raw["comm_args"]["tls_dir"] = str(tmp_path / "certs")
        expect = f"comm_args.tls_dir: {tmp_path / 'certs' / 'server.key'} not found"
    elif case == "wrong_certificate":  # a board given another board's files
        from deployment.certs import make_certs
        make_certs(tmp_path / "certs", 3, [])
        for ext in ("pem", "key"):
            (tmp_path / "certs" / f"client3.{ext}").write_bytes((tmp_path / "certs" / f"client2.{ext}").read_bytes())
        raw["comm_args"]["tls_dir"] = str(tmp_path / "certs")
        who, expect = "client3", "client3.pem names rank 2, but this node is rank 3"
    cfg.write_text(yaml.safe_dump(raw))
    from deployment.launch import run_deployment
    from fediot.errors import FedIoTError

    try:  # the checks run in this process (each is one FedIoTError); the launcher's one-line output: below
        with pytest.raises(FedIoTError) as failed:
            run_deployment(str(cfg), "server" if who == "server" else "client",
                           0 if who == "server" else int(who.removeprefix("client")), None)
    finally:
        if blocker:
            blocker.close()
    assert expect in str(failed.value) and "\n" not in str(failed.value)


def test_a_bad_deployment_config_is_one_error_line_from_the_launcher(tmp_path):
    """What run_server.sh / run_client.sh print for a bad config: exit 2, one `error:` line, no traceback."""
    import yaml
    cfg = deploy_config(tmp_path)
    raw = yaml.safe_load(cfg.read_text())
    raw["comm_args"]["backend"] = "MQTT_S3"
    cfg.write_text(yaml.safe_dump(raw))
    for proc in (server(cfg), client(7, cfg)):
        assert proc.finish(60) == 2, proc.stderr
        errors = [line for line in proc.err if line.startswith("error:")]
        assert len(errors) == 1 and "comm_args.backend = 'MQTT_S3'" in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr



def test_a_deployment_refuses_attack_args_without_red_team(tmp_path, monkeypatch):
    """attack_args in a deployment config made a board malicious (issue 35): refused, for the server and every
    board, unless attack_args.red_team is true, which every start then says; the honest client never sees them."""
    import io

    import pytest
    import yaml

    from deployment.launch import run_deployment
    from fediot import console
    from fediot.errors import ConfigError

    out = io.StringIO()
    monkeypatch.setattr(console, "_OUT", out)
    cfg = deploy_config(tmp_path, attack_args={"malicious_ranks": [2], "attack": "flood"})
    for role, rank in (("server", 0), ("client", 1), ("client", 2)):
        with pytest.raises(ConfigError, match=r"attack_args make rank\(s\) \[2\] malicious \(flood\); a deployment "
                                              r"refuses that unless attack_args.red_team: true"):
            run_deployment(str(cfg), role, rank, None)
    raw = yaml.safe_load(cfg.read_text())
    raw["attack_args"]["red_team"] = True
    raw["comm_args"]["grpc_ipconfig_path"] = None  # stop right after the check: the next error is the ipconfig's
    cfg.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="grpc_ipconfig_path is not set"):
        run_deployment(str(cfg), "client", 2, None)
    said = out.getvalue()
    assert "RED TEAM: attack_args make rank(s) [2] malicious (flood" in said and "this board is one of them" in said


def test_port_check_ignores_time_wait_but_not_a_listener():
    """A board restarted right after its process closed connections (TIME_WAIT on its port) may bind
    again, as gRPC itself would; a live listener on the port is still one clear error."""
    import pytest

    from deployment.launch import check_port_free
    from fediot.errors import ConfigError

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's own server sockets
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # this side closes first: TIME_WAIT on (127.0.0.1, port)
    peer.close()
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        check_port_free("127.0.0.1", port, "test")  # the listener is still there
    listener.close()
    check_port_free("127.0.0.1", port, "test")  # only TIME_WAIT left: free for a restarted board
