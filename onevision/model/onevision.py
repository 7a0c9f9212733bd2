"""OneVisionModel: vision tower, projector, newline vector and a decoder (the LLaVA family).

LLaVA-OneVision (arXiv 2408.03326, Sec. 3): tiles go through the vision tower, the projector
maps patch features to the decoder's width, `layout` arranges them per item as the planner
said (AnyRes crops with newlines, base images, pooled video frames), `splice` writes them over
the placeholder tokens, and Qwen2 reads the sequence.

The parts are interchangeable (`ModelConfig`): LLaVA-1.5 and LLaVA v1 are the same composition
with a CLIP tower (class token dropped), an mlp2x_gelu or linear projector, no newline vector
and a Llama (Vicuna) decoder.

Module tree (state-dict keys follow it; docs/architecture.md, "State-dict contract"):
    vision_tower.vision_model.*      SigLIP or CLIP (transformers `SiglipVisionModel` / `CLIPVisionModel`)
    projector.linear_{1,2,..}.*      MLP (linear_1 alone for 'linear')
    image_newline                    [D] (absent when config.use_image_newline is False)
    language_model.model.*           Qwen2 or Llama decoder (transformers `Qwen2Model` / `LlamaModel`)
    language_model.lm_head.weight    LM head

The constructor builds random weights; loading checkpoints lives in `onevision.checkpoint`.
To count parameters without allocating, build on the meta device:
`OneVisionModel.from_config(config, device="meta")`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from onevision.model.config import ATTN_IMPLEMENTATIONS, ModelConfig, TextConfig, projector_depth
from onevision.model.layout import layout_items
from onevision.model.projector import Projector
from onevision.model.splice import check_placeholders, splice_features
from onevision.model.vision import VisionTower
from onevision.visual_batch import VisualBatch


def qwen2_config(config: TextConfig, attn_implementation: str | None = "sdpa") -> Qwen2Config:
    """transformers' `Qwen2Config` for our decoder shape; the one place it is built.

    `attn_implementation` None leaves transformers' default (a config written to a file).
    """
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return Qwen2Config(**dataclasses.asdict(config), **extra)


# Qwen2's sliding-window fields; ModelConfig refuses them for a Llama decoder.
_QWEN2_ONLY = ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")


def llama_config(config: TextConfig, attn_implementation: str = "sdpa") -> LlamaConfig:
    """transformers' `LlamaConfig` for our decoder shape (no biases, head_dim = width / heads, as Vicuna)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _QWEN2_ONLY}
    return LlamaConfig(**fields, attn_implementation=attn_implementation)


def decoder_config(config: ModelConfig, attn_implementation: str = "sdpa"):
    """The transformers config of the model's decoder ('qwen2' or 'llama')."""
    make = qwen2_config if config.text_model == "qwen2" else llama_config
    return make(config.text, attn_implementation)


DECODERS = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM}


@dataclass
class OneVisionOutput:
    """What `OneVisionModel.forward` returns."""

    logits: torch.Tensor | None
    """[B, T, V] next-token logits."""
    loss: torch.Tensor | None = None
    """Mean cross-entropy over supervised (labels != -100) next-token positions, when labels are given."""
    past_key_values: Any = None
    """transformers `Cache` when `use_cache=True`."""


class OneVisionModel(nn.Module):
    """A LLaVA-family model with random weights (LLaVA-OneVision by default).

    Args:
        config: parts, shapes and placeholder ids.
        attn_implementation: 'sdpa' (default), 'eager', or 'flash_attention_2' (needs the
            flash-attn package and CUDA); applied to the tower and the decoder.
    """

    def __init__(self, config: ModelConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
        self.config = config
        width = config.text.hidden_size
        self.vision_tower = VisionTower(
            config.vision,
            config.vision_feature_layer,
            attn_implementation,
            kind=config.vision_tower,
            drop_class_token=config.vision_feature_select_strategy == "default",
        )
        self.projector = Projector(self.vision_tower.out_width, width, config.projector_act, projector_depth(config.projector_type))
        # As transformers initialises it: N(0, 1/D), the scale of a token embedding.
        self.image_newline = nn.Parameter(torch.randn(width) / math.sqrt(width)) if config.use_image_newline else None
        self.language_model = DECODERS[config.text_model](decoder_config(config, attn_implementation))
        self.tile_chunk: int | None = None
        """Default most tiles per vision-tower pass (see `encode_visual`); None = all at once."""

    @classmethod
    def from_config(
        cls, config: ModelConfig, device: torch.device | str | None = None, attn_implementation: str = "sdpa"
    ) -> "OneVisionModel":
        """Build with random weights directly on `device`; 'meta' allocates nothing (for counting)."""
        if device is None:
            return cls(config, attn_implementation=attn_implementation)
        with torch.device(device):
            return cls(config, attn_implementation=attn_implementation)

    @property
    def device(self) -> torch.device:
        """Where the weights are (the projector's, which every family has)."""
        return self.projector.linear_1.weight.device

    # ------------------------------------------------------------------ visual path

    def encode_visual(
        self, visual: VisualBatch | None, tile_chunk: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens of every item, laid out per plan.

        Args:
            visual: tiles and plans of the batch (None: no visual items).
            tile_chunk: run the tower on at most this many tiles at a time (memory bound for
                long videos); None uses `self.tile_chunk`.

        Returns:
            (image_features [Ni, D], video_features [Nv, D]): image items (single and
            multi-image) in order, then video items in order; [0, D] when there are none.
        """
        width = self.config.text.hidden_size
        ref = self.projector.linear_1.weight
        if visual is None or not visual.plans:
            empty = ref.new_zeros(0, width)
            return empty, empty
        pixels = visual.pixel_values.to(device=ref.device)
        tile_chunk = tile_chunk or self.tile_chunk
        chunks = [pixels] if not tile_chunk else torch.split(pixels, tile_chunk, dim=0)
        tiles = torch.cat([self.projector(self.vision_tower.features(chunk)) for chunk in chunks], dim=0)
        items = layout_items(visual.plans, tiles, self.image_newline)
        images = [t for t, p in zip(items, visual.plans) if p.kind != "video"]
        videos = [t for t, p in zip(items, visual.plans) if p.kind == "video"]
        empty = tiles.new_zeros(0, width)
        return (torch.cat(images) if images else empty), (torch.cat(videos) if videos else empty)

    def embed(self, input_ids: torch.Tensor, visual: VisualBatch | None = None) -> torch.Tensor:
        """Text embeddings with the visual tokens written over the placeholders.

        Args:
            input_ids: [B, T] ids; image/video placeholders count exactly the planned tokens.
            visual: tiles and plans of the batch's items, in placeholder order.

        Returns:
            inputs_embeds [B, T, D].

        Raises:
            ValueError: placeholder counts and visual token counts differ.
        """
        # Counts are known from the plans: fail before running the tower.
        check_placeholders(input_ids, self.config.image_token_id, visual.image_tokens if visual else 0, "image")
        if self.config.video_token_id is None and visual is not None and visual.video_tokens:
            raise ValueError(f"the batch has {visual.video_tokens} video tokens but this model takes no video (video_token_id None)")
        if self.config.video_token_id is not None:
            check_placeholders(input_ids, self.config.video_token_id, visual.video_tokens if visual else 0, "video")
        embeds = self.language_model.get_input_embeddings()(input_ids)
        image_features, video_features = self.encode_visual(visual)
        return splice_features(
            embeds,
            input_ids,
            self.config.image_token_id,
            image_features,
            self.config.video_token_id,
            video_features,
        )

    # ------------------------------------------------------------------ decoder

    def hidden_states(
        self,
        input_ids: torch.Tensor | None = None,
        visual: VisualBatch | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **decoder_kwargs,
    ) -> torch.Tensor:
        """The decoder's last hidden state (after its final norm), without the LM head.

        For losses that apply `self.language_model.lm_head` to selected positions only.
        Arguments as in `forward` (no cache).

        Returns:
            [B, T, D].
        """
        out = self._decode(input_ids, visual, attention_mask, position_ids, None, False, inputs_embeds, decoder_kwargs)
        return out.last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        visual: VisualBatch | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        **decoder_kwargs,
    ) -> OneVisionOutput:
        """Logits (and loss) for a batch.

        Args:
            input_ids: [B, T] ids with placeholders (or give `inputs_embeds` [B, T, D]).
            visual: tiles and plans of the batch's items, in placeholder order.
            attention_mask: [B, T] 1 for real tokens, 0 for padding; None for packed rows.
            position_ids: [B, T]; packed rows restart at 0 at each sample (with
                attention_mask None and use_cache False, transformers then keeps samples apart).
            labels: [B, T] target ids, -100 where not supervised; shifted inside.
            past_key_values: a transformers `Cache` to extend.
            use_cache: return the updated cache.
            decoder_kwargs: passed to the Qwen2 decoder's attention (e.g. `cu_seq_lens_q/k`,
                `max_length_q/k` for variable-length flash kernels).

        Returns:
            `OneVisionOutput` with logits [B, T, V], loss, past_key_values.
        """
        out = self._decode(
            input_ids, visual, attention_mask, position_ids, past_key_values, use_cache, inputs_embeds, decoder_kwargs
        )
        logits = self.language_model.lm_head(out.last_hidden_state)
        loss = None if labels is None else shifted_cross_entropy(logits, labels)
        return OneVisionOutput(logits=logits, loss=loss, past_key_values=out.cache)

    def _decode(self, input_ids, visual, attention_mask, position_ids, past_key_values, use_cache, inputs_embeds, decoder_kwargs):
        """Decoder output (last_hidden_state, cache) for ids + visual or ready embeddings."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, visual)
        return self.language_model.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,  # transformers >= 5.24 names it `cache`; `past_key_values` goes in 5.40
            use_cache=use_cache,
            **decoder_kwargs,
        )

    # ------------------------------------------------------------------ training switches

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Checkpoint every tower and decoder layer (non-reentrant unless told otherwise).

        Non-reentrant checkpointing keeps gradients flowing when the embeddings are frozen
        (LoRA, projector-only stages) without forcing `requires_grad` on the inputs.
        """
        kwargs = {"use_reentrant": False} if gradient_checkpointing_kwargs is None else gradient_checkpointing_kwargs
        for module in self._checkpointable():
            if hasattr(module, "activation_checkpointing_enable"):
                module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_disable(self) -> None:
        for module in self._checkpointable():
            if hasattr(module, "activation_checkpointing_disable"):
                module.activation_checkpointing_disable()
            else:
                module.gradient_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether any submodule checkpoints its layers."""
        flag = "is_activation_checkpointing"
        return any(
            getattr(m, flag) if hasattr(m, flag) else m.is_gradient_checkpointing for m in self._checkpointable()
        )

    def _checkpointable(self) -> tuple:
        return (self.vision_tower.vision_model, self.language_model)

    def num_parameters(self) -> int:
        """Distinct parameters (tied weights counted once); works on the meta device."""
        return sum(p.numel() for p in self.parameters())


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits [B, T, V] at t predict labels [B, T] at t+1.

    Averaged over supervised positions (labels != -100) in float32; a batch with none gives 0
    (with a graph), not NaN, so a rank with nothing to learn still steps in sync.
    """
    targets = labels[:, 1:].reshape(-1).to(logits.device)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    total = F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)
