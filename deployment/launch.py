"""The gRPC deployment: `--role server --rank 0` or `--role client --rank N` (run_server.sh / run_client.sh).

The server holds no data; a client loads (or downloads) only its own device. Both run the same
nodes as the simulation (`trainer.nodes`) on FedIoT's gRPC transport.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from fediot import config as config_mod
from fediot.console import error, say
from fediot.errors import ConfigError


def check_port_free(ip: str, port: int, what: str) -> None:
    """One clear error when our gRPC port is taken (gRPC itself would only log and fail later).

    SO_REUSEADDR as gRPC sets it: connections of a process that just exited (TIME_WAIT) must not
    keep a restarted board off its port for a minute; a live listener still makes bind() fail.
    """
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip or "0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(f"{what}: cannot listen on {ip}:{port} ({exc.strerror}); is another server or client "
                              f"running, or is the port in the ipconfig CSV wrong?") from None


def server_data_info(cfg) -> dict[str, Any]:
    """What a deployment's outputs say about its data: the server holds none."""
    info = {"source": cfg.data.dataset, "synthetic": cfg.data.dataset == "synthetic",
            "note": "the server holds no data; clients report counts and statistics only"}
    if cfg.data.dataset == "local":
        info["attacks"] = ("SIMULATED: the boards' attack rows are the traffic simulator's attacks sent from each "
                           "device's own address, mixed into its captured traffic (python -m capture)")
    return info


def run_deployment(cf: str, role: str | None, rank: int | None, resume: str | None) -> int:
    cfg = config_mod.load(cf)
    where = f"config {cfg.path}"
    if cfg.is_simulation:
        raise ConfigError(f"{where}: common_args.training_type is simulation; a deployment uses cross_silo and GRPC "
                          f"(run_simulation.sh runs simulation configs)")
    if role is None or rank is None:
        raise ConfigError("a deployment process needs --role server --rank 0 or --role client --rank N (use run_server.sh / run_client.sh)")
    n_devices = len(cfg.devices)
    if role == "server" and rank != 0:
        raise ConfigError(f"the server is rank 0, not {rank}")
    if role == "client" and not 1 <= rank <= n_devices:
        raise ConfigError(f"client rank {rank} out of range: {where} has {n_devices} device(s), so N is 1..{n_devices}")
    if cfg.attacking and not cfg.attack.red_team:
        raise ConfigError(f"{where}: attack_args make rank(s) {cfg.attack.malicious_ranks} malicious "
                          f"({cfg.attack.attack}); a deployment refuses that unless attack_args.red_team: true (a red-team "
                          f"exercise on your own LAN); remove attack_args for a real deployment")
    if cfg.attacking:
        say(f"RED TEAM: attack_args make rank(s) {cfg.attack.malicious_ranks} malicious ({cfg.attack.attack}, scale "
            f"{cfg.attack.attack_scale:g}); attack_args.red_team is true"
            + ("; this board is one of them" if role == "client" and cfg.attack_of(rank)[0] != "none" else ""))
    if not cfg.comm.grpc_ipconfig_path:
        raise ConfigError(f"{where}: comm_args.grpc_ipconfig_path is not set (CSV eid,rank,grpc_server_ip,grpc_server_port,ingress_ip)")
    from data.sources import load_split, prepare_data
    from deployment.ipconfig import load_ipconfig
    from federation.outputs import load_server_checkpoint
    from fediot.rundir import create_run_dir, repo_path, write_config

    ipconfig = repo_path(cfg.comm.grpc_ipconfig_path)
    peers = load_ipconfig(ipconfig)
    needed = [0, *range(1, n_devices + 1)] if role == "server" else [0, rank]
    missing = [r for r in needed if r not in peers]
    if missing:
        raise ConfigError(f"{ipconfig}: no row for rank(s) {', '.join(map(str, missing))} "
                          f"(the server needs ranks 0..{n_devices}; a client needs 0 and its own rank)")
    me = peers[rank]
    wildcard = me.bind_ip in ("", "0.0.0.0", "::")
    if wildcard and not cfg.comm.bind_all:
        raise ConfigError(f"{ipconfig}: rank {rank} has grpc_server_ip {me.bind_ip or '(empty)'}; put the address this "
                          f"node listens on (its LAN IP), or set comm_args.bind_all: true to listen on every interface")
    bind_ip = ("::" if ":" in me.bind_ip else "0.0.0.0") if cfg.comm.bind_all else me.bind_ip
    check_port_free(bind_ip, me.port, f"{ipconfig} rank {rank}")
    from deployment.tls import resolve

    tls = resolve(cfg, {r: peers[r] for r in needed}, rank)

    local = None
    checkpoint = None
    if role == "server":
        data_info = server_data_info(cfg)
        if resume:
            run_dir = Path(resume).resolve()
            checkpoint = load_server_checkpoint(run_dir)
            say(f"resuming {run_dir} after round {checkpoint['round_done']}")
            saved_rounds = checkpoint["config"].get("train_args", {}).get("comm_round")
            if saved_rounds != cfg.train.comm_round:
                say(f"note: comm_round is now {cfg.train.comm_round} (was {saved_rounds})")
        else:
            run_dir = create_run_dir(cfg.common.run_dir_root, "server", cfg.data.dataset)
            write_config(run_dir, cfg)
        say(f"FedIoT server: {n_devices} client(s), {cfg.train.comm_round} rounds over gRPC at {me.address} "
            f"({'mutual TLS, certificates in ' + str(tls.source) if tls else 'PLAINTEXT'}); run directory {run_dir}")
    else:
        from federation.client import honest_client, live_detector
        from model.threshold import rule_of

        device = cfg.devices[rank - 1]
        data_root, _info = prepare_data(cfg, [device])  # a board fetches only its own device
        split = load_split(cfg, data_root, device)  # before the run directory: no empty run on bad data
        run_dir = create_run_dir(cfg.common.run_dir_root, f"client{rank}", cfg.data.dataset)
        write_config(run_dir, cfg)
        make_client = honest_client
        if cfg.attack_of(rank)[0] != "none":  # only with attack_args.red_team (checked above)
            from attacks.clients import make_client
        local = make_client(split, cfg.model.feature_transform, run_dir / f"{device}.jsonl", *cfg.attack_of(rank),
                            rule=rule_of(cfg.validation), window=cfg.validation.vote_window,
                            live=live_detector(cfg, run_dir),
                            personalise=(cfg.validation.personalise_epochs, cfg.validation.personalise_lr,
                                         cfg.train.batch_size))

    import torch

    from trainer.fedml_glue import fds_to_file, fedml_node

    # FedML's comm classes only, not its package initialisers (trainer.fedml_glue)
    args, log_file = fedml_node(cfg, run_dir, rank, role)
    with fds_to_file(log_file, not cfg.tracking.fedml_console):  # gRPC's own chatter
        from deployment.front import FrontLimits
        from deployment.grpc_transport import FedIoTGrpcTransport
        from trainer.nodes import ClientNode, ClientRules, ServerNode, client_health, run_node, server_node
    torch.set_num_threads(cfg.device.torch_threads)

    def transport() -> FedIoTGrpcTransport:
        return FedIoTGrpcTransport({r: peers[r] for r in needed}, rank, tls, bind_ip,
                                   float(cfg.comm.send_timeout_s), int(cfg.comm.max_message_mb * 2**20),
                                   cfg.comm.quarantine_after_malformed if role == "server" else None,
                                   FrontLimits.of(cfg.comm))

    def make_node() -> ServerNode | ClientNode:
        if role == "server":
            return server_node(args, cfg, run_dir, data_info, "federated-deployment", list(range(1, n_devices + 1)),
                               transport, checkpoint)
        return ClientNode(args, {device: local}, rank, n_devices, ClientRules.of(cfg), transport,
                          client_health(cfg, run_dir, run_dir / "health.json"), cfg.status.health_interval_s)

    node = run_node(make_node, cfg.tracking.fedml_console, log_file, run_dir / "resources" / f"rank{rank}.json",
                    {"rank": rank, "role": role})
    if node.exit_code != 0:
        error(f"{node.error} (run directory {run_dir})")
        return node.exit_code
    say(str(run_dir))
    return 0
