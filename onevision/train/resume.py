"""Which checkpoint a run continues from, and whether its config may differ from the checkpoint's.

`plan_resume(stage, checkpointer, runtime)`:
1. takes the newest intact checkpoint (`Checkpointer.select`: every file checked against the
   checkpoint's sha256 manifest; each newer one passed over is reported with file and cause);
2. compares this run's config with the one saved in that checkpoint (its config.yaml), field
   by field. Fields in `RUN_NEUTRAL` (where output goes, logging, how often to save or
   evaluate, `loop.stop_at`, worker counts, attention kernels: nothing the training state
   depends on) may change freely. Any other difference (`optim.lr`, `optim.schedule`,
   `loop.grad_accum`, `data.sampler.max_tokens`, ...) refuses the resume with every difference
   shown as ``field: old -> new``, unless `checkpoint.allow_changes` names the field (or its
   section). An accepted change takes effect from the resumed step on: the optimizer's peak
   learning rates, weight decay, betas and eps are reset to this run's (`engine.apply_optim`)
   and the schedule continues from its position with them;
3. on rank 0, records what happened: one block in output_dir/resume.log (checkpoint used,
   checkpoints skipped and why, changes accepted), one JSON line in
   output_dir/config_history.jsonl (time, event, step, changes, full config), and only then
   writes output_dir/config.yaml. A refused resume leaves config.yaml as it was, so it never
   claims values the training state does not follow.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onevision.train.engine import Runtime
from onevision.train.errors import ResumeRefused
from onevision.train.run_checkpoint import Checkpointer, ResumePoint
from onevision.train.validate import flatten

RUN_NEUTRAL = (
    "name",
    "description",
    "output_root",
    "output_dir",
    "previous",
    "prev_stage_output",
    "model.attention",
    "model.gradient_checkpointing",
    "model.head_chunk_rows",
    "data.loader",
    "data.max_skipped_share",
    "data.skipped_share_after",
    "loop.stop_at",
    "loop.log_every",
    "loop.eval_every",
    "loop.device",
    "checkpoint",
    "logging",
    "distributed.timeout_s",
    "eval",
)
"""Fields (or sections) that may change on resume: the training state and the losses do not depend on them."""

UNSET = "<unset>"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One field whose value differs between the checkpoint's config and this run's."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    if value is UNSET:
        return UNSET
    return json.dumps(value) if isinstance(value, (dict, list, str)) or value is None else str(value)


def covers(names: tuple[str, ...] | list[str], path: str) -> bool:
    """`path` is one of `names` or lies in a section among them."""
    return any(path == name or path.startswith(name + ".") for name in names)


def config_changes(old: dict, new: dict) -> list[Change]:
    """Fields whose values differ between two plain configs, sorted; a field the old config does
    not record (added to the code since) is not a change."""
    before, after = flatten(old), flatten(new)
    changes = []
    for path in sorted(set(before) | set(after)):
        # `visual` is free-form (VisualSettings overrides): a key only the new config sets is a change.
        if path not in before and not path.startswith("visual."):
            continue
        old_value, new_value = before.get(path, UNSET), after.get(path, UNSET)
        if old_value != new_value:
            changes.append(Change(path, old_value, new_value))
    return changes


@dataclass
class ResumePlan:
    """Where the run starts and what differs from the checkpoint's config."""

    point: ResumePoint
    """The checkpoint chosen (path None: a fresh start) and the ones skipped."""
    accepted: list[Change] = field(default_factory=list)
    """Changes of run-changing fields that checkpoint.allow_changes accepted."""
    neutral: list[Change] = field(default_factory=list)
    """Changes of fields the training state does not depend on."""

    @property
    def path(self) -> Path | None:
        return self.point.path


def plan_resume(config: dict, allow: list[str], checkpointer: Checkpointer) -> ResumePlan:
    """The checkpoint to resume from, with this run's config (`config`, plain data) checked against it.

    Raises:
        CheckpointError: checkpoints exist but none is intact (each one's bad file named).
        ResumeRefused: run-changing fields differ and `allow` does not name them.
    """
    point = checkpointer.select()
    plan = ResumePlan(point)
    saved = point.config()
    if point.path is None or saved is None:
        if point.path is not None:
            point.notes.append(f"{point.path} records no config.yaml: the config was not compared")
        return plan
    changes = config_changes(saved, config)
    plan.neutral = [c for c in changes if covers(RUN_NEUTRAL, c.field)]
    plan.accepted = [c for c in changes if not covers(RUN_NEUTRAL, c.field) and covers(allow, c.field)]
    refused = [c for c in changes if not covers(RUN_NEUTRAL, c.field) and not covers(allow, c.field)]
    if refused:
        names = ",".join(c.field for c in refused)
        raise ResumeRefused(
            f"{point.path} was trained with a different config: {'; '.join(map(str, refused))}. "
            f"Resume with the checkpoint's values, use another output_dir, or accept the change with "
            f"checkpoint.allow_changes=[{names}] (recorded in resume.log)"
        )
    return plan


def fresh_plan(checkpointer: Checkpointer) -> ResumePlan:
    """A start at step 0 with checkpoint.resume false; notes checkpoints an earlier run left behind."""
    steps = checkpointer.steps()
    point = ResumePoint(None)
    if steps:
        point.notes.append(
            f"checkpoint.resume is false: {checkpointer.folder} holds checkpoints of an earlier run (steps "
            f"{steps[0]}..{steps[-1]}); this run's saves replace those of the same step and move `latest`"
        )
    return ResumePlan(point)


def record_start(output_dir: Path, config: dict, plan: ResumePlan | None, runtime: Runtime, resume: bool) -> None:
    """Rank 0: append to resume.log and config_history.jsonl, then write config.yaml (see module doc)."""
    if not runtime.is_main:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    point = plan.point if plan is not None else None
    if point is not None and point.path is not None:
        event = "resume"
        lines = [f"{stamp} resume from {point.path.name} (step {point.step})"]
    else:
        event = "start"
        lines = [f"{stamp} start at step 0" + ("" if resume else " (checkpoint.resume is false)")]
    if point is not None:
        lines += [f"  skipped {line}" for line in point.skipped] + [f"  note: {line}" for line in point.notes]
    if plan is not None:
        lines += [f"  accepted change {c} (checkpoint.allow_changes)" for c in plan.accepted]
        lines += [f"  changed {c} (does not change the training state)" for c in plan.neutral]
    for line in lines[1:]:
        log.warning("%s: %s", output_dir, line.strip())
    with open(output_dir / "resume.log", "a") as handle:
        handle.write("\n".join(lines) + "\n")
    entry = {
        "time": stamp,
        "event": event,
        "step": point.step if point is not None else 0,
        "changes": {c.field: [c.old, c.new] for c in (plan.accepted + plan.neutral if plan else [])},
        "config": config,
    }
    with open(output_dir / "config_history.jsonl", "a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
