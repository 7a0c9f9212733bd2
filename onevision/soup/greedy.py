"""Greedy model soup: add ingredients best first, keep one only if the held-out accuracy improves.

Wortsman et al. 2022 (arXiv 2203.05482, Sec. 2 and Algorithm 1, "greedy soup"): sort the
ingredients by their own held-out accuracy, start the soup with the best, then for each next
ingredient average it into the soup and keep it only if the held-out accuracy of that average is
higher than the soup's so far (strictly, as mlfoundations/model-soups `main.py` does). The soup
starts from the best ingredient and only ever takes a higher accuracy, so on the held-out split
it is never below its best ingredient; a test split apart from the held-out one says whether it
generalises.

Each candidate is the uniform average of the kept ingredients plus the new one, written by
`onevision.soup.average` (streamed, in the soup's dtype: what is scored is what would be
written; ingredients themselves are scored as stored) into a work folder and scored from
there, so no two models are held at once; k ingredients cost k + (k - 1) scorings. Scoring
defaults to `onevision eval`'s: multiple choice by likelihood on a world's held-out records
(`held_out_scorer`); any `score(folder) -> accuracy` works.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from onevision.soup.average import (
    Ingredient,
    average,
    check_ingredients,
    check_out,
    read_ingredient,
    soup_metadata,
)


@dataclass
class GreedyStep:
    """One ingredient tried, in the order tried."""

    ingredient: str
    """Its export folder."""
    own: float
    """Its own held-out accuracy."""
    soup: float
    """Held-out accuracy of the soup with it (for the first: its own)."""
    kept: bool
    """Whether it joined the soup."""

    def line(self, index: int, total: int) -> str:
        verdict = "kept" if self.kept else "dropped"
        return f"[{index}/{total}] {self.ingredient}: own {self.own:.4f}, soup with it {self.soup:.4f} -> {verdict}"


@dataclass
class GreedyResult:
    """The greedy soup written and how it was made."""

    out: Path
    steps: list[GreedyStep]
    accuracy: float
    """Held-out accuracy of the written soup."""

    @property
    def kept(self) -> list[str]:
        return [s.ingredient for s in self.steps if s.kept]


def greedy_soup(
    paths: list[str | Path],
    out: str | Path,
    score: Callable[[Path], float],
    *,
    dtype: torch.dtype | None = None,
    allow_unknown_start: bool = False,
    log: Callable[[str], None] = print,
    held_out: str | None = None,
) -> GreedyResult:
    """Build the greedy soup of `paths` (exports or run folders) into `out`.

    Args:
        paths: the ingredients; checked as for a uniform soup before anything is scored.
        out: the soup's folder.
        score: folder -> held-out accuracy (higher is better).
        dtype: the soup's weight dtype; None keeps the ingredients'.
        allow_unknown_start: accept ingredients that record no start fingerprint.
        log: receives one line per step.
        held_out: what the held-out split was, for the soup's metadata.
    """
    ingredients = [read_ingredient(p) for p in paths]
    start = check_ingredients(ingredients, allow_unknown_start)
    check_out(out, ingredients)
    own = []
    for k, ing in enumerate(ingredients):
        own.append(_checked(score(ing.path), ing.path))
        log(f"scored {k + 1}/{len(ingredients)} {ing.path}: {own[-1]:.4f}")
    # Stable: ingredients of equal accuracy keep the order they were given in.
    order = sorted(range(len(ingredients)), key=lambda k: -own[k])
    best = order[0]
    kept: list[Ingredient] = [ingredients[best]]
    steps = [GreedyStep(str(ingredients[best].path), own[best], own[best], True)]
    log(steps[0].line(1, len(order)))
    accuracy = own[best]
    Path(out).resolve().parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".greedy-", dir=Path(out).resolve().parent))
    try:
        for k in order[1:]:
            candidate = average(kept + [ingredients[k]], work / "candidate", dtype)
            with_it = _checked(score(candidate), candidate)
            step = GreedyStep(str(ingredients[k].path), own[k], with_it, with_it > accuracy)
            if step.kept:
                kept.append(ingredients[k])
                accuracy = with_it
            steps.append(step)
            log(step.line(len(steps), len(order)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = soup_metadata(
        "greedy", ingredients, start, dtype,
        allow_unknown_start=allow_unknown_start, held_out=held_out, kept=[str(i.path) for i in kept],
        held_out_accuracy=accuracy, steps=[asdict(s) for s in steps],
    )
    return GreedyResult(average(kept, out, dtype, meta), steps, accuracy)


def _checked(value: float | None, where: Path) -> float:
    if value is None:
        raise ValueError(f"{where}: no held-out record could be scored (every one failed), so there is no accuracy to compare")
    return float(value)


def held_out_scorer(data: list[str | Path], *, device: str = "cpu", batch_size: int = 8, choice_by: str = "text", media_root=None, limit: int | None = None) -> Callable[[Path], float | None]:
    """score(folder) -> overall accuracy on `data` (record files or folders), as `onevision eval` scores.

    Records with choices are multiple choice by likelihood (`choice_by`), others exact match.
    The records are read once, before any model; `limit` keeps the first N.

    Raises:
        ValueError: no records in `data`.
    """
    from onevision.infer.evaluate import evaluate, read_benchmark
    from onevision.infer.pipeline import OneVision

    items = read_benchmark(data, media_root)[:limit]
    if not items:
        raise ValueError(f"--eval: no records in {[str(p) for p in data]}")

    def score(folder: Path) -> float | None:
        pipe = OneVision.from_pretrained(folder, device=device)
        report = evaluate(pipe, items, name=str(folder), choice_by=choice_by, batch_size=batch_size, progress=False)
        return report.overall.accuracy

    return score
