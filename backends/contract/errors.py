"""The two ways a run stops before it measures: a bad input, or a classified failure."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad input, reported as one line before any model loads."""


class RunFailure(Exception):
    """A run that cannot (or could not) be measured, with its classified status.

    status: not_applied | oom | missing_dependency | unsupported_hardware | timeout | crash | invalid_config
    """

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason
