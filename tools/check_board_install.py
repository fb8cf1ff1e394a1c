"""What `pip install -r requirements.txt` downloads on a board: total size and any CUDA / NVIDIA package.

    python tools/check_board_install.py [--machine aarch64] [--python-version 3.11] [--max-mb 600] [--keep DIR]
                                        [--install-into DIR]

Runs `pip download --platform manylinux..._<machine> --only-binary=:all:` for requirements.txt, as a board
would resolve it. Needs the internet (PyPI); the product never runs it.

Two things plain `pip download --platform` gets wrong, handled here:
* pip evaluates environment markers (`platform_machine == "aarch64"` in requirements.txt and in torch's
  own metadata) against the machine running pip, not the target. This script runs pip with the marker
  environment of the target board, so the same markers pick the same packages as on the board.
* --platform needs wheels only; five dependencies of fedml are sdists of pure Python (GPUtil, paho-mqtt,
  pathtools, promise, wget). They are built here into py3-none-any wheels (valid on any machine) and
  offered to pip with --find-links.
--install-into DIR then installs the downloaded files into DIR (`pip install --target`, no index) for that
board: a site directory an aarch64 Python can use (bench/bench_board_emulated.py runs a client from it).
Exit status: 0 when no CUDA/NVIDIA package is downloaded and the total is within --max-mb, else 1.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# fedml's dependencies that PyPI has only as sdists; all pure Python.
PURE_PYTHON_SDISTS = ("GPUtil", "paho-mqtt<2", "pathtools", "promise", "wget")
# Distribution names (normalised) that mean CUDA: NVIDIA's runtime packages, OpenAI Triton (GPU kernels).
CUDA_NAME = re.compile(r"^(nvidia[-_].*|cuda[-_].*|triton)$")

# pip run with the target's marker environment; argv[1] is the environment as JSON, the rest pip's arguments.
_PIP_WITH_TARGET_MARKERS = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv[1])
base = markers.default_environment()
markers.default_environment = lambda: {**base, **target}
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def marker_environment(machine: str, python_version: str) -> dict[str, str]:
    """The PEP 508 marker values of a Linux board with this CPU and Python."""
    return {"platform_machine": machine, "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
            "python_version": python_version, "python_full_version": python_version + ".0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def platform_tags(machine: str) -> list[str]:
    return [f"manylinux_2_{v}_{machine}" for v in (39, 38, 35, 34, 31, 28, 27, 24, 17)] + \
           [f"manylinux2014_{machine}", f"linux_{machine}"]


def distribution_name(filename: str) -> str:
    """Normalised project name of a wheel or sdist file name."""
    return re.sub(r"[-_.]+", "-", filename.split("-")[0]).lower()


def run(what: str, cmd: list[str]) -> None:
    """Run a pip command; on failure print pip's ERROR lines and stop with one error line."""
    print(what, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR")]
        print("\n".join(errors[-5:]), file=sys.stderr)
        raise SystemExit(f"error: {what} failed (pip exit {proc.returncode}); "
                         "a CUDA package named above means this torch is a CUDA build on the board")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machine", default="aarch64", help="target CPU as platform.machine() prints it (default %(default)s)")
    p.add_argument("--python-version", default="3.11")
    p.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    p.add_argument("--max-mb", type=float, default=600.0, help="goal for the total download (default %(default)s)")
    p.add_argument("--keep", type=Path, help="download into this directory and keep it (default: a temp dir)")
    p.add_argument("--install-into", type=Path, help="then install the downloads into this directory for the board")
    a = p.parse_args(argv)
    if not a.requirements.is_file():
        print(f"error: {a.requirements}: requirements file not found", file=sys.stderr)
        return 2
    dest = a.keep or Path(tempfile.mkdtemp(prefix="board-wheels-"))
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix="pure-python-wheels-"))
    try:
        run("building wheels of the pure-Python sdists " + ", ".join(PURE_PYTHON_SDISTS),
            [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps", "-w", str(local),
             *PURE_PYTHON_SDISTS])
        as_board = [sys.executable, "-c", _PIP_WITH_TARGET_MARKERS,
                    json.dumps(marker_environment(a.machine, a.python_version))]
        target_args = ["--disable-pip-version-check", "-q", "--only-binary=:all:", "--python-version", a.python_version,
                       "--implementation", "cp", "-r", str(a.requirements)]
        for tag in platform_tags(a.machine):
            target_args += ["--platform", tag]
        cmd = [*as_board, "download", "--dest", str(dest), "--find-links", str(local), *target_args]
        run(f"downloading {a.requirements.name} as Linux {a.machine}, Python {a.python_version} resolves it "
            f"(this machine: {platform.machine()})", cmd)
        files = sorted(dest.iterdir(), key=lambda f: f.stat().st_size, reverse=True)
        total = sum(f.stat().st_size for f in files)
        cuda = [f.name for f in files if CUDA_NAME.match(distribution_name(f.name)) or "+cu" in f.name]
        torch_files = [f.name for f in files if distribution_name(f.name) in ("torch", "torchvision")]
        print(f"\n{len(files)} files, {total / 1e6:,.0f} MB in all; largest:")
        for f in files[:8]:
            print(f"  {f.stat().st_size / 1e6:8.1f} MB  {f.name}")
        print(f"torch: {', '.join(torch_files) or 'none'}")
        print(f"CUDA / NVIDIA packages: {', '.join(cuda) if cuda else 'none'}")
        ok = not cuda and total <= a.max_mb * 1e6
        print(f"{'OK' if ok else 'FAIL'}: goal no CUDA package and total <= {a.max_mb:g} MB")
        if a.install_into:
            run(f"installing into {a.install_into} for Linux {a.machine}",
                [*as_board, "install", "--upgrade", "--no-index", "--find-links", str(dest), "--target",
                 str(a.install_into), *target_args])
            print(a.install_into)
        if a.keep:
            print(dest)
        return 0 if ok else 1
    finally:
        shutil.rmtree(local, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
