"""Sequence packing: bin-pack samples into rows of at most `max_tokens`, and lay the rows out.

Packing puts several samples in one row so no token slot is wasted on padding. Samples never
attend to each other: every sample's `position_ids` restart at 0, which is how transformers
(attention_mask None, no KV cache; docs/architecture.md, "Packed sequences") and the flash
varlen kernels (`cu_seqlens`) find the boundaries. A sample is never split across rows.

* `best_fit_decreasing(lengths, capacity)` groups lengths into bins (rows): longest first,
  each into the fullest bin it still fits (a sorted list of free space, O(n log n)).
* `layout_rows(rows, pad_token_id)` turns rows of (input_ids, labels) into the tensors of a
  packed batch; `unpack` is its inverse, for tests and inspection.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from onevision.data.template import IGNORE_INDEX


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins whose length sums are at most `capacity`.

    Bins come out in the order they were opened (the first holds the longest item); inside a
    bin, indices are in decreasing length order.

    Raises:
        ValueError: an item is longer than `capacity` (the caller skips such samples first).
    """
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, bin number), sorted
    for index in order:
        size = lengths[index]
        if size > capacity:
            raise ValueError(f"item {index} has length {size}, over the bin capacity {capacity}")
        slot = bisect.bisect_left(free, (size, -1))
        if slot == len(free):
            bins.append([index])
            number, space = len(bins) - 1, capacity - size
        else:
            space, number = free.pop(slot)
            bins[number].append(index)
            space -= size
        if space > 0:
            bisect.insort(free, (space, number))
    return bins


def efficiency(lengths: Sequence[int], bins: Sequence[Sequence[int]], capacity: int) -> float:
    """Real tokens / token slots when every bin is a row of `capacity` slots."""
    if not bins:
        return 1.0
    return sum(lengths[i] for b in bins for i in b) / (len(bins) * capacity)


@dataclass(frozen=True)
class PackedRows:
    """Rows of concatenated samples, right-padded to a common length T."""

    input_ids: torch.Tensor
    """[B, T] token ids; pads are `pad_token_id`."""
    labels: torch.Tensor
    """[B, T] targets, -100 on pads and at each sample's first position (not a target of its own sample)."""
    position_ids: torch.Tensor
    """[B, T] positions restarting at 0 at each sample start (and at the padding tail)."""
    cu_seqlens: torch.Tensor
    """[S + 1] int32 cumulative segment lengths over the flattened [B * T] tokens; segments are
    the samples and each row's padding tail, so cu_seqlens[-1] == B * T."""
    max_seqlen: int
    """Longest segment in cu_seqlens."""
    spans: tuple[tuple[int, int, int], ...]
    """(row, start, length) of every sample, row-major: the order of the batch's samples."""


def layout_rows(
    rows: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]],
    pad_token_id: int,
    pad_to_multiple_of: int = 1,
) -> PackedRows:
    """Concatenate each row's (input_ids, labels) samples and pad the rows to one length.

    Args:
        rows: per row, its samples' (input_ids, labels) in order.
        pad_token_id: id written into padding slots (labels there are -100).
        pad_to_multiple_of: round T up to a multiple of this (kernels like multiples of 8/64).
    """
    if not rows or not all(rows):
        raise ValueError("layout_rows needs at least one row and no empty rows")
    used = [sum(len(ids) for ids, _ in row) for row in rows]
    width = -(-max(used) // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segments, spans = [], []
    for r, row in enumerate(rows):
        start = 0
        for ids, targets in row:
            if len(ids) != len(targets):
                raise ValueError(f"a sample has {len(ids)} input ids but {len(targets)} labels")
            end = start + len(ids)
            input_ids[r, start:end] = torch.as_tensor(ids, dtype=torch.long)
            labels[r, start:end] = torch.as_tensor(targets, dtype=torch.long)
            labels[r, start] = IGNORE_INDEX  # would be predicted from the previous sample's last token
            position_ids[r, start:end] = torch.arange(len(ids))
            segments.append(len(ids))
            spans.append((r, start, len(ids)))
            start = end
        if start < width:
            position_ids[r, start:] = torch.arange(width - start)
            segments.append(width - start)
    cu_seqlens = torch.zeros(len(segments) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(torch.tensor(segments, dtype=torch.int64), 0).to(torch.int32)
    return PackedRows(input_ids, labels, position_ids, cu_seqlens, max(segments), tuple(spans))


def unpack(input_ids: torch.Tensor, labels: torch.Tensor, spans: Sequence[tuple[int, int, int]]) -> list[tuple[list[int], list[int]]]:
    """Each sample's (input_ids, labels) back out of packed [B, T] rows, in span order."""
    return [
        (input_ids[r, s : s + n].tolist(), labels[r, s : s + n].tolist())
        for r, s, n in spans
    ]
