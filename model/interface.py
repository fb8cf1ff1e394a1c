"""The one detector interface both backends share (issue 35): PyOD's names over FedIoT's per-device thresholds.

`Detector` (torch: training, the federation) and `LeanDetector` (numpy: boards, `detect`) both score raw rows with
`score(X, device)`; this mixin gives them PyOD's / scikit-learn's vocabulary on top, once:
`decision_function(X)` (the anomaly score: reconstruction MSE, higher is more abnormal), `threshold_` (the global
threshold, for a device outside the federation), `threshold_for(device)` (a device's own), `predict(X)` (1 = attack,
0 = benign, PyOD's labels). `model.estimator.AutoencoderDetector` is the fit-able estimator (`fit` returns self).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


def threshold_for(global_threshold: float, device_thresholds: dict[str, float], device: str | None) -> float:
    """The device's own threshold when known, else the global one."""
    if device is not None and device in device_thresholds:
        return device_thresholds[device]
    return global_threshold


class AnomalyDetector(Protocol):
    """What every FedIoT detector answers, whichever backend."""

    global_threshold: float
    device_thresholds: dict[str, float]

    def score(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray: ...


class DetectorInterface:
    """PyOD's names for a detector with `score`, `global_threshold` and `device_thresholds`."""

    def threshold_for(self: AnomalyDetector, device: str | None = None) -> float:
        return threshold_for(self.global_threshold, self.device_thresholds, device)

    @property
    def threshold_(self: AnomalyDetector) -> float:
        """PyOD's threshold_: the global threshold (a device outside the federation; `threshold_for` for one in it)."""
        return self.global_threshold

    def decision_function(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray:
        """PyOD's decision_function: each row's anomaly score (reconstruction MSE of the raw row)."""
        return self.score(raw_rows, device)  # type: ignore[attr-defined]

    def predict(self, raw_rows: np.ndarray, device: str | None = None) -> np.ndarray:
        """PyOD's predict: 1 where a row scores above the device's threshold (an attack), else 0."""
        return (self.score(raw_rows, device) > self.threshold_for(device)).astype(np.int64)  # type: ignore[attr-defined]
