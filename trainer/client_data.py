"""A client's training rows, loaded lazily so a process only reads the device it trains."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from data.loader import DeviceSplit
from model.normalization import Normalizer


@dataclass
class ClientRows:
    """One device's normalised training rows, loaded on first use."""

    device: str
    num_samples: int
    load_split: Callable[[], DeviceSplit]
    normalizer: Normalizer
    _rows: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> np.ndarray:
        if self._rows is None:
            self._rows = self.normalizer(self.load_split().train)
        return self._rows

    def __len__(self) -> int:
        return self.num_samples
