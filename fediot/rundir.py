"""Run directories: one per run, holding config, metrics, per-round records and the model."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from fediot.config import FedIoTConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def repo_path(p: str | Path) -> Path:
    """A config path: absolute as given, relative ones against the repository root."""
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() else REPO_ROOT / path


def create_run_dir(root: str | Path, kind: str, dataset: str) -> Path:
    """Create runs/<YYYYmmdd-HHMMSS>-<kind>-<dataset>[-n]/ and return it."""
    base = repo_path(root)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        name = f"{stamp}-{kind}-{dataset}" + (f"-{n}" if n else "")
        try:
            (base / name).mkdir()
            return base / name
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {base}")


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write bytes via temp file + fsync + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Write text atomically (see write_atomic_bytes)."""
    write_atomic_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def finish_table(run_dir: Path, lines: list[str]) -> int:
    """A study's end: its markdown table written to run_dir/table.md and printed, the run directory printed last."""
    write_atomic(run_dir / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(run_dir)
    return 0


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (one small write, so concurrent appenders do not interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB. On Linux VmHWM (/proc/self/status): ru_maxrss survives execve,
    so a process forked from a large one and then exec'd (detect started by a test or `ip netns exec`) reported its
    parent's size (616 MB for detect in the LAN test); elsewhere ru_maxrss (KB on Linux, bytes on macOS)."""
    import resource
    import sys as _sys

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if _sys.platform == "darwin" else rss / 1024


def write_config(run_dir: Path, cfg: "FedIoTConfig") -> None:
    """config.yaml (the settings as asked, defaults filled: it loads back to the same run) and plan.json (what the
    run derived from them: client counts, quorum, averaged rounds, defenses in effect)."""
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.values, sort_keys=False))
    write_atomic(run_dir / "plan.json", json.dumps(cfg.plan.as_dict(), indent=2) + "\n")
