"""Training-state checkpoints (atomic, checksummed, resumable), and the export of the final model for the next stage.

Layout under `output_dir/checkpoints/`:

    step-00000100/          one complete checkpoint
        model.safetensors, optimizer.pt, scheduler.pt     (single process / DDP)
        deepspeed/...                                      (DeepSpeed: every rank's shard)
        trainer.json        step, data sampler position, logger history (rank 0)
        config.yaml         the stage config the state was trained with
        rng/rank-00000.pt   python / numpy / torch (/ CUDA) RNG states, one file per rank
        manifest.json       size and sha256 of every file above, written last
    latest                  the name of the newest complete checkpoint

A save writes into `.tmp-step-00000100` beside the final folder (every file through
`durable.write_file`, so a full disk is reported as "could not write <file>: No space left on
device"), hashes the files into `manifest.json`, fsyncs, renames the folder into place, and only
then replaces `latest` (temp file, fsync, `os.replace`). A process killed at any moment leaves
`latest` naming a complete checkpoint; a failed save removes its partial folder and leaves
`latest` where it was. Old checkpoints beyond `keep_last` are deleted after `latest` moves,
never the one it names.

Resuming (`select`) takes the newest checkpoint, at or before the one `latest` names, whose
files all match the manifest; every newer one it passes over is reported with the file at
fault and why (truncated, missing, changed bytes, unreadable manifest). When none is intact the
run stops, naming each checkpoint's bad file.

`export_model` writes the transformers llava_onevision layout (onevision.checkpoint.save_hf)
from the engine's full state dict (ZeRO-3 gathers it first), atomically as well, and refuses
weights that are not finite.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from onevision.train.durable import (
    cause_of,
    check_manifest,
    fsync_dir,
    fsync_tree,
    reading,
    save_torch,
    write_atomic,
    write_file,
    write_manifest,
)
from onevision.train.engine import Runtime
from onevision.train.errors import CheckpointError, NonFiniteError

__all__ = ["Checkpointer", "ResumePoint", "export_model", "fsync_dir", "fsync_tree", "write_atomic"]

_STEP_RE = re.compile(r"^step-(\d{8})$")
LATEST = "latest"
CONFIG = "config.yaml"
TRAINER = "trainer.json"
log = logging.getLogger(__name__)


def rng_state() -> dict:
    """Python, numpy and torch RNG states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class ResumePoint:
    """The checkpoint a run continues from, and what was passed over to find it."""

    path: Path | None
    """The newest intact checkpoint at or before the one `latest` names; None: nothing to resume."""
    skipped: list[str] = field(default_factory=list)
    """One "<file>: <cause>" per newer checkpoint that failed its checks."""
    notes: list[str] = field(default_factory=list)
    """Other findings worth a line in the resume log (a missing or stray `latest`)."""

    @property
    def step(self) -> int:
        return int(self.path.name.removeprefix("step-")) if self.path is not None else 0

    def config(self) -> dict | None:
        """The stage config the checkpoint was trained with (its config.yaml), None when it has none."""
        if self.path is None or not (self.path / CONFIG).is_file():
            return None
        with reading(self.path / CONFIG):
            return yaml.safe_load((self.path / CONFIG).read_text())


class Checkpointer:
    """Saves and restores complete training states under `folder`, atomically, with checksums.

    Args:
        folder: output_dir/checkpoints.
        runtime: ranks (rank 0 renames, hashes and prunes; every rank writes its own RNG state).
        keep_last: complete checkpoints kept.
    """

    def __init__(self, folder: str | Path, runtime: Runtime, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.folder = Path(folder)
        self.runtime = runtime
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """The checkpoint folder `latest` names, or None when it names none (no checks of its files)."""
        pointer = self.folder / LATEST
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text(errors="replace").strip()
        return path if _STEP_RE.match(path.name) and path.is_dir() else None

    def save(self, step: int, engine, trainer_state: dict, config: dict | None = None) -> Path:
        """Write a complete checkpoint of `step` and point `latest` at it; all ranks call.

        Args:
            step: optimizer steps done.
            engine: `TorchEngine` or `DeepSpeedEngine` (writes model, optimizer, scheduler).
            trainer_state: JSON-able loop state (step, sampler, logger), written by rank 0.
            config: the stage config as plain data (config.yaml of the checkpoint: what a
                resume compares its own config with).

        Raises:
            CheckpointError: a file could not be written (named, with the cause); `latest`
                still names the previous checkpoint and the partial folder is removed.
        """
        name = f"step-{step:08d}"
        final = self.folder / name
        tmp = self.folder / f".tmp-{name}"
        if self.runtime.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / "rng").mkdir(parents=True)
        self.runtime.barrier()

        def write_files() -> None:
            engine.save(tmp)
            save_torch(rng_state(), tmp / "rng" / f"rank-{self.runtime.rank:05d}.pt")
            if self.runtime.is_main:
                body = json.dumps({"step": step, **trainer_state}, indent=1).encode()
                write_file(tmp / TRAINER, lambda handle: handle.write(body))
                if config is not None:
                    text = yaml.safe_dump(config, sort_keys=False).encode()
                    write_file(tmp / CONFIG, lambda handle: handle.write(text))

        def finish() -> None:
            if self.runtime.is_main:
                write_manifest(tmp, step)
                self._publish(tmp, final)

        # Each phase ends in an all-reduce of "did this rank fail" instead of a bare barrier:
        # a rank whose disk is full raises, and the others raise with it instead of waiting.
        for phase in (write_files, finish):
            error = None
            try:
                phase()
            except Exception as err:  # noqa: BLE001 - re-raised by _fail once the ranks agree
                error = err
            if self.runtime.all_reduce([float(error is not None)])[0]:
                self._fail(tmp, final, error)
        return final

    def _fail(self, tmp: Path, final: Path, error: BaseException | None) -> None:
        """Remove the partial folder and raise, naming the file and saying which checkpoint is kept."""
        if self.runtime.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = self.latest()
        where = f"latest still names {kept.name}" if kept is not None else "no earlier checkpoint exists"
        if error is None:
            what = f"could not save checkpoint {final}: another rank failed to write its part"
        elif isinstance(error, CheckpointError):
            what = str(error)
        else:
            what = f"could not save checkpoint {final}: {cause_of(error)}"
        raise CheckpointError(f"{what} ({where})") from error

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the finished folder into place, move `latest`, prune (rank 0)."""
        fsync_tree(tmp)
        if final.exists():
            trash = self.folder / f".tmp-old-{final.name}"
            os.rename(final, trash)
            shutil.rmtree(trash)
        os.rename(tmp, final)
        fsync_dir(self.folder)
        write_atomic(self.folder / LATEST, final.name + "\n")
        self._prune(keep=final.name)

    def select(self) -> ResumePoint:
        """The newest intact checkpoint at or before the one `latest` names (rank 0 checks every
        file against the manifest; all ranks get the answer).

        Raises:
            CheckpointError: checkpoints exist but none is intact (each one's file and cause named).
        """
        found = self._select() if self.runtime.is_main else None
        found = self.runtime.broadcast_object(found)
        if isinstance(found, str):
            raise CheckpointError(found)
        return found

    def _select(self) -> ResumePoint | str:
        steps = self.steps()
        point = ResumePoint(None)
        if not steps:
            return point
        named = self.latest()
        if named is None:
            point.notes.append(f"{self.folder / LATEST} names no checkpoint folder; trying every checkpoint, newest first")
        newest = int(named.name.removeprefix("step-")) if named is not None else steps[-1]
        for step in sorted((s for s in steps if s <= newest), reverse=True):
            path = self.folder / f"step-{step:08d}"
            problem = check_manifest(path, step) or _check_trainer(path, step)
            if problem is None:
                point.path = path
                return point
            point.skipped.append(problem)
        return f"no intact checkpoint under {self.folder}: " + "; ".join(point.skipped)

    def load(self, engine, path: Path | None = None) -> dict | None:
        """Restore engine state and this rank's RNG from `path` (default: `select()`); all ranks call.

        Returns:
            The trainer state saved with it (with "step"), or None when there is no checkpoint.

        Raises:
            CheckpointError: naming the file that could not be read, and why.
        """
        if path is None:
            point = self.select()
            for line in point.skipped:
                log.warning("resume: skipped %s", line)
            path = point.path
        if path is None:
            return None
        engine.load(path)
        rng_file = path / "rng" / f"rank-{self.runtime.rank:05d}.pt"
        if not rng_file.is_file():
            raise CheckpointError(f"{rng_file} is missing: the checkpoint was written by fewer ranks than this run has")
        # Our own file: numpy's RNG state is not a plain tensor, so the full unpickler is needed.
        with reading(rng_file):
            set_rng_state(torch.load(rng_file, weights_only=False))
        with reading(path / TRAINER):
            return json.loads((path / TRAINER).read_text())

    def steps(self) -> list[int]:
        """Steps of the checkpoint folders present (complete or not), ascending."""
        found = []
        for child in self.folder.iterdir() if self.folder.is_dir() else []:
            match = _STEP_RE.match(child.name)
            if match and child.is_dir():
                found.append(int(match.group(1)))
        return sorted(found)

    def _prune(self, keep: str) -> None:
        for step in self.steps()[: -self.keep_last]:
            name = f"step-{step:08d}"
            if name != keep:
                shutil.rmtree(self.folder / name, ignore_errors=True)


def _check_trainer(folder: Path, step: int) -> str | None:
    """trainer.json must parse and record the folder's step (the manifest cannot see an edit made
    together with a re-written manifest)."""
    path = folder / TRAINER
    try:
        recorded = json.loads(path.read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{path}: unreadable ({cause_of(err)})"
    if recorded != step:
        return f"{path}: records step {recorded}, but the folder is step {step}"
    return None

def export_model(engine, build_model, folder: str | Path, runtime: Runtime, tokenizer=None, merge_lora=None, dtype: torch.dtype | None = None) -> Path | None:
    """Write the trained model to `folder` in the transformers llava_onevision layout; all ranks call.

    Args:
        engine: gives the full state dict on rank 0 (ZeRO-3 gathers it from all ranks).
        build_model: () -> an empty OneVisionModel of the run's shape (and LoRA layout), its
            parameters on the meta device; the gathered tensors are assigned into it, so the
            weights are held once.
        folder: target folder (written to a temp folder beside it, then renamed).
        runtime: ranks; only rank 0 writes.
        tokenizer: saved beside the weights when given, so the folder is self-contained.
        merge_lora: (model) -> model, folds LoRA adapters into the weights before saving.
        dtype: dtype of the saved weights (e.g. bfloat16 after bf16 training); None keeps them.

    Returns:
        The folder on rank 0, None on the others.

    Raises:
        NonFiniteError: a weight holds NaN or inf (nothing is written).
    """
    from onevision.checkpoint.convert import save_model

    state = engine.full_state_dict()
    if not runtime.is_main:
        runtime.barrier()
        return None
    folder = Path(folder)
    bad = [name for name, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        runtime.barrier()
        raise NonFiniteError(f"not exporting {folder}: {len(bad)} weight tensor(s) hold NaN or inf, e.g. {bad[0]}")
    model = build_model()
    model.load_state_dict(state, strict=True, assign=True)
    if merge_lora is not None:
        model = merge_lora(model)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    # Stage settings transformers cannot express (a budget, base-only images, grid newlines) are
    # kept for the next stage under onevision_visual, with a warning naming them.
    # LLaVA v1 / 1.5 models go to their own layout (transformers llava, or the original for v1).
    save_model(model, tmp, dtype=dtype, tokenizer=tokenizer, progress=False, strict=False)
    fsync_tree(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)
    runtime.barrier()
    return folder
