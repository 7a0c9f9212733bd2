"""Text generation for one sample or a left-padded batch, any visual scenario.

The prompt (text plus visual tokens spliced in by `OneVisionModel.embed`) is read once as
`inputs_embeds`; every later step feeds only the new token's id to Qwen2 with transformers'
`DynamicCache`. Batches are left-padded: `attention_mask` hides the padding and
`position_ids = cumsum(mask) - 1` makes every sample count from 0 where its text begins, so a
padded sample decodes as it would alone. `use_cache=False` recomputes the whole sequence
every step instead (slow; it exists to check that the cache changes nothing).

Decoding: greedy, or sampling with temperature / top-k / top-p (transformers' logits warpers,
the same semantics as `model.generate`) from a seeded `torch.Generator`. A sample stops at
the first of `eos_token_ids` (kept in its output) or after `max_new_tokens`.

    settings = GenerationSettings(max_new_tokens=64, eos_token_ids=(im_end_id,))
    tokens = generate(model, input_ids, visual, settings)      # [n] new tokens
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from onevision.visual_batch import VisualBatch


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode; serialised as the `generation:` block of inference configs."""

    max_new_tokens: int = 256
    """Most tokens generated per sample."""
    do_sample: bool = False
    """Sample from the (warped) distribution; False decodes greedily."""
    temperature: float = 1.0
    """Logits are divided by this before sampling."""
    top_k: int = 0
    """Keep only the k most likely tokens when sampling; 0 keeps all."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p when sampling; 1.0 keeps all."""
    seed: int | None = None
    """Seed of the sampling generator; None draws from torch's global generator."""
    eos_token_ids: tuple[int, ...] = ()
    """Token ids that end a sample (kept in its output)."""
    pad_token_id: int = 0
    """Id used for left padding and after a sample has ended (never seen by the model)."""
    use_cache: bool = True
    """Reuse keys and values across steps; False recomputes the full sequence each step."""
    vocab_size: int | None = None
    """Only ids below this are generated (the softmax covers them alone), as a model whose head
    has that many rows; None: every row of the head. An original LLaVA-NeXT folder's is
    len(tokenizer) (its builder resizes the embedding to that)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 or None, got {self.vocab_size}")


def left_pad(prompts: Sequence[torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack 1-D prompts to the right edge.

    Returns:
        (input_ids [B, T], attention_mask [B, T] 1 on real tokens, position_ids [B, T] counting
        from 0 at each prompt's first real token; 1 on padding, as transformers fills it).
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    length = max(int(p.shape[-1]) for p in prompts)
    ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        prompt = prompt.reshape(-1)
        if prompt.numel() == 0:
            raise ValueError(f"prompt {row} is empty")
        ids[row, length - prompt.numel() :] = prompt
        mask[row, length - prompt.numel() :] = 1
    positions = mask.cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)
    return ids, mask, positions


@torch.no_grad()
def generate_batch(
    model,
    prompts: Sequence[torch.Tensor],
    visual: VisualBatch | None = None,
    settings: GenerationSettings | None = None,
    **overrides,
) -> list[torch.Tensor]:
    """Generate for several prompts at once.

    Args:
        model: a `OneVisionModel` (call `.eval()` first).
        prompts: 1-D id tensors with their visual placeholders, one per sample.
        visual: every sample's tiles and plans, sample after sample (`VisualBatch.concat`).
        settings: decoding settings; keyword `overrides` replace single fields.

    Returns:
        One 1-D LongTensor of new tokens per prompt (ending with its eos token if it met one).
    """
    settings = settings or GenerationSettings()
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    config = model.config
    if settings.pad_token_id in (config.image_token_id, config.video_token_id):
        raise ValueError(f"pad_token_id {settings.pad_token_id} is a visual placeholder id; choose another")
    device = model.device
    ids, mask, positions = (t.to(device) for t in left_pad(prompts, settings.pad_token_id))
    lm = model.language_model
    embeds = model.embed(ids, visual)
    warpers = _warpers(settings)
    generator = None
    if settings.do_sample and settings.seed is not None:
        generator = torch.Generator(device=device).manual_seed(settings.seed)
    eos = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=device)
    cache = DynamicCache(config=lm.config) if settings.use_cache else None

    # Our own loop, not `lm.generate(inputs_embeds=...)`: transformers samples from torch's global
    # RNG (no `generator` argument), so `settings.seed` could not be honoured without reseeding the
    # caller's global state; its greedy tokens are the same (tests/test_generate.py).
    batch = ids.shape[0]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    sequences = ids
    new_tokens: list[torch.Tensor] = []
    for step in range(settings.max_new_tokens):
        if cache is not None and step > 0:
            out = lm(
                input_ids=sequences[:, -1:],
                attention_mask=mask,
                position_ids=positions[:, -1:],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        else:
            out = lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=cache is not None,
                logits_to_keep=1,
            )
        scores = out.logits[:, -1, : settings.vocab_size].float()
        if settings.do_sample:
            probs = torch.softmax(warpers(sequences, scores), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = scores.argmax(dim=-1)
        token = torch.where(finished, torch.full_like(token, settings.pad_token_id), token)
        new_tokens.append(token)
        finished |= torch.isin(token, eos)
        if bool(finished.all()) or step + 1 == settings.max_new_tokens:
            break
        sequences = torch.cat((sequences, token[:, None]), dim=1)
        mask = torch.cat((mask, mask.new_ones(batch, 1)), dim=1)
        positions = torch.cat((positions, positions[:, -1:] + 1), dim=1)
        if cache is None:
            embeds = torch.cat((embeds, lm.get_input_embeddings()(token[:, None])), dim=1)

    generated = torch.stack(new_tokens, dim=1).cpu()
    return [_until_eos(row, settings.eos_token_ids) for row in generated]


def generate(
    model,
    input_ids: torch.Tensor,
    visual: VisualBatch | None = None,
    settings: GenerationSettings | None = None,
    **overrides,
) -> torch.Tensor:
    """Generate for one prompt: input_ids [T] or [1, T] -> new tokens [n]."""
    if input_ids.dim() == 2 and input_ids.shape[0] != 1:
        raise ValueError(f"generate takes one prompt; got a batch of {input_ids.shape[0]} (use generate_batch)")
    return generate_batch(model, [input_ids.reshape(-1)], visual, settings, **overrides)[0]


def _warpers(settings: GenerationSettings) -> LogitsProcessorList:
    """transformers' warpers in `generate`'s order: temperature, top-k, top-p."""
    warpers = LogitsProcessorList()
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k > 0:
        warpers.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))
    return warpers


def _until_eos(tokens: torch.Tensor, eos_token_ids: tuple[int, ...]) -> torch.Tensor:
    """Cut a row after its first eos token (padding follows it)."""
    if eos_token_ids:
        hits = torch.isin(tokens, torch.tensor(eos_token_ids)).nonzero()
        if hits.numel():
            return tokens[: int(hits[0, 0]) + 1]
    return tokens
