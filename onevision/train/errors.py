"""Why a training run stopped: one-line errors the user can act on.

Every error here carries a message that names the file, field or sample at fault and what is
wrong, so a command-line face can print it as one line (exit code 2) instead of a traceback.
`ConfigError` (onevision.utils.dataclass_io) covers settings rejected when a config loads;
these cover what is found while the run starts or trains.
"""

from __future__ import annotations


class TrainError(RuntimeError):
    """A run stopped for a reason the user must act on; `str(err)` is one line."""


class CheckpointError(TrainError):
    """A checkpoint could not be written or read; the message names the file and the cause."""


class ResumeRefused(TrainError):
    """The config differs from the checkpoint's in fields that change the run (shown as field: old -> new)."""


class NonFiniteError(TrainError):
    """A loss or gradient norm became NaN or infinite; nothing of that step is saved or exported."""


class DataFailure(TrainError):
    """Too many samples were skipped (bad media, too long, over budget) for the run to mean anything."""
