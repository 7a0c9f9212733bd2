"""The one exception the media decoders raise for unreadable inputs.

Every broken input (missing file, zero bytes, truncated data, a file whose content is not
what its name says, a video without a video stream, ...) surfaces as :class:`MediaError`, so
a data loader can catch a single type, log the file and the reason, and move on.
"""

from __future__ import annotations

import os


class MediaError(Exception):
    """An image or video that cannot be decoded; the message names the file and the cause.

    Args:
        path: the file (or frame folder) that failed.
        reason: what is wrong with it, in words, with the numbers involved.

    The constructor arguments are kept in ``args`` so the exception survives pickling across
    DataLoader worker processes.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(os.fspath(path), reason)
        self.path = os.fspath(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def check_readable_file(path: str | os.PathLike) -> str:
    """Return ``path`` as a string if it is a non-empty regular file, else raise MediaError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(path, "file does not exist")
    if not os.path.isfile(path):
        raise MediaError(path, "not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    return path


def describe_head(path: str, limit: int = 24) -> str:
    """The file's first bytes, for error messages about files that are not what they claim."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(limit)
    except OSError as error:
        return f"unreadable ({error})"
    return repr(head)
