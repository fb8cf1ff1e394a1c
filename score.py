"""Score rows with a trained FedIoT detector (checkpoint file or run directory), no FedML needed.

    python -m score RUN_DIR_OR_MODEL --csv FILE.csv [--device NAME] [--out scores.csv]
    python -m score RUN_DIR --reevaluate      # recompute metrics.json from the checkpoint and the run's config

The checkpoint carries its normalisation and thresholds, so it scores new rows on its own.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data.loader import read_feature_csv
from data.sources import load_client_splits, prepare_data
from evaluation.metrics import METRIC_KEYS
from evaluation.scores import score_device
from evaluation.scoring import evaluate
from fediot import config as config_mod
from fediot.console import say
from fediot.errors import FedIoTError
from model.detector import Detector


def load_detector(path: Path) -> Detector:
    try:
        return Detector.load(path)
    except (FileNotFoundError, ValueError) as exc:
        raise FedIoTError(str(exc)) from None


def reevaluate(run_dir: Path) -> dict[str, Any]:
    """metrics ('global', 'devices', and 'clients' when devices were split) of the run's checkpoint on the data
    its config describes, each client's rows cut as the run cut them (`data_args.clients_per_device`)."""
    detector = load_detector(run_dir)
    cfg = config_mod.load(run_dir / "config.yaml")
    root, _ = prepare_data(cfg)
    splits = [part for device in cfg.devices for part in load_client_splits(cfg, root, device)]
    scores = [score_device(detector.model, detector.normalizer_for(split.device), split) for split in splits]
    # a federated run's metrics lead with each device's own threshold (what its detector uses); a baseline's as saved
    primary = "device" if str(detector.meta.get("kind", "")).startswith("federated") else "global"
    return evaluate(scores, detector.global_threshold, detector.device_thresholds,
                    cfg.validation.vote_window, primary, config_mod.device_of_client)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model.pt or a run directory holding it")
    p.add_argument("--csv", type=Path, help="N-BaIoT-format CSV to score")
    p.add_argument("--device", help="use this device's own threshold (default: the global threshold)")
    p.add_argument("--out", type=Path, help="write per-row score and flag to this CSV")
    p.add_argument("--reevaluate", action="store_true", help="recompute the run's metrics from its checkpoint")
    args = p.parse_args(argv)
    try:
        if args.reevaluate:
            m = reevaluate(args.model)
            say(json.dumps({k: m["global"][k] for k in METRIC_KEYS}))
            return 0
        if args.csv is None:
            raise FedIoTError("give --csv FILE to score, or --reevaluate")
        detector = load_detector(args.model)
        rows = read_feature_csv(args.csv)
        scores = detector.score(rows, args.device)
        thr = detector.threshold_for(args.device)
        flags = scores > thr
        if args.out:
            pd.DataFrame({"score": scores, "threshold": thr, "attack": flags}).to_csv(args.out, index_label="row")
        say(f"{args.csv}: {len(rows)} rows, {int(flags.sum())} flagged as attack ({flags.mean():.4f}); "
            f"threshold {thr:.6g}; median score {np.median(scores):.6g}")
    except FedIoTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
