"""Next-token loss with the LM head run only on labelled positions, a chunk of rows at a time.

A 32k-token packed row with ~20% supervised tokens and a 152k vocabulary would need
32768 x 152064 fp32 logits (20 GB) if the head ran on every position. Only positions whose
*next* token carries a label contribute to the loss, so we:

1. shift: position t predicts labels[t + 1]; keep the rows where that label is not -100;
2. run head + cross-entropy on those rows in chunks of `chunk_rows`, each chunk under
   `torch.utils.checkpoint`, so its logits are freed right after the forward and recomputed
   one chunk at a time in the backward: at most one chunk's logits exist at once.

The per-token losses are exactly those of the full head (same matmul per row, fp32
cross-entropy), so the mean and the gradients match the full computation to fp32 rounding.

The head is called as a module (never through its raw weight), so DeepSpeed ZeRO-3 gathers
its partitioned weight in its forward hooks. ZeRO-3 also needs every rank to call the head the
same number of times: pass `num_chunks` (the max over ranks, see `chunks_needed`).

Training calls `labelled_token_losses` (`loss_module.py` also needs the per-token losses).
`labelled_lm_loss` (their mean) and `full_head_loss` (the full-head reference it must equal)
are the pair tests/test_train_loss.py checks and scripts/bench_lm_head.py times; they stay
beside the code they check so the test and the benchmark measure the same two functions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from onevision.data.template import IGNORE_INDEX


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets aligned with the predicting positions.

    Args:
        labels: [B, T] token ids, IGNORE_INDEX where not supervised.

    Returns:
        (targets [B, T], mask [B, T] bool): targets[b, t] = labels[b, t + 1] (IGNORE_INDEX in
        the last column), mask marks the positions that predict a label.
    """
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def chunks_needed(num_rows: int, chunk_rows: int) -> int:
    """Chunks for `num_rows` labelled rows (at least one, so the head always runs)."""
    return max(1, math.ceil(num_rows / chunk_rows))


def _chunk_losses(head: nn.Module, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(rows).float()
    return F.cross_entropy(logits, targets, reduction="none")


def labelled_token_losses(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    chunk_rows: int = 4096,
    num_chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every labelled next token, the head run on labelled rows only.

    Args:
        hidden: [B, T, D] the decoder's last hidden state (after the final norm).
        labels: [B, T] token ids, IGNORE_INDEX where not supervised (not shifted).
        head: the LM head, [*, D] -> [*, V].
        chunk_rows: most rows per head call.
        num_chunks: exact number of head calls (ZeRO-3: the same on every rank); None picks
            `chunks_needed(rows, chunk_rows)`. Rows are split as evenly as possible; a
            chunk may be empty (the head still runs, on zero rows).

    Returns:
        (losses [N] fp32, positions [N] long): the loss of each of the N labelled tokens and
        the flat index (b * T + t) of the position that predicts it, in row-major order.
    """
    if hidden.shape[:2] != labels.shape:
        raise ValueError(f"hidden {list(hidden.shape)} and labels {list(labels.shape)} disagree on [B, T]")
    targets, mask = shifted_targets(labels)
    positions = mask.flatten().nonzero().squeeze(1)
    rows = hidden.flatten(0, 1).index_select(0, positions)
    wanted = targets.flatten().index_select(0, positions)
    count = rows.shape[0]
    num_chunks = chunks_needed(count, chunk_rows) if num_chunks is None else num_chunks
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    size = math.ceil(count / num_chunks) if count else 0
    recompute = torch.is_grad_enabled() and rows.requires_grad
    losses = []
    for i in range(num_chunks):
        part, part_targets = rows[i * size : (i + 1) * size], wanted[i * size : (i + 1) * size]
        if recompute:
            losses.append(checkpoint(_chunk_losses, head, part, part_targets, use_reentrant=False))
        else:
            losses.append(_chunk_losses(head, part, part_targets))
    return torch.cat(losses), positions


def labelled_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Module,
    chunk_rows: int = 4096,
    num_chunks: int | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions (0, still in the graph, if none).

    Args and chunking as `labelled_token_losses`; equals
    `F.cross_entropy(head(hidden)[:, :-1].flatten(0, 1), labels[:, 1:].flatten())` with
    ignore_index=-100, without the full [B, T, V] logits.
    """
    losses, _ = labelled_token_losses(hidden, labels, head, chunk_rows, num_chunks)
    return losses.sum() / max(losses.numel(), 1)


def full_head_loss(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """The reference: head on every position, then masked mean cross-entropy ([B, T, V] logits)."""
    logits = head(hidden).float()
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="mean"
    )
