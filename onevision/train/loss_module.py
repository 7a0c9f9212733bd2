"""The module DDP / DeepSpeed wrap: model forward + labelled-only loss, and batch plumbing.

`LossModule(model)` runs one micro-batch:
1. embeds the tokens with the visual features spliced in (`OneVisionModel.embed`);
2. when the micro-batch has no visual item and `dummy_visual` is on, still runs the vision
   tower and projector on one blank tile and adds ``0 * features.sum()`` to the loss. Under
   ZeRO-3 every rank must gather the same parameters in the same order; a rank skipping the
   tower while another runs it hangs the job (a known failure of the reference code). Under
   DDP it gives every trainable parameter a (zero) gradient;
3. runs the Qwen2 decoder on packed rows (`cu_seq_lens_*` for the flash kernels, the
   position_ids-derived block mask for SDPA; no KV cache);
4. computes the loss with the LM head on labelled positions only (`loss.py`).

It returns ``(loss, token_losses, positions)``: tensors only, so DDP and DeepSpeed pass them
through untouched. `modality_losses` turns the per-token losses into per-modality means.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from onevision.budget import BaseImagePlan
from onevision.data.collate import Batch
from onevision.train.attention import packed_kwargs
from onevision.train.loss import IGNORE_INDEX, chunks_needed, labelled_token_losses
from onevision.visual_batch import VisualBatch


def dummy_visual(image_size: int, patch_size: int, device, dtype, base_tokens: int | None = None, newline: bool = True) -> VisualBatch:
    """One blank tile planned as a base-size image (base tokens + newline): touches tower, projector, newline.

    `base_tokens` (default side^2) and `newline` follow the model (CLIP's class token, LLaVA's missing newline)."""
    side = image_size // patch_size
    plan = BaseImagePlan(width=image_size, height=image_size, base_tokens=side * side if base_tokens is None else base_tokens, newline=newline)
    return VisualBatch(torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype), [plan])


class LossModule(nn.Module):
    """`OneVisionModel` plus the training loss; what the engines wrap.

    Args:
        model: the `OneVisionModel` (LoRA layers, if any, already injected).
        chunk_rows: labelled rows per LM-head chunk.
        packed_kernel: the decoder attention reads `cu_seq_lens_*` (flash / varlen kernels).
        dummy_visual: run the tower on a blank tile when a micro-batch has no visual item.
    """

    def __init__(self, model: nn.Module, chunk_rows: int = 4096, packed_kernel: bool = False, dummy_visual: bool = False):
        super().__init__()
        self.model = model
        self.chunk_rows = chunk_rows
        self.packed_kernel = packed_kernel
        self.dummy_visual = dummy_visual

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        visual: VisualBatch | None = None,
        num_chunks: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss of one micro-batch.

        Args:
            input_ids, labels, position_ids: [B, T]; labels -100 where not supervised.
            attention_mask: [B, T] for padded batches, None for packed rows.
            visual: the batch's tiles and plans (None: text only).
            num_chunks: LM-head calls (ZeRO-3: the same on every rank); None: as needed.

        Returns:
            (loss: mean cross-entropy over labelled tokens [], token_losses [N] detached,
            positions [N]: flat b * T + t of the position predicting each labelled token).
        """
        model = self.model
        tower = model.vision_tower
        dtype = next(tower.parameters()).dtype
        if visual is not None and visual.plans:
            visual = visual.to(input_ids.device, dtype)
        else:
            visual = None
        embeds = model.embed(input_ids, visual)
        extra = embeds.new_zeros(())
        if visual is None and self.dummy_visual:
            config = model.config.vision
            settings = model.config.visual
            blank = dummy_visual(config.image_size, config.patch_size, input_ids.device, dtype, settings.base_tokens, settings.image_newline)
            features, _ = model.encode_visual(blank)
            extra = features.float().sum() * 0.0
        kwargs = packed_kwargs(position_ids) if self.packed_kernel and attention_mask is None else {}
        hidden = model.hidden_states(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        losses, positions = labelled_token_losses(hidden, labels, model.language_model.lm_head, self.chunk_rows, num_chunks)
        loss = losses.sum() / max(losses.numel(), 1) + extra
        return loss, losses.detach(), positions


def model_inputs(batch: Batch, device: torch.device) -> dict:
    """`LossModule` keyword arguments of a collated batch, on `device`."""
    batch = batch.to(device)
    return {
        "input_ids": batch.input_ids,
        "labels": batch.labels,
        "position_ids": batch.position_ids,
        "attention_mask": batch.attention_mask,
        "visual": batch.visual,
    }


def placeholder_batch(pad_token_id: int, packed: bool) -> Batch:
    """A one-token batch with nothing to supervise: stands in for a batch whose samples were all
    skipped, so every rank still runs the same forward and backward (loss 0)."""
    ids = torch.full((1, 1), pad_token_id, dtype=torch.long)
    return Batch(
        input_ids=ids,
        labels=torch.full((1, 1), IGNORE_INDEX, dtype=torch.long),
        attention_mask=None if packed else torch.ones_like(ids),
        position_ids=torch.zeros_like(ids),
        cu_seqlens=torch.tensor([0, 1], dtype=torch.int32) if packed else None,
        max_seqlen=1,
        visual=None,
        modality=[],
        ids=[],
        spans=[],
    )


def labelled_count(batch: Batch) -> int:
    """Labelled next-token targets in a batch (the rows the LM head runs on)."""
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def head_chunks(batch: Batch, engine, runtime, chunk_rows: int) -> int | None:
    """LM-head calls for this micro-batch (`LossModule`'s `num_chunks`): None lets each rank
    chunk as it needs; under ZeRO-3 every rank must gather the head weights the same number of
    times, so all take the most any rank needs (an all-reduce: every rank calls)."""
    if getattr(engine, "zero_stage", 0) != 3:
        return None
    most = runtime.all_reduce([labelled_count(batch)], op="max")[0]
    return chunks_needed(int(most), chunk_rows)


def modality_losses(batch: Batch, token_losses: torch.Tensor, positions: torch.Tensor) -> dict[str, tuple[float, int]]:
    """Per modality: (sum of token losses, number of tokens) of the batch's samples.

    Args:
        batch: the collated batch (its `spans` and `modality` say which tokens are whose).
        token_losses: [N] losses from `LossModule`.
        positions: [N] flat b * T + t predicting positions.
    """
    width = batch.input_ids.shape[1]
    owner = torch.full((batch.input_ids.numel(),), -1, dtype=torch.long)
    for sample, (row, start, length) in enumerate(batch.spans):
        owner[row * width + start : row * width + start + length] = sample
    sums: dict[str, list] = defaultdict(lambda: [0.0, 0])
    who = owner[positions.cpu()]
    losses = token_losses.detach().float().cpu()
    for sample, name in enumerate(batch.modality):
        picked = losses[who == sample]
        if picked.numel():
            sums[name][0] += float(picked.sum())
            sums[name][1] += int(picked.numel())
    return {name: (total, count) for name, (total, count) in sums.items()}
