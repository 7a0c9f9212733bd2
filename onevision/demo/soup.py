"""`onevision demo --soup`: model soups (Wortsman et al. 2022, arXiv 2203.05482) on the demo world.

From one export of the demo's curriculum (stage 1.5 by default, cached and shared with
`onevision demo` and `onevision transfer`), train several short fine-tunes on the OneVision
mixture that differ in learning rate, weight decay and data seed (`loop.seed`: data order and
dropout), with the demo's own stage runner, so each one is a cached step like any stage. Then:

* the uniform soup: the mean of every ingredient (`onevision.soup.average.uniform_soup`);
* the greedy soup: ingredients added best first, each kept only if the accuracy of the running
  average rises (`onevision.soup.greedy.greedy_soup`), judged on a held-out split that is not the
  test split: the test questions of a second world drawn with another seed;
* every ingredient and both soups scored on the demo world's test split, one table per scenario
  (single image, multi-image, video) with chance beside.

    from onevision.demo.soup import full_soup_config, run_soup_demo
    result = run_soup_demo(full_soup_config(seed=0), "runs/demo/soup")
    print(result.table)

Output folder: table.txt, results.json, uniform_soup/ and greedy_soup/ (llava_onevision folders).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from onevision.demo.cache import DemoCache, Step, cache_key, default_cache_root
from onevision.demo.config import STAGES, DemoConfig, StagePlan, full_config, quick_config
from onevision.demo.curriculum import StageStart
from onevision.demo.demo import curriculum, timing_line
from onevision.demo.evaluation import evaluate_export, preload, test_items
from onevision.demo.report import _cell, stage_scores
from onevision.demo.steps import DemoSteps, World, set_threads
from onevision.soup.average import uniform_soup
from onevision.soup.greedy import greedy_soup
from onevision.world import SCENARIOS, TASKS, WorldManifest, build_world


@dataclass(frozen=True)
class SoupRun:
    """One ingredient: a fine-tune of the shared start with these settings."""

    lr: float
    """Peak learning rate outside the vision tower (the tower's is scaled by the same factor)."""
    weight_decay: float
    """Weight decay of every trainable group."""
    data_seed: int
    """`loop.seed`: data order and dropout."""

    @property
    def name(self) -> str:
        """Named as `onevision soup grid` names its points."""
        return f"lr{self.lr:g}_wd{self.weight_decay:g}_seed{self.data_seed}"


def default_runs() -> tuple[SoupRun, ...]:
    """Two learning rates x two weight decays, each with a data seed of its own."""
    return (
        SoupRun(5e-4, 0.0, 1),
        SoupRun(5e-4, 0.1, 2),
        SoupRun(1e-3, 0.0, 3),
        SoupRun(1e-3, 0.1, 4),
    )


@dataclass(frozen=True)
class SoupDemoConfig:
    """Everything a soup demo run depends on."""

    demo: DemoConfig = field(default_factory=full_config)
    """The demo whose curriculum gives the start (world, pretraining, stages up to `start`)."""
    start: str = "stage1_5"
    """The curriculum stage every ingredient starts from."""
    recipe: str = "stage2_ov"
    """Shipped stage recipe (and world mixture) of the fine-tunes."""
    plan: StagePlan = field(default_factory=lambda: StagePlan(steps=150, lr=7e-4, vision_lr=3e-4, batch_tokens=2048))
    """Length and batch of every fine-tune; `lr` is the reference the tower's learning rate scales from."""
    runs: tuple[SoupRun, ...] = field(default_factory=default_runs)
    """The ingredients."""
    held_out: int = 8
    """Questions per task of the held-out split the greedy soup is chosen on."""
    held_out_seed_offset: int = 1000
    """The held-out world's seed is the demo's seed plus this (so it shares no item with the test split)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def ingredient_plan(self, run: SoupRun) -> StagePlan:
        """The stage plan of one ingredient."""
        scale = run.lr / self.plan.lr
        vision_lr = None if self.plan.vision_lr is None else self.plan.vision_lr * scale
        return dataclasses.replace(self.plan, lr=run.lr, vision_lr=vision_lr, weight_decay=run.weight_decay, data_seed=run.data_seed)


def full_soup_config(seed: int = 0) -> SoupDemoConfig:
    """The `onevision demo --soup` run (under ten minutes on two CPU cores with nothing cached)."""
    return SoupDemoConfig(demo=full_config(seed))


def quick_soup_config(seed: int = 0) -> SoupDemoConfig:
    """A smoke test in seconds: the quick demo's start, three 4-step ingredients."""
    return SoupDemoConfig(
        demo=quick_config(seed),
        plan=StagePlan(steps=4, lr=1e-3, batch_tokens=1024),
        runs=(SoupRun(1e-3, 0.0, 1), SoupRun(5e-4, 0.1, 2), SoupRun(2e-3, 0.0, 3)),
        held_out=2,
    )


@dataclass
class SoupDemoResult:
    """What a soup demo run leaves behind."""

    out_dir: Path
    """The output folder."""
    table: str
    """The printed tables (deterministic for a seed: no timings in it)."""
    results: dict
    """Everything in results.json."""


def held_out_world(steps: DemoSteps, config: SoupDemoConfig) -> World:
    """Test questions of a world drawn with another seed: the greedy soup's held-out split."""
    seed = steps.config.seed + config.held_out_seed_offset
    settings = {"seed": seed, "n_train": 0, "n_test": config.held_out}
    key = cache_key("heldout", settings)
    folder = steps.cache.folder("heldout", key)
    if not steps.cache.enabled and folder.exists():
        shutil.rmtree(folder)
    return World(build_world(folder, seed=seed, n_train=0, n_test=config.held_out, progress=steps.progress), key)


def held_out_scorer(world: World, config: DemoConfig, progress: bool):
    """score(export folder) -> overall accuracy on `world`'s test split (media decoded once)."""
    items = preload(test_items(world.manifest))

    def score(folder: Path) -> float:
        report = evaluate_export(folder, items, name=str(folder), batch_size=config.eval_batch_size, progress=progress)
        return report.overall.accuracy

    return score


def cook(steps: DemoSteps, config: SoupDemoConfig, start: Step, world: World, log=print) -> dict[str, Step]:
    """Train every ingredient (cached) and build both soups (cached); returns name -> Step with
    the export in `<folder>/hf`, ingredients by `SoupRun.name`, then 'uniform soup' and 'greedy soup'."""
    init = StageStart(init_from=start.folder / "hf")
    done: dict[str, Step] = {}
    for k, run in enumerate(config.runs, start=1):
        log(f"ingredient {k}/{len(config.runs)}: {run.name} from {config.start}")
        done[run.name] = steps.stage(f"soup_{run.name}", config.ingredient_plan(run), init, world, [start], recipe=config.recipe)
    ingredients = list(done.values())
    exports = [step.folder / "hf" for step in ingredients]
    keys = [step.key for step in ingredients]

    def build_uniform(folder: Path) -> dict:
        uniform_soup(exports, folder / "hf")
        return {"ingredients": [str(p) for p in exports]}

    done["uniform soup"] = steps.cache.step("soup_uniform", {"ingredients": keys}, build_uniform)
    held_out = held_out_world(steps, config)

    def build_greedy(folder: Path) -> dict:
        score = held_out_scorer(held_out, steps.config, steps.progress)
        result = greedy_soup(exports, folder / "hf", score, log=log, held_out=str(held_out.root))
        return {
            "held_out": {"seed": held_out.manifest.params["seed"], "per_task": config.held_out},
            "steps": [dataclasses.asdict(s) for s in result.steps],
            "kept": result.kept,
            "held_out_accuracy": result.accuracy,
        }

    log(f"greedy soup: chosen on {config.held_out} held-out questions per task (world seed {steps.config.seed + config.held_out_seed_offset})")
    done["greedy soup"] = steps.cache.step("soup_greedy", {"ingredients": keys, "held_out": held_out.key}, build_greedy)
    return done


def run_soup_demo(
    config: SoupDemoConfig,
    out_dir: str | Path,
    *,
    cache_root: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    log=print,
) -> SoupDemoResult:
    """Run the soup demo (see the module docstring) and write its outputs to `out_dir`.

    Args:
        config: what to run (`full_soup_config()`, `quick_soup_config()`).
        out_dir: the output folder.
        cache_root, use_cache, progress, log: as for `run_demo`.
    """
    if config.start not in STAGES:
        raise ValueError(f"soup start {config.start!r} is not a stage of the OneVision curriculum; choose from {list(STAGES)}")
    if not config.runs:
        raise ValueError("a soup demo needs at least one ingredient run")
    names = [run.name for run in config.runs]
    if len(set(names)) != len(names):
        raise ValueError(f"soup demo runs repeat a setting: {names}")
    started = time.perf_counter()
    set_threads(config.demo.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = DemoSteps(config.demo, DemoCache(cache_root or default_cache_root(), enabled=use_cache), progress)
    done, world = curriculum(steps, stages=STAGES[: STAGES.index(config.start) + 1])
    soups = cook(steps, config, done[config.start], world, log)
    done.update(soups)

    start_row = f"{config.start} (start)"
    rows = [start_row, *soups]
    models = {start_row: done[config.start], **soups}
    scores = {name: stage_scores(steps.scores(models[name], world, "choice", name)) for name in rows}
    greedy = done["greedy soup"].meta
    label = {str(soups[name].folder / "hf"): name for name in names}
    kept = [label.get(path, path) for path in greedy["kept"]]
    table = "\n\n".join(
        [
            *scenario_tables(world.manifest, rows, scores, {"greedy soup": f"{len(kept)} of {len(names)}: {', '.join(kept)}"}),
            greedy_lines(greedy, label),
        ]
    )
    log(table)

    for name, folder in (("uniform soup", "uniform_soup"), ("greedy soup", "greedy_soup")):
        shutil.rmtree(out_dir / folder, ignore_errors=True)
        shutil.copytree(done[name].folder / "hf", out_dir / folder)
    results = {
        "config": config.to_dict(),
        "rows": {name: {"scores": scores[name]} for name in rows},
        "ingredients": {name: str(soups[name].folder / "hf") for name in names},
        "losses": {name: soups[name].meta["losses"] for name in names},
        "greedy": {**greedy, "kept": kept},
        "seconds": {name: round(step.meta["seconds"], 1) for name, step in done.items()},
        "cached": {name: bool(step.meta.get("cached")) for name, step in done.items()},
    }
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    log(timing_line(results))
    return SoupDemoResult(out_dir, table, results)


def scenario_tables(manifest: WorldManifest, rows: list[str], scores: dict[str, dict], notes: dict[str, str]) -> list[str]:
    """One table per scenario: a row per model (`rows`, then chance), a column per closed-answer
    task of the scenario and one for the scenario as a whole; `notes` go after a row's cells."""
    per_task = manifest.params["n_test"]
    width = max(len("chance"), *(len(r) for r in rows))
    chance = scores[rows[-1]]["chance"]
    tables = []
    for scenario in (s for s in SCENARIOS if s in chance["scenarios"]):
        tasks = [t for t in TASKS if t in manifest.tasks and manifest.tasks[t]["scenario"] == scenario and manifest.tasks[t]["choices"]]
        columns = [*tasks, "all"]
        cols = [max(7, len(c)) for c in columns]
        lines = [f"{scenario}: test accuracy (multiple choice by likelihood, {per_task} questions per task)"]
        lines.append(f"{'':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, cols)))
        for name in [*rows, "chance"]:
            sc = chance if name == "chance" else scores[name]
            cells = [sc["tasks"].get(t) for t in tasks] + [sc["scenarios"].get(scenario)]
            note = f"  ({notes[name]})" if name in notes else ""
            lines.append(f"{name:<{width}}  " + "  ".join(f"{_cell(v):>{w}}" for v, w in zip(cells, cols)) + note)
        tables.append("\n".join(lines))
    return tables


def greedy_lines(greedy: dict, label: dict[str, str]) -> str:
    """How the greedy soup was chosen: each ingredient's held-out accuracy, the soup's with it, the verdict."""
    held = greedy["held_out"]
    lines = [f"Greedy soup on the held-out split (world seed {held['seed']}, {held['per_task']} questions per task; not the test split):"]
    for k, step in enumerate(greedy["steps"], start=1):
        verdict = "kept" if step["kept"] else "dropped"
        name = label.get(step["ingredient"], step["ingredient"])
        lines.append(f"  {k}. {name}: own {_cell(step['own']).strip()}, soup with it {_cell(step['soup']).strip()} -> {verdict}")
    return "\n".join(lines)
