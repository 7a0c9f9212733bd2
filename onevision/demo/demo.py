"""`onevision demo`: the whole LLaVA-OneVision recipe on a CPU in minutes, on a synthetic world.

1. build the world (single-image, multi-image and video questions with known answers);
2. train a small tokenizer with Qwen2's special tokens and chat template;
3. pretrain the parts as the real ones were made: a Qwen2 decoder on the world's text, a SigLIP
   tower with the sigmoid contrastive loss on image-caption pairs;
4. run the curriculum with the shared training code, each stage from the previous export:
   stage 1 (projector alone, captions, from the two pretrained folders), stage 1.5, stage 2
   single-image, stage 2 OneVision;
5. score every stage on every scenario and task of the test split (multiple choice by
   likelihood; exact match of greedy answers after the last stage);
6. print the tables and write them with plots to the output folder.

    from onevision.demo import run_demo, full_config
    result = run_demo(full_config(seed=0), "runs/demo")
    print(result.table)

Output folder: table.txt, results.json, loss_curves.png, accuracy.png, model/ (the last
stage's export, for `onevision generate` and friends). Steps are cached (`cache.py`), so a
rerun with the same settings only re-prints.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from onevision.demo.cache import DemoCache, Step, default_cache_root
from onevision.demo.config import STAGES, DemoConfig
from onevision.demo.curriculum import StageStart
from onevision.demo.families import FAMILIES, LLAVA15_SCENARIOS, LLAVA15_STAGES, llava15_curriculum
from onevision.demo.report import (
    accuracy_table,
    plot_accuracy,
    plot_losses,
    stage_scores,
    task_table,
)
from onevision.demo.steps import DemoSteps, World, set_threads


@dataclass
class DemoResult:
    """What a demo run leaves behind."""

    out_dir: Path
    """The output folder."""
    table: str
    """The printed tables (deterministic for a seed: no timings in it)."""
    results: dict
    """Everything in results.json: scores per stage, losses, timings."""


def curriculum(steps: DemoSteps, stages: tuple[str, ...] = STAGES) -> tuple[dict[str, Step], World]:
    """Run the pretraining and the curriculum `stages` in order (cached).

    Returns:
        ({name: Step} for "tokenizer", "decoder", "tower" and each stage, the world).
    """
    world, done, start, depends = steps.pretrained()
    for name in stages:
        step = steps.stage(name, steps.config.stages[name], start, world, depends)
        done[name] = step
        start, depends = StageStart(init_from=step.folder / "hf"), [step]
    return done, world


def run_demo(
    config: DemoConfig,
    out_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    log=print,
    family: str = "onevision",
) -> DemoResult:
    """Run the demo (see the module docstring) and write its outputs to `out_dir`.

    Args:
        config: what to run (`full_config()`, `quick_config()`).
        family: 'onevision' (the four stages above) or 'llava15' (LLaVA-1.5's two stages from the
            same pretrained parts at the same budget, `onevision.demo.families`).
        out_dir: the output folder.
        cache_root: where steps are cached (default `default_cache_root()`).
        use_cache: reuse finished steps; False rebuilds every one.
        progress: show progress bars.
        log: where progress lines go.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    started = time.perf_counter()
    set_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = DemoSteps(config, DemoCache(cache_root or default_cache_root(), enabled=use_cache), progress)
    stages, scenarios = (STAGES, None) if family == "onevision" else (LLAVA15_STAGES, LLAVA15_SCENARIOS)
    done, world = curriculum(steps) if family == "onevision" else llava15_curriculum(steps)

    reports = {name: steps.scores(done[name], world, "choice", name, scenarios) for name in stages}
    scores = [stage_scores(reports[name]) for name in stages]
    extra = {}
    if config.exact_match:
        last = stages[-1]
        extra[f"{last} exact"] = stage_scores(steps.scores(done[last], world, "exact_match", f"{last} exact", scenarios))

    per_task = world.manifest.params["n_test"]
    table = "\n\n".join(
        [
            accuracy_table(stages, scores, f"Test accuracy after each stage (multiple choice by likelihood, {per_task} questions per task)"),
            task_table(stages, scores, extra, "Per task (exact: greedy answer must match)"),
        ]
    )
    log(table)

    seconds = {name: round(done[name].meta["seconds"], 1) for name in done}
    results = {
        "config": config.to_dict(),
        "stages": {name: {"scores": sc, "losses": done[name].meta["losses"], "steps": done[name].meta["steps"]} for name, sc in zip(stages, scores)},
        "exact_match": extra,
        "pretraining": {name: {"losses": done[name].meta["losses"]} for name in ("decoder", "tower")},
        "seconds": seconds,
        "cached": {name: bool(done[name].meta.get("cached")) for name in done},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "table.txt").write_text(table + "\n", encoding="utf-8")
    plot_losses(
        {"decoder (language modelling)": done["decoder"].meta["losses"], "tower (sigmoid contrastive)": done["tower"].meta["losses"]},
        {name: done[name].meta["losses"] for name in stages},
        out_dir / "loss_curves.png",
    )
    plot_accuracy(list(stages), scores, out_dir / "accuracy.png")
    model_dir = out_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(done[stages[-1]].folder / "hf", model_dir)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    log(timing_line(results))
    return DemoResult(out_dir, table, results)


def timing_line(results: dict) -> str:
    """One line: seconds per step ('cached' for reused ones) and the total."""
    parts = [f"{name} {'cached' if results['cached'][name] else f'{s:.0f}s'}" for name, s in results["seconds"].items()]
    return f"time: {', '.join(parts)}; total {results['total_seconds']:.0f}s"
