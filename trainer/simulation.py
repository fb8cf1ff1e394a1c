"""The MPI simulation: rank 0 runs the server node, ranks 1..N the clients.

    sh run_simulation.sh N [CONFIG]   ->   mpirun -np N+1 python -m main_fedml_iot --cf CONFIG

The same server and client nodes as the gRPC deployment, on FedML's MPI transport: the simulation
rehearses the real protocol (hello with feature statistics, plans, updates, count reports).
Clients are `cfg.clients` (devices x clients_per_device, data/partition.py). Client i's home is rank
1 + i % N: that rank loads its rows once (`ClientLoader`), says hello for it, trains it whenever it is
sampled and evaluates it. With N = one rank per client (the default: one per device) a rank is a
client; with fewer ranks than clients a worker holds about clients / N of them, so its memory
follows its share of the rows, not the number of clients (its clients share one autoencoder).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fediot import config as config_mod
from fediot.config import FedIoTConfig
from fediot.console import error, say
from fediot.errors import FedIoTError


def _sleep_until_all_arrive(comm, poll_s: float = 0.2) -> None:
    """A barrier that sleeps instead of spinning: ranks waiting for rank 0's data preparation (a
    download, a synthetic generation) must not eat the cores it needs (MPI collectives busy-poll)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def _gather_ok(comm, ok: bool, payload: Any) -> list[Any]:
    """All ranks exchange (ok, payload); any failure stops every rank with the failing messages."""
    _sleep_until_all_arrive(comm)
    results = comm.allgather((ok, payload))
    errors = [p for o, p in results if not o]
    if errors:
        raise FedIoTError("\n".join(dict.fromkeys(str(e) for e in errors)))
    return [p for _, p in results]


def _prepare(cfg: FedIoTConfig, comm, rank: int, size: int, run_dir_file: str | None) -> tuple[Path, Path, dict[str, Any]]:
    """Rank 0 prepares the data (generate / download) and creates the run directory; all ranks learn both."""
    from data.sources import prepare_data
    from fediot.rundir import create_run_dir, write_config

    ok, payload = True, None
    if rank == 0:
        try:
            data_root, data_info = prepare_data(cfg)  # before the run directory: no empty run on bad data
            run_dir = create_run_dir(cfg.common.run_dir_root, "simulation", cfg.data.dataset)
            write_config(run_dir, cfg)
            if run_dir_file:
                Path(run_dir_file).write_text(str(run_dir) + "\n")
            on = "" if size - 1 == len(cfg.clients) else f" on {size - 1} worker ranks"
            say(f"FedIoT simulation: {len(cfg.clients)} clients{on}, {cfg.train.comm_round} rounds, "
                f"data {data_info['source']}; run directory {run_dir}")
            payload = (str(run_dir), str(data_root), data_info)
        except FedIoTError as exc:
            ok, payload = False, exc
    run_dir_s, data_root_s, data_info = _gather_ok(comm, ok, payload)[0]
    return Path(run_dir_s), Path(data_root_s), data_info


def run_simulation(cf: str, run_dir_file: str | None) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    cfg = config_mod.load(cf)  # every rank validates the same file, so every rank sees the same error
    config_mod.check_world_size(cfg, size)
    run_dir, data_root, data_info = _prepare(cfg, comm, rank, size, run_dir_file)

    from federation.client import ClientLoader, home_clients

    # each worker loads its home clients' rows (errors from any rank stop all ranks with one message)
    workers = size - 1
    from attacks.clients import make_client

    loader = ClientLoader(cfg, data_root, run_dir, make_client=make_client)  # the simulation studies attack_args
    home: dict[str, Any] = {}
    ok, payload = True, None
    if rank > 0:
        try:
            home = {c: loader(c) for c in home_clients(cfg, rank, workers)}
        except FedIoTError as exc:
            ok, payload = False, exc
    _gather_ok(comm, ok, payload)

    import torch

    from trainer.fedml_glue import fds_to_file, fedml_node

    # FedML's comm classes only, not its package initialisers (trainer.fedml_glue)
    args, log_file = fedml_node(cfg, run_dir, rank, "server" if rank == 0 else "client")
    with fds_to_file(log_file, not cfg.tracking.fedml_console):  # FedML's import-time chatter
        from trainer.nodes import ClientNode, ClientRules, ServerNode, client_health, run_node, server_node
        from trainer.transport import MpiTransport
    torch.set_num_threads(cfg.device.torch_threads)  # N+1 processes share the cores
    node_comm = comm.Dup()  # our nodes' messages never mix with anything else on COMM_WORLD

    def transport() -> MpiTransport:
        return MpiTransport(node_comm, rank, size, int(cfg.comm.max_message_mb * 2**20))

    def make_node() -> ServerNode | ClientNode:
        if rank == 0:
            return server_node(args, cfg, run_dir, data_info, "federated", list(range(1, size)), transport)
        return ClientNode(args, home, rank, workers, ClientRules.of(cfg), transport,
                          client_health(cfg, run_dir, run_dir / "resources" / f"health-rank{rank}.json"),
                          cfg.status.health_interval_s)

    node = run_node(make_node, cfg.tracking.fedml_console, log_file, run_dir / "resources" / f"rank{rank}.json",
                    {"rank": rank, "role": "server" if rank == 0 else "client",
                     "device": ", ".join(home) if 0 < len(home) <= 3 else (f"{len(home)} clients" if home else None)})
    if node.exit_code != 0:
        if rank == 0:
            raise FedIoTError(f"{node.error} (run directory {run_dir})")
        if node.exit_code != 3:  # 3: the server stopped the run, and rank 0 says why
            error(f"client rank {rank} ({', '.join(list(home)[:3])}): {node.error}")
        return node.exit_code
    if rank == 0:
        say(f"outputs: metrics.json, rounds.jsonl, model.pt, config.yaml, logs/ in {run_dir}")
    return 0
