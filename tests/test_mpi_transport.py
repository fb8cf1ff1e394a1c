"""MpiTransport between two real MPI ranks: raw bytes only (nothing is unpickled), the sender is the rank MPI
delivered the message from, oversized messages are refused."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_mpi_transport_delivers_by_source_rank_and_never_unpickles(tmp_path):
    mpirun = Path(sys.executable).parent / "mpirun"
    mpirun = str(mpirun) if mpirun.exists() else shutil.which("mpirun")
    canary = tmp_path / "canary-should-never-exist"
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    env = {**os.environ, "OMPI_MCA_mpi_yield_when_idle": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([mpirun, *flags, "-np", "2", sys.executable, str(REPO / "tests" / "mpi_transport_ranks.py"),
                           str(canary)], capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert result["delivered"] == [["fediot_welcome", 1, 4]]
    reasons = [reason for _, reason in result["rejected"]]
    assert len(reasons) == 3 and all(sender == "rank 1 (MPI)" for sender, _ in result["rejected"])
    # the two that cannot be messages are refused before they are queued, the spoofed one once it is decoded
    assert sum("bad magic" in r for r in reasons) == 1 and not canary.exists()
    assert sum("max_message_mb" in r for r in reasons) == 1
    assert sum("claims to be rank 2 (rank spoofing)" in r for r in reasons) == 1
