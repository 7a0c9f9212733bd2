"""`onevision transfer`: does training on one scenario help on the others? (arXiv 2408.03326, Sec. 5)

From one stage-1.5 checkpoint (the demo's, cached), train once per recipe for the same number
of steps with the same settings, then score every result on every scenario of the world's test
split. The transfer matrix has one row per training recipe (and the shared start), one column
per test scenario, and the chance level of each column beside it:

* ``single_image``: stage 2 single-image data only (colour, shape, count, position);
* ``onevision``: the OneVision mixture of single-image, multi-image and video questions;
* ``multi_image`` / ``video`` (optional rows): that scenario's questions only.

A single-image-only model has never seen a multi-image or video question, so its score there
measures transfer; the OneVision row shows what training on all three gives.

    from onevision.demo import full_config, run_transfer
    result = run_transfer(full_config(), "runs/transfer")
    print(result.table)

Output folder: table.txt, results.json, transfer.png (the matrix as a heat map).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from onevision.demo.cache import DemoCache, default_cache_root
from onevision.demo.config import DemoConfig
from onevision.demo.curriculum import StageStart
from onevision.demo.demo import curriculum, timing_line
from onevision.demo.report import stage_scores, task_table
from onevision.demo.steps import DemoSteps, World, set_threads
from onevision.infer.matrix import plot_matrix, transfer_matrix

RECIPES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "single_image": ("stage2_si", None),
    "multi_image": ("stage2_ov", ("multi_image",)),
    "video": ("stage2_ov", ("video",)),
    "onevision": ("stage2_ov", None),
}
"""Row name -> (shipped training recipe, scenarios of the data mixture; None: the recipe's own world mixture)."""
DEFAULT_RECIPES = ("single_image", "onevision")
START = "stage1_5"


@dataclass
class TransferResult:
    """What a transfer run leaves behind."""

    out_dir: Path
    """The output folder."""
    table: str
    """The printed matrix and per-task table (deterministic for a seed)."""
    results: dict
    """Everything in results.json."""


def scenario_mixture(world: World, scenarios: tuple[str, ...]) -> str:
    """Write recipes/transfer_<scenarios>.yaml (every closed-answer task of `scenarios`, in
    the official mixture syntax) into the world; returns its mixture name."""
    manifest = world.manifest
    tasks = [name for name, info in manifest.tasks.items() if info["scenario"] in scenarios and info["choices"]]
    if not tasks:
        raise ValueError(f"{manifest.root}: no closed-answer task of {list(scenarios)}")
    name = "transfer_" + "_".join(scenarios)
    recipe = {
        "seed": manifest.params["seed"],
        "media_root": "..",
        "datasets": [{"json_path": f"../{manifest.splits['train'][t]['jsonl']}", "sampling_strategy": "all"} for t in tasks],
    }
    header = f"# Transfer experiment: {', '.join(scenarios)} questions only.\n"
    (world.root / "recipes" / f"{name}.yaml").write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return name


def run_transfer(
    config: DemoConfig,
    out_dir: str | Path,
    *,
    recipes: tuple[str, ...] = DEFAULT_RECIPES,
    cache_root: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    log=print,
) -> TransferResult:
    """Run the transfer experiment (see the module docstring) and write its outputs to `out_dir`.

    Args:
        config: the demo settings (pretraining and stages 1 / 1.5 are the demo's; `config.transfer`
            sets the length and learning rates of every row).
        out_dir: the output folder.
        recipes: rows to train, names from RECIPES.
        cache_root, use_cache, progress, log: as for `run_demo`.
    """
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise ValueError(f"unknown transfer recipe(s) {unknown or recipes}; choose from {list(RECIPES)}")
    started = time.perf_counter()
    set_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = DemoSteps(config, DemoCache(cache_root or default_cache_root(), enabled=use_cache), progress)
    done, world = curriculum(steps, stages=("stage1", START))
    start = StageStart(init_from=done[START].folder / "hf")
    for row in recipes:
        recipe, scenarios = RECIPES[row]
        data = scenario_mixture(world, scenarios) if scenarios else recipe
        done[row] = steps.stage(f"transfer_{row}", config.transfer, start, world, [done[START]], recipe=recipe, data=data)

    names = [START, *recipes]
    reports = [steps.scores(done[name], world, "choice", name) for name in names]
    matrix = transfer_matrix(reports)
    scores = [stage_scores(r) for r in reports]
    per_task = world.manifest.params["n_test"]
    table = "\n\n".join(
        [
            f"Transfer matrix: rows trained from the same {START} checkpoint, {config.transfer.steps} steps each;\n"
            f"columns test scenarios (multiple choice by likelihood, {per_task} questions per task)\n" + matrix.table(),
            task_table(names, scores, title="Per task"),
        ]
    )
    log(table)
    plot_matrix(matrix, out_dir / "transfer.png", title=f"Transfer from {START}: accuracy by test scenario")
    seconds = {name: round(done[name].meta["seconds"], 1) for name in done}
    results = {
        "config": config.to_dict(),
        "recipes": list(recipes),
        "transfer_matrix": matrix.to_dict(),
        "rows": {name: {"scores": sc, "losses": done[name].meta["losses"]} for name, sc in zip(names, scores)},
        "seconds": seconds,
        "cached": {name: bool(done[name].meta.get("cached")) for name in done},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log(timing_line(results))
    return TransferResult(out_dir, table, results)
