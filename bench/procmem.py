"""Peak memory of a whole run: the summed PSS of a process and all its descendants (MPI ranks under mpirun,
Ray's raylet, GCS and actors under a Flower driver), sampled from /proc. PSS splits shared pages (torch's
libraries, copy-on-write data) between the processes that map them, so the sum is what the run costs."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 0.5


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(root: int) -> list[int]:
    """root and every process below it (one pass over /proc: parent links)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class PeakPss(threading.Thread):
    """Samples the summed PSS of `root`'s process tree until stopped; `peak` in MB, `peak_processes` then."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.peak_processes = root, 0.0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = descendants(self.root)
            total = sum(pss_mb(p) for p in pids)
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)
            time.sleep(SAMPLE_INTERVAL_S)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


@dataclass
class Measured:
    """A finished command: exit code, output, wall time, and the peak summed PSS of its process tree."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_pss_mb: float
    peak_processes: int


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run `cmd` to the end while sampling its process tree's summed PSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    sampler = PeakPss(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.stop()
    return Measured(proc.returncode, stdout, stderr, seconds, sampler.peak, sampler.peak_processes)
