"""One device's held-out rows scored by a model: the per-row reconstruction errors every evaluation starts from.

Its own module so that the count reports (`evaluation.counts`) and the row-level rules (`evaluation.scoring`)
both build on it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from data.loader import DeviceSplit
from model.detector import ErrorStats, reconstruction_errors
from model.normalization import Normalizer
from model.threshold import ThresholdRule


@dataclass
class DeviceScores:
    """Per-row reconstruction errors of one device's held-out rows."""

    device: str
    validation: np.ndarray
    test: np.ndarray
    attacks: dict[str, np.ndarray] = field(default_factory=dict)
    missing_attacks: list[str] = field(default_factory=list)
    rows_per_day: float | None = None  # the rows' rate (captured rows), for the budget threshold rule

    def validation_stats(self, window: int | None = None, rule: ThresholdRule | None = None) -> ErrorStats:
        """Statistics of the validation errors (with the histogram of `window`'s window scores when given, and their
        tail's clusters under `rule`)."""
        return ErrorStats.of(self.validation, window, self.rows_per_day, rule)


def score_device(model: nn.Module, normalizer: Normalizer, split: DeviceSplit) -> DeviceScores:
    """Score a device's validation, benign test and attack rows with the same normalisation."""

    def s(rows: np.ndarray) -> np.ndarray:
        return reconstruction_errors(model, normalizer(rows))

    return DeviceScores(split.device, s(split.validation), s(split.test),
                        {name: s(rows) for name, rows in split.attacks.items()}, list(split.missing_attacks),
                        split.rows_per_day)
