"""The FedML runtime's sections (environment_args, device_args, comm_args, tracking_args): FedML reads some of
these keys itself; the transports, the deployment's front and the nodes' deadlines read the rest."""
from __future__ import annotations

from dataclasses import dataclass

from fediot.settings import is_int, is_num, setting


@dataclass(frozen=True)
class EnvironmentArgs:
    """FedML MLOps environment (unused offline)."""

    bootstrap: str | None = setting(None, 'FedML MLOps bootstrap script (unused in LAN / simulation mode)', fedml=True)


@dataclass(frozen=True)
class DeviceArgs:
    """Compute placement."""

    worker_num: int | None = setting(None, 'FedML sets this from the MPI world size', fedml=True)
    using_gpu: bool = setting(False, 'train on GPU when available', fedml=True)
    torch_threads: int = setting(1, 'PyTorch intra-op threads per process (the model is small: 1 is fastest and never oversubscribes)', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    gpu_mapping_file: str | None = setting(None, 'FedML: GPU mapping YAML (null = CPU)', fedml=True)
    gpu_mapping_key: str | None = setting(None, 'FedML: key in the GPU mapping file', fedml=True)


@dataclass(frozen=True)
class CommArgs:
    """Transport, mutual TLS and deployment timeouts."""

    backend: str = setting('MPI', 'MPI (simulation) or GRPC (LAN deployment)', choices=('MPI', 'GRPC'), fedml=True)
    is_mobile: int = setting(0, 'FedML: leave 0', fedml=True)
    grpc_ipconfig_path: str | None = setting(None, 'GRPC: CSV eid,rank,grpc_server_ip,grpc_server_port,ingress_ip (relative to the repo)', fedml=True)
    connect_timeout_s: float = setting(120, 'deployment: how long a client keeps retrying to reach the server', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    wait_for_clients_s: float = setting(600, 'deployment: how long the server waits for all clients before starting with those present', check=(lambda v: is_num(v) and v >= 0, 'a number of seconds >= 0'))
    retry_interval_s: float = setting(2.0, 'deployment: pause between connection retries and status lines', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    log_refusals_per_minute: int = setting(10, "a peer's refused messages are logged at most this many lines a minute (each is counted: rounds.jsonl, the status page, /metrics); the rest summed into its next line", check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    send_timeout_s: float = setting(20.0, 'deployment: a send not delivered within this counts as a dead peer', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    max_message_mb: float = setting(8, "largest message accepted from a peer (MB), refused at its first chunk over it; FedIoT's largest is ~0.7 MB", check=(lambda v: is_num(v) and 0 < v <= 2000, 'a number of MB in (0, 2000]'))
    quarantine_after_malformed: int | None = setting(5, "deployment: the server refuses a board for the rest of the run once its certificate has sent this many messages that are not FedIoT messages or break the protocol's bounds (late answers and health reports do not count; doc/security.md); null = never", check=(lambda v: v is None or (is_int(v) and v >= 1), 'null or an integer >= 1'))
    client_idle_timeout_s: float = setting(3600, 'deployment: a client gives up after this long without a message from the server', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    tls: bool = setting(True, 'deployment: mutual TLS between the server and the boards (false = plaintext and unauthenticated, warned at every start)', check=(lambda v: isinstance(v, bool), 'true or false'))
    tls_dir: str | None = setting(None, 'deployment: certificates from make_certs.sh (ca.pem, server.pem/.key, client<r>.pem/.key; relative to the repo); null = loopback certificates made on first use in RUN_DIR_ROOT/loopback-certs (loopback ipconfig only)', check=(lambda v: v is None or (isinstance(v, str) and v != ''), 'null or a directory path'))
    revoked_ranks: list[int] | None = setting(None, 'deployment: client ranks the server refuses although their certificates are valid (lost or compromised boards); null = none', check=(lambda v: v is None or (isinstance(v, list) and all(is_int(r) and r >= 1 for r in v)), 'null or a list of client ranks >= 1'))
    front: bool = setting(True, "deployment: each node listens through a connection-level front (deployment/front.py) that limits each host's connections before TLS and pauses reading a connection after each refused call; false = gRPC listens directly (doc/security.md)", check=(lambda v: isinstance(v, bool), 'true or false'))
    front_connections: int = setting(4, 'deployment, front: connections one host may hold at once, for each rank the ipconfig places there (an honest board holds one); more are held unread and closed', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    front_new_connections_per_s: float = setting(1.0, 'deployment, front: new connections a second one host may open, for each rank the ipconfig places there (after front_burst at once)', check=(lambda v: is_num(v) and v > 0, 'a number > 0'))
    front_burst: int = setting(8, 'deployment, front: new connections one host may open at once, for each rank the ipconfig places there', check=(lambda v: is_int(v) and v >= 1, 'an integer >= 1'))
    front_pause_first_s: float = setting(0.05, 'deployment, front: reading a connection pauses this long after a refused call, twice as long after each further one until a message of it is taken', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    front_pause_max_s: float = setting(2.0, 'deployment, front: the longest pause; also how long a connection over the limits is held unread before it is closed', check=(lambda v: is_num(v) and v > 0, 'a number of seconds > 0'))
    bind_all: bool = setting(False, "deployment: listen on every interface instead of only the ipconfig's grpc_server_ip", check=(lambda v: isinstance(v, bool), 'true or false'))


@dataclass(frozen=True)
class TrackingArgs:
    """Logging and experiment tracking."""

    enable_wandb: bool = setting(False, "FedML's W&B logging: always false (FedIoT runs without FedML's cloud and fedml.init; tracking_args.tensorboard is local)", check=(lambda v: v is False, 'false'), fedml=True)
    using_mlops: bool = setting(False, "FedML's cloud MLOps: always false (nothing may need the internet at run time)", check=(lambda v: v is False, 'false'), fedml=True)
    tensorboard: bool = setting(False, 'write TensorBoard event files to RUN_DIR/tensorboard (local only)', check=(lambda v: isinstance(v, bool), 'true or false'))
    fedml_console: bool = setting(False, "also show FedML's own log output on the console (it always goes to RUN_DIR/logs)", check=(lambda v: isinstance(v, bool), 'true or false'))
