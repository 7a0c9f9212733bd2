"""Batches of the cross-attention family: padded or packed rows with their tiles and cross-attention mask.

`MllamaCollator(...)(samples)` drops and counts `Skipped` markers and builds one `MllamaBatch`:

- padded (`max_tokens` None): one sample a row, right-padded with the pad id (label -100), an
  attention mask, the cross-attention mask of `padded_cross_attention_mask`;
- packed (`max_tokens` set): samples best-fit into rows of at most `max_tokens` tokens,
  position_ids restarting at 0 for every sample (and for the row's padding tail, its own
  segment), no attention mask (transformers finds the samples from position_ids), and the mask
  of `packed_cross_attention_mask`, so no sample sees another's images. A sample longer than
  `max_tokens` is skipped (kind 'too_long').

Pixels are stacked by `stack_mllama_images` (N = most images in one row); a batch without any
image has no vision inputs at all, so the cross-attention layers are skipped as in inference.
Train with `MllamaVLM(..., text_rows="reference")`: rows that see no image then get no
cross-attention output, in packed and padded batches alike (onevision/model/mllama.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from onevision.data.cross_attention import (
    packed_cross_attention_mask,
    padded_cross_attention_mask,
    segments_from_position_ids,
)
from onevision.data.dataset import Skipped
from onevision.data.mllama_dataset import MllamaSample
from onevision.data.packing import best_fit_decreasing
from onevision.data.template import IGNORE_INDEX
from onevision.processing.mllama import stack_mllama_images

VISION_KEYS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")


@dataclass
class MllamaBatch:
    """One micro-batch: the model's keyword arguments plus what the loop counts."""

    inputs: dict[str, torch.Tensor | None]
    """input_ids, labels, attention_mask, position_ids and (with images) the four vision inputs."""
    ids: list[str] = field(default_factory=list)
    """Sample ids in the batch."""
    num_tokens: int = 0
    """Real (non-padding) tokens."""
    modality: Counter = field(default_factory=Counter)
    """Samples by modality."""
    skipped: list[Skipped] = field(default_factory=list)
    """Samples dropped from this batch."""

    @property
    def num_samples(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> dict[str, torch.Tensor | None]:
        """The model inputs on `device`."""
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}


class MllamaCollator:
    """Padded or packed batches (see the module docstring).

    Args:
        pad_token_id: id of padding positions.
        image_token_id: the `<|image|>` id.
        max_num_tiles: the model's vision max_num_tiles (tile slots of every image).
        max_tokens: packed rows of at most this many tokens; None: padded, one sample a row.
        pad_to_multiple_of: round the row length up to a multiple of this.
    """

    def __init__(self, pad_token_id: int, image_token_id: int, max_num_tiles: int, max_tokens: int | None = None, pad_to_multiple_of: int = 1) -> None:
        self.pad_token_id = pad_token_id
        self.image_token_id = image_token_id
        self.max_num_tiles = max_num_tiles
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[MllamaSample | Skipped | None]) -> MllamaBatch:
        samples = [item for item in items if isinstance(item, MllamaSample)]
        skipped = [item for item in items if isinstance(item, Skipped)]
        if self.max_tokens is not None:
            fits = [s for s in samples if s.num_tokens <= self.max_tokens]
            skipped += [
                Skipped(s.id, s.record, f"{s.record}: {s.num_tokens} tokens, over data.sampler.max_tokens={self.max_tokens}", "too_long", s.record)
                for s in samples if s.num_tokens > self.max_tokens
            ]
            bins = best_fit_decreasing([s.num_tokens for s in fits], self.max_tokens)
            rows = [[fits[i] for i in b] for b in bins]
        else:
            rows = [[s] for s in samples]
        if not rows:
            return MllamaBatch({}, skipped=skipped)
        return self._rows(rows, skipped)

    def _rows(self, rows: list[list[MllamaSample]], skipped: list[Skipped]) -> MllamaBatch:
        packed = self.max_tokens is not None
        longest = max(sum(s.num_tokens for s in row) for row in rows)
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        positions = torch.zeros((len(rows), length), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for sample in row:
                end = at + sample.num_tokens
                input_ids[r, at:end], labels[r, at:end] = sample.input_ids, sample.labels
                positions[r, at:end] = torch.arange(sample.num_tokens)
                at = end
            attention[r, :at] = 1
            positions[r, at:] = torch.arange(length - at)  # the padding tail: a segment of its own
        inputs: dict[str, torch.Tensor | None] = {"input_ids": input_ids, "labels": labels}
        if packed:
            inputs |= {"attention_mask": None, "position_ids": positions}
        else:
            inputs |= {"attention_mask": attention, "position_ids": None}
        images = [[pair for sample in row for pair in sample.images] for row in rows]
        if any(images):
            pixels = stack_mllama_images(images, self.max_num_tiles)
            if packed:
                mask = packed_cross_attention_mask(input_ids, segments_from_position_ids(positions), pixels.num_tiles, self.max_num_tiles, self.image_token_id)
            else:
                mask = padded_cross_attention_mask(input_ids, pixels.num_tiles, self.max_num_tiles, self.image_token_id)
            inputs |= {
                "pixel_values": pixels.pixel_values, "aspect_ratio_ids": pixels.aspect_ratio_ids,
                "aspect_ratio_mask": pixels.aspect_ratio_mask, "cross_attention_mask": mask,
            }
        samples = [s for row in rows for s in row]
        return MllamaBatch(
            inputs, ids=[s.id for s in samples], num_tokens=sum(s.num_tokens for s in samples),
            modality=Counter(s.modality for s in samples), skipped=skipped,
        )
