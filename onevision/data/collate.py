"""Collation: samples -> one `Batch` for the model, padded or packed, skips counted.

* padded: one row per sample, right padding to the longest (labels -100 and attention_mask 0
  on pads), position_ids 0..T-1;
* packed: samples best-fit-decreasing into rows of at most `max_tokens` (`packing.py`),
  position_ids restarting at 0 per sample, `cu_seqlens` over the flattened rows, attention_mask
  None (so transformers keeps samples apart; pass use_cache=False). The first label of every
  sample is -100: in a packed row that target would be predicted from the previous sample.

`Skipped` markers from the dataset, and samples longer than `max_tokens`, are dropped and
returned in `Batch.skipped`, so the counts travel with the batch out of worker processes.
The visual half lists every item's tiles and plan in placeholder order, sample after sample in
the batch's row-major order (the model contract).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from onevision.data.dataset import Sample, Skipped
from onevision.data.packing import best_fit_decreasing, layout_rows
from onevision.data.template import IGNORE_INDEX
from onevision.visual_batch import VisualBatch


@dataclass(frozen=True)
class CollateConfig:
    """How samples are laid out in a batch; the `collate:` block of training configs."""

    pack: bool = False
    """Pack samples into rows of max_tokens instead of one padded row per sample."""
    max_tokens: int | None = None
    """Packed: row capacity (required). Padded: samples longer than this are skipped (None: no limit)."""
    pad_to_multiple_of: int = 1
    """Round the row length T up to a multiple of this."""

    def __post_init__(self) -> None:
        if self.pack and self.max_tokens is None:
            raise ValueError("packing needs max_tokens (the row capacity)")
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")


@dataclass
class Batch:
    """What the model (training and inference) consumes."""

    input_ids: torch.Tensor
    """[B, T] token ids with expanded placeholders; pads are the pad id."""
    labels: torch.Tensor
    """[B, T] targets, -100 on pads, prompts and placeholders (shifted by the loss)."""
    attention_mask: torch.Tensor | None
    """[B, T] 1 real / 0 pad for padded batches; None for packed rows."""
    position_ids: torch.Tensor
    """[B, T] positions; packed rows restart at 0 at every sample."""
    cu_seqlens: torch.Tensor | None
    """Packed: [S + 1] int32 cumulative segment lengths over the flattened [B * T] tokens
    (samples and row padding tails); None for padded batches."""
    max_seqlen: int
    """Longest sample (packed: longest segment of cu_seqlens)."""
    visual: VisualBatch | None
    """Tiles and item plans in placeholder order, row-major over the batch; None if text-only."""
    modality: list[str]
    """Modality of each sample, in the batch's row-major order."""
    ids: list[str]
    """Record id of each sample, same order."""
    spans: list[tuple[int, int, int]]
    """(row, start, length) of each sample, same order."""
    skipped: list[Skipped] = field(default_factory=list)
    """Samples dropped from this batch, with their reasons."""

    @property
    def num_samples(self) -> int:
        return len(self.ids)

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens."""
        return sum(n for _, _, n in self.spans)

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def skip_counts(self) -> dict[str, int]:
        """Dropped samples per kind ('media', 'invalid', 'too_long', ...)."""
        return dict(Counter(s.kind for s in self.skipped))

    def model_inputs(self) -> dict:
        """Keyword arguments for `OneVisionModel.forward` (use_cache off, as packing needs)."""
        return {
            "input_ids": self.input_ids,
            "visual": self.visual,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "labels": self.labels,
            "use_cache": False,
        }

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """A copy on `device`; `dtype` casts the pixels only."""
        move = lambda t: None if t is None else t.to(device)
        return replace(
            self,
            input_ids=move(self.input_ids),
            labels=move(self.labels),
            attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids),
            cu_seqlens=move(self.cu_seqlens),
            visual=None if self.visual is None else self.visual.to(device, dtype),
        )

    def pin_memory(self) -> Batch:
        """Pinned host copy, for DataLoader(pin_memory=True)."""
        pin = lambda t: None if t is None else t.pin_memory()
        return replace(
            self,
            input_ids=pin(self.input_ids),
            labels=pin(self.labels),
            attention_mask=pin(self.attention_mask),
            position_ids=pin(self.position_ids),
            cu_seqlens=pin(self.cu_seqlens),
            visual=None if self.visual is None else self.visual.pin_memory(),
        )

    @classmethod
    def empty(cls, skipped: list[Skipped], packed: bool) -> Batch:
        """A batch whose samples were all skipped ([0, 0] tensors), so its skips are still counted."""
        none = torch.zeros((0, 0), dtype=torch.long)
        return cls(
            input_ids=none,
            labels=none.clone(),
            attention_mask=None if packed else none.clone(),
            position_ids=none.clone(),
            cu_seqlens=torch.zeros(1, dtype=torch.int32) if packed else None,
            max_seqlen=0,
            visual=None,
            modality=[],
            ids=[],
            spans=[],
            skipped=skipped,
        )


class Collator:
    """Turns a list of dataset outputs (`Sample`, `Skipped` or None) into a `Batch`.

    Args:
        pad_token_id: id written into padding (the tokenizer's pad id).
        config: padded or packed layout and the row capacity.
    """

    def __init__(self, pad_token_id: int, config: CollateConfig | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.config = config or CollateConfig()

    def __call__(self, items: Sequence[Sample | Skipped | None]) -> Batch:
        samples, skipped = self.split(items)
        if not samples:
            return Batch.empty(skipped, self.config.pack)
        if self.config.pack:
            bins = best_fit_decreasing([s.num_tokens for s in samples], self.config.max_tokens)
            rows = [[samples[i] for i in b] for b in bins]
            return self._packed(rows, skipped)
        return self._padded(samples, skipped)

    def split(self, items: Sequence[Sample | Skipped | None]) -> tuple[list[Sample], list[Skipped]]:
        """Usable samples, and the skipped ones (markers and samples over max_tokens)."""
        samples, skipped = [], []
        limit = self.config.max_tokens
        for item in items:
            if item is None:
                continue
            if isinstance(item, Skipped):
                skipped.append(item)
            elif limit is not None and item.num_tokens > limit:
                reason = f"{item.record}: {item.num_tokens} tokens, over max_tokens {limit}"
                skipped.append(Skipped(item.id, item.source, reason, "too_long", item.record))
            else:
                samples.append(item)
        return samples, skipped

    def _padded(self, samples: list[Sample], skipped: list[Skipped]) -> Batch:
        longest = max(s.num_tokens for s in samples)
        multiple = self.config.pad_to_multiple_of
        width = -(-longest // multiple) * multiple
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = sample.num_tokens
            input_ids[row, :n] = sample.input_ids
            labels[row, :n] = sample.labels
            attention_mask[row, :n] = 1
        position_ids = torch.arange(width).expand(len(samples), width).clone()
        return Batch(
            input_ids=input_ids,
            labels=labels,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cu_seqlens=None,
            max_seqlen=longest,
            visual=_visual(samples),
            modality=[s.modality for s in samples],
            ids=[s.id for s in samples],
            spans=[(row, 0, s.num_tokens) for row, s in enumerate(samples)],
            skipped=skipped,
        )

    def _packed(self, rows: list[list[Sample]], skipped: list[Skipped]) -> Batch:
        laid = layout_rows(
            [[(s.input_ids, s.labels) for s in row] for row in rows],
            self.pad_token_id,
            self.config.pad_to_multiple_of,
        )
        order = [s for row in rows for s in row]
        return Batch(
            input_ids=laid.input_ids,
            labels=laid.labels,
            attention_mask=None,
            position_ids=laid.position_ids,
            cu_seqlens=laid.cu_seqlens,
            max_seqlen=laid.max_seqlen,
            visual=_visual(order),
            modality=[s.modality for s in order],
            ids=[s.id for s in order],
            spans=list(laid.spans),
            skipped=skipped,
        )


def _visual(samples: Sequence[Sample]) -> VisualBatch | None:
    """Every sample's tiles and plans, in order; None when no sample has a visual item."""
    with_items = [s for s in samples if s.plans]
    if not with_items:
        return None
    return VisualBatch(_concat([s.pixel_values for s in with_items]), [p for s in with_items for p in s.plans])


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along dim 0; inside a DataLoader worker, straight into shared memory.

    As torch's default_collate does: the batch is then handed to the main process without the
    extra copy pickling would make (pixels are most of a batch's bytes: a 32-frame video at
    384 px is 57 MB in float32).
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.cat(tensors)
    first = tensors[0]
    rows = sum(t.shape[0] for t in tensors)
    storage = first.untyped_storage()._new_shared(rows * first[0].numel() * first.element_size())
    out = first.new_empty(0).set_(storage).view(rows, *first.shape[1:])
    return torch.cat(tensors, out=out)
