"""Write the numpy detector (model.npz) for a checkpoint, so detect.py can run it without torch.

    python -m model.export MODEL [MODEL ...]      (MODEL: model.pt or a run directory)
New checkpoints get their model.npz when saved; this is for ones saved before, or copied without it.
Needs torch (run it where the model was trained), then copy model.npz to the board.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.detector import Detector
from model.lean import LeanDetector


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path)
    a = p.parse_args(argv)
    for model in a.models:
        try:
            out = Detector.load(model).export_lean(model)
            LeanDetector.load(out)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
