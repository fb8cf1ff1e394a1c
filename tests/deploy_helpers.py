"""Start FedIoT deployment processes (server, clients) on 127.0.0.1 for tests and benchmarks."""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable

import yaml

from deployment.certs import RANK_NAME

REPO = Path(__file__).resolve().parents[1]
DEVICES = ["Danmini_Doorbell", "Ecobee_Thermostat", "Ennio_Doorbell"]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def deploy_config(tmp: Path, n_clients: int = 3, **sections) -> Path:
    """A loopback deployment config (`tests.rounds.deploy_values`) with fresh ports; `sections` override keys per
    section."""
    from tests.rounds import deploy_values

    tmp.mkdir(parents=True, exist_ok=True)
    ports = free_ports(n_clients + 1)
    ipconfig = tmp / "ipconfig.csv"
    ipconfig.write_text("eid,rank,grpc_server_ip,grpc_server_port,ingress_ip\n"
                        + "".join(f"{r},{r},127.0.0.1,{p},\n" for r, p in enumerate(ports)))
    cfg = deploy_values(tmp, n_clients)
    cfg["comm_args"].update({"grpc_ipconfig_path": str(ipconfig), "connect_timeout_s": 60, "wait_for_clients_s": 60,
                             "retry_interval_s": 0.3, "send_timeout_s": 5})
    cfg["status_args"] = {"port": 0}  # any free port: tests run servers side by side
    for section, keys in sections.items():
        cfg.setdefault(section, {}).update(keys)
    path = tmp / "deploy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Proc:
    """A launcher process whose output lines are collected as they come."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHON": sys.executable}
        self.p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.err: list[str] = []
        self.arrived: list[float] = []  # when each stdout line arrived (monotonic)
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err, False), daemon=True).start()

    def _pump(self, stream, sink: list[str], notify: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if notify:
                self.arrived.append(time.monotonic())
            if notify:
                self._q.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        end = time.monotonic() + timeout
        for line in list(self.lines):
            if text in line:
                return line
        while time.monotonic() < end:
            try:
                line = self._q.get(timeout=0.2)
            except queue.Empty:
                if self.p.poll() is not None and self._q.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen; stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + "\n".join(self.err))

    def finish(self, timeout: float = 120) -> int:
        rc = self.p.wait(timeout=timeout)
        time.sleep(0.1)
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def server(cfg: Path, *extra: str) -> Proc:
    return Proc(["bash", str(REPO / "run_server.sh"), str(cfg), *extra])


def client(n: int, cfg: Path) -> Proc:
    return Proc(["bash", str(REPO / "run_client.sh"), str(n), str(cfg)])


def run_dir_of(proc: Proc) -> Path:
    """A launcher's run directory: its last line of output."""
    return Path(proc.lines[-1])


def read_rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def send_raw(port: int, payload: bytes, certs: Path | None = None, stem: str | None = None,
             receiver: int = 0, ca: Path | None = None, chunks: Iterable[bytes] | None = None,
             timeout: float = 10) -> None:
    """Send bytes to a node's gRPC port the way an attacker on the LAN could: plaintext (certs None),
    TLS without a client certificate (stem None), or TLS as `stem` (e.g. "client2") from `certs`.
    `ca` is the CA the sender trusts (default certs/ca.pem); `chunks`: the call's chunks instead of the payload's
    (e.g. sent slowly). Raises grpc.RpcError when refused."""
    from deployment.grpc_transport import chunks_of, send_over

    with channel_to(port, certs, stem, receiver, ca) as channel:
        send_over(channel, chunks if chunks is not None else chunks_of(payload), timeout)


def channel_to(port: int, certs: Path | None = None, stem: str | None = None, receiver: int = 0,
               ca: Path | None = None):
    """A gRPC channel to a node's port: plaintext (certs None), TLS without a client certificate (stem None), or TLS
    as `stem` from `certs`, trusting `ca` (default certs/ca.pem)."""
    import grpc

    url = f"127.0.0.1:{port}"
    own = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own (gRPC shares equal channels' by default)
    if certs is None:
        return grpc.insecure_channel(url, options=own)
    key, chain = ((certs / f"{stem}.key").read_bytes(), (certs / f"{stem}.pem").read_bytes()) if stem else (None, None)
    creds = grpc.ssl_channel_credentials(root_certificates=(ca or certs / "ca.pem").read_bytes(),
                                         private_key=key, certificate_chain=chain)
    return grpc.secure_channel(url, creds, options=[*own, ("grpc.ssl_target_name_override", RANK_NAME.format(receiver))])


def ipconfig_ports(cfg: Path) -> list[int]:
    """Ports of ranks 0..N in a deploy_config's ipconfig CSV."""
    ipconfig = Path(yaml.safe_load(cfg.read_text())["comm_args"]["grpc_ipconfig_path"])
    return [int(line.split(",")[3]) for line in ipconfig.read_text().splitlines()[1:]]


class Canary:
    """Unpickling this creates a file: proof that a peer's bytes ran code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def fedml_log(run_dir: Path) -> str:
    """The FedML log of a run directory (FedML's own lines go there, not to the console)."""
    return next((run_dir / "logs").glob("fedml-rank*.log")).read_text()


def refused(*args, **kwargs):
    """`send_raw` that must be refused: the gRPC status code it was refused with."""
    import grpc
    import pytest

    with pytest.raises(grpc.RpcError) as info:
        send_raw(*args, **kwargs)
    return info.value.code()
