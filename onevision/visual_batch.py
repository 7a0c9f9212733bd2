"""The visual half of a model batch: every tile's pixels plus the plan of every item.

Data code builds it, the model consumes it, so it lives beside both rather than in either
(docs/architecture.md, "Dependency direction"): it needs only torch and the planner's
`ItemPlan`, so importing it pulls in no model weights or transformers classes.

Order (contract): items in placeholder order, sample after sample (row-major over the batch);
each item contributes `plan.num_tiles` consecutive tiles to `pixel_values` (AnyRes: base view
then crops row-major; multi-image: one; video: one per frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from onevision.budget.planner import ItemPlan


@dataclass
class VisualBatch:
    """All tiles of a batch and the item plans that say how to lay them out."""

    pixel_values: torch.Tensor
    """[num_tiles_total, 3, S, S] normalised tiles, item after item, sample after sample."""
    plans: list[ItemPlan]
    """Flat item plans in the same order; sum(p.num_tiles) == num_tiles_total."""

    def __post_init__(self) -> None:
        self.plans = list(self.plans)
        if self.pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be [num_tiles, 3, S, S], got shape {list(self.pixel_values.shape)}")
        if self.pixel_values.shape[0] != self.num_tiles:
            raise ValueError(
                f"pixel_values holds {self.pixel_values.shape[0]} tiles but the {len(self.plans)} plans "
                f"need {self.num_tiles}"
            )

    @property
    def num_tiles(self) -> int:
        """Tiles the plans need (== pixel_values.shape[0])."""
        return sum(p.num_tiles for p in self.plans)

    @property
    def image_tokens(self) -> int:
        """Placeholder tokens of all image items (`image_token_id`)."""
        return sum(p.tokens for p in self.plans if p.kind != "video")

    @property
    def video_tokens(self) -> int:
        """Placeholder tokens of all video items (`video_token_id`)."""
        return sum(p.tokens for p in self.plans if p.kind == "video")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "VisualBatch":
        """A copy with pixels moved to `device` and/or cast to floating `dtype`."""
        return VisualBatch(self.pixel_values.to(device=device, dtype=dtype), list(self.plans))

    def pin_memory(self) -> "VisualBatch":
        """Pinned host copy, for DataLoader(pin_memory=True)."""
        return VisualBatch(self.pixel_values.pin_memory(), list(self.plans))

    @staticmethod
    def concat(batches: Iterable[Optional["VisualBatch"]]) -> Optional["VisualBatch"]:
        """Join per-sample batches in order; None entries (text-only samples) are skipped.

        Returns None when no batch has an item.
        """
        present = [b for b in batches if b is not None and b.plans]
        if not present:
            return None
        pixels = torch.cat([b.pixel_values for b in present], dim=0)
        return VisualBatch(pixels, [p for b in present for p in b.plans])
