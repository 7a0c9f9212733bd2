"""Durable files for checkpoints: checked writes, atomic replaces, fsync, sha256 manifests.

- `write_file(path, write)` opens `path` in Python and hands the handle to `write` (torch.save,
  json, ...), so an OSError such as ENOSPC reaches us with its cause instead of torch's internal
  "[enforce fail at inline_container.cc] unexpected pos" message; any failure is re-raised as a
  `CheckpointError` naming the file and the cause ("No space left on device").
- `write_atomic(path, text)`: temp file + fsync + os.replace, readers see old or new, never half.
- `write_manifest(folder, step)` writes `manifest.json` (size and sha256 of every other file
  under `folder`) as the last file of a checkpoint; `check_manifest(folder, step)` says what
  is wrong with a checkpoint (file + cause) or None when every file matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from onevision.train.errors import CheckpointError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def cause_of(err: BaseException) -> str:
    """The root cause of `err` in words: an OSError's strerror ("No space left on device") when
    one is in the chain, else the first line of the message."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def write_file(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Create `path` and let `write(handle)` fill it.

    Raises:
        CheckpointError: naming `path` and the cause, whatever failed.
    """
    path = Path(path)
    try:
        with open(path, "wb") as handle:
            write(handle)
            handle.flush()
    except Exception as err:
        raise CheckpointError(f"could not write {path}: {cause_of(err)}") from err


def save_torch(obj, path: str | Path) -> None:
    """torch.save through `write_file` (errors name the file and the cause)."""
    import torch

    write_file(path, lambda handle: torch.save(obj, handle))


def save_weights(model, path: str | Path) -> None:
    """safetensors `save_model` (shared tensors handled) with errors naming the file and the cause.

    safetensors writes from Rust, so its own message ("I/O error: No space left on device
    (os error 28)") is the cause.
    """
    from safetensors.torch import save_model

    try:
        save_model(model, str(path))
    except Exception as err:
        raise CheckpointError(f"could not write {path}: {cause_of(err)}") from err


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Re-raise any failure inside the block as a `CheckpointError` naming `path`."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"could not load {path}: {cause_of(err)}") from err


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves (so renames see full files)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file + fsync + os.replace: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def fill(handle: BinaryIO) -> None:
        handle.write(text.encode())
        handle.flush()
        os.fsync(handle.fileno())

    write_file(tmp, fill)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _hash_all(folder: Path, names: list[str]) -> dict[str, str]:
    # hashlib releases the GIL on large buffers: threads hash several shard files at once.
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        return dict(zip(names, pool.map(lambda name: sha256_file(folder / name), names)))


def write_manifest(folder: Path, step: int) -> None:
    """Write folder/manifest.json: the step and every other file's size and sha256 (POSIX relative paths)."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    digests = _hash_all(folder, names)
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": digests[name]} for name in names}
    body = json.dumps({"format": MANIFEST_FORMAT, "step": step, "files": files}, indent=1).encode()
    write_file(folder / MANIFEST, lambda handle: handle.write(body))


def check_manifest(folder: Path, step: int) -> str | None:
    """What is wrong with checkpoint `folder` of `step` ("<file>: <cause>"), or None when intact."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{manifest}: missing (the checkpoint is incomplete)"
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
        recorded_step = int(data["step"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return f"{manifest}: unreadable ({type(err).__name__}: {cause_of(err)})"
    if recorded_step != step:
        return f"{manifest}: records step {recorded_step}, but the folder is step {step}"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)"
    digests = _hash_all(folder, sorted(files))
    for name in sorted(files):
        if digests[name] != files[name]["sha256"]:
            return f"{folder / name}: sha256 differs from the manifest (the file changed after it was saved)"
    return None
