"""Check a recipe's data the way training reads it, before training on it.

`check_dataset` runs `OneVisionDataset.__getitem__` on every sample (media decoded, pixels
cut, conversation tokenised: the training code path, not a second implementation), in worker
processes when asked, and reports:

* counts: records, good and bad, per modality and per kind of problem;
* token lengths per modality: min / mean / median / p95 / max;
* every bad record with its file and reason.

`onevision data check RECIPE.yaml` (`onevision/cli/data.py`) prints the report, or writes it as
one JSON object, and exits non-zero when any record is bad.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from onevision.data.dataset import DataConfig, OneVisionDataset, Sample, Skipped
from onevision.data.recipe import Recipe
from onevision.utils.progress import progress_bar


@dataclass(frozen=True)
class _Seen:
    """What the check keeps of a good sample (pixels stay in the worker)."""

    id: str
    modality: str
    num_tokens: int
    visual_tokens: int


@dataclass
class CheckReport:
    """Outcome of checking every sample of a dataset."""

    ok: bool
    """True when no record is bad."""
    bad: list[dict]
    """Per bad record: id, file, reason, kind, record (file:line and id)."""
    stats: dict
    """Per modality (and 'all'): count, min, mean, median, p95, max of tokens per sample."""
    counts: dict
    """records, good, bad, per-modality good samples, bad per kind."""

    def to_dict(self) -> dict:
        return {"ok": self.ok, "bad": self.bad, "stats": self.stats, "counts": self.counts}

    def format(self) -> str:
        """The human-readable report."""
        c = self.counts
        lines = [f"{c['records']} records: {c['good']} good, {c['bad']} bad"]
        header = f"{'modality':<12} {'count':>7} {'min':>7} {'mean':>9} {'median':>8} {'p95':>8} {'max':>7}"
        lines += ["", "tokens per sample", header]
        for name, s in self.stats.items():
            lines.append(
                f"{name:<12} {s['count']:>7} {s['min']:>7} {s['mean']:>9.1f} {s['median']:>8.1f} {s['p95']:>8.1f} {s['max']:>7}"
            )
        if self.bad:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["bad_by_kind"].items()))
            lines += ["", f"bad records ({kinds}):"]
            lines += [f"  [{b['kind']}] {b['reason']}" for b in self.bad]
        return "\n".join(lines)


def _summarize(items: Sequence[Sample | Skipped]) -> list[_Seen | Skipped]:
    """Collate function of the check: keeps lengths and skips, drops pixels inside the worker."""
    out = []
    for item in items:
        if isinstance(item, Sample):
            visual = sum(p.tokens for p in item.plans)
            out.append(_Seen(item.id, item.modality, item.num_tokens, visual))
        else:
            out.append(item)
    return out


def token_stats(lengths: Sequence[int]) -> dict:
    """count, min, mean, median, p95 and max of `lengths`."""
    values = np.asarray(lengths, dtype=np.float64)
    return {
        "count": int(values.size),
        "min": int(values.min()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def check_dataset(dataset: OneVisionDataset, workers: int = 0, progress: bool = True, batch_size: int = 4) -> CheckReport:
    """Load every sample of `dataset` (in `workers` processes) and report counts, lengths and bad records."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_summarize,
    )
    seen: list[_Seen] = []
    bad: list[Skipped] = []
    with progress_bar(total=len(dataset), desc="checking samples", unit="sample", disable=not progress) as bar:
        for chunk in loader:
            for item in chunk:
                (bad if isinstance(item, Skipped) else seen).append(item)
            bar.update(len(chunk))
    by_modality: dict[str, list[int]] = defaultdict(list)
    for item in seen:
        by_modality[item.modality].append(item.num_tokens)
    stats = {name: token_stats(by_modality[name]) for name in sorted(by_modality)}
    if seen:
        stats["all"] = token_stats([item.num_tokens for item in seen])
    counts: dict[str, Any] = {
        "records": len(dataset),
        "good": len(seen),
        "bad": len(bad),
        "modality": {name: len(v) for name, v in sorted(by_modality.items())},
        "bad_by_kind": dict(Counter(b.kind for b in bad)),
        "visual_tokens": int(sum(item.visual_tokens for item in seen)),
    }
    return CheckReport(ok=not bad, bad=[b.to_dict() for b in bad], stats=stats, counts=counts)


def check_recipe(
    recipe: Recipe,
    tokenizer: Any,
    config: DataConfig | None = None,
    workers: int = 0,
    progress: bool = True,
) -> CheckReport:
    """`check_dataset` over a recipe's final sample list (bad records counted, not raised)."""
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, config, progress=progress)
    return check_dataset(dataset, workers=workers, progress=progress)
