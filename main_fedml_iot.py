"""FedIoT entry point: dispatch to the MPI simulation or to a deployment node.

    sh run_simulation.sh N [CONFIG]          mpirun -np N+1 python -m main_fedml_iot --cf CONFIG
    bash run_server.sh [CONFIG]              python -m main_fedml_iot --cf CONFIG --role server --rank 0
    bash run_client.sh N [CONFIG]            python -m main_fedml_iot --cf CONFIG --role client --rank N
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

from fediot.console import error
from fediot.errors import FedIoTError

DEFAULT_SIM_CONFIG = "config_simulation/fedml_config.yaml"


def parse_own_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=True, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cf", default=DEFAULT_SIM_CONFIG, help="YAML config (default %(default)s)")
    p.add_argument("--run_dir_file", default=None, help="simulation: write the run directory path into this file")
    p.add_argument("--rank", type=int, default=None, help="deployment: 0 = server, 1..N = client N")
    p.add_argument("--role", choices=["server", "client"], default=None, help="deployment: server or client")
    p.add_argument("--resume", default=None, help="deployment server: continue the run in this run directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    own = parse_own_args(sys.argv[1:] if argv is None else argv)
    try:
        if own.role is not None:
            from deployment.launch import run_deployment

            return run_deployment(own.cf, own.role, own.rank, own.resume)
        from trainer.simulation import run_simulation

        return run_simulation(own.cf, own.run_dir_file)
    except FedIoTError as exc:
        _report_error(str(exc))
        return 2


def _report_error(message: str) -> None:
    """One error line, from rank 0 only when every MPI rank reports the same failure."""
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
