"""Soup ingredients from one stage recipe: one training run per point of a hyperparameter grid.

Wortsman et al. 2022 (arXiv 2203.05482, Sec. 3) cook their ingredients by fine-tuning one
pretrained model many times with different learning rates, weight decays, data orders and
augmentations. `plan_grid` turns a stage recipe plus value lists into those runs:

    onevision soup grid stage2_si --lr 1e-5 2e-5 --weight-decay 0 0.1 --data-seed 0 1 model.size=debug

gives 8 runs, each `onevision train STAGE [overrides] model.init_from=<start> optim.lr=..
optim.weight_decay=.. loop.seed=.. output_root=<root>/<point>`, exported to
``<root>/<point>/<stage>/hf``. The axes are the stage config's own fields:

- ``--lr``: ``optim.lr``, the peak learning rate of parameters no ``optim.groups`` entry matches
  (a group, such as the vision tower's, keeps its own; the plan says which);
- ``--weight-decay``: ``optim.weight_decay``, of those same parameters;
- ``--data-seed``: ``loop.seed``, which seeds the data order (the sampler and the recipe's
  seeded choices take it) and dropout.

Every run must start from the same weights, and a stage's start is often written relative to
``output_root`` (``${prev_stage_output}``). The plan therefore resolves the start once, from the
recipe with the given overrides, and pins it (``model.init_from`` / ``llm_dir`` / ``vision_dir``)
in every run before giving each its own output_root. A random start is drawn from ``loop.seed``,
so a seed axis over a random start is refused: its runs would not share a start.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from onevision.checkpoint.fingerprint import START_FILE

AXES = (("lr", "optim.lr", "--lr"), ("wd", "optim.weight_decay", "--weight-decay"), ("seed", "loop.seed", "--data-seed"))


class GridError(ValueError):
    """A grid that cannot give ingredients of one start, or a run of it that failed."""


@dataclass
class GridPoint:
    """One training run of the grid."""

    name: str
    """Folder name under the grid's root, from the values (e.g. 'lr2e-05_wd0.1_seed1')."""
    overrides: list[str]
    """Every override of its `onevision train` command."""
    export: Path
    """Where its export will be (the soup ingredient)."""


@dataclass
class GridPlan:
    """The runs of a grid and what the user should know about them."""

    stage: str
    """The stage name or recipe path, as given."""
    root: Path
    """Each point's output_root is root/<point name>."""
    points: list[GridPoint]
    notes: list[str] = field(default_factory=list)
    """Lines to print before running (what is pinned, what the axes do not touch)."""

    def commands(self) -> list[list[str]]:
        return [["onevision", "train", self.stage, *p.overrides] for p in self.points]


def plan_grid(
    stage: str,
    overrides: list[str],
    *,
    lr: list[float] | None = None,
    weight_decay: list[float] | None = None,
    data_seed: list[int] | None = None,
    root: str | Path | None = None,
) -> GridPlan:
    """Every run of the grid, each config loaded (so a bad override fails before any run).

    Raises:
        GridError: no axis, a repeated value, an override that sets a gridded field or the
            output folder, a seed axis over a random start, or runs that would share a folder.
        ConfigError: the recipe or an override is bad.
    """
    from onevision.train.config import load_stage

    values = {"lr": lr, "wd": weight_decay, "seed": data_seed}
    axes = [(label, key, option, values[label]) for label, key, option in AXES if values[label]]
    if not axes:
        raise GridError("a grid needs at least one of --lr, --weight-decay, --data-seed")
    for _label, key, option, given in axes:
        if len(set(given)) != len(given):
            raise GridError(f"{option} repeats a value: {given}")
    fixed = {item.split("=", 1)[0] for item in overrides}
    for _label, key, option, _ in axes:
        if key in fixed:
            raise GridError(f"override {key}=... and {option} both set {key}; give it one way")
    if "output_dir" in fixed:
        raise GridError("override output_dir=... would put every run in one folder; the grid gives each run its own output_root")
    base = load_stage(stage, overrides)
    pins, notes = _pin_start(base, data_seed)
    root = Path(root) if root is not None else Path(base.output_root) / "grid" / base.name
    touched = [key for _l, key, _o, _v in axes if key != "loop.seed"]
    if touched and base.optim.groups:
        groups = ", ".join(f"{g.name} (lr {g.lr:g}, weight_decay {g.weight_decay:g})" for g in base.optim.groups)
        notes.append(f"{' and '.join(touched)} apply to parameters no optim.groups entry matches; these groups keep theirs: {groups}")
    points = []
    for combo in itertools.product(*(given for _l, _k, _o, given in axes)):
        name = "_".join(f"{label}{value:g}" for (label, _k, _o, _v), value in zip(axes, combo))
        point_overrides = [*overrides, *pins, *(f"{key}={value!r}" for (_l, key, _o, _v), value in zip(axes, combo)), f"output_root={root / name}"]
        config = load_stage(stage, point_overrides)
        points.append(GridPoint(name, point_overrides, Path(config.output_dir) / "hf"))
    exports = [p.export.resolve() for p in points]
    if len(set(exports)) != len(exports):
        raise GridError(f"the recipe's output_dir does not follow output_root, so the runs would share {points[0].export}")
    return GridPlan(stage, root, points, notes)


def _pin_start(base, data_seed: list[int] | None) -> tuple[list[str], list[str]]:
    """Overrides that fix the start of every run to the one `base` resolves to, and a note."""
    model = base.model
    if model.init_from:
        start = Path(model.init_from).resolve()
        return [f"model.init_from={start}"], [f"every run starts from {start}"]
    if model.llm_dir or model.vision_dir:
        pins = [f"model.{key}={Path(getattr(model, key)).resolve()}" for key in ("llm_dir", "vision_dir") if getattr(model, key)]
        return pins, [f"every run starts from the components {', '.join(p.split('=', 1)[1] for p in pins)}"]
    if data_seed and len(data_seed) > 1:
        raise GridError(
            f"the stage starts from random {model.size} weights drawn from loop.seed, so --data-seed {data_seed} would give "
            "each run another start and their average would be no soup; set model.init_from to a trained export"
        )
    return [], [f"every run starts from random {model.size} weights of loop.seed {base.loop.seed} (the same in every run)"]


def run_grid(plan: GridPlan, log=print) -> list[Path]:
    """Train every point in turn (a subprocess each); a point whose export is finished is skipped.

    Returns:
        The exports, in grid order.

    Raises:
        GridError: a run failed (its output is above; rerunning resumes from its checkpoints).
    """
    for k, (point, command) in enumerate(zip(plan.points, plan.commands()), start=1):
        if (point.export / START_FILE).is_file():
            log(f"[{k}/{len(plan.points)}] {point.name}: done already ({point.export})")
            continue
        log(f"[{k}/{len(plan.points)}] {point.name}: {shlex.join(command)}")
        code = subprocess.call([sys.executable, "-m", "onevision", *command[1:]])
        if code != 0:
            raise GridError(f"grid run {point.name} failed with exit status {code}; rerun the grid to resume it (finished runs are skipped)")
    return [p.export for p in plan.points]
