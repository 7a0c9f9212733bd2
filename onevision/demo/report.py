"""Tables and plots of a demo run: accuracy per stage x scenario / task with chance beside,
loss curves of the pretraining and of every stage, accuracy per stage and scenario.

Inputs are plain data (what `results.json` holds), so a table can be redrawn from a saved run:

    scores = stage_scores(report)           # {"scenarios": {...}, "tasks": {...}, "chance": {...}}
    print(accuracy_table(["stage1", ...], [scores, ...]))
    plot_losses({"decoder": [...], "tower": [...]}, {"stage1": [...], ...}, "loss_curves.png")
    plot_accuracy(["stage1", ...], [scores, ...], "accuracy.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onevision.world import SCENARIOS, TASKS


def stage_scores(report) -> dict:
    """Accuracy and chance per scenario and per task, and overall, from an evaluation `Report`."""
    out: dict = {"scenarios": {}, "tasks": {}, "chance": {"scenarios": {}, "tasks": {}}, "n": {}}
    for by, key in (("scenario", "scenarios"), ("task", "tasks")):
        for name, group in report.groups(by).items():
            out[key][name] = group.accuracy
            out["chance"][key][name] = group.chance
            out["n"][name] = group.total
    out["overall"] = report.overall.accuracy
    out["chance"]["overall"] = report.overall.chance
    return out


def _chance(scores: Sequence[dict], by: str, name: str) -> float | None:
    """A scenario's or task's chance level from the last row that was asked about it."""
    return next((sc["chance"][by][name] for sc in reversed(scores) if name in sc["chance"][by]), None)


def _cell(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def accuracy_table(stages: Sequence[str], scores: Sequence[dict], title: str = "") -> str:
    """Rows: stages then chance; columns: scenarios and all (percent)."""
    columns = [s for s in SCENARIOS if any(s in sc["scenarios"] for sc in scores)]
    width = max(len("chance"), *(len(s) for s in stages))
    lines = [title] if title else []
    lines.append(f"{'':<{width}}  " + "  ".join(f"{c:>12}" for c in columns) + f"  {'all':>8}")
    for name, sc in zip(stages, scores):
        cells = [_cell(sc["scenarios"].get(c)) for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>12}" for v in cells) + f"  {_cell(sc['overall']):>8}")
    chance = scores[-1]["chance"]
    cells = [_cell(_chance(scores, "scenarios", c)) for c in columns]
    lines.append(f"{'chance':<{width}}  " + "  ".join(f"{v:>12}" for v in cells) + f"  {_cell(chance['overall']):>8}")
    return "\n".join(lines)


def task_table(stages: Sequence[str], scores: Sequence[dict], extra: dict[str, dict] | None = None, title: str = "") -> str:
    """Rows: tasks (in the world's registry order: single-image, multi-image, video); columns: chance, each stage, then `extra` columns
    (name -> scores, e.g. exact match of the last stage)."""
    extra = extra or {}
    names = list(stages) + list(extra)
    table = list(scores) + list(extra.values())
    order = list(TASKS)
    # Every task any row was asked (a system that takes no video has no video rows).
    tasks = sorted({t for sc in scores for t in sc["tasks"]}, key=lambda t: (order.index(t) if t in order else len(order), t))
    width = max(len("task"), *(len(t) for t in tasks))
    cols = [max(8, len(n)) for n in names]
    lines = [title] if title else []
    lines.append(f"{'task':<{width}}  {'chance':>7}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, cols)))
    for task in tasks:
        chance = _chance(scores, "tasks", task)
        cells = [_cell(sc["tasks"].get(task)) for sc in table]
        lines.append(f"{task:<{width}}  {_cell(chance):>7}  " + "  ".join(f"{v:>{w}}" for v, w in zip(cells, cols)))
    return "\n".join(lines)


def plot_losses(pretraining: dict[str, list[float]], stages: dict[str, list[float]], path: str | Path) -> Path:
    """Three panels: decoder LM loss, tower sigmoid loss, and the curriculum's stages one after
    the other on a shared step axis (a vertical line where a stage starts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pretraining) + 1, figsize=(5 * (len(pretraining) + 1), 4))
    for ax, (name, losses) in zip(axes, pretraining.items()):
        ax.plot(range(1, len(losses) + 1), losses, linewidth=1.0)
        ax.set_title(f"pretraining: {name}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    offset, top = 0, 0.0
    for k, (name, losses) in enumerate(stages.items()):
        steps = range(offset + 1, offset + len(losses) + 1)
        smooth = moving_average(losses, 10)
        ax.plot(steps, losses, linewidth=0.6, alpha=0.3, color=f"C{k}")
        ax.plot(steps, smooth, linewidth=1.5, color=f"C{k}", label=name)
        ax.axvline(offset + 0.5, color="grey", linewidth=0.6, linestyle=":")
        offset += len(losses)
        top = max(top, max(smooth, default=0.0))
    ax.set_ylim(0, 1.15 * top if top > 0 else None)
    ax.set_title("curriculum: training loss per stage (10-step mean)")
    ax.set_xlabel("step (stages in order)")
    ax.set_ylabel("cross-entropy on answers")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and the up to `window - 1` values before it."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_accuracy(stages: Sequence[str], scores: Sequence[dict], path: str | Path, title: str = "Test accuracy after each stage") -> Path:
    """Accuracy per scenario (one line each) against stage, with each scenario's chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(stages)))
    for k, scenario in enumerate(s for s in SCENARIOS if s in scores[-1]["scenarios"]):
        colour = f"C{k}"
        values = [sc["scenarios"].get(scenario) for sc in scores]
        ax.plot(x, [float("nan") if v is None else v for v in values], "o-", color=colour, label=scenario)
        chance = scores[-1]["chance"]["scenarios"].get(scenario)
        if chance is not None:
            ax.axhline(chance, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
    ax.set_xticks(x)
    ax.set_xticklabels(stages)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy (dashed: chance)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
