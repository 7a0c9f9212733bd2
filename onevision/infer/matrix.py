"""Transfer matrix: accuracy of several checkpoints on each scenario, as a table and a heat map.

Rows are checkpoints (say, one trained on single images only, one on video only, one on the
OneVision mixture), columns are the test scenarios; each column carries its chance level, so
"transfer" reads as the distance above chance off the diagonal.

    matrix = transfer_matrix([report_si, report_video, report_ov])
    print(matrix.table())
    plot_matrix(matrix, "transfer.png")
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

SCENARIO_ORDER = ("single_image", "multi_image", "video", "text")


@dataclass
class TransferMatrix:
    """Accuracy per checkpoint (row) and scenario (column)."""

    rows: list[str]
    """Checkpoint names."""
    columns: list[str]
    """Scenarios, in the order single_image, multi_image, video, text, then any others."""
    accuracy: list[list[float | None]]
    """[rows][columns] accuracy; None where a checkpoint has no scored record of a scenario."""
    counts: list[list[int]]
    """[rows][columns] records scored."""
    chance: list[float | None]
    """Chance level per column (mean over its records; None for open answers)."""

    def table(self) -> str:
        """A text table: one line per checkpoint, a last line with the chance levels."""
        width = max(len("checkpoint"), *(len(r) for r in self.rows))
        cells = [max(8, len(c)) for c in self.columns]
        head = f"{'checkpoint':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(self.columns, cells))
        lines = [head]
        for name, values in zip(self.rows, self.accuracy):
            lines.append(f"{name:<{width}}  " + "  ".join(f"{_fmt(v):>{w}}" for v, w in zip(values, cells)))
        lines.append(f"{'chance':<{width}}  " + "  ".join(f"{_fmt(v):>{w}}" for v, w in zip(self.chance, cells)))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "accuracy": self.accuracy,
            "counts": self.counts,
            "chance": self.chance,
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def transfer_matrix(reports: Sequence) -> TransferMatrix:
    """Lay out reports (`onevision.infer.evaluate.Report`, one per checkpoint) per scenario.

    Raises:
        ValueError: no reports, or two with the same name.
    """
    if not reports:
        raise ValueError("transfer_matrix needs at least one report")
    names = [r.name for r in reports]
    if len(set(names)) != len(names):
        raise ValueError(f"report names must differ (they label the rows), got {names}")
    groups = [r.groups("scenario") for r in reports]
    found = {s for g in groups for s in g}
    columns = [s for s in SCENARIO_ORDER if s in found] + sorted(found - set(SCENARIO_ORDER))
    accuracy = [[g[c].accuracy if c in g else None for c in columns] for g in groups]
    counts = [[g[c].total if c in g else 0 for c in columns] for g in groups]
    chance = []
    for c in columns:
        levels = [g[c].chance for g in groups if c in g and g[c].chance is not None]
        chance.append(sum(levels) / len(levels) if levels else None)
    return TransferMatrix(names, columns, accuracy, counts, chance)


def plot_matrix(matrix: TransferMatrix, path: str | os.PathLike, title: str = "Accuracy by test scenario") -> Path:
    """Draw the matrix as a heat map PNG (matplotlib, Agg backend): colour = accuracy in [0, 1],
    each cell annotated with its accuracy and its margin over the column's chance level, and
    the chance level under each column's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[math.nan if v is None else v for v in row] for row in matrix.accuracy], dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(1.9 * cols + 2.8, 0.8 * rows + 1.8))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(rows):
        for j in range(cols):
            if math.isnan(values[i, j]):
                ax.text(j, i, "n/a", ha="center", va="center", color="grey")
                continue
            label = f"{values[i, j]:.2f}"
            if matrix.chance[j] is not None:
                label += f"\n({values[i, j] - matrix.chance[j]:+.2f} vs chance)"
            ax.text(j, i, label, ha="center", va="center", fontsize=9, color="white" if values[i, j] < 0.6 else "black")
    ax.set_xticks(range(cols))
    ax.set_xticklabels([c + ("" if p is None else f"\nchance {p:.2f}") for c, p in zip(matrix.columns, matrix.chance)])
    ax.set_yticks(range(rows))
    ax.set_yticklabels(matrix.rows)
    ax.set_xlabel("test scenario")
    ax.set_ylabel("checkpoint")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
