"""A folder cache for the demo's expensive steps, keyed by everything that changes their result.

Each step (world, tokenizer, decoder pretraining, tower pretraining, every curriculum stage)
lives in ``<root>/<kind>-<key>/`` where the key hashes the step's settings together with the
keys of the steps it starts from and a digest of the package's source, so changing the seed, a
size or a learning rate upstream gives new folders downstream, so does any change to the code
(the training loop, the data pipeline, the model), and a rerun with the same settings and code
reuses everything. A step is
built in a private folder and renamed into place once complete, with its metadata (losses,
seconds spent) in ``done.json``; a file lock serialises concurrent runs of the same step (the
demo and the transfer experiment share stage 1 and 1.5), and a killed run leaves nothing that
looks finished.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
"""Bumped whenever a step's output changes meaning, so stale folders are not reused."""
DONE = "done.json"


def default_cache_root() -> Path:
    """``$ONEVISION_CACHE/demo``, else ``~/.cache/onevision/demo``."""
    root = os.environ.get("ONEVISION_CACHE") or Path.home() / ".cache" / "onevision"
    return Path(root) / "demo"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of the `onevision` package's source (Python files, shipped YAML and JSON), the
    command-line faces in onevision/cli excepted: what a step's result can depend on."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml", ".json") and "cli" not in p.relative_to(package).parts[:1])
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(kind: str, settings: Any) -> str:
    """16 hex digits of the SHA-256 of (`kind`, `settings` as sorted JSON, CACHE_VERSION, `source_digest()`)."""
    data = {"kind": kind, "settings": settings, "version": CACHE_VERSION, "source": source_digest()}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Step:
    """A finished step: its folder, key and metadata."""

    folder: Path
    """Where its outputs are."""
    key: str
    """Its cache key (downstream keys include it)."""
    meta: dict
    """What `build` returned (losses, seconds) plus 'cached': whether this run reused it."""


class DemoCache:
    """Steps under `root`; with `enabled=False` every step is rebuilt (into `root` all the same).

    Args:
        root: the cache folder (created when needed).
        enabled: reuse finished steps.
    """

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    def folder(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def step(self, kind: str, settings: Any, build: Callable[[Path], dict]) -> Step:
        """The step `kind` with `settings`, built by `build(folder) -> metadata` when missing.

        `build` writes into the (empty) folder it is given; the folder is renamed into place
        after it returns, so `build` must not store its own path in anything it reads later.
        """
        key = cache_key(kind, settings)
        final = self.folder(kind, key)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{kind}-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.enabled and (final / DONE).is_file():
                meta = json.loads((final / DONE).read_text(encoding="utf-8"))
                return Step(final, key, {**meta, "cached": True})
            staging = self.root / f".build-{kind}-{key}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            started = time.perf_counter()
            try:
                meta = dict(build(staging))
                meta["seconds"] = time.perf_counter() - started
                meta["settings"] = settings
                (staging / DONE).write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
                shutil.rmtree(final, ignore_errors=True)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return Step(final, key, {**meta, "cached": False})
