"""What the federated server does at the end of each round (FedML-agnostic).

Records the round (client losses, learning rate, wall time), evaluates on the configured rounds
and after the last one, and at the end writes the checkpoint and metrics.json.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from data.loader import DeviceSplit
from fediot.config import FedIoTConfig
from fediot.console import round_bar, say
from fediot.curves import curves_from_scores
from fediot.errors import ConfigError
from fediot.evaluation import evaluate, score_device, thresholds
from fediot.report import write_report
from fediot.rundir import append_jsonl, write_json
from fediot.tracking import Tracker
from model.autoencoder import AutoEncoder
from model.detector import Detector, learning_rate_for_round
from model.normalization import Normalizer

SUMMARY_KEYS = ("tpr", "fpr", "precision", "f1", "accuracy", "roc_auc", "pr_auc")
SERVER_CHECKPOINT_FORMAT = "fediot-server-checkpoint-v1"


def load_server_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The deployment server's per-round checkpoint of a run directory (for --resume)."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError(f"--resume {run_dir}: no checkpoint.pt there (is it a deployment server run directory?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConfigError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != SERVER_CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not a FedIoT server checkpoint")
    return payload


def is_eval_round(round_idx: int, n_rounds: int, frequency: int) -> bool:
    """Evaluate after every `frequency` rounds (1-based) and always after the last round."""
    return (round_idx + 1) % frequency == 0 or round_idx == n_rounds - 1


def read_client_records(client_dir: Path, round_number: int) -> dict[str, dict[str, Any]]:
    """Client training records (one JSON line per round per device) for one round."""
    out: dict[str, dict[str, Any]] = {}
    if not client_dir.is_dir():
        return out
    for path in sorted(client_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("round") == round_number:
                out[rec["device"]] = rec
    return out


def write_final_outputs(run_dir: Path, model: nn.Module, normalizer: Normalizer, threshold_k: float,
                        global_threshold: float, device_thresholds: dict[str, float], meta: dict[str, Any],
                        metrics_doc: dict[str, Any], curves: dict[str, Any]) -> None:
    """End of a federated run (simulation or deployment): model.pt, metrics.json, curves.json,
    report.md, and the final lines on the console."""
    final = AutoEncoder(model.input_dim)
    final.load_state_dict(copy.deepcopy(model.state_dict()))
    Detector(final, normalizer, threshold_k, global_threshold, dict(device_thresholds), meta).save(run_dir / "model.pt")
    write_json(run_dir / "metrics.json", metrics_doc)
    write_json(run_dir / "curves.json", curves)
    g = metrics_doc["global"]
    say(f"final (global threshold {global_threshold:.5f}): TPR {g['tpr']:.4f}  FPR {g['fpr']:.4f}  "
        f"precision {g['precision']:.4f}  F1 {g['f1']:.4f}  ROC-AUC {g['roc_auc']:.4f}")
    d = g["modes"]["device"]
    say(f"final (per-device thresholds): TPR {d['tpr']:.4f}  FPR {d['fpr']:.4f}  F1 {d['f1']:.4f}")
    say(f"report: {write_report(run_dir)}")


class RoundRecorder:
    """Server-side bookkeeping of a federated run."""

    def __init__(self, cfg: FedIoTConfig, run_dir: Path, devices: list[str],
                 load_eval_split: Callable[[str], DeviceSplit], normalizer: Normalizer,
                 data_info: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        self.cfg, self.run_dir, self.devices = cfg, run_dir, devices
        self.load_eval_split = load_eval_split
        self.normalizer = normalizer
        self.data_info = data_info
        self.extra = extra or {}
        self._splits: dict[str, DeviceSplit] = {}
        self.started = time.monotonic()
        self.round_started = self.started
        self.rounds_file = run_dir / "rounds.jsonl"
        self.tracker = Tracker(run_dir, bool(cfg.get("tracking_args", "tensorboard")))

    def _eval_split(self, device: str) -> DeviceSplit:
        if device not in self._splits:
            split = self.load_eval_split(device)
            split.train = split.train[:0]  # the server never needs training rows
            self._splits[device] = split
        return self._splits[device]

    def end_of_round(self, model: nn.Module, round_idx: int) -> None:
        t, v = self.cfg.values["train_args"], self.cfg.values["validation_args"]
        n_rounds = t["comm_round"]
        now = time.monotonic()
        clients = read_client_records(self.run_dir / "clients", round_idx + 1)
        record: dict[str, Any] = {
            "round": round_idx + 1,
            "data_source": self.data_info["source"],
            "wall_time_s": round(now - self.round_started, 4),
            "elapsed_s": round(now - self.started, 4),
            "lr": learning_rate_for_round(t["learning_rate"], t["lr_decay"], t["min_learning_rate"], round_idx),
            "clients": sorted(clients),
            "client_losses": {d: r["loss"] for d, r in clients.items()},
            "client_train_seconds": {d: r["train_seconds"] for d, r in clients.items()},
        }
        mean_loss = sum(record["client_losses"].values()) / max(1, len(clients))
        line = f"{round_bar(round_idx + 1, n_rounds)}round {round_idx + 1}/{n_rounds}  clients {len(clients)}  mean loss {mean_loss:.5f}"
        if is_eval_round(round_idx, n_rounds, v["frequency_of_the_test"]):
            eval_started = time.monotonic()
            scores = [score_device(model, self.normalizer, self._eval_split(d)) for d in self.devices]
            glob_thr, dev_thr = thresholds(scores, v["threshold_k"])
            metrics = evaluate(scores, glob_thr, dev_thr, v["vote_window"], "global")
            g = metrics["global"]
            record["eval"] = {
                "global_threshold": {k: g["modes"]["global"][k] for k in SUMMARY_KEYS},
                "device_threshold": {k: g["modes"]["device"][k] for k in SUMMARY_KEYS},
            }
            line += f"  | TPR {g['tpr']:.4f}  FPR {g['fpr']:.4f}  F1 {g['f1']:.4f}"
            record["eval_seconds"] = round(time.monotonic() - eval_started, 4)
        append_jsonl(self.rounds_file, record)
        self.tracker.log_round(record)
        say(line + f"  ({record['wall_time_s']:.1f}s)")
        if round_idx == n_rounds - 1:
            self._finish(model, glob_thr, dev_thr, metrics, scores)
        self.round_started = time.monotonic()

    def _finish(self, model: nn.Module, glob_thr: float, dev_thr: dict[str, float], metrics: dict[str, Any],
                scores: list[Any]) -> None:
        self.tracker.close()
        write_final_outputs(
            self.run_dir, model, self.normalizer, self.cfg.get("validation_args", "threshold_k"), glob_thr, dev_thr,
            {"kind": "federated", "devices": self.devices, "rounds": self.cfg.get("train_args", "comm_round"),
             "data": self.data_info},
            {"data": self.data_info, "kind": "federated", **self.extra, **metrics}, curves_from_scores(scores))
