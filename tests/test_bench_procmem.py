"""bench/procmem.py: the peak memory the scale and Flower benchmarks report is the summed PSS of a whole
process tree (MPI ranks under mpirun, Ray's processes under a Flower driver), so it must see grandchildren."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from procmem import PeakPss, descendants  # noqa: E402

# a parent that starts a child, which starts a grandchild holding 300 MB of touched memory for 3 s
TREE = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "\"import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "'import time; b = bytearray(300 * 2**20); b[::4096] = bytes(len(b[::4096])); time.sleep(3)'])\"])")


def test_peak_pss_counts_the_whole_process_tree():
    proc = subprocess.Popen([sys.executable, "-c", TREE])
    sampler = PeakPss(proc.pid)
    sampler.start()
    proc.wait(timeout=60)
    peak = sampler.stop()
    assert proc.returncode == 0
    assert peak >= 300 and sampler.peak_processes >= 3, (peak, sampler.peak_processes)


def test_descendants_of_a_pid_with_no_children_is_just_itself():
    assert descendants(2**22 + 7) == [2**22 + 7]  # above Linux's pid_max: no process, no children


def test_a_process_forked_from_a_large_one_reports_its_own_peak_rss():
    """ru_maxrss survives execve: a process forked from a 300 MB one and exec'd reported 300 MB (detect started by the
    LAN test said 616 MB); `peak_rss_mb` reports the process's own high-water mark."""
    import os
    import sys

    import numpy as np

    big = np.ones(300 * 2**20 // 8)  # touched: 300 MB resident in this process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exec a Python that prints its own peak
        os.dup2(write, 1)
        os.execv(sys.executable, [sys.executable, "-c", "from fediot.rundir import peak_rss_mb; print(peak_rss_mb())"])
    os.close(write)
    with os.fdopen(read) as fh:
        child_peak = float(fh.read().strip())
    os.waitpid(pid, 0)
    assert big.sum() > 0 and child_peak < 150, child_peak
