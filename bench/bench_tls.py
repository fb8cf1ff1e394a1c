"""What mutual TLS costs: the same deployment run with `comm_args.tls` true and false, side by side.

    .venv/bin/python bench/bench_tls.py [--rounds 8] [--repeats 2] [--sends 300]

1. Whole runs on 127.0.0.1 (server + 3 clients, synthetic data), alternating plaintext / TLS
   `--repeats` times: median round wall time and bytes per round. Payload bytes (what `rounds.jsonl`
   counts) are the same by construction; IP bytes on the wire are read from the kernel's counters
   (/proc/net/netstat, IpExt OutOctets: all traffic in this network namespace, so TLS records,
   handshakes and TCP headers are in it).
2. The transport alone: `--sends` model-sized messages from rank 1 to rank 0 in one process (one
   channel kept per receiver, as the nodes do).
Goal (issue 9): TLS / plaintext <= 1.10 on round time and on bytes per round.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy_helpers import client, deploy_config, free_ports, read_rounds, run_dir_of, server


def ip_out_octets() -> int:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("IpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["OutOctets"])
    raise RuntimeError("no IpExt in /proc/net/netstat")


def one_run(tmp: Path, tls: bool, rounds: int) -> dict[str, float]:
    cfg = deploy_config(tmp, train_args={"comm_round": rounds, "epochs": 2},
                        data_args={"synthetic_benign_rows": 1500, "synthetic_attack_rows": 300, "attack_test_rows": 300},
                        validation_args={"frequency_of_the_test": rounds}, comm_args={"tls": tls})
    before = ip_out_octets()
    srv = server(cfg)
    clients = [client(n, cfg) for n in (1, 2, 3)]
    for proc in (srv, *clients):
        if proc.finish(900) != 0:
            sys.exit(f"a deployment process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    ip_bytes = ip_out_octets() - before
    recs = read_rounds(run_dir_of(srv))
    train_rounds = [r for r in recs if "eval" not in r]  # evaluation rounds also carry the count protocol
    return {"round_s": statistics.median(r["wall_time_s"] for r in train_rounds),
            "payload_per_round": statistics.median(r["bytes_sent"] + r["bytes_received"] for r in train_rounds),
            "ip_bytes_per_round": ip_bytes / len(recs)}


def transport_sends(tls: bool, sends: int, tmp: Path) -> float:
    """Seconds per send of a model-sized message from rank 1 to rank 0 (median of all sends)."""
    from fedml.core.distributed.communication.message import Message

    from deployment.certs import make_certs
    from deployment.grpc_transport import FedIoTGrpcTransport
    from deployment.ipconfig import Peer
    from deployment.tls import load_identity
    from federation.messages import C2S_UPDATE
    from model.autoencoder import AutoEncoder

    make_certs(tmp, 1, [])
    ports = free_ports(2)
    peers = {r: Peer(r, "127.0.0.1", ports[r], "") for r in (0, 1)}
    ids = {r: load_identity(tmp, r, []) if tls else None for r in (0, 1)}
    nodes = {r: FedIoTGrpcTransport(peers, r, ids[r], "127.0.0.1", 10.0, 64 * 2**20) for r in (0, 1)}
    weights = {k: v.clone() for k, v in AutoEncoder().state_dict().items()}
    times = []
    try:
        for _ in range(sends):
            msg = Message(C2S_UPDATE, 1, 0)
            msg.add_params("model", weights)
            t0 = time.perf_counter()
            nodes[1].send_message(msg)
            times.append(time.perf_counter() - t0)
            nodes[0].message_q.get(timeout=10)
    finally:
        for node in nodes.values():
            node.stop_receive_message()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sends", type=int, default=300)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fediot-tls-bench-"))

    per_send = {tls: transport_sends(tls, a.sends, tmp / f"send-{tls}") for tls in (False, True)}
    print(f"transport alone, one model-sized message per send: plaintext "
          f"{per_send[False] * 1e3:.2f} ms, TLS {per_send[True] * 1e3:.2f} ms "
          f"(ratio {per_send[True] / per_send[False]:.2f})")

    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for i in range(a.repeats):
        for tls in (False, True):
            runs[tls].append(one_run(tmp / f"run{i}-{'tls' if tls else 'plain'}", tls, a.rounds))
            r = runs[tls][-1]
            print(f"repeat {i + 1}, {'TLS      ' if tls else 'plaintext'}: median round {r['round_s']:.3f}s, "
                  f"payload {r['payload_per_round']:,.0f} B/round, IP {r['ip_bytes_per_round']:,.0f} B/round", flush=True)
    med = {tls: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tls, rs in runs.items()}
    print("\n| per round (3 clients, 127.0.0.1) | plaintext | TLS | TLS / plaintext |\n|---|---|---|---|")
    for key, label, fmt in (("round_s", "median wall time (s)", "{:.3f}"),
                            ("payload_per_round", "payload bytes (rounds.jsonl)", "{:,.0f}"),
                            ("ip_bytes_per_round", "IP bytes on the wire", "{:,.0f}")):
        print(f"| {label} | {fmt.format(med[False][key])} | {fmt.format(med[True][key])} | "
              f"{med[True][key] / med[False][key]:.3f} |")


if __name__ == "__main__":
    main()
