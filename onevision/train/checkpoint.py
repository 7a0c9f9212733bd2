"""Atomic, resumable checkpoints, and the export of the final model for the next stage.

Layout under `output_dir/checkpoints/`:

    step-00000100/          one complete checkpoint
        model.safetensors, optimizer.pt, scheduler.pt     (single process / DDP)
        deepspeed/...                                      (DeepSpeed: every rank's shard)
        trainer.json        step, data sampler position, logger history (rank 0)
        rng/rank-00000.pt   python / numpy / torch (/ CUDA) RNG states, one file per rank
    latest                  the name of the newest complete checkpoint

A save writes into `.tmp-step-00000100` beside the final folder, fsyncs every file, renames the
folder into place, and only then replaces `latest` (written to a temp file, fsynced,
`os.replace`d). A process killed at any moment leaves `latest` naming a complete checkpoint;
half-written `.tmp-*` folders are cleared by the next save. Old checkpoints beyond `keep_last`
are deleted after `latest` moves, never the one it names.

`export_model` writes the transformers llava_onevision layout (onevision.checkpoint.save_hf)
from the engine's full state dict (ZeRO-3 gathers it first), atomically as well.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from onevision.train.engine import Runtime

_STEP_RE = re.compile(r"^step-(\d{8})$")
LATEST = "latest"


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then the folders themselves (so renames see full files)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file + fsync + os.replace: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


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


class Checkpointer:
    """Saves and restores complete training states under `folder`, atomically.

    Args:
        folder: output_dir/checkpoints.
        runtime: ranks (rank 0 renames and prunes; every rank writes its own RNG state).
        keep_last: complete checkpoints kept.
    """

    def __init__(self, folder: str | Path, runtime: Runtime, keep_last: int = 2):
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.folder = Path(folder)
        self.runtime = runtime
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, or None when there is none yet.

        Raises:
            FileNotFoundError: `latest` names a folder that does not exist.
        """
        pointer = self.folder / LATEST
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        path = self.folder / name
        if not path.is_dir():
            raise FileNotFoundError(f"{pointer} names {name!r}, but {path} does not exist")
        return path

    def save(self, step: int, engine, trainer_state: dict) -> Path:
        """Write a complete checkpoint of `step` and point `latest` at it; all ranks call.

        Args:
            step: optimizer steps done.
            engine: `TorchEngine` or `DeepSpeedEngine` (writes model, optimizer, scheduler).
            trainer_state: JSON-able loop state (step, sampler, logger), written by rank 0.
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
        engine.save(tmp)
        torch.save(rng_state(), tmp / "rng" / f"rank-{self.runtime.rank:05d}.pt")
        if self.runtime.is_main:
            (tmp / "trainer.json").write_text(json.dumps({"step": step, **trainer_state}, indent=1))
        self.runtime.barrier()
        if self.runtime.is_main:
            fsync_tree(tmp)
            if final.exists():
                trash = self.folder / f".tmp-old-{name}"
                os.rename(final, trash)
                shutil.rmtree(trash)
            os.rename(tmp, final)
            fsync_dir(self.folder)
            write_atomic(self.folder / LATEST, name + "\n")
            self._prune(keep=name)
        self.runtime.barrier()
        return final

    def load(self, engine, path: Path | None = None) -> dict | None:
        """Restore engine state and this rank's RNG from `path` (default: latest); all ranks call.

        Returns:
            The trainer state saved with it (with "step"), or None when there is no checkpoint.
        """
        path = self.latest() if path is None else Path(path)
        if path is None:
            return None
        engine.load(path)
        rng_file = path / "rng" / f"rank-{self.runtime.rank:05d}.pt"
        if not rng_file.is_file():
            raise FileNotFoundError(f"{rng_file} is missing: the checkpoint was written by fewer ranks than this run has")
        # Our own file: numpy's RNG state is not a plain tensor, so the full unpickler is needed.
        set_rng_state(torch.load(rng_file, weights_only=False))
        return json.loads((path / "trainer.json").read_text())

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints present, ascending."""
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
    """
    from onevision.checkpoint import save_hf

    state = engine.full_state_dict()
    if not runtime.is_main:
        runtime.barrier()
        return None
    folder = Path(folder)
    model = build_model()
    model.load_state_dict(state, strict=True, assign=True)
    if merge_lora is not None:
        model = merge_lora(model)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    # Stage settings transformers cannot express (a budget, base-only images, grid newlines) are
    # kept for the next stage under onevision_visual, with a warning naming them.
    save_hf(model, tmp, dtype=dtype, tokenizer=tokenizer, progress=False, strict=False)
    fsync_tree(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)
    runtime.barrier()
    return folder
