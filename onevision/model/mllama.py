"""`MllamaVLM`: the cross-attention family (Llama 3.2-Vision), a thin face over transformers' `mllama`.

The layers are transformers' own (`MllamaForConditionalGeneration`); this module adds what the
pipeline needs around them (docs/architecture.md, "The other systems of the seeds"):

- construction from our typed config and presets (`MllamaVLM(PRESETS["mllama-debug"])`);
- `forward` / `generate` over input_ids [B, L], pixel_values [B, N, max_tiles, 3, T, T],
  aspect_ratio_ids [B, N], aspect_ratio_mask [B, N, max_tiles] and cross_attention_mask
  [B, L, N, max_tiles] (built by onevision/processing/mllama.py and
  onevision/data/cross_attention.py);
- the frozen-decoder recipe of Llama 3-V (arXiv 2407.21783, Sec. 7.4: the adapter and encoder
  train, the language model stays as it was): `FROZEN_DECODER_TRAINABLE` selects the
  cross-attention layers, the vision encoder and the projector by name, and `bare_decoder`
  builds the plain Llama the text path must still equal.

Text positions that see no image (before a sample's first `<|image|>`, or a whole imageless
sample) get an all-open cross-attention row from transformers 5.24 (`_prepare_cross_attention_mask`
multiplies the fully masked rows to 0), so they attend to every tile in the row, and only the
MLP branch is zeroed for them; Meta's reference zeroes the attention branch too (transformers
issue #39379, unfixed in 5.24). In a packed row that would let one sample read another's
images, so `text_rows="reference"` zeroes the attention output of those rows as well, through
hooks on transformers' modules. The default, "transformers", keeps transformers' logits.

Parameter names are transformers' in-memory names (`model.vision_model.*`,
`model.multi_modal_projector.*`, `model.language_model.layers.<i>.*`, `lm_head.weight`): the
wrapper registers transformers' `model` and `lm_head` as its own children and calls the
transformers object that owns them, so there is one set of weights and no copy.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, MllamaForConditionalGeneration
from transformers.models.mllama.modeling_mllama import MllamaCrossAttentionDecoderLayer

from onevision.model.mllama_config import MllamaModelConfig


def frozen_decoder_trainable(config: MllamaModelConfig) -> list[str]:
    """Regexes over our parameter names that train in the frozen-decoder recipe.

    The vision encoder, the projector and the decoder's cross-attention layers (gates
    included); every other decoder tensor (self-attention layers, embeddings, final norm, LM
    head) stays frozen.
    """
    layers = "|".join(str(i) for i in config.text.cross_attention_layers)
    return [r"^model\.vision_model\.", r"^model\.multi_modal_projector\.", rf"^model\.language_model\.layers\.({layers})\."]


def select_trainable(model: nn.Module, patterns: list[str]) -> list[str]:
    """Set requires_grad by `patterns` (search over names) and return the trainable names.

    Raises:
        ValueError: a pattern matches no parameter (a typo would silently freeze everything).
    """
    compiled = [re.compile(p) for p in patterns]
    names = [name for name, _ in model.named_parameters()]
    for pattern in compiled:
        if not any(pattern.search(name) for name in names):
            raise ValueError(f"trainable pattern {pattern.pattern!r} matches no parameter")
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(p.search(name) for p in compiled))
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


TEXT_ROWS = ("transformers", "reference")


def _keep_row_mask(layer: nn.Module, args, kwargs) -> None:
    layer.cross_attn.text_rows_seeing_images = kwargs.get("full_text_row_masked_out_mask")


def _zero_blind_rows(attention: nn.Module, args, output):
    rows = getattr(attention, "text_rows_seeing_images", None)  # [B, 1, L, 1], 0 where a row sees no image
    if rows is None:
        return output
    return (output[0] * rows[:, 0].to(output[0].dtype), *output[1:])


class MllamaVLM(nn.Module):
    """Llama decoder + gated cross-attention to a tiled vision encoder; random weights only.

    `text_rows`: "transformers" (its logits) or "reference" (rows that see no image get no
    cross-attention output; needed for packed rows, see the module docstring).
    Loading and saving live in onevision/checkpoint/mllama.py.
    """

    def __init__(self, config: MllamaModelConfig, text_rows: str = "transformers") -> None:
        super().__init__()
        if text_rows not in TEXT_ROWS:
            raise ValueError(f"text_rows={text_rows!r}: choose one of {TEXT_ROWS}")
        self.config = config
        self.text_rows = text_rows
        hf = MllamaForConditionalGeneration(config.to_hf())
        self.model = hf.model
        self.lm_head = hf.lm_head
        # Kept out of the module tree (a tuple is no attribute nn.Module registers): its
        # children are ours, so moving or converting this module moves them for it too.
        self._hf = (hf,)
        if text_rows == "reference":
            for layer in self.model.language_model.layers:
                if isinstance(layer, MllamaCrossAttentionDecoderLayer):
                    layer.register_forward_pre_hook(_keep_row_mask, with_kwargs=True)
                    layer.cross_attn.register_forward_hook(_zero_blind_rows)

    @property
    def hf(self) -> MllamaForConditionalGeneration:
        """The transformers model that owns our children (save_pretrained, generate, config)."""
        return self._hf[0]

    def train(self, mode: bool = True) -> "MllamaVLM":
        super().train(mode)
        self.hf.training = mode
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        aspect_ratio_ids: torch.Tensor | None = None,
        aspect_ratio_mask: torch.Tensor | None = None,
        cross_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
        **kwargs,
    ):
        """transformers' output (`.logits` [B, L, V], `.loss` when labels are given).

        `use_cache` is off by default: transformers finds packed rows (position_ids restarting
        at 0, attention_mask None) only without a cache, and a forward pass needs none
        (`generate` keeps its own).

        Without pixel_values the cross-attention layers are skipped: the text path is the bare
        decoder's. With pixels, every image slot needs its aspect-ratio id and mask, and the
        text needs a cross_attention_mask.

        Raises:
            ValueError: pixels without aspect-ratio ids, mask or cross-attention mask, shapes
                that disagree (named with both shapes), or a label id the LM head cannot predict.
        """
        if pixel_values is not None:
            self._check_vision(input_ids, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_attention_mask)
        if labels is not None and bool((labels >= self.config.text.vocab_size).any()):
            raise ValueError(
                f"labels hold id {int(labels.max())}, past the LM head's {self.config.text.vocab_size} rows "
                "(mask <|image|> and other embedding-only ids with -100)"
            )
        return self.hf(
            input_ids=input_ids,
            pixel_values=pixel_values,
            aspect_ratio_ids=aspect_ratio_ids,
            aspect_ratio_mask=aspect_ratio_mask,
            cross_attention_mask=cross_attention_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """transformers' `generate` with the same vision inputs as `forward`; returns ids [B, L + new]."""
        if kwargs.get("pixel_values") is not None:
            self._check_vision(
                input_ids, kwargs["pixel_values"], kwargs.get("aspect_ratio_ids"), kwargs.get("aspect_ratio_mask"),
                kwargs.get("cross_attention_mask"),
            )
        return self.hf.generate(input_ids=input_ids, **kwargs)

    def _check_vision(self, input_ids, pixel_values, aspect_ratio_ids, aspect_ratio_mask, cross_attention_mask) -> None:
        v = self.config.vision
        for name, value in (("aspect_ratio_ids", aspect_ratio_ids), ("aspect_ratio_mask", aspect_ratio_mask), ("cross_attention_mask", cross_attention_mask)):
            if value is None:
                raise ValueError(f"pixel_values given without {name}")
        batch, images = pixel_values.shape[:2]
        expected = {
            "pixel_values": (tuple(pixel_values.shape), (batch, images, v.max_num_tiles, 3, v.image_size, v.image_size)),
            "aspect_ratio_ids": (tuple(aspect_ratio_ids.shape), (batch, images)),
            "aspect_ratio_mask": (tuple(aspect_ratio_mask.shape), (batch, images, v.max_num_tiles)),
            "cross_attention_mask": (tuple(cross_attention_mask.shape), (batch, input_ids.shape[1], images, v.max_num_tiles)),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise ValueError(f"{name} has shape {got}, expected {want} (input_ids {tuple(input_ids.shape)})")
        if int(aspect_ratio_ids.max()) > len(self.hf.config.vision_config.supported_aspect_ratios):
            raise ValueError(f"aspect_ratio_ids holds {int(aspect_ratio_ids.max())}, more than the model's {len(self.hf.config.vision_config.supported_aspect_ratios)} arrangements")


def bare_decoder_config(config: MllamaModelConfig) -> LlamaConfig:
    """The Llama the decoder is without its cross-attention layers (same widths, RoPE and ids)."""
    t = config.text
    return LlamaConfig(
        vocab_size=t.vocab_size + 8,  # the embedding's rows; logits past vocab_size are dropped by callers
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers - len(t.cross_attention_layers),
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        hidden_act=t.hidden_act,
        max_position_embeddings=t.max_position_embeddings,
        rms_norm_eps=t.rms_norm_eps,
        rope_parameters=dict(config.to_hf().text_config.rope_parameters),
        tie_word_embeddings=False,  # the cross-attention family never ties (see mllama_config)
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=t.bos_token_id,
        eos_token_id=list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id,
        pad_token_id=t.pad_token_id,
    )


def bare_decoder(model: MllamaVLM) -> LlamaForCausalLM:
    """A `LlamaForCausalLM` holding copies of `model`'s decoder weights, cross-attention layers left out.

    Self-attention layer i of the decoder becomes Llama layer i minus the cross-attention
    layers before it. The LM head has vocab_size rows, the Llama head vocab_size + 8 (the
    extra rows are zero), so compare logits[..., :vocab_size].
    """
    config = model.config
    llama = LlamaForCausalLM(bare_decoder_config(config))
    llama.config._attn_implementation = model.hf.config.text_config._attn_implementation
    cross = set(config.text.cross_attention_layers)
    self_layers = [i for i in range(config.text.num_hidden_layers) if i not in cross]
    state = {}
    for name, tensor in model.model.language_model.state_dict().items():
        if name.startswith("layers."):
            index, rest = name.split(".", 2)[1:]
            if int(index) in cross:
                continue
            name = f"layers.{self_layers.index(int(index))}.{rest}"
        state[f"model.{name}"] = tensor.clone()
    head = torch.zeros_like(llama.lm_head.weight)
    head[: config.text.vocab_size] = model.lm_head.weight.detach()
    state["lm_head.weight"] = head
    missing, unexpected = llama.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise RuntimeError(f"bare decoder: missing {missing}, unexpected {unexpected}")
    return llama.to(model.lm_head.weight.dtype)
