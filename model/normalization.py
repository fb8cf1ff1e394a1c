"""Feature normalisation fitted on training benign rows only, from mergeable statistics.

Clients compute `FeatureStats` on their own training benign rows; statistics of several clients
merge exactly (counts, sums, sums of squares, min, max), so a federated run builds the same
`Normalizer` a centralized run would, without any row leaving a client.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Features whose spread on the training rows is below this are treated as constant: they are
# centred but not divided by ~0 (which would turn tiny test deviations into huge scores).
MIN_SCALE = 1e-6


TRANSFORMS = ("log1p", "none")


def apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    """Element-wise transform applied before scaling: 'log1p' is sign(x)*log(1+|x|)."""
    if transform == "log1p":
        t = np.abs(x, dtype=np.float64)   # a new array, transformed in place: one pass per operation
        np.log1p(t, out=t)
        return np.copysign(t, x, out=t)
    if transform == "none":
        return np.asarray(x, dtype=np.float64)
    raise ValueError(f"unknown feature transform {transform!r}; expected one of {TRANSFORMS}")


def invert_transform(t: np.ndarray, transform: str) -> np.ndarray:
    """The raw values whose transform is `t` (apply_transform's inverse): what a reconstruction means in features' units."""
    if transform == "log1p":
        return np.copysign(np.expm1(np.abs(t)), t)
    if transform == "none":
        return np.asarray(t, dtype=np.float64)
    raise ValueError(f"unknown feature transform {transform!r}; expected one of {TRANSFORMS}")


@dataclass
class FeatureStats:
    """Per-feature count / sum / sum of squares / min / max of transformed rows."""

    count: int
    total: np.ndarray
    total_sq: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, transform: str) -> "FeatureStats":
        t = apply_transform(rows, transform)
        return cls(len(t), t.sum(axis=0), (t ** 2).sum(axis=0), t.min(axis=0), t.max(axis=0))

    @classmethod
    def merge(cls, parts: list["FeatureStats"]) -> "FeatureStats":
        if not parts:
            raise ValueError("no statistics to merge")
        return cls(
            sum(p.count for p in parts),
            np.sum([p.total for p in parts], axis=0),
            np.sum([p.total_sq for p in parts], axis=0),
            np.min([p.minimum for p in parts], axis=0),
            np.max([p.maximum for p in parts], axis=0),
        )

    def with_count(self, count: int) -> "FeatureStats":
        """The same per-feature mean, mean square, min and max, weighed as `count` rows (a capped count)."""
        f = count / self.count
        return FeatureStats(count, self.total * f, self.total_sq * f, self.minimum.copy(), self.maximum.copy())

    @classmethod
    def trimmed_merge(cls, parts: list["FeatureStats"], trim: int) -> "FeatureStats":
        """Per feature, the exact merge of all parts but the `trim` whose mean and spread lie farthest from the
        median part's, so `trim` parts that report made-up statistics cannot move the result far.

        Farness of part i on feature j: |mean_ij - median_j(mean)| / s_j + |log(std_ij / median_j(std))|, with
        s_j the median std (at least MIN_SCALE). The result is scaled to the full count (per feature, the kept
        parts' mean and mean square), so it is a FeatureStats like `merge`'s. trim is capped at (n - 1) // 2.
        """
        trim = min(trim, (len(parts) - 1) // 2)
        if trim <= 0:
            return cls.merge(parts)
        n = np.array([p.count for p in parts], dtype=np.float64)[:, None]
        with np.errstate(all="ignore"):  # absurd reported values give inf/nan: the farthest of all
            mean = np.stack([p.total for p in parts]) / n
            std = np.sqrt(np.maximum(np.stack([p.total_sq for p in parts]) / n - mean ** 2, 0.0)) + MIN_SCALE
            median_std = np.median(std, axis=0)
            farness = np.abs(mean - np.median(mean, axis=0)) / median_std + np.abs(np.log(std / median_std))
        farness = np.nan_to_num(farness, nan=np.inf)
        keep = np.ones_like(farness, dtype=bool)
        np.put_along_axis(keep, np.argsort(-farness, axis=0, kind="stable")[:trim], False, axis=0)
        kept_n = (keep * n).sum(axis=0)
        total = int(n.sum())
        return cls(total,
                   np.where(keep, np.stack([p.total for p in parts]), 0.0).sum(axis=0) / kept_n * total,
                   np.where(keep, np.stack([p.total_sq for p in parts]), 0.0).sum(axis=0) / kept_n * total,
                   np.where(keep, np.stack([p.minimum for p in parts]), np.inf).min(axis=0),
                   np.where(keep, np.stack([p.maximum for p in parts]), -np.inf).max(axis=0))

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total.tolist(), "total_sq": self.total_sq.tolist(),
                "minimum": self.minimum.tolist(), "maximum": self.maximum.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureStats":
        return cls(int(d["count"]), np.asarray(d["total"]), np.asarray(d["total_sq"]),
                   np.asarray(d["minimum"]), np.asarray(d["maximum"]))


@dataclass
class Normalizer:
    """x -> (transform(x) - offset) / scale, identical for every row (benign or attack)."""

    transform: str
    method: str
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_stats(cls, stats: FeatureStats, transform: str, method: str) -> "Normalizer":
        if method == "zscore":
            mean = stats.total / stats.count
            var = np.maximum(stats.total_sq / stats.count - mean ** 2, 0.0)
            offset, spread = mean, np.sqrt(var)
        elif method == "minmax":
            offset, spread = stats.minimum, stats.maximum - stats.minimum
        else:
            raise ValueError(f"unknown normalization {method!r}; expected zscore or minmax")
        scale = np.where(spread < MIN_SCALE, 1.0, spread)
        return cls(transform, method, offset.astype(np.float64), scale.astype(np.float64))

    @classmethod
    def fit(cls, rows: np.ndarray, transform: str, method: str) -> "Normalizer":
        return cls.from_stats(FeatureStats.of(rows, transform), transform, method)

    def bounded_by(self, robust: "Normalizer", ratio: float) -> "Normalizer":
        """This normaliser with each feature's scale kept within [1/ratio, ratio] x `robust`'s and its offset within
        ratio x robust's scale of robust's offset: `robust` (from a trimmed merge) says where the honest majority
        is, so a few made-up statistics can stretch or shift a feature only that far. Honest heterogeneous
        clients spread the exact merge wider than the trimmed one; ratio must leave room for that."""
        scale = np.clip(self.scale, robust.scale / ratio, ratio * robust.scale)
        reach = ratio * robust.scale
        offset = np.clip(self.offset, robust.offset - reach, robust.offset + reach)
        return Normalizer(self.transform, self.method, offset, scale)

    def widened_for(self, own: FeatureStats, limit: float) -> "Normalizer":
        """This normaliser with each feature's scale widened (never narrowed) until a device's own training rows
        lie within `limit` scales of the offset on average and spread at most `limit` scales: max(scale,
        own spread / limit, |own centre - offset| / limit). A bound (`bounded_by`) cannot tell f honest devices
        that differ from the rest from f liars, and an honest device stretched by it is lost (issue 22: N-BaIoT
        without Ecobee, two doorbells' jitter features at 200-300 scales from the offset: their TPR 0); widening
        for the device's own statistics undoes that for that device only, so a client's numbers still reach
        no normaliser but its own."""
        ref = Normalizer.from_stats(own, self.transform, self.method)
        scale = np.maximum(self.scale, np.maximum(ref.scale / limit, np.abs(ref.offset - self.offset) / limit))
        return Normalizer(self.transform, self.method, self.offset, scale)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        t = apply_transform(rows, self.transform)
        if t is rows:
            t = t.copy()
        t -= self.offset
        t /= self.scale
        return t.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "method": self.method,
                "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(d["transform"], d["method"], np.asarray(d["offset"]), np.asarray(d["scale"]))
