"""Splice visual features into text embeddings at their placeholder positions.

An image item's tokens are `image_token_id` repeated `item.tokens` times in `input_ids`, a
video item's are `video_token_id` repeated. Image features fill the image placeholders in
row-major order over the batch, video features the video placeholders. A count that differs
from the features produced raises with both numbers: reusing or dropping features silently
(a known failure of the reference code) would misalign every token after it.
"""

from __future__ import annotations

import torch


def check_placeholders(input_ids: torch.Tensor, token_id: int, num_features: int, what: str) -> torch.Tensor:
    """The [B, T] mask of `token_id` positions, after checking it holds `num_features` positions.

    Raises:
        ValueError: "input has N {what} placeholder tokens but the {what}s produce M visual tokens".
    """
    mask = input_ids == token_id
    count = int(mask.sum())
    if count != num_features:
        raise ValueError(
            f"input has {count} {what} placeholder tokens (id {token_id}) but the {what}s produce "
            f"{num_features} visual tokens"
        )
    return mask


def splice_features(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_token_id: int,
    image_features: torch.Tensor | None,
    video_token_id: int | None,
    video_features: torch.Tensor | None,
) -> torch.Tensor:
    """Text embeddings with visual features written over the placeholder positions.

    Args:
        inputs_embeds: [B, T, D] text embeddings of `input_ids`.
        input_ids: [B, T] token ids with placeholders.
        image_token_id: placeholder id of image tokens.
        image_features: [Ni, D] image tokens in placeholder order, or None for none.
        video_token_id: placeholder id of video tokens; None for a model without video (then no video features).
        video_features: [Nv, D] video tokens in placeholder order, or None for none.

    Returns:
        [B, T, D]; out of place, so gradients reach both the embeddings and the features.

    Raises:
        ValueError: placeholder counts differ from Ni or Nv.
    """
    for token_id, features, what in (
        (image_token_id, image_features, "image"),
        (video_token_id, video_features, "video"),
    ):
        num = 0 if features is None else features.shape[0]
        if token_id is None:
            if num:
                raise ValueError(f"{num} {what} features given but the model has no {what} placeholder id")
            continue
        mask = check_placeholders(input_ids, token_id, num, what)
        if num:
            features = features.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), features)
    return inputs_embeds
