"""Lay out projected tile features as the token run an item's placeholders stand for.

The planner (`onevision.budget`) fixes every item's geometry and token count before pixels
are decoded; this module follows the plan alone, so the features produced always match the
placeholders written for them (a mismatch raises, naming both numbers).

Scenarios (arXiv 2408.03326, Sec. 3; transformers `llava_onevision` for the exact ops):
- single image (`AnyResPlan`): the base view's side*side tokens, then the crops stitched into
  a (rows*side) x (cols*side) map exactly as transformers' `pack_image_features`, the padding
  window cut away (`plan.offset`, `plan.unpadded`), bilinearly resized to `plan.pooled` when
  AnyRes-Max-N shrinks it, and one `image_newline` after every row;
- one image of several (`BaseImagePlan`): side*side tokens and one newline;
- video (`VideoPlan`): every frame's side x side map bilinearly resized to
  pooled_side x pooled_side (transformers' `apply_pooling`), or average / max pooled over
  stride x stride windows (LLaVA-NeXT's `get_2dPool` for `mm_spatial_pool_mode` average / max),
  newlines by `plan.newline`: 'video' one at the end, 'frame' after each frame, 'row' after
  each pooled row, 'none'.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from onevision.budget import AnyResPlan, BaseImagePlan, VideoPlan


def layout_anyres(plan: AnyResPlan, tiles: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """Base view, then the unpadded (and possibly shrunk) crop map with a newline per row.

    Args:
        plan: the image's plan.
        tiles: [1 + rows*cols, side*side, D] projected features, base view first, crops row-major.
        newline: [D] the `image_newline` vector.

    Returns:
        [plan.tokens, D].
    """
    rows, cols = plan.grid
    side = _side(tiles, plan)
    dim = tiles.shape[-1]
    base, crops = tiles[0], tiles[1:]
    # [rows*cols, side*side, D] -> [D, rows*side, cols*side], crop (r, c) at rows r*side.., cols c*side..
    grid = crops.view(rows, cols, side, side, dim).permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)
    top, left = plan.offset
    height, width = plan.unpadded
    grid = grid[:, top : top + height, left : left + width]
    if tuple(plan.pooled) != (height, width):
        grid = F.interpolate(grid[None], size=list(plan.pooled), mode="bilinear")[0]
    pooled_h = grid.shape[1]
    with_newlines = torch.cat((grid, newline.to(grid.dtype)[:, None, None].expand(dim, pooled_h, 1)), dim=-1)
    return torch.cat((base, with_newlines.flatten(1, 2).transpose(0, 1)), dim=0)


def layout_base_image(plan: BaseImagePlan, tiles: torch.Tensor, newline: torch.Tensor | None) -> torch.Tensor:
    """One image at base resolution: [1, base_tokens, D] -> [base_tokens (+ 1 newline), D]."""
    if tiles.shape[1] != plan.base_tokens:
        raise ValueError(f"{plan.kind} plan was made for {plan.base_tokens} tokens per image but the tower gives {tiles.shape[1]}")
    if not plan.newline:
        return tiles[0]
    return torch.cat((tiles[0], _need(newline, plan).to(tiles.dtype)[None]), dim=0)


def layout_video(plan: VideoPlan, tiles: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """Pool every frame to pooled_side^2 tokens and place newlines by `plan.newline`.

    Args:
        plan: the video's plan.
        tiles: [frames, side*side, D] projected frame features.
        newline: [D] the `image_newline` vector.

    Returns:
        [plan.tokens, D].
    """
    side = _side(tiles, plan)
    frames, _, dim = tiles.shape
    maps = tiles.view(frames, side, side, dim).permute(0, 3, 1, 2)
    pooled = plan.pooled_side
    if plan.pool_mode == "average":
        maps = F.avg_pool2d(maps, plan.pool_stride)
    elif plan.pool_mode == "max":
        maps = F.max_pool2d(maps, plan.pool_stride)
    elif pooled != side:
        maps = F.interpolate(maps, size=[pooled, pooled], mode="bilinear")
    if maps.shape[-1] != pooled:
        raise ValueError(f"{plan.pool_mode} pooling gave {maps.shape[-1]}x{maps.shape[-2]} per frame but the video's plan has {pooled}x{pooled}")
    maps = maps.permute(0, 2, 3, 1)  # [F, p, p, D]
    nl = newline.to(maps.dtype)
    if plan.newline == "video":
        return torch.cat((maps.reshape(-1, dim), nl[None]), dim=0)
    if plan.newline == "frame":
        return torch.cat((maps.reshape(frames, -1, dim), nl.expand(frames, 1, dim)), dim=1).reshape(-1, dim)
    if plan.newline == "row":
        return torch.cat((maps, nl.expand(frames, pooled, 1, dim)), dim=2).reshape(-1, dim)
    if plan.newline == "none":
        return maps.reshape(-1, dim)
    raise ValueError(f"unknown video newline policy {plan.newline!r}")


_LAYOUTS = {AnyResPlan: layout_anyres, BaseImagePlan: layout_base_image, VideoPlan: layout_video}


def layout_item(plan, tiles: torch.Tensor, newline: torch.Tensor | None) -> torch.Tensor:
    """Lay out one item's tiles as its token run.

    Args:
        plan: an `AnyResPlan`, `BaseImagePlan` or `VideoPlan`.
        tiles: [plan.num_tiles, side*side, D] projected features of the item's tiles.
        newline: [D] the `image_newline` vector; None for a model without one.

    Returns:
        [plan.tokens, D].

    Raises:
        ValueError: the tiles or the resulting length disagree with the plan, or the plan needs a
            newline the model does not have.
    """
    layout = _LAYOUTS.get(type(plan))
    if layout is None:
        raise TypeError(f"no feature layout for plan type {type(plan).__name__}")
    if tiles.shape[0] != plan.num_tiles:
        raise ValueError(f"{plan.kind} plan expects {plan.num_tiles} tiles, got {tiles.shape[0]}")
    if newline is None and (isinstance(plan, AnyResPlan) or (isinstance(plan, VideoPlan) and plan.newline != "none")):
        raise ValueError(f"a {plan.kind} plan ({type(plan).__name__}) places image_newline tokens but the model has no newline vector")
    if newline is None:
        newline = tiles.new_zeros(tiles.shape[-1])  # never placed: the plan has no newline token
    out = layout(plan, tiles, newline)
    if out.shape[0] != plan.tokens:
        raise ValueError(f"{plan.kind} item laid out {out.shape[0]} visual tokens but its plan has {plan.tokens}")
    return out


def layout_items(plans: Sequence, tiles: torch.Tensor, newline: torch.Tensor | None) -> list[torch.Tensor]:
    """Split a flat tile batch by plan and lay out each item.

    Args:
        plans: item plans in tile order.
        tiles: [sum(p.num_tiles), side*side, D].
        newline: [D], or None for a model without a newline vector.

    Returns:
        One [plan.tokens, D] tensor per plan, in order.
    """
    expected = sum(p.num_tiles for p in plans)
    if tiles.shape[0] != expected:
        raise ValueError(f"the plans need {expected} tiles but {tiles.shape[0]} tiles were encoded")
    chunks = torch.split(tiles, [p.num_tiles for p in plans], dim=0) if plans else []
    return [layout_item(plan, chunk, newline) for plan, chunk in zip(plans, chunks)]


def _need(newline: torch.Tensor | None, plan) -> torch.Tensor:
    if newline is None:
        raise ValueError(f"the {plan.kind} plan places a newline token but the model has no image_newline vector")
    return newline


def _side(tiles: torch.Tensor, plan) -> int:
    side = round(tiles.shape[1] ** 0.5)
    if side * side != tiles.shape[1]:
        raise ValueError(f"{plan.kind} tiles hold {tiles.shape[1]} patches each, not a square number")
    base = getattr(plan, "base_tokens", None)
    if base is not None and base != tiles.shape[1]:
        raise ValueError(f"{plan.kind} plan was made for {base} patches per tile but the tower gives {tiles.shape[1]}")
    return side
