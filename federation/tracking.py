"""Optional local experiment tracking: TensorBoard event files in RUN_DIR/tensorboard (no account, no network).

Off by default (`tracking_args.tensorboard: false`). View with `tensorboard --logdir runs/`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """Writes one scalar set per round; a no-op when disabled."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log_round(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(record["round"])
        losses = record.get("client_losses") or {}
        if losses:
            self.writer.add_scalar("loss/mean", sum(losses.values()) / len(losses), step)
            for device, loss in losses.items():
                self.writer.add_scalar(f"loss/{device}", loss, step)
        for key in ("wall_time_s", "lr"):
            if key in record:
                self.writer.add_scalar(f"round/{key}", record[key], step)
        for mode, values in (record.get("eval") or {}).items():
            if isinstance(values, dict):
                for k, v in values.items():
                    if isinstance(v, (int, float)):
                        self.writer.add_scalar(f"eval_{mode}/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
