"""Checks of values a peer sent: type, range, finiteness, exact keys. Every message validator uses these.

Each raises `InputError` naming the field and what was expected; the receiver logs it with the sender,
counts it and goes on (no peer input may crash a node).
"""
from __future__ import annotations

import math
from typing import Any

MAX_ROWS = 10**9  # plausibility bound on any row count a peer reports


class InputError(ValueError):
    """A value from a peer that is not what its message type allows."""


def fail(what: str) -> None:
    raise InputError(what)


def integer(v: Any, name: str, lo: int = 0, hi: int = MAX_ROWS) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        fail(f"{name} must be an integer in {lo}..{hi}")
    return v


def number(v: Any, name: str, lo: float = 0.0, hi: float = math.inf) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not lo <= v <= hi:
        fail(f"{name} must be a finite number in [{lo:g}, {hi:g}]")
    return float(v)


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
