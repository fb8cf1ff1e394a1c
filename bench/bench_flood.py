"""A certified board floods the server with decoding bombs while the federation runs (issue 22, reproduction 3).

    .venv/bin/python bench/bench_flood.py [--messages 40] [--threads 4] [--rounds 60]

A loopback deployment (mutual TLS, 3 boards, synthetic data) whose board 3 is compromised: besides taking part
honestly, its certificate sends `--messages` decoding bombs on `--threads` threads once the server is training: the
strongest that stays inside the limits — a message just under comm_args.max_message_mb whose header is just under
the header limit and holds nothing but empty tensor entries (~90,000; issue 22's had 1.9 M in a 63 MiB header, which
the limits now refuse unread). Each must be parsed before its tensor count can be refused. Measured side by side in one run:
the server's RSS idle (waiting for boards) and its peak during the flood (sampled every 0.1 s from /proc), how the
bombs were answered (refused by the size-bounded decoder, RESOURCE_EXHAUSTED by the inbox or gRPC), the gap between
the server's round lines during the flood vs before it, and whether every round completed with all 3 boards.
With --board-flood K, board 1 runs the harness's `flood` attack (attack_args): its own runtime sends K bombs after
each honest answer. With --slow-upload K, the certificate also keeps K calls open that send an 8 MB message at ~2 KB/s
(issue 34 reproduction 1), reopening each one that ends, for the whole run. --bomb-cert picks the certificate (3).
A certificate that sends comm_args.quarantine_after_malformed bombs is quarantined: its board leaves the run. With --overflow, boards 2 and 3 also lie in their numbers (attack_args stats_overflow and val_overflow: issue 22's
reproductions 1 and 2): board 2's hello is refused, board 3's validation statistics at every evaluation.
Prints a JSON summary; exit status 1 when the run did not finish, a round missed an honest board, or the RSS grew
more than 300 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from deployment.grpc_transport import chunks_of, send_over  # noqa: E402
from tests.deploy_helpers import Proc, channel_to, client, deploy_config, ipconfig_ports, read_rounds, run_dir_of, send_raw, server  # noqa: E402

RSS_GROWTH_LIMIT_MB = 300
BUSY_RETRIES, BUSY_PAUSE_S = 40, 0.05  # one bomb thread: a bomb refused while another is read or waits is sent again


def stale_update(rank: int, cfg) -> bytes:
    """A well-formed, valid UPDATE of board `rank`'s client: the run's model, for round 0 (late once the run is past
    it): it passes every check but the round's, so no quarantine can count it."""
    from federation.messages import C2S_UPDATE, Update
    from federation.wire import encode
    from data import nbaiot
    from model.autoencoder import AutoEncoder, state_of

    client = cfg.clients[rank - 1]
    model = AutoEncoder(len(nbaiot.feature_columns(cfg.data.dataset)))
    update = Update(0, client, state_of(model), 100, 0.1, 0.001, 1.0)
    return encode(C2S_UPDATE, rank, 0, update.to_fields())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=40)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=60, help="enough that the run outlasts the flood")
    p.add_argument("--epochs", type=int, default=5, help="train_args.epochs of the honest boards")
    p.add_argument("--rows", type=int, default=2000, help="data_args.synthetic_benign_rows of each board")
    p.add_argument("--overflow", action="store_true", help="boards 2 and 3 also send overflowing statistics")
    p.add_argument("--board-flood", type=int, default=0, metavar="K",
                   help="board 1 also runs attack_args.attack: flood (honest answers, each followed by K decoding bombs "
                        "sent by the board's own runtime)")
    p.add_argument("--bomb-cert", type=int, default=3, help="the board whose certificate the LAN attacker holds")
    p.add_argument("--absent", action="store_true",
                   help="that board does not run: only the attacker has its certificate (the server starts without it "
                        "after comm_args.wait_for_clients_s = 40 s); the rounds then show what the attack costs the others")
    p.add_argument("--slow-upload", type=int, default=0, metavar="K",
                   help="K calls from that certificate sending 8 MB at ~2 KB/s, reopened when they end")
    p.add_argument("--valid-flood", type=int, default=0, metavar="K",
                   help="K threads sending, from that certificate, well-formed and valid UPDATEs of the right model for a "
                        "round long past, as fast as they are taken (refused as late: the strongest flood no quarantine "
                        "stops), for the whole run")
    p.add_argument("--new-connections", action="store_true",
                   help="--valid-flood opens a new TLS connection for each message (each a handshake the server pays) "
                        "instead of one connection per thread")
    p.add_argument("--no-front", action="store_true", help="comm_args.front: false (gRPC listens without the front)")
    p.add_argument("--pin", action="store_true",
                   help="the federation (server and boards) on CPU 0, this process's attacker threads on CPU 1: an "
                        "attacker on a machine of its own, as on a LAN (unpinned, they share this machine's cores)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    import tempfile

    from deployment.certs import make_certs

    tmp = Path(a.out or tempfile.mkdtemp(prefix="fediot-flood-"))
    certs = tmp / "certs"
    make_certs(certs, 3, [])
    training = {1, 3} if a.overflow else {1, 2, 3}  # a board whose hello was refused does not train
    running = {1, 2, 3} - ({a.bomb_cert} if a.absent else set())
    training &= running
    cfg = deploy_config(tmp, train_args={"comm_round": a.rounds, "epochs": a.epochs, "round_timeout_s": 120,
                                         "min_clients_per_round": 1},  # a quarantined board leaves the run
                        data_args={"synthetic_benign_rows": a.rows}, validation_args={"frequency_of_the_test": a.rounds},
                        comm_args={**({"wait_for_clients_s": 40} if a.absent else {}),
                                   **({"front": False} if a.no_front else {})})
    raw = yaml.safe_load(cfg.read_text())
    raw["comm_args"]["tls_dir"] = str(certs)
    cfg.write_text(yaml.safe_dump(raw))
    board_cfg = {}
    if a.overflow:  # each compromised board runs its own config (the server's says nothing of attacks)
        for rank, attack in ((2, "stats_overflow"), (3, "val_overflow")):
            board_cfg[rank] = tmp / f"board{rank}.yaml"
            board_cfg[rank].write_text(yaml.safe_dump({**raw, "attack_args": {"malicious_ranks": [rank],
                                                                               "attack": attack, "red_team": True}}))
    if a.board_flood:
        board_cfg[1] = tmp / "board1.yaml"
        board_cfg[1].write_text(yaml.safe_dump({**raw, "attack_args": {"malicious_ranks": [1], "attack": "flood",
                                                                       "attack_scale": a.board_flood, "red_team": True}}))
    port = ipconfig_ports(cfg)[0]
    from fediot.config import load

    from attacks.clients import decoding_bomb

    payload = decoding_bomb(a.bomb_cert, int(load(str(cfg)).comm.max_message_mb * 2**20))
    late_update = stale_update(a.bomb_cert, load(str(cfg)))
    start_server, start_client = server, client
    if a.pin:  # the federation's processes on CPU 0 (they and their threads inherit it), the attacker here on CPU 1
        def start_server(path: Path) -> Proc:
            return Proc(["taskset", "-c", "0", "bash", str(REPO / "run_server.sh"), str(path)])

        def start_client(n: int, path: Path) -> Proc:
            return Proc(["taskset", "-c", "0", "bash", str(REPO / "run_client.sh"), str(n), str(path)])

        os.sched_setaffinity(0, {1})  # this thread, and the attacker threads it starts
    srv = start_server(cfg)
    samples: list[tuple[float, float]] = []
    boards: list = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((time.monotonic(), rss_mb(srv.p.pid)))
            except OSError:
                return
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    outcomes: dict[str, int] = {}
    slow_outcomes: dict[str, int] = {}
    stem = f"client{a.bomb_cert}"

    valid_outcomes: dict[str, int] = {}

    def valid_flood() -> None:
        channel = None if a.new_connections else channel_to(port, certs, stem)  # one connection, or one per call
        while not stop.is_set():
            try:
                if channel is None:
                    send_raw(port, late_update, certs, stem)
                else:
                    send_over(channel, chunks_of(late_update), 10)
                outcome = "taken"
            except Exception as exc:  # noqa: BLE001 - grpc.RpcError: the status is the outcome
                outcome = exc.code().name if hasattr(exc, "code") else type(exc).__name__
            valid_outcomes[outcome] = valid_outcomes.get(outcome, 0) + 1

    def slow_uploads() -> None:  # issue 34 reproduction 1: hold calls open, sending ~2 KB/s, reopen when they end
        def trickle():
            sent = 0
            while sent < 8 * 2**20 and not stop.is_set():
                yield bytes(2048)
                sent += 2048
                stop.wait(1.0)
        while not stop.is_set():
            try:
                send_raw(port, b"", certs, stem, chunks=trickle(), timeout=3600)
                outcome = "delivered"
            except Exception as exc:  # noqa: BLE001 - grpc.RpcError: the status is the outcome
                outcome = exc.code().name if hasattr(exc, "code") else type(exc).__name__
            slow_outcomes[outcome] = slow_outcomes.get(outcome, 0) + 1
            stop.wait(0.05)
    try:
        srv.wait_for("waiting for clients: 0/3")
        try:  # the attacker's first call in a process costs ~3.5 s of gRPC's own start-up: made here, without a
            send_raw(port, b"", certs)  # certificate (refused at the handshake, no refusal counted against a board)
        except Exception:  # noqa: BLE001 - refused, as it must be
            pass
        time.sleep(2.0)  # idle: listening, nothing connected
        idle = max(r for _, r in samples[-10:])
        boards += [start_client(n, board_cfg.get(n, cfg)) for n in sorted(running)]
        srv.wait_for("round 2/")
        for _ in range(a.slow_upload):
            threading.Thread(target=slow_uploads, daemon=True).start()
        for _ in range(a.valid_flood):
            threading.Thread(target=valid_flood, daemon=True).start()
        flood_start = time.monotonic()

        def one(_i: int) -> str:
            # one thread: a bomb refused because another message of the certificate's was being read or waiting (its
            # own board's, or the earlier bomb) is sent again, as an attacker would
            for _try in range(BUSY_RETRIES):
                try:
                    send_raw(port, payload, certs, stem)
                    return "taken (refused by the decoder)"
                except Exception as exc:  # noqa: BLE001 - grpc.RpcError: the status is the outcome
                    code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
                    details = exc.details() if hasattr(exc, "details") else str(exc)
                    busy = "one message at a time" in details or "too many of yours" in details
                    if not busy or a.threads > 1:
                        return f"{code}: {details[:200]}"
                    time.sleep(BUSY_PAUSE_S)
            return f"{code}: {details[:200]}"

        with ThreadPoolExecutor(a.threads) as pool:
            for outcome in pool.map(one, range(a.messages)):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        flood_end = time.monotonic()
        finished = srv.finish(600) == 0
        for n, b in zip(sorted(running), boards):
            if n in training:
                b.finish(60)
    finally:
        stop.set()
        for proc in (srv, *boards):
            proc.kill()
    run_dir = run_dir_of(srv) if finished else None
    rounds = read_rounds(run_dir) if run_dir else []
    peak = max((r for t, r in samples if flood_start <= t <= flood_end + 1.0), default=0.0)
    result = {
        "messages": a.messages, "threads": a.threads, "bomb_mib": round(len(payload) / 2**20, 1),
        "server_rss_idle_mb": round(idle, 1), "server_rss_peak_during_flood_mb": round(peak, 1),
        "rss_growth_mb": round(peak - idle, 1), "flood_seconds": round(flood_end - flood_start, 1),
        "server_rss_peak_mb": round(max((r for _, r in samples), default=0.0), 1),
        "outcomes": outcomes, "slow_upload_outcomes": slow_outcomes, "valid_flood_outcomes": valid_outcomes, "run_finished": finished,
        "quarantined": sorted(int(m.group(1)) for m in (re.match(r"warning: client (\d+) \(.*\) quarantined: ", line)
                                                        for line in srv.lines) if m),
        "rounds": [r["round"] for r in rounds], "clients_per_round": [len(r["clients"]) for r in rounds],
        "clients_of_rounds": [r["clients"] for r in rounds],
        "rejected_total": sum(r.get("rejected", 0) for r in rounds),
        "rejections": [x for r in rounds for x in r.get("rejections", [])],  # each round keeps its first 20
        "kept_rejections_by_sender": {s: sum(x["from"] == s for r in rounds for x in r.get("rejections", []))
                                      for s in sorted({x["from"] for r in rounds for x in r.get("rejections", [])})},
        "eval_seconds": [r["eval_seconds"] for r in rounds if "eval" in r],
        "devices_evaluated": sorted(json.loads((run_dir / "metrics.json").read_text())["devices"]) if run_dir else [],
        "server_said_refused_hello": "was refused" in srv.stdout,
        "round_wall_time_s": [r["wall_time_s"] for r in rounds],
    }
    result["server_lines_s"] = [(round(t - flood_start, 2), line[:60]) for t, line in zip(srv.arrived, srv.lines)][-25:]
    if not finished:
        result["server_output_tail"] = (srv.lines + srv.err)[-15:]
    print(json.dumps(result, indent=1))
    print(tmp)
    # every round holds every board that trains, but those quarantined (from the round they were, on)
    ok = finished and result["rss_growth_mb"] <= RSS_GROWTH_LIMIT_MB and all(
        len(training - set(result["quarantined"])) <= n <= len(training) for n in result["clients_per_round"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
