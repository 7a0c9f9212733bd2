"""Which text positions see which image's tiles: the `cross_attention_mask` of the cross-attention family.

The decoder holds one `<|image|>` token per image; the image reaches text only through the
cross-attention layers, and the mask [B, L, N, max_num_tiles] (1 = may attend) says which
positions see which image's real tiles. Semantics of transformers 5.24
`models/mllama/processing_mllama.py` (`get_cross_attention_token_mask`,
`convert_sparse_cross_attention_mask_to_dense`):

- an image is seen from its own `<|image|>` token up to the next image token (exclusive), the
  last image up to the end of the sequence;
- consecutive image tokens form a group, and every image of the group is seen up to where the
  group's last image stops being seen;
- positions before the first image see no image.

Padded batches apply this to every row (`padded_cross_attention_mask`). Packed rows
(`packed_cross_attention_mask`) apply it to every sample of the row on its own, clipped to the
sample's span, with the row's images numbered across its samples: a sample never sees another
sample's images, and its last image stops at its own end, not the row's. The mask alone is not
enough in transformers 5.24: positions whose row is all 0 (before a sample's first image, or an
imageless sample) attend to every tile of the row there, so packed rows need the model built
with `MllamaVLM(..., text_rows="reference")` (onevision/model/mllama.py says why), and a
forward without a KV cache (packed rows are found from position_ids only then).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def image_spans(input_ids: Sequence[int], image_token_id: int) -> list[tuple[int, int]]:
    """(start, end) of the positions that see each image of one sequence, in image order."""
    locations = [i for i, token in enumerate(input_ids) if token == image_token_id]
    if not locations:
        return []
    spans = [[start, end] for start, end in zip(locations, locations[1:])] + [[locations[-1], len(input_ids)]]
    # A group of consecutive image tokens shares the end of its last member.
    last_end = spans[-1][1]
    for span in reversed(spans):
        if span[0] == span[1] - 1:
            span[1] = last_end
        last_end = span[1]
    return [(start, end) for start, end in spans]


def _check_counts(row: int, found: int, num_tiles: Sequence[int], image_token_id: int) -> None:
    if found != len(num_tiles):
        raise ValueError(
            f"row {row}: {found} image tokens (id {image_token_id}) but {len(num_tiles)} images were given; "
            "every image needs exactly one placeholder"
        )


def _dense(batch: int, length: int, num_tiles: Sequence[Sequence[int]], max_num_tiles: int) -> torch.Tensor:
    count = max((len(tiles) for tiles in num_tiles), default=0)
    for row, tiles in enumerate(num_tiles):
        for n, t in enumerate(tiles):
            if not 1 <= t <= max_num_tiles:
                raise ValueError(f"row {row} image {n}: {t} tiles, expected 1..{max_num_tiles}")
    return torch.zeros((batch, length, count, max_num_tiles), dtype=torch.long)


def padded_cross_attention_mask(
    input_ids: torch.Tensor,
    num_tiles: Sequence[Sequence[int]],
    max_num_tiles: int,
    image_token_id: int,
) -> torch.Tensor:
    """int64 [B, L, N, max_num_tiles] for a padded batch `input_ids` [B, L] (one sample a row).

    `num_tiles[b]` lists the real tiles of row b's images in placeholder order.

    Raises:
        ValueError: a row's image-token count differs from its number of images, or a tile
            count is outside 1..max_num_tiles.
    """
    batch, length = input_ids.shape
    mask = _dense(batch, length, num_tiles, max_num_tiles)
    for row in range(batch):
        spans = image_spans(input_ids[row].tolist(), image_token_id)
        _check_counts(row, len(spans), num_tiles[row], image_token_id)
        for n, ((start, end), tiles) in enumerate(zip(spans, num_tiles[row])):
            mask[row, start:end, n, :tiles] = 1
    return mask


def segments_from_position_ids(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Each packed row's samples as (start, end) spans: a sample starts where position_ids is 0."""
    rows = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if p == 0] or [0]
        if starts[0] != 0:
            starts = [0] + starts
        rows.append([(s, e) for s, e in zip(starts, starts[1:] + [len(row)])])
    return rows


def packed_cross_attention_mask(
    input_ids: torch.Tensor,
    segments: Sequence[Sequence[tuple[int, int]]],
    num_tiles: Sequence[Sequence[int]],
    max_num_tiles: int,
    image_token_id: int,
) -> torch.Tensor:
    """int64 [B, L, N, max_num_tiles] for packed rows `input_ids` [B, L].

    `segments[b]` are the (start, end) spans of row b's samples (`segments_from_position_ids`);
    `num_tiles[b]` lists the real tiles of all of row b's images, in placeholder order across
    its samples; N is the most images in one row. Each sample's images are seen only from its
    own positions, so the mask of a packed row equals its samples' padded masks placed side by
    side (tests/test_mllama.py checks that).

    Raises:
        ValueError: segments do not tile the row, a row's image-token count differs from its
            number of images, or a tile count is outside 1..max_num_tiles.
    """
    batch, length = input_ids.shape
    mask = _dense(batch, length, num_tiles, max_num_tiles)
    for row in range(batch):
        bounds = list(segments[row])
        if not bounds or bounds[0][0] != 0 or bounds[-1][1] != length or any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"row {row}: segments {bounds} do not cover positions 0..{length} end to end")
        ids = input_ids[row].tolist()
        image = 0
        spans = []
        for start, end in bounds:
            spans += [(start + s, start + e, image + k) for k, (s, e) in enumerate(image_spans(ids[start:end], image_token_id))]
            image = len(spans)
        _check_counts(row, len(spans), num_tiles[row], image_token_id)
        for start, end, n in spans:
            mask[row, start:end, n, : num_tiles[row][n]] = 1
    return mask
