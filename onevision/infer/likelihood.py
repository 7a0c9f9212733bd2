"""Log-likelihood of continuations given prompts, reading each prompt once.

For multiple choice and lmms-eval's `loglikelihood` requests: several candidate answers share
one prompt (with its visual tokens). The prompts of a batch are left-padded and run once
through the decoder with a KV cache; the cache rows are then repeated, one per candidate
(`Cache.batch_select_indices`), and all candidates run together, right-padded, on top of
their prompt's cache. The vision tower and the prompt's decoder pass run once per prompt,
not once per candidate.

Each candidate gets the sum of log p(token | prompt, earlier tokens) over its tokens and
whether greedy decoding would have produced it (every token the argmax). With `vocab_size`,
the softmax and argmax cover the first `vocab_size` ids only, as for a head of that many rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache

from onevision.model.generate import left_pad
from onevision.visual_batch import VisualBatch


@dataclass(frozen=True)
class Score:
    """How likely one continuation is."""

    logprob: float
    """Sum of the continuation's token log-probabilities (natural log)."""
    greedy: bool
    """Whether every token of the continuation is the argmax (greedy decoding yields it)."""
    tokens: int
    """Number of continuation tokens."""


@torch.no_grad()
def score_continuations(
    model,
    prompts: Sequence[torch.Tensor],
    visual: VisualBatch | None,
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int = 0,
    vocab_size: int | None = None,
) -> list[list[Score]]:
    """Score every continuation of every prompt.

    Args:
        model: a `OneVisionModel` in eval mode.
        prompts: 1-D id tensors [T_b] with their placeholder runs, one per prompt.
        visual: every prompt's tiles and plans, prompt after prompt (`VisualBatch.concat`).
        continuations: per prompt, its candidate continuations as id lists (each non-empty).
        pad_token_id: id used for padding (never attended to).
        vocab_size: normalise over ids below this only (None: every row of the head).

    Returns:
        Per prompt, one `Score` per continuation, in the given order.
    """
    if len(continuations) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but continuations for {len(continuations)}")
    for b, candidates in enumerate(continuations):
        if not candidates or any(len(c) == 0 for c in candidates):
            raise ValueError(f"prompt {b}: every prompt needs at least one continuation, each non-empty")
        outside = [t for c in candidates for t in c if vocab_size is not None and not 0 <= t < vocab_size]
        if outside:
            raise ValueError(f"prompt {b}: continuation id {outside[0]} is outside the {vocab_size} ids the logits cover")
    device = model.device
    lm = model.language_model
    ids, mask, positions = (t.to(device) for t in left_pad(prompts, pad_token_id))
    cache = DynamicCache(config=lm.config)
    out = lm(
        inputs_embeds=model.embed(ids, visual),
        attention_mask=mask,
        position_ids=positions,
        cache=cache,  # transformers >= 5.24 names it `cache` (as model/generate.py); `past_key_values` goes in 5.40
        use_cache=True,
        logits_to_keep=1,
    )
    first_logits = out.logits[:, -1, :vocab_size].float()  # [B, V]: predicts each continuation's first token

    rows = torch.tensor([b for b, candidates in enumerate(continuations) for _ in candidates], device=device)
    flat = [list(c) for candidates in continuations for c in candidates]
    length = max(len(c) for c in flat)
    tokens = torch.full((len(flat), length), pad_token_id, dtype=torch.long, device=device)
    real = torch.zeros((len(flat), length), dtype=torch.long, device=device)
    for k, c in enumerate(flat):
        tokens[k, : len(c)] = torch.tensor(c, dtype=torch.long)
        real[k, : len(c)] = 1
    cache.batch_select_indices(rows)
    start = mask.sum(dim=1)[rows]  # each prompt's real length = position of its continuation
    out = lm(
        input_ids=tokens,
        attention_mask=torch.cat((mask[rows], real), dim=1),
        position_ids=start[:, None] + torch.arange(length, device=device)[None],
        cache=cache,
        use_cache=True,
    )
    # Token t of a continuation is predicted by the prompt's last logits (t = 0) or by the
    # continuation's own logits at t - 1.
    logits = torch.cat((first_logits[rows][:, None], out.logits[:, :-1, :vocab_size].float()), dim=1)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    greedy = (logits.argmax(dim=-1) == tokens) | (real == 0)
    totals = (logprobs * real).sum(dim=1).tolist()
    all_greedy = greedy.all(dim=1).tolist()

    scores: list[list[Score]] = []
    k = 0
    for candidates in continuations:
        scores.append([Score(totals[k + j], bool(all_greedy[k + j]), len(c)) for j, c in enumerate(candidates)])
        k += len(candidates)
    return scores
