"""Shared pieces of the cross-attention family's tests: a tiny Llama-3-style tokenizer, images, inputs.

The tokenizer has the layout of Llama 3's at toy size, fitted to the `mllama-debug` preset: the
256 byte symbols (no merges, so ids are predictable), then `<|begin_of_text|>` 256,
`<|end_of_text|>` 257, `<|finetune_right_pad_id|>` 258 (pad), `<|eot_id|>` 259,
`<|start_header_id|>` 260, `<|end_header_id|>` 261, `<|python_tag|>` 262, reserved specials up
to 383 and `<|image|>` 384, one past the LM head's rows as in the released tokenizer (128256).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast

from onevision.budget.mllama_tiles import plan_mllama_image
from onevision.data.cross_attention import padded_cross_attention_mask
from onevision.data.llama3_chat import IMAGE, llama3_byte_tokenizer
from onevision.model.mllama_config import MllamaModelConfig
from onevision.processing.mllama import mllama_tiles, stack_mllama_images


def llama3_tokenizer(config: MllamaModelConfig) -> PreTrainedTokenizerFast:
    """The byte-level tokenizer above (`onevision.data.llama3_chat`); `<|image|>` lands on config.image_token_id."""
    tokenizer = llama3_byte_tokenizer(config.image_token_id)
    assert tokenizer.convert_tokens_to_ids(IMAGE) == config.image_token_id
    assert tokenizer.bos_token_id == config.text.bos_token_id and tokenizer.pad_token_id == config.text.pad_token_id
    return tokenizer


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def our_inputs(config: MllamaModelConfig, input_ids: torch.Tensor, images: list[list[Image.Image]]) -> dict:
    """The model's vision inputs for padded rows, built by our planner, pixels and mask."""
    settings = config.tiles()
    rows = []
    for row in images:
        plans = [plan_mllama_image(image.height, image.width, settings) for image in row]
        rows.append([(mllama_tiles(image, plan, settings.tile_size), plan) for image, plan in zip(row, plans)])
    pixels = stack_mllama_images(rows, settings.max_num_tiles)
    mask = padded_cross_attention_mask(input_ids, pixels.num_tiles, settings.max_num_tiles, config.image_token_id)
    return {
        "pixel_values": pixels.pixel_values, "aspect_ratio_ids": pixels.aspect_ratio_ids,
        "aspect_ratio_mask": pixels.aspect_ratio_mask, "cross_attention_mask": mask,
    }


def spread_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> None:
    """Redraw every weight with a larger spread than transformers' init (std 0.02), so that
    activations, and with them every config field and every mismatch, move the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * std
            parameter.copy_(1 + noise if "norm" in name and parameter.dim() == 1 else noise)


def open_gates(model: torch.nn.Module, value: float = 0.7) -> None:
    """Give every cross-attention gate a non-zero value, so images change the logits."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(value)
