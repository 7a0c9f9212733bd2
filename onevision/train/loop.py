"""The training loop: one function, read top to bottom, no callback framework.

`train(run)` resumes from the newest intact checkpoint when there is one, then for every
optimizer step pulls `grad_accum` micro-batches, runs forward and backward through the engine
(single process, DDP or DeepSpeed), steps, logs, evaluates and checkpoints at explicit points.
The objects it calls are built by `onevision.train.runner.build_run` from a stage config:
`run.engine`, `run.data`, `run.checkpointer`, `run.logger`, `run.evaluator`.

The run stops (an error naming the cause; nothing saved or exported from that point) when
- a step's loss is NaN or infinite (`NonFiniteError`, with the step and its samples), or the
  gradient norm is (the engine refuses to step). Stopping rather than skipping: a non-finite
  loss in a fixed-seed run recurs at the same step, and the last checkpoint is intact to resume
  from after fixing the data or the learning rate;
- more than `max_skipped_share` of the samples tried were skipped, checked every step once
  `skipped_share_after` samples were tried, and at the last step of this call whatever the
  count, before its checkpoint (`DataFailure`, with the counts by kind and the first reason);
- a checkpoint cannot be written (`CheckpointError`, naming the file and the cause).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onevision.train.engine import Runtime
from onevision.train.errors import NonFiniteError, TrainError
from onevision.train.logger import TrainLogger
from onevision.train.loss_module import head_chunks, modality_losses
from onevision.train.run_checkpoint import Checkpointer


@dataclass
class TrainRun:
    """Everything `train()` calls, already built."""

    engine: Any
    """`TorchEngine` or `DeepSpeedEngine`."""
    data: Any
    """`TrainData`: micro-batches across epochs, resumable."""
    checkpointer: Checkpointer
    """Atomic saves and resume."""
    logger: TrainLogger
    """Progress bar, TensorBoard, W&B, loss curve."""
    runtime: Runtime
    """Ranks and device."""
    total_steps: int
    """Optimizer steps of the run."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    checkpoint_every: int = 0
    """Save every this many steps (the last step is always saved)."""
    eval_every: int = 0
    """Evaluate every this many steps (and after the last one) when an evaluator is set."""
    evaluator: Callable[[Any], dict] | None = None
    """engine -> {'eval/loss': ...}; every rank calls it."""
    resume: bool = True
    """Continue from the newest intact checkpoint when there is one."""
    resume_from: Path | None = None
    """The checkpoint chosen (and config-checked) by `resume.plan_resume`; None: choose in `train()`."""
    apply_optim: bool = False
    """After loading, put this run's optimizer settings over the checkpoint's (an accepted config change)."""
    config: dict | None = None
    """The stage config as plain data, saved in every checkpoint (what a resume compares with)."""
    max_skipped_share: float = 1.0
    """Stop when more than this share of the samples tried were skipped (1: never)."""
    skipped_share_after: int = 1
    """Samples tried before the share is checked each step."""
    stop_at: int | None = None
    """Leave after this step (a checkpoint is saved there); None runs to total_steps."""
    chunk_rows: int = 4096
    """LM-head rows per chunk (ZeRO-3 needs the same number of chunks on every rank)."""
    losses: list[float] = field(default_factory=list)
    """Loss of every step this process ran, filled by `train()`."""
    step: int = 0
    """Optimizer steps done, updated by `train()`."""

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def train(run: TrainRun) -> list[float]:
    """Train until `run.total_steps`; returns the loss of each step run by this call."""
    engine, data, runtime = run.engine, run.data, run.runtime
    state = run.checkpointer.load(engine, run.resume_from) if run.resume else None
    step = state["step"] if state else 0
    if state:
        if run.apply_optim:
            engine.apply_optim()
        data.load_state_dict(state["data"])
        run.logger.load_state_dict(state["logger"])
    end = check_span(run, step)
    run.logger.start(step)
    batches = data.micro_batches()
    while step < end:
        meter = StepMeter(started=time.perf_counter())
        learning_rates = engine.learning_rates()
        for micro in range(run.grad_accum):
            batch = next(batches)
            num_chunks = head_chunks(batch, run.engine, runtime, run.chunk_rows)
            with engine.accumulating(last=micro == run.grad_accum - 1):
                loss, token_losses, positions = engine(**data.inputs(batch), num_chunks=num_chunks)
                engine.backward(loss)
            meter.add(batch, float(loss.detach()), modality_losses(batch, token_losses, positions))
        grad_norm = engine.step()
        step = run.step = step + 1
        scalars = meter.scalars(runtime, data.skipped()) | {"train/grad_norm": grad_norm}
        scalars |= {f"lr/{name}": lr for name, lr in learning_rates.items()}
        if not math.isfinite(scalars["train/loss"]):
            raise NonFiniteError(f"loss is {scalars['train/loss']} at step {step} (samples {meter.ids[:8]}); stopped before saving or exporting it")
        last = step == end
        # The last step checks whatever the count, before its checkpoint: a run on mostly
        # skipped data never leaves a finished checkpoint that a re-run would export.
        data.check_skipped(run.max_skipped_share, run.skipped_share_after, final=last)
        run.losses.append(scalars["train/loss"])
        run.logger.log_step(step, scalars)
        if run.evaluator is not None and ((run.eval_every and step % run.eval_every == 0) or step == run.total_steps):
            run.logger.log_eval(step, run.evaluator(engine))
        if (run.checkpoint_every and step % run.checkpoint_every == 0) or last:
            trainer_state = {"data": data.state_dict(), "logger": run.logger.state_dict()}
            run.checkpointer.save(step, engine, trainer_state, run.config)
    run.step = step
    run.logger.close()
    return run.losses


def check_span(run: TrainRun, step: int) -> int:
    """The step this call stops after; refuses a resume that has nothing left to run by mistake."""
    if step > run.total_steps:
        raise TrainError(f"the checkpoint is at step {step}, past this run's {run.total_steps} steps (loop.steps / loop.epochs)")
    end = run.total_steps if run.stop_at is None else min(run.total_steps, run.stop_at)
    if run.stop_at is not None and step >= run.stop_at and step < run.total_steps:
        raise TrainError(f"loop.stop_at={run.stop_at} is not after the resumed step {step}: nothing to train")
    return end


@dataclass
class StepMeter:
    """Sums over the micro-batches of one optimizer step, reduced over ranks into scalars."""

    started: float
    """perf_counter() at the start of the step."""
    loss_sum: float = 0.0
    micro: int = 0
    tokens: int = 0
    slots: int = 0
    no_visual: int = 0
    modality: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)

    def add(self, batch, loss: float, per_modality: dict[str, tuple[float, int]]) -> None:
        self.loss_sum += loss
        self.micro += 1
        self.tokens += batch.num_tokens
        self.slots += batch.input_ids.numel()
        self.no_visual += int(batch.visual is None or not batch.visual.plans)
        self.ids.extend(batch.ids)
        for name, (total, count) in per_modality.items():
            seen = self.modality.get(name, (0.0, 0))
            self.modality[name] = (seen[0] + total, seen[1] + count)

    def scalars(self, runtime: Runtime, skipped: int) -> dict[str, float]:
        """Loss (mean over micro-batches and ranks), per-modality loss, tokens/s, padding ratio.

        `data/no_visual_batches` counts micro-batches (over ranks) without a visual item: in
        a multi-rank run those ran the vision tower on a blank tile.
        """
        names = ("image", "multi_image", "video", "text")
        local = [self.loss_sum, self.micro, self.tokens, self.slots, skipped, self.no_visual]
        for name in names:
            local.extend(self.modality.get(name, (0.0, 0)))
        totals = runtime.all_reduce(local)
        loss_sum, micro, tokens, slots, skipped_all, no_visual = totals[:6]
        seconds = max(time.perf_counter() - self.started, 1e-9)
        out = {
            "train/loss": loss_sum / max(micro, 1),
            "perf/tokens_per_s": tokens / seconds,
            "perf/step_seconds": seconds,
            "data/tokens": tokens,
            "data/padding_ratio": 1.0 - tokens / max(slots, 1),
            "data/skipped": skipped_all,
            "data/no_visual_batches": no_visual,
        }
        for i, name in enumerate(names):
            total, count = totals[6 + 2 * i], totals[7 + 2 * i]
            if count:
                out[f"train/loss_{name}"] = total / count
        return out
