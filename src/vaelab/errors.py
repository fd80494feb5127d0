"""User-facing errors.

Anything the user can fix (a bad config, a missing file, NaN data, an unknown name) raises a
``VaelabError``; the CLI prints its message as one line and exits with code 2. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VaelabError(Exception):
    """An error caused by the user's input, reported as one line."""


class ConfigError(VaelabError):
    """A malformed, ill-typed or out-of-range configuration."""


class DataError(VaelabError):
    """Missing, corrupt or invalid data."""


class CheckpointError(VaelabError):
    """A checkpoint that is missing, corrupt, unsafe or does not match the model."""


class TrainingDiverged(VaelabError):
    """A loss term or gradient became NaN or infinite."""


def closest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{match[0]}"?)' if match else ""
