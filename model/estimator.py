"""`AutoencoderDetector`: FedIoT's detector as a scikit-learn / PyOD estimator (issue 35).

    det = AutoencoderDetector(epochs=10).fit(X_benign)          # returns self, as scikit-learn's fit does
    det.decision_function(X)   # anomaly scores (reconstruction MSE)
    det.predict(X)             # 1 = attack, 0 = benign (PyOD's labels)
    det.threshold_             # the threshold fitted on held-out benign rows
    det.detector_              # the fitted model.detector.Detector (save(), export_lean() for boards)

Parameters live in __init__ (scikit-learn's BaseEstimator: get_params, set_params, clone). `fit(X)` trains on the
first 1 - validation_fraction of X's rows in their order and sets the threshold on the rest (FedIoT's rule: held-out
benign rows, never the training ones); `fit(X, X_validation=V)` takes V for the threshold instead. Only benign rows:
the detector is one-class. The federation fits the same `Detector.fit`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from model.detector import Detector


class AutoencoderDetector(BaseEstimator):
    """log1p + z-score normalisation fitted on the training rows, an autoencoder, threshold = mean + k std of the
    held-out rows' errors."""

    def __init__(self, epochs: int = 10, batch_size: int = 64, lr: float = 0.003, weight_decay: float = 0.0,
                 k: float = 5.0, transform: str = "log1p", normalization: str = "zscore",
                 validation_fraction: float = 0.25, seed: int = 0) -> None:
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.k, self.transform, self.normalization = k, transform, normalization
        self.validation_fraction, self.seed = validation_fraction, seed

    def fit(self, X: np.ndarray, y: Any = None, X_validation: np.ndarray | None = None) -> "AutoencoderDetector":
        """Train on benign rows X (y is ignored: one-class); the threshold from X_validation or X's last rows."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"X: expected a 2-D array of benign rows, got shape {X.shape}")
        if X_validation is None:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(f"validation_fraction {self.validation_fraction}: expected a number in (0, 1)")
            cut = int(round(len(X) * (1 - self.validation_fraction)))
            X, X_validation = X[:cut], X[cut:]
        X_validation = np.asarray(X_validation, dtype=np.float64)
        if X_validation.ndim != 2 or X_validation.shape[1] != X.shape[1] or len(X_validation) < 2:
            raise ValueError(f"X_validation: expected at least 2 rows of {X.shape[1]} columns, got {X_validation.shape}")
        self.detector_, self.losses_ = Detector.fit(
            {"rows": X}, {"rows": X_validation}, transform=self.transform, normalization=self.normalization,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
            seed=self.seed, k=self.k)
        self.n_features_in_ = X.shape[1]
        return self

    @property
    def threshold_(self) -> float:
        return self.detector_.threshold_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.detector_.decision_function(np.asarray(X, dtype=np.float64))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.detector_.predict(np.asarray(X, dtype=np.float64))
