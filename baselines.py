"""Centralized and local-only baselines with the federated run's data, split, normalisation,
threshold and metrics code; optional comparison with a federated run directory.

    python -m baselines [--cf CONFIG] [--federated RUN_DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any


from data.loader import DeviceSplit
from data.sources import load_split, prepare_data
from evaluation.curves import curves_from_scores
from evaluation.metrics import METRIC_KEYS
from evaluation.report import write_report
from evaluation.scores import DeviceScores, score_device
from evaluation.scoring import evaluate
from fediot import config as config_mod
from fediot.console import say
from fediot.errors import FedIoTError
from fediot.rundir import create_run_dir, write_config, write_json
from model.detector import Detector

DEFAULT_CONFIG = "config_simulation/fedml_config.yaml"


def baseline_epochs(cfg: config_mod.FedIoTConfig) -> int:
    """Epochs for a baseline model: train_args.centralized_epochs, else comm_round * epochs.

    The default (30) is measured: on the real sample rows, a local model trained 200 epochs learns to
    reconstruct gafgyt udp flood rows (TPR 0.02), while 10-50 epochs keep every attack file >= 0.99.
    """
    t = cfg.train
    return t.centralized_epochs or t.comm_round * t.epochs


def train_detector(cfg: config_mod.FedIoTConfig, splits: list[DeviceSplit], label: str) -> tuple[Detector, list[DeviceScores], list[float]]:
    """One detector of the splits' devices (`Detector.fit`), and its scores of their held-out rows."""
    m, t, v = cfg.model, cfg.train, cfg.validation
    epochs = baseline_epochs(cfg)
    started = time.monotonic()

    def on_epoch(epoch: int, loss: float) -> None:
        if epoch == epochs - 1 or (epoch + 1) % max(1, epochs // 5) == 0:
            say(f"  [{label}] epoch {epoch + 1}/{epochs}  loss {loss:.5f}  ({time.monotonic() - started:.1f}s)")

    det, losses = Detector.fit({s.device: s.train for s in splits}, {s.device: s.validation for s in splits},
                               transform=m.feature_transform, normalization=m.normalization, epochs=epochs,
                               batch_size=t.batch_size, lr=t.learning_rate, weight_decay=t.weight_decay,
                               seed=cfg.common.random_seed, k=v.threshold_k,
                               meta={"kind": label, "devices": [s.device for s in splits]}, on_epoch=on_epoch)
    return det, [score_device(det.model, det.normalizer, s) for s in splits], losses


def _summary_line(name: str, g: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "  n/a " if x is None else f"{x:6.4f}"
    return f"{name:<12} TPR {f(g['tpr'])}  FPR {f(g['fpr'])}  F1 {f(g['f1'])}  ROC-AUC {f(g['roc_auc'])}"


def run(cfg: config_mod.FedIoTConfig, federated: Path | None = None) -> Path:
    """Train and evaluate both baselines; returns the run directory."""
    window = cfg.validation.vote_window
    root, data_info = prepare_data(cfg)
    say(f"FedIoT baselines: {len(cfg.devices)} device(s), data {data_info['source']} at {root}")
    splits = []
    for device in cfg.devices:
        s = load_split(cfg, root, device)
        say(f"  {device}: train {len(s.train)}, validation {len(s.validation)}, test {len(s.test)} benign rows; "
            f"{len(s.attacks)} attack files")
        splits.append(s)
    # the run directory only once every device's rows have loaded: bad data leaves no empty run behind
    run_dir = create_run_dir(cfg.common.run_dir_root, "baselines", cfg.data.dataset)
    write_config(run_dir, cfg)
    data_info["split"] = {s.device: {"train": len(s.train), "validation": len(s.validation), "test": len(s.test),
                                     "attacks": {k: len(a) for k, a in s.attacks.items()}} for s in splits}
    results: dict[str, dict[str, Any]] = {}

    say("Centralized model (all devices' training benign rows pooled)")
    det, scores, losses = train_detector(cfg, splits, "centralized")
    metrics = {"data": data_info, "kind": "centralized", "train_losses": losses,
               **evaluate(scores, det.global_threshold, det.device_thresholds, window, "global")}
    det.save(run_dir / "centralized" / "model.pt")
    write_json(run_dir / "centralized" / "metrics.json", metrics)
    write_json(run_dir / "centralized" / "curves.json", curves_from_scores(scores))
    results["centralized"] = metrics

    say("Local-only models (each device its own normalisation, model and threshold)")
    local_scores: list[DeviceScores] = []
    local_losses: dict[str, list[float]] = {}
    local_thresholds: dict[str, float] = {}
    for s in splits:
        det, sc, losses = train_detector(cfg, [s], f"local {s.device}")
        det.save(run_dir / "local" / f"model-{s.device}.pt")
        local_scores.extend(sc)
        local_losses[s.device] = losses
        local_thresholds.update(det.device_thresholds)
    # Each device is judged with its own model and own threshold; a pooled "global" threshold
    # across different models has no meaning, so only the device mode is reported.
    metrics = {"data": data_info, "kind": "local", "train_losses": local_losses,
               **evaluate(local_scores, None, local_thresholds, window, "device")}
    write_json(run_dir / "local" / "metrics.json", metrics)
    write_json(run_dir / "local" / "curves.json", curves_from_scores(local_scores))
    results["local"] = metrics

    if federated is not None:
        fed_file = (federated / "metrics.json" if federated.is_dir() else federated).resolve()
        try:
            results["federated"] = json.loads(fed_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FedIoTError(f"{fed_file}: cannot read the federated metrics ({exc})") from None
    comparison: dict[str, Any] = {"data_source": data_info["source"],
                                  "federated_run": str(fed_file.parent) if federated is not None else None}
    comparison.update({name: {k: r["global"].get(k) for k in METRIC_KEYS}
                       for name, r in results.items()})
    write_json(run_dir / "comparison.json", comparison)
    say("")
    say("Comparison (pooled over devices; federated/centralized: global threshold, local: device thresholds)")
    for name, r in results.items():
        say(_summary_line(name, r["global"]))
    say(f"report: {write_report(run_dir)}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cf", default=DEFAULT_CONFIG, help="YAML config (default %(default)s)")
    parser.add_argument("--federated", type=Path, help="a federated run directory to compare with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        cfg = config_mod.load(args.cf)
        run_dir = run(cfg, args.federated)
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(str(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
