"""FedIoT entry point: fedml.init() -> device -> data -> model -> trainer + aggregator -> FedMLRunner.

Simulation (MPI, one process per client plus the server):
    sh run_simulation.sh 9 [CONFIG]
which runs `mpirun -np 10 python main_fedml_iot.py --cf CONFIG`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from fediot import config as config_mod
from fediot.console import error, say
from fediot.errors import ConfigError, FedIoTError

DEFAULT_SIM_CONFIG = "config_simulation/fedml_config.yaml"


def parse_own_args(argv: list[str]) -> argparse.Namespace:
    """Our flags; FedML's own (--cf, --rank, --role, --run_id) are parsed again by fedml.init()."""
    p = argparse.ArgumentParser(add_help=True, description=__doc__)
    p.add_argument("--cf", default=DEFAULT_SIM_CONFIG, help="YAML config (default %(default)s)")
    p.add_argument("--run_dir_file", default=None, help="write the run directory path into this file")
    p.add_argument("--rank", type=int, default=None, help="deployment: 0 = server, 1..N = client N")
    p.add_argument("--role", choices=["server", "client"], default=None, help="deployment: server or client")
    p.add_argument("--resume", default=None, help="deployment server: continue the run in this run directory")
    args, _unknown = p.parse_known_args(argv)
    return args


def check_simulation_size(cfg: config_mod.FedIoTConfig, world_size: int) -> None:
    """N clients need N+1 MPI ranks, N devices and client_num_in_total = client_num_per_round = N."""
    n_clients = world_size - 1
    t = cfg.values["train_args"]
    where = f"config {cfg.path}"
    if n_clients < 1:
        raise ConfigError(f"MPI world size is {world_size}; a simulation needs 1 server + N clients (use run_simulation.sh N)")
    if cfg.get("comm_args", "backend") != "MPI" or cfg.get("common_args", "training_type") != "simulation":
        raise ConfigError(f"{where}: the simulation needs common_args.training_type: simulation and comm_args.backend: MPI")
    problems = []
    if len(cfg.devices) != n_clients:
        problems.append(f"data_args.devices lists {len(cfg.devices)} device(s)")
    if t["client_num_in_total"] != n_clients:
        problems.append(f"train_args.client_num_in_total is {t['client_num_in_total']}")
    if t["client_num_per_round"] != n_clients:
        problems.append(f"train_args.client_num_per_round is {t['client_num_per_round']}")
    if problems:
        raise ConfigError(f"{where}: {n_clients} client process(es) were started but " + "; ".join(problems)
                          + f". Set all three to {n_clients} or start as many clients as the config has.")


def init_fedml(cfg: config_mod.FedIoTConfig, cf_path: str, log_file: Path, extra_argv: list[str],
               check_env: bool = True):
    """fedml.init() with its cloud call disabled and its output in log_file; returns FedML's args
    with every FedIoT key (defaults included) set."""
    from fediot.fedml_glue import disable_fedml_cloud, fds_to_file, route_logging_to_file

    fedml_console = bool(cfg.get("tracking_args", "fedml_console"))
    with fds_to_file(log_file, not fedml_console):
        import fedml

        disable_fedml_cloud()
        sys.argv = [sys.argv[0], "--cf", str(Path(cf_path).resolve()), *extra_argv]
        args = fedml.init(check_env=check_env)
    route_logging_to_file(log_file, fedml_console)
    for key, value in cfg.flat().items():
        if not hasattr(args, key) or key == "devices":  # FedML keeps the raw 'all'; we store the list
            setattr(args, key, value)
    return args


def _sleep_until_all_arrive(comm, poll_s: float = 0.2) -> None:
    """A barrier that sleeps instead of spinning: ranks waiting for rank 0's data preparation (a
    download, a synthetic generation) must not eat the cores it needs (MPI collectives busy-poll)."""
    import time

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


def run_simulation(own: argparse.Namespace) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    # 1. config (every rank validates the same file, so every rank sees the same error)
    cfg = config_mod.load(own.cf)
    check_simulation_size(cfg, size)

    from fediot.pipeline import load_split, prepare_data
    from fediot.rundir import create_run_dir, peak_rss_mb, write_config, write_json

    # 2. rank 0: run directory + data preparation (generate / download), then share the paths
    ok, payload = True, None
    if rank == 0:
        try:
            data_root, data_info = prepare_data(cfg)  # before the run directory: no empty run on bad data
            run_dir = create_run_dir(cfg.get("common_args", "run_dir_root"), "simulation", cfg.get("data_args", "dataset"))
            write_config(run_dir, cfg.values)
            if own.run_dir_file:
                Path(own.run_dir_file).write_text(str(run_dir) + "\n")
            say(f"FedIoT simulation: {size - 1} clients, {cfg.get('train_args', 'comm_round')} rounds, "
                f"data {data_info['source']}; run directory {run_dir}")
            payload = (str(run_dir), str(data_root), data_info)
        except FedIoTError as exc:
            ok, payload = False, exc
    run_dir_s, data_root_s, data_info = _gather_ok(comm, ok, payload)[0]
    run_dir, data_root = Path(run_dir_s), Path(data_root_s)

    # 3. clients: load own device, compute normalisation statistics; only statistics are shared
    from model.normalization import FeatureStats, Normalizer

    m = cfg.values["model_args"]
    devices = cfg.devices
    split = None
    ok, payload = True, None
    if rank > 0:
        try:
            split = load_split(cfg, data_root, devices[rank - 1])
            payload = FeatureStats.of(split.train, m["feature_transform"])
        except FedIoTError as exc:
            ok, payload = False, exc
    stats = _gather_ok(comm, ok, payload)[1:]
    normalizer = Normalizer.from_stats(FeatureStats.merge(stats), m["feature_transform"], m["normalization"])
    sample_counts = {i: s.count for i, s in enumerate(stats)}
    if rank == 0:
        say("clients: " + ", ".join(f"{d} ({sample_counts[i]} training rows)" for i, d in enumerate(devices)))

    # 4. FedML
    import torch
    from fediot.fedml_glue import fds_to_file

    log_file = run_dir / "logs" / f"fedml-rank{rank}.log"
    fedml_console = bool(cfg.get("tracking_args", "fedml_console"))
    args = init_fedml(cfg, own.cf, log_file, [])
    from fedml import FedMLRunner

    args.dataset = cfg.get("data_args", "dataset")
    torch.set_num_threads(cfg.get("device_args", "torch_threads"))  # N+1 processes share the cores
    device = torch.device("cuda" if cfg.get("device_args", "using_gpu") and torch.cuda.is_available() else "cpu")

    from data.nbaiot import N_FEATURES
    from model.autoencoder import AutoEncoder
    from trainer.client_data import ClientRows
    from trainer.fed_detect_aggregator import FedDetectAggregator
    from trainer.fed_detect_trainer import FedDetectTrainer
    from fediot.federated import RoundRecorder

    torch.manual_seed(cfg.get("common_args", "random_seed"))
    model = AutoEncoder(N_FEATURES)
    train_dict: dict[int, ClientRows] = {}
    if rank > 0 and split is not None:
        own_split = split
        train_dict[rank - 1] = ClientRows(devices[rank - 1], sample_counts[rank - 1], lambda: own_split, normalizer)
    # FedML's client looks up its test data too; evaluation is done by the server's recorder.
    test_dict = {i: None for i in train_dict}
    dataset = [sum(sample_counts.values()), 0, None, None, sample_counts, train_dict, test_dict, N_FEATURES]
    recorder = None
    if rank == 0:
        recorder = RoundRecorder(cfg, run_dir, devices, lambda d: load_split(cfg, data_root, d), normalizer, data_info,
                                 {"normalization": {"method": m["normalization"], "transform": m["feature_transform"],
                                                    "fitted_on": "training benign rows of all clients (merged statistics)",
                                                    "train_rows": sum(sample_counts.values())}})
    with fds_to_file(log_file, not fedml_console):  # FedML's prints, logs and thread chatter; our lines go to the console
        trainer = FedDetectTrainer(model, args, record_dir=run_dir / "clients")
        aggregator = FedDetectAggregator(model, args, recorder.end_of_round if recorder else (lambda *_: None))
        FedMLRunner(args, device, dataset, model, trainer, aggregator).run()
    write_json(run_dir / "resources" / f"rank{rank}.json", {
        "rank": rank, "role": "server" if rank == 0 else "client",
        "device": devices[rank - 1] if rank > 0 else None, "peak_rss_mb": round(peak_rss_mb(), 1)})
    if rank == 0:
        if not (run_dir / "metrics.json").exists():
            raise FedIoTError(f"the simulation ended without writing {run_dir / 'metrics.json'} (see {run_dir / 'logs'})")
        say(f"outputs: metrics.json, rounds.jsonl, model.pt, config.yaml, logs/ in {run_dir}")
    return 0


def check_port_free(ip: str, port: int, what: str) -> None:
    """One clear error when our gRPC port is taken (gRPC itself would only log and fail later)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip or "0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(f"{what}: cannot listen on {ip}:{port} ({exc.strerror}); is another server or client "
                              f"running, or is the port in the ipconfig CSV wrong?") from None


def run_deployment(own: argparse.Namespace) -> int:
    """Cross-silo over gRPC on a LAN: `--role server --rank 0` or `--role client --rank N`."""
    cfg = config_mod.load(own.cf)
    where = f"config {cfg.path}"
    if cfg.get("comm_args", "backend") != "GRPC":
        raise ConfigError(f"{where}: comm_args.backend = {cfg.get('comm_args', 'backend')!r}; a deployment uses GRPC "
                          f"(MQTT_S3 needs FedML's cloud; MPI is for run_simulation.sh)")
    if own.role is None or own.rank is None:
        raise ConfigError("a deployment process needs --role server --rank 0 or --role client --rank N (use run_server.sh / run_client.sh)")
    n_devices = len(cfg.devices)
    t = cfg.values["train_args"]
    if t["client_num_in_total"] != n_devices or t["client_num_per_round"] != n_devices:
        raise ConfigError(f"{where}: data_args.devices lists {n_devices} device(s) but train_args.client_num_in_total = "
                          f"{t['client_num_in_total']} and client_num_per_round = {t['client_num_per_round']}; set both to {n_devices}")
    if t["min_clients_per_round"] > n_devices:
        raise ConfigError(f"{where}: train_args.min_clients_per_round = {t['min_clients_per_round']} > {n_devices} clients")
    if own.role == "server" and own.rank != 0:
        raise ConfigError(f"the server is rank 0, not {own.rank}")
    if own.role == "client" and not 1 <= own.rank <= n_devices:
        raise ConfigError(f"client rank {own.rank} out of range: {where} has {n_devices} device(s), so N is 1..{n_devices}")
    ipconfig_value = cfg.get("comm_args", "grpc_ipconfig_path")
    if not ipconfig_value:
        raise ConfigError(f"{where}: comm_args.grpc_ipconfig_path is not set (CSV eid,rank,grpc_server_ip,grpc_server_port,ingress_ip)")
    from fediot.federated import load_server_checkpoint
    from fediot.ipconfig import load_ipconfig
    from fediot.pipeline import load_split, prepare_data
    from fediot.rundir import create_run_dir, peak_rss_mb, repo_path, write_config, write_json

    ipconfig = repo_path(ipconfig_value)
    peers = load_ipconfig(ipconfig)
    needed = [0, *range(1, n_devices + 1)] if own.role == "server" else [0, own.rank]
    missing = [r for r in needed if r not in peers]
    if missing:
        raise ConfigError(f"{ipconfig}: no row for rank(s) {', '.join(map(str, missing))} "
                          f"(the server needs ranks 0..{n_devices}; a client needs 0 and its own rank)")
    me = peers[own.rank]
    check_port_free(me.bind_ip, me.port, f"{ipconfig} rank {own.rank}")

    resume = None
    split = None
    if own.role == "server":
        if own.resume:
            run_dir = Path(own.resume).resolve()
            resume = load_server_checkpoint(run_dir)
            saved = resume["config"]
            data_info = {"source": cfg.get("data_args", "dataset"), "synthetic": cfg.get("data_args", "dataset") == "synthetic"}
            say(f"resuming {run_dir} after round {resume['round_done']}")
            if saved.get("train_args", {}).get("comm_round") != t["comm_round"]:
                say(f"note: comm_round is now {t['comm_round']} (was {saved['train_args']['comm_round']})")
        else:
            data_info = {"source": cfg.get("data_args", "dataset"), "synthetic": cfg.get("data_args", "dataset") == "synthetic",
                         "note": "the server holds no data; clients report counts and statistics only"}
            run_dir = create_run_dir(cfg.get("common_args", "run_dir_root"), "server", cfg.get("data_args", "dataset"))
            write_config(run_dir, cfg.values)
        say(f"FedIoT server: {n_devices} client(s), {t['comm_round']} rounds over gRPC at {me.address}; run directory {run_dir}")
    else:
        device = cfg.devices[own.rank - 1]
        data_root, _info = prepare_data(cfg, [device])  # a board fetches only its own device
        split = load_split(cfg, data_root, device)
        run_dir = create_run_dir(cfg.get("common_args", "run_dir_root"), f"client{own.rank}", cfg.get("data_args", "dataset"))
        write_config(run_dir, cfg.values)

    import torch
    from fediot.fedml_glue import fds_to_file

    log_file = run_dir / "logs" / f"fedml-rank{own.rank}.log"
    fedml_console = bool(cfg.get("tracking_args", "fedml_console"))
    args = init_fedml(cfg, own.cf, log_file, ["--rank", str(own.rank), "--role", own.role,
                                              "--run_id", str(cfg.get("common_args", "run_id"))], check_env=False)
    args.grpc_ipconfig_path = str(ipconfig)
    torch.set_num_threads(cfg.get("device_args", "torch_threads"))

    from trainer.deployment import DeploymentClient, DeploymentServer

    with fds_to_file(log_file, not fedml_console):
        if own.role == "server":
            node = DeploymentServer(args, cfg, run_dir, list(range(1, n_devices + 1)), resume, data_info)
        else:
            node = DeploymentClient(args, cfg, own.rank, n_devices, split, run_dir)
        node.run()
    write_json(run_dir / "resources" / f"rank{own.rank}.json", {
        "rank": own.rank, "role": own.role, "peak_rss_mb": round(peak_rss_mb(), 1),
        "bytes_sent": node.com_manager.bytes_sent, "bytes_received": node.com_manager.bytes_received})
    if node.exit_code != 0:
        error(f"{node.error} (run directory {run_dir})")
        return node.exit_code
    say(str(run_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    own = parse_own_args(sys.argv[1:] if argv is None else argv)
    try:
        if own.role is not None:
            return run_deployment(own)
        return run_simulation(own)
    except FedIoTError as exc:
        _report_error(str(exc))
        return 2


def _report_error(message: str) -> None:
    try:
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
    except Exception:  # noqa: BLE001 - no MPI: single process
        rank = 0
    if rank == 0:
        error(message)


if __name__ == "__main__":
    try:
        code = main()
    except Exception:  # an unexpected crash in one rank must not leave the others waiting forever
        error("unexpected failure:\n" + traceback.format_exc())
        try:
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(1)
        except Exception:  # noqa: BLE001
            pass
        code = 1
    sys.exit(code)
