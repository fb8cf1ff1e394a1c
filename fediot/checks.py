"""Checks of values a peer sent: type, range, finiteness, exact keys. Every message validator uses these.

Each raises `InputError` naming the field and what was expected; the receiver logs it with the sender,
counts it and goes on (no peer input may crash a node).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_ROWS = 10**9  # plausibility bound on any row count a peer reports
# The largest feature value or per-row error a client can compute: the model and its inputs are float32, so anything
# larger is inf on the client. Sums over MAX_ROWS rows of these (and of their squares) stay far inside float64.
MAX_VALUE = float(np.finfo(np.float32).max)
RELATIVE_SLACK = 1e-6  # float summation differences allowed between statistics that must agree


class InputError(ValueError):
    """A value from a peer that is not what its message type allows."""


def fail(what: str) -> None:
    raise InputError(what)


def integer(v: Any, name: str, lo: int = 0, hi: int = MAX_ROWS) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        fail(f"{name} must be an integer in {lo}..{hi}")
    return v


def number(v: Any, name: str, lo: float = 0.0, hi: float = math.inf) -> float:
    """A finite number in [lo, hi]. JSON integers have no size limit: one beyond float64 (10**400) is refused here,
    not an OverflowError deep in a check."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        fail(f"{name} must be a finite number in [{lo:g}, {hi:g}]")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or not lo <= x <= hi:
        fail(f"{name} must be a finite number in [{lo:g}, {hi:g}]")
    return x


def string(v: Any, name: str, max_len: int = 200) -> str:
    if not isinstance(v, str) or len(v) > max_len:
        fail(f"{name} must be a string of at most {max_len} characters")
    return v


def mapping(v: Any, name: str, keys: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(v, dict):
        fail(f"{name} must be a mapping")
    if keys is not None and set(v) != keys:
        fail(f"{name} must have exactly the keys {sorted(keys)}, not {sorted(map(str, v))[:10]}")
    return v


def vector(v: Any, name: str, n: int, lo: float = -math.inf) -> None:
    if not isinstance(v, list) or len(v) != n:
        fail(f"{name} must be a list of {n} numbers")
    for x in v:
        number(x, name, lo)


def error_stats(count: int, total: float, total_sq: float, name: str) -> None:
    """Statistics of per-row errors (each in [0, MAX_VALUE]) that some rows can have: totals within the rows' range
    and total^2 <= count * total_sq (Cauchy-Schwarz), in float64."""
    n, t, q = float(count), float(total), float(total_sq)
    if not (0.0 <= t <= n * MAX_VALUE and 0.0 <= q <= n * MAX_VALUE * MAX_VALUE):
        fail(f"{name}: totals outside what {count} errors of at most {MAX_VALUE:.3g} can sum to")
    if t * t > n * q * (1 + RELATIVE_SLACK) + 1e-300 or q > t * MAX_VALUE * (1 + RELATIVE_SLACK):
        fail(f"{name}: sum {t:.6g} and sum of squares {q:.6g} of {count} rows contradict each other")


def feature_stats(count: int, total: list[float], total_sq: list[float], minimum: list[float], maximum: list[float],
                  name: str) -> None:
    """Per-feature statistics that `count` rows can have: |values| <= MAX_VALUE, min <= max, the mean between them,
    total^2 <= count * total_sq and total_sq <= count * max(min^2, max^2), in float64."""
    t, q = np.asarray(total, dtype=np.float64), np.asarray(total_sq, dtype=np.float64)
    lo, hi = np.asarray(minimum, dtype=np.float64), np.asarray(maximum, dtype=np.float64)
    n = float(count)
    slack = RELATIVE_SLACK
    bad = ~(np.abs(lo) <= MAX_VALUE) | ~(np.abs(hi) <= MAX_VALUE) | (lo > hi)
    if bad.any():
        fail(f"{name}: feature {int(np.argmax(bad))}: minimum/maximum out of order or beyond {MAX_VALUE:.3g}")
    reach = n * np.maximum(np.abs(lo), np.abs(hi))
    bad = (t < n * lo - slack * reach - 1e-300) | (t > n * hi + slack * reach + 1e-300)
    if bad.any():
        fail(f"{name}: feature {int(np.argmax(bad))}: mean outside [minimum, maximum]")
    square_reach = n * np.maximum(lo * lo, hi * hi)
    bad = (q < 0) | (q > square_reach * (1 + slack) + 1e-300) | (t * t > n * q * (1 + slack) + 1e-300)
    if bad.any():
        fail(f"{name}: feature {int(np.argmax(bad))}: sum and sum of squares contradict each other or the range")
