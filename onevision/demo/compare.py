"""`onevision compare`: the systems of the demo trained at equal compute, scored side by side.

    from onevision.demo import full_config
    from onevision.demo.compare import run_compare
    result = run_compare(full_config(seed=0), "runs/compare", families=("onevision", "llava15"))

Every family runs its curriculum on the same world from the same pretrained parts (cached, so
the demo's steps are reused), with the same total optimizer steps and nominal tokens
(`onevision.demo.families.llava15_plans`). Each family's last stage is scored on the test split
(multiple choice by likelihood) in every scenario it can take. Prints a table per scenario and a
table per task, chance beside, and writes table.txt, results.json and compare.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onevision.demo.cache import DemoCache, default_cache_root
from onevision.demo.config import STAGES, DemoConfig
from onevision.demo.demo import curriculum
from onevision.demo.families import FAMILIES, LLAVA15_SCENARIOS, LLAVA15_STAGES, budget, llava15_curriculum, llava15_plans
from onevision.demo.report import _save, accuracy_table, stage_scores, task_table
from onevision.demo.steps import DemoSteps, set_threads
from onevision.world import SCENARIOS


@dataclass
class CompareResult:
    """What a comparison leaves behind."""

    out_dir: Path
    table: str
    """The printed tables."""
    results: dict
    """Everything in results.json: per family its budget, last stage and scores."""


def family_run(steps: DemoSteps, family: str) -> tuple[dict, dict]:
    """Train `family`'s curriculum (cached) and score its last stage: (scores, budget info)."""
    if family == "onevision":
        done, world = curriculum(steps)
        stages, scenarios, plans = STAGES, None, {name: steps.config.stages[name] for name in STAGES}
    else:
        done, world = llava15_curriculum(steps)
        stages, scenarios, plans = LLAVA15_STAGES, LLAVA15_SCENARIOS, llava15_plans(steps.config)
    last = stages[-1]
    scores = stage_scores(steps.scores(done[last], world, "choice", f"{family} {last}", scenarios))
    total_steps, tokens = budget(plans)
    info = {"stages": list(stages), "last": last, "steps": total_steps, "tokens": tokens, "losses": {n: done[n].meta["losses"] for n in stages}}
    return scores, info


def run_compare(
    config: DemoConfig,
    out_dir: str | Path,
    *,
    families: tuple[str, ...] = FAMILIES,
    cache_root: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    log=print,
) -> CompareResult:
    """Train and score `families` at equal compute (module docstring); write the outputs to `out_dir`.

    Raises:
        ValueError: an unknown family, or one named twice.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or len(set(families)) != len(families) or not families:
        raise ValueError(f"families must be distinct names from {FAMILIES}, got {list(families)}")
    set_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = DemoSteps(config, DemoCache(cache_root or default_cache_root(), enabled=use_cache), progress)
    runs = {family: family_run(steps, family) for family in families}
    scores = [runs[f][0] for f in families]
    budgets = "\n".join(
        f"{f}: {info['steps']} optimizer steps, {info['tokens']} nominal tokens ({' -> '.join(info['stages'])})"
        for f, (_, info) in runs.items()
    )
    per_task = steps.world().manifest.params["n_test"]
    table = "\n\n".join(
        [
            f"Equal compute on the synthetic world (same world, same pretrained parts)\n{budgets}",
            accuracy_table(families, scores, f"Test accuracy per scenario, last stage of each (multiple choice by likelihood, {per_task} questions per task; "
                "-: not asked; all: over the scenarios each was asked, chance of the last row's)"),
            task_table(families, scores, title="Per task"),
        ]
    )
    log(table)
    (out_dir / "table.txt").write_text(table + "\n", encoding="utf-8")
    results = {"config": config.to_dict(), "families": {f: {"scores": sc, **info} for f, (sc, info) in runs.items()}}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    plot_compare(families, scores, out_dir / "compare.png")
    return CompareResult(out_dir, table, results)


def plot_compare(families: tuple[str, ...], scores: list[dict], path: str | Path) -> Path:
    """Grouped bars: accuracy per scenario for each family, each scenario's chance as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in SCENARIOS if any(s in sc["scenarios"] for sc in scores)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(families)
    for k, (family, sc) in enumerate(zip(families, scores)):
        xs = [i + (k - (len(families) - 1) / 2) * width for i in range(len(scenarios))]
        ax.bar(xs, [sc["scenarios"].get(s, float("nan")) for s in scenarios], width, label=family, color=f"C{k}")
    for i, scenario in enumerate(scenarios):
        chance = next((sc["chance"]["scenarios"][scenario] for sc in scores if scenario in sc["chance"]["scenarios"]), None)
        if chance is not None:
            ax.hlines(chance, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.0)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy (dashed: chance)")
    ax.set_title("Equal compute: last stage of each system")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
