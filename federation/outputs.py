"""What a federated run leaves behind and shows: console lines, rounds.jsonl, TensorBoard, the checkpoint, the
final outputs (model.pt, metrics.json, curves.json, report.md). The round state (`federation.state`) decides what
these hold; this module only writes and says them, so the state stays free of I/O and the driver
(`federation.driver`) stays one readable function.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evaluation.metrics import rate_text
from federation.state import SERVER_CHECKPOINT_FORMAT, RoundState
from federation.tracking import Tracker
from fediot.config import device_of_client
from fediot.console import say
from fediot.errors import ConfigError
from fediot.rundir import append_jsonl, write_atomic_bytes, write_json
from model.detector import Detector
from monitor.status import StatusStore


def load_server_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The deployment server's per-round checkpoint of a run directory (for --resume)."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no checkpoint.pt there (is it a deployment server run directory?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConfigError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != SERVER_CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a FedIoT server checkpoint")
    return payload


class RunOutputs:
    """The run directory's files and the server's console lines."""

    def __init__(self, run_dir: Path, tensorboard: bool, checkpoint: bool,
                 console: Callable[[str], None] | None = say, status: StatusStore | None = None) -> None:
        """checkpoint: write checkpoint.pt after every round (deployments, for --resume); console: where lines go
        (None: nowhere); status: the status page's store, which gets every round record and the end of the run."""
        self.run_dir = run_dir
        self.status = status
        self.tracker = Tracker(run_dir, tensorboard)
        self.checkpointing = checkpoint
        self.console = console

    def say(self, line: str) -> None:
        if self.console is not None:
            self.console(line)

    def record(self, record: dict[str, Any]) -> None:
        """A round's line in rounds.jsonl (and TensorBoard); a warning when messages were rejected since the last."""
        if not record:
            return
        if record.get("rejected"):
            first = record["rejections"][0]
            self.say(f"warning: {record['rejected']} message(s) rejected since the last round record "
                     f"(first from {first['from']}: {first['reason'][:120]}); see rounds.jsonl and logs/")
        append_jsonl(self.run_dir / "rounds.jsonl", record)
        self.tracker.log_round(record)
        if self.status is not None:
            self.status.round_record(record)

    def evaluated(self, after_round: int, metrics: dict[str, Any]) -> None:
        """An evaluation's per-device rows for the status page: threshold, TPR / FPR of rows and of windows."""
        if self.status is None:
            return
        rows = {}
        for device, e in metrics["devices"].items():
            w = e.get("window") or {}
            rows[device] = {"threshold": next(iter(e.get("thresholds", {}).values()), None), "tpr": e.get("tpr"),
                            "fpr": e.get("fpr"), "window_tpr": w.get("tpr"), "window_fpr": w.get("fpr"),
                            "n_benign_test": e.get("n_benign_test"), "n_attack_test": e.get("n_attack_test")}
        self.status.evaluation(after_round, rows)

    def checkpoint(self, payload: dict[str, Any]) -> None:
        """checkpoint.pt, atomically (a crash mid-write leaves the previous round's)."""
        if not self.checkpointing:
            return
        buf = io.BytesIO()
        torch.save(payload, buf)
        write_atomic_bytes(self.run_dir / "checkpoint.pt", buf.getvalue())

    def failure(self, message: str) -> str:
        """A run that stops early: what the user can still use."""
        if self.checkpointing:
            return f"{message}. The checkpoint of the last completed round is kept in {self.run_dir}"
        return message

    def finish(self, state: RoundState) -> None:
        """End of a federated run: model.pt, metrics.json, curves.json, report.md, and the final lines."""
        from evaluation.report import write_report  # matplotlib: only the server that finishes a run needs it

        self.tracker.close()
        thresholds = state.evaluator.thresholds
        g_thr = thresholds["global"]
        # each client's threshold, and (several clients per device) its device's, for `detect --device NAME`
        own = dict(thresholds["device"]) | {device_of_client(c): t for c, t in thresholds["device"].items()}
        scales = {name: np.asarray(state.device_scales[device_of_client(name)]) for name in own
                  if device_of_client(name) in state.device_scales}
        Detector(state.final_model(), state.normalizer, state.cfg.validation.threshold_k, g_thr, own,
                 state.final_meta(), scales).save(self.run_dir / "model.pt")
        metrics = state.final_metrics()
        write_json(self.run_dir / "metrics.json", metrics)
        write_json(self.run_dir / "curves.json", state.evaluator.curves)
        g = metrics["global"]  # its top level: each device with its own threshold, as its detector runs
        self.say(f"final (each device its own threshold): TPR {rate_text('tpr', g)}  FPR {rate_text('fpr', g)}  "
                 f"precision {rate_text('precision', g)}  F1 {rate_text('f1', g)}  ROC-AUC {rate_text('roc_auc', g)}")
        glob = g["modes"]["global"]
        self.say(f"final (global threshold {g_thr:.5f}, for devices outside the federation): TPR {rate_text('tpr', glob)}  "
                 f"FPR {rate_text('fpr', glob)}  F1 {rate_text('f1', glob)}")
        report = write_report(self.run_dir)
        self.say(f"report: {report}")
        if self.status is not None:
            self.status.finish(None)
