"""Errors that FedIoT reports to the user as one clear line (no deep traceback)."""
from __future__ import annotations


class FedIoTError(Exception):
    """Base class: the message is complete and meant for the user."""


class ConfigError(FedIoTError):
    """A configuration file or key is missing or has a bad value."""


class DataError(FedIoTError):
    """A data file is missing, malformed or holds values we cannot use."""
