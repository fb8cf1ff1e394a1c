"""A real aarch64 FedIoT client, emulated with qemu-user, joining a server on 127.0.0.1 beside a native client.

    .venv/bin/python bench/bench_board_emulated.py [--workdir /tmp/fediot-arm64] [--rounds 2]

Needs root once (apt: qemu-user-static, the arm64 architecture) and the internet once (Debian arm64 packages,
PyPI aarch64 wheels); later runs reuse --workdir. Steps:
1. an aarch64 CPython 3.11 from Debian's arm64 packages, unpacked with `dpkg -x` (no chroot, no binfmt:
   qemu-aarch64-static -L ROOT runs it);
2. requirements.txt resolved and installed for aarch64 by tools/check_board_install.py --install-into
   (the same markers a Raspberry Pi's pip applies: CPU-only torch);
3. one deployment over gRPC with mutual TLS: server (x86_64) + client 1 (x86_64) + client 2 (aarch64, emulated),
   `--rounds` rounds, synthetic data; prints each client's machine, peak RSS and the run's rounds.
The emulated RSS includes qemu's own memory (its translated-code cache and the guest's); the share of the
emulator is estimated from the same import (fedml, torch) run natively and emulated.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy_helpers import REPO, Proc, deploy_config, read_rounds, run_dir_of, server  # noqa: E402

ROOT_PACKAGES = ["python3.11:arm64", "libgomp1:arm64", "libstdc++6:arm64"]
WRAPPER = """#!/bin/sh
# aarch64 CPython 3.11 (Debian arm64 packages) under qemu user emulation; FedIoT's requirements in site/.
HERE="$(cd "$(dirname "$0")" && pwd)"
export FEDIOT_ARM64_SITE="$HERE/site"
export PYTHONPATH="$HERE/boot${PYTHONPATH:+:$PYTHONPATH}"
exec qemu-aarch64-static -L "$HERE/root" "$HERE/root/usr/bin/python3.11" "$@"
"""
# Makes the --target install a site directory (its .pth files run, as in a venv's site-packages).
SITECUSTOMIZE = "import os, site\nsite.addsitedir(os.environ['FEDIOT_ARM64_SITE'])\n"
# Peak RSS after importing these modules: the emulator's share shows in the gap on the smallest ones.
IMPORT_RSS = ("import resource, platform{}; "
              "print(platform.machine(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
IMPORT_SETS = ("", ", numpy", ", fedml, torch")


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:5])} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return proc


def prepare(work: Path) -> Path:
    """The emulated Python (work/python-aarch64), built once."""
    python = work / "python-aarch64"
    if python.exists() and (work / "site" / "torch").is_dir():
        return python
    if not shutil.which("qemu-aarch64-static"):
        sh(["apt-get", "install", "-y", "-q", "qemu-user-static"])
    if "arm64" not in sh(["dpkg", "--print-foreign-architectures"]).stdout.split():
        sh(["dpkg", "--add-architecture", "arm64"])
        sh(["apt-get", "update", "-q"])
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    depends = sh(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                  "--no-breaks", "--no-replaces", "--no-enhances", *ROOT_PACKAGES]).stdout.split()
    packages = sorted({d for d in depends if d.endswith(":arm64") and not d.startswith("<")})
    print(f"downloading {len(packages)} Debian arm64 packages", flush=True)
    sh(["apt-get", "download", *packages], cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        sh(["dpkg", "-x", str(deb), str(work / "root")])
    print("installing requirements.txt for aarch64 (tools/check_board_install.py --install-into)", flush=True)
    sh([sys.executable, str(REPO / "tools" / "check_board_install.py"), "--keep", str(work / "wheels"),
        "--install-into", str(work / "site")])
    (work / "boot").mkdir(exist_ok=True)
    (work / "boot" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    python.write_text(WRAPPER)
    python.chmod(0o755)
    return python


def import_rss(python: str, modules: str) -> int:
    return int(sh([python, "-c", IMPORT_RSS.format(modules)], cwd=REPO).stdout.strip().splitlines()[-1].split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/fediot-arm64"))
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    python = prepare(a.workdir)
    tmp = a.workdir / "run"
    shutil.rmtree(tmp, ignore_errors=True)
    cfg = deploy_config(tmp, n_clients=2, train_args={"comm_round": a.rounds, "epochs": 1, "round_timeout_s": 1800,
                                                      "min_clients_per_round": 2},
                        validation_args={"frequency_of_the_test": a.rounds},
                        comm_args={"connect_timeout_s": 900, "wait_for_clients_s": 900, "send_timeout_s": 120})
    # synthetic data made once, natively, so the emulated board does not spend its time generating it
    sh([sys.executable, "-c", "import sys; from fediot.config import load; from data.sources import prepare_data; "
        "prepare_data(load(sys.argv[1]))", str(cfg)], cwd=REPO)
    started = time.monotonic()
    srv = server(cfg)
    native = Proc(["bash", str(REPO / "run_client.sh"), "1", str(cfg)])
    emulated = Proc(["env", f"PYTHON={python}", "bash", str(REPO / "run_client.sh"), "2", str(cfg)])
    codes = [proc.finish(3600) for proc in (srv, native, emulated)]
    wall = time.monotonic() - started
    if any(codes):
        for name, proc in (("server", srv), ("client 1", native), ("client 2", emulated)):
            print(f"--- {name} exit {proc.p.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-2500:]}")
        raise SystemExit("error: the emulated deployment failed")
    run_dir = run_dir_of(srv)
    rounds = read_rounds(run_dir)
    print(f"{len(rounds)} rounds in {wall:.0f} s (server + 2 clients over gRPC/mTLS on 127.0.0.1); run {run_dir}")
    print(f"round wall times (s): {', '.join(str(round(r['wall_time_s'], 2)) for r in rounds)}")
    devices = yaml.safe_load(cfg.read_text())["data_args"]["devices"]
    print("| client | machine | peak RSS (MB) | training seconds per round |\n|---|---|---|---|")
    for proc, rank in ((native, 1), (emulated, 2)):
        res = json.loads((run_dir_of(proc) / "resources" / f"rank{rank}.json").read_text())
        train = [r["client_train_seconds"][devices[rank - 1]] for r in rounds]
        print(f"| {rank} | {res['machine']} | {res['peak_rss_mb']:,.0f} | {', '.join(f'{t:.3f}' for t in train)} |")
    m = json.loads((run_dir / "metrics.json").read_text())["global"]
    print(f"final global TPR {m['tpr']:.4f} FPR {m['fpr']:.4f}")
    print("\n| peak RSS (MB) after importing | x86_64 native | aarch64 emulated |\n|---|---|---|")
    gaps = []
    for modules in IMPORT_SETS:
        native, emulated = import_rss(sys.executable, modules), import_rss(str(python), modules)
        gaps.append(emulated - native)
        print(f"| python{modules or ' (nothing)'} | {native} | {emulated} |")
    print(f"The emulated figures include qemu: {gaps[0]} MB for a bare interpreter, {gaps[1]} MB with numpy (its "
          "translated-code cache grows with the code run); x86_64's torch is a CUDA build and aarch64's CPU-only, "
          "so the last row differs by more than the emulator.")


if __name__ == "__main__":
    main()
