"""The RevmuxError hierarchy: every error a user can cause names the value, what was expected, and the fix."""

from __future__ import annotations


class RevmuxError(Exception):
    """Base class of every error revmux raises for a problem the user can fix."""


class UnsupportedModelError(RevmuxError):
    """The backbone's model_type (or head) is not one revmux can slice."""


class ConfigError(RevmuxError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(RevmuxError):
    """An adapter checkpoint is missing, truncated, corrupted, or does not match the backbone."""


class DataError(RevmuxError):
    """Training or evaluation data is malformed (missing column, empty text, unknown label...)."""


class InputError(RevmuxError):
    """A request to the model is malformed (empty text, wrong type, pair missing a side...)."""
