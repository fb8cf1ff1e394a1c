"""`fediot`: FedIoT's commands from any directory (installed by `bash install.sh` into .venv/bin).

    fediot detect ...      python -m detect        fediot capture ...     python -m capture
    fediot score ...       python -m score         fediot compare ...     python -m compare
    fediot baselines ...   python -m baselines     fediot simulator ...   python -m traffic.simulator
    fediot triage ...      python -m triage        fediot relay ...       python -m relay
    fediot server ...      run_server.sh           fediot client N ...    run_client.sh
    fediot simulate N ...  run_simulation.sh       fediot certs ...       make_certs.sh

Paths you give are taken from your current directory.
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

MODULES = {"detect": "detect", "capture": "capture", "score": "score", "compare": "compare",
           "baselines": "baselines", "simulator": "traffic.simulator",
           "triage": "triage", "relay": "relay"}
LAUNCHERS = {"server": ("bash", "run_server.sh"), "client": ("bash", "run_client.sh"),
             "simulate": ("sh", "run_simulation.sh"), "certs": ("bash", "make_certs.sh")}
REPO = Path(__file__).resolve().parents[1]  # an editable install: the repository itself


def usage() -> str:
    return __doc__.split("\n\n")[1].replace("\n    ", "\n").strip()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command in MODULES:
        sys.argv = [f"fediot {command}", *rest]
        runpy.run_module(MODULES[command], run_name="__main__", alter_sys=True)  # exits through its own sys.exit
        return 0
    if command in LAUNCHERS:
        shell, script = LAUNCHERS[command]
        # the launchers take the .venv's Python from $PYTHON (launcher_env.sh): this one
        os.execvpe(shell, [shell, str(REPO / script), *rest], {**os.environ, "PYTHON": sys.executable})
    print(usage(), file=sys.stderr)
    if command not in ("", "-h", "--help"):
        print(f"error: unknown command '{command}'", file=sys.stderr)
        return 2
    return 0 if command else 2


if __name__ == "__main__":
    sys.exit(main())
