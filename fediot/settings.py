"""How a component declares its settings: each package's `settings` module holds its YAML section as a frozen
dataclass whose fields are `setting(...)`s (default, one-line meaning, allowed values or check, whether FedML reads
it). `fediot.config` composes the sections, validates a file once and derives the run plan; a settings module
imports nothing but this one, so composing them imports no component's code."""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

MAX_CLIENTS = 100_000  # clients (devices x clients_per_device); a simulation's ranks are limited by memory instead


def is_int(v: Any) -> bool:
    """An int that is not a bool (YAML's true is not 1 client)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def setting(default: Any, doc: str, choices: tuple[Any, ...] | None = None,
            check: tuple[Callable[[Any], bool], str] | None = None, fedml: bool = False) -> Any:
    """A config field: default, one-line meaning (doc/config.md's table), allowed values or a check with what it
    expects, and whether FedML itself reads the key (only those reach FedML's args)."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "check": check, "fedml": fedml})
