"""Attention for packed training rows: flash kernels on CUDA, SDPA sample by sample on CPU.

A packed row holds several samples back to back; `position_ids` restart at 0 at each sample
start and no sample may attend into another (docs/architecture.md, "Packed sequences"). Back-ends:

* ``flash_attention_2`` (the flash-attn package, CUDA): transformers' own integration; we pass
  `cu_seq_lens_q/k` and `max_length_q/k` so it runs `flash_attn_varlen_func` directly.
* ``onevision_varlen`` (CUDA, no extra package): PyTorch's
  `torch.nn.attention.varlen.varlen_attn`, registered with transformers' `AttentionInterface`
  and fed the same `cu_seq_lens_*` kwargs.
* ``onevision_sdpa_segments`` (any device; 'auto' on CPU): causal SDPA run on each sample of
  the row, `cu_seq_lens_*` giving the boundaries. Same result as the next one, but it computes
  sum(len^2) scores instead of T^2 and builds no T x T mask: 2x faster on CPU for rows of a
  few samples (scripts/bench_packed_training.py).
* ``sdpa``: `attention_mask` None and `use_cache=False`, so transformers derives the
  block-diagonal causal mask from the restarting position_ids (the reference the others are
  tested against).

Padded batches (an attention_mask) go through SDPA with transformers' padding mask under every
back-end. `resolve_attention("auto", device)` picks the back-end; `set_decoder_attention` sets
it on the Qwen2 decoder only (the SigLIP tower sees fixed-size tiles and keeps its own).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from onevision.model.config import ATTN_IMPLEMENTATIONS

VARLEN_ATTENTION = "onevision_varlen"
"""Name under which `varlen_attention_forward` is registered with transformers."""
SEGMENT_SDPA = "onevision_sdpa_segments"
"""Name under which `segment_sdpa_forward` (SDPA sample by sample, any device) is registered."""
PACKED_KERNELS = ("flash_attention_2", VARLEN_ATTENTION, SEGMENT_SDPA)
"""Implementations that read `cu_seq_lens_*` kwargs instead of a mask."""
CHOICES = ("auto", *ATTN_IMPLEMENTATIONS, VARLEN_ATTENTION, SEGMENT_SDPA)


def flash_attn_installed() -> bool:
    """Whether the flash-attn package can be imported."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attention(requested: str, device: torch.device | str) -> str:
    """The decoder attention to use: `requested`, or for 'auto' flash on CUDA and per-sample SDPA elsewhere.

    Raises:
        ValueError: unknown name, or a CUDA-only kernel asked for off CUDA.
    """
    if requested not in CHOICES:
        raise ValueError(f"attention must be one of {CHOICES}, got {requested!r}")
    on_cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        if not on_cuda:
            return SEGMENT_SDPA
        return "flash_attention_2" if flash_attn_installed() else VARLEN_ATTENTION
    if requested in ("flash_attention_2", VARLEN_ATTENTION) and not on_cuda:
        raise ValueError(f"attention {requested!r} runs on CUDA only; this run is on {device} (use 'sdpa')")
    if requested == "flash_attention_2" and not flash_attn_installed():
        raise ValueError("attention 'flash_attention_2' needs the flash-attn package (pip install 'onevision[cuda]')")
    return requested


def packed_kwargs(position_ids: torch.Tensor) -> dict:
    """`cu_seq_lens_q/k` and `max_length_q/k` of the samples in flattened packed rows.

    Args:
        position_ids: [B, T], restarting at 0 at every sample start (each row starts at 0).

    Returns:
        kwargs for transformers' flash attention (and `varlen_attention_forward`):
        cu_seq_lens int32 [N + 1] over the B*T flattened tokens, max lengths as ints.
    """
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().squeeze(1)
    total = torch.tensor([flat.numel()], device=flat.device, dtype=starts.dtype)
    cu = torch.cat([starts, total]).to(torch.int32)
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def _sample_bounds(kwargs: dict, backend: str) -> tuple[torch.Tensor, int]:
    """`cu_seq_lens_q` and `max_length_q` from the attention kwargs, else derived from `position_ids`.

    Raises:
        ValueError: neither is given (`backend` names the attention implementation).
    """
    if kwargs.get("cu_seq_lens_q") is not None:
        return kwargs["cu_seq_lens_q"], kwargs.get("max_length_q")
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        raise ValueError(f"{backend} needs cu_seq_lens_q or position_ids")
    derived = packed_kwargs(position_ids)
    return derived["cu_seq_lens_q"], derived["max_length_q"]


def varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function over packed samples with `varlen_attn` (causal).

    Args:
        query: [B, Hq, T, d]; key, value: [B, Hkv, T, d] (grouped-query heads allowed).
        attention_mask: must be None (packed rows); padded batches go through sdpa.
        kwargs: `cu_seq_lens_q` and `max_length_q` (see `packed_kwargs`), else derived from
            `position_ids`.

    Returns:
        ([B, T, Hq, d] attention output, None).
    """
    if attention_mask is not None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if dropout:
        raise ValueError(f"{VARLEN_ATTENTION} does not support attention dropout (got {dropout})")
    if kwargs.get("sliding_window") is not None:
        raise ValueError(f"{VARLEN_ATTENTION} does not support sliding-window layers")
    from torch.nn.attention.varlen import varlen_attn

    cu, longest = _sample_bounds(kwargs, VARLEN_ATTENTION)
    batch, heads, length, dim = query.shape
    if query.is_cuda and query.dtype not in (torch.float16, torch.bfloat16):
        # Rotary embeddings in fp32 promote q/k under autocast; the flash kernel needs 16-bit.
        if not torch.is_autocast_enabled(query.device.type):
            raise ValueError(f"{VARLEN_ATTENTION} needs bf16/fp16 activations (loop.precision=bf16), got {query.dtype}")
        half = torch.get_autocast_dtype(query.device.type)
        query, key, value = (x.to(half) for x in (query, key, value))
    q, k, v = (x.transpose(1, 2).reshape(batch * length, x.shape[1], dim) for x in (query, key, value))
    out = varlen_attn(
        q, k, v, cu, cu, longest, longest,
        scale=scaling, window_size=(-1, 0), enable_gqa=key.shape[1] != heads,
    )
    return out.view(batch, length, heads, dim), None


def segment_sdpa_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal SDPA run sample by sample over packed rows.

    The block-diagonal mask of a packed row makes SDPA compute all T x T scores; running each
    sample on its own computes only sum(len^2), with no mask to build. Same result as `sdpa`
    with the derived mask (tests/test_train_attention.py).

    Args:
        query: [B, Hq, T, d]; key, value: [B, Hkv, T, d].
        attention_mask: None for packed rows; padded batches go through transformers' sdpa.
        kwargs: `cu_seq_lens_q` over the flattened B*T tokens, else derived from `position_ids`.

    Returns:
        ([B, T, Hq, d] attention output, None).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    cu, _ = _sample_bounds(kwargs, SEGMENT_SDPA)
    window = kwargs.get("sliding_window")
    batch, heads, length, dim = query.shape
    # Grouped-query heads are repeated up front: SDPA's fused CPU kernel takes no enable_gqa.
    groups = heads // key.shape[1]
    key, value = (x.repeat_interleave(groups, dim=1) if groups > 1 else x for x in (key, value))
    # [1, H, B*T, d]: 4-D inputs, which SDPA's fused CPU kernel needs (3-D falls back to math).
    q, k, v = (x.transpose(0, 1).reshape(1, heads, batch * length, dim) for x in (query, key, value))
    out = torch.empty_like(q)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        # Sliding-window layers (Qwen2 use_sliding_window) see the last `window` positions, as
        # transformers' mask does (q - kv < window); the others are plain causal.
        mask = None if window is None else _window_mask(end - start, window, q.device)
        out[:, :, start:end] = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], attn_mask=mask,
            is_causal=mask is None, scale=scaling, dropout_p=dropout if module.training else 0.0,
        )
    return out.view(heads, batch, length, dim).permute(1, 2, 0, 3), None


def _window_mask(length: int, window: int, device) -> torch.Tensor:
    """[L, L] bool: query i sees keys j with 0 <= i - j < window."""
    steps = torch.arange(length, device=device)
    distance = steps[:, None] - steps[None, :]
    return (distance >= 0) & (distance < window)


def packed_or_padding_mask(*, attention_mask: torch.Tensor | None = None, **kwargs):
    """transformers mask function of the packed back-ends: none for packed rows (the kernels
    take `cu_seq_lens`), SDPA's 4-D causal padding mask for padded batches."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def register_packed_attention() -> None:
    """Register ``onevision_varlen`` and ``onevision_sdpa_segments`` (and their mask function) with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for name, function in ((VARLEN_ATTENTION, varlen_attention_forward), (SEGMENT_SDPA, segment_sdpa_forward)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, packed_or_padding_mask)


def set_decoder_attention(language_model: nn.Module, implementation: str) -> None:
    """Switch the Qwen2 decoder (`model.language_model`) to `implementation`."""
    if implementation in (VARLEN_ATTENTION, SEGMENT_SDPA):
        register_packed_attention()
    language_model.set_attn_implementation(implementation)
