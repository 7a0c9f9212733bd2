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
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

from onevision.data.cross_attention import padded_cross_attention_mask
from onevision.model.mllama_config import MllamaModelConfig
from onevision.processing.mllama import mllama_tiles, stack_mllama_images
from onevision.budget.mllama_tiles import plan_mllama_image

IMAGE = "<|image|>"
# Llama 3.2-Vision's chat template, reduced to what the tests need: bos, one header per turn,
# an image part renders as <|image|>, each turn ends with <|eot_id|>.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image|>' -}}{%- else -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|python_tag|>"]


def llama3_tokenizer(config: MllamaModelConfig) -> PreTrainedTokenizerFast:
    """The byte-level tokenizer above; `<|image|>` lands on config.image_token_id."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet, key=lambda s: bytes(s, "utf-8")))}
    backend = Tokenizer(BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(config.image_token_id - len(vocab) - len(SPECIALS))]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS + reserved + [IMAGE]])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=SPECIALS[0], eos_token="<|eot_id|>", pad_token=SPECIALS[2],
        chat_template=LLAMA3_CHAT_TEMPLATE,
    )
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
