"""Pretraining the SigLIP-shaped vision tower with SigLIP's sigmoid loss on world image-caption pairs.

SigLIP (Zhai et al. 2023, arXiv 2303.15343) trains an image tower and a text tower so that
a matching image-caption pair scores high and every other pairing in the batch scores low,
each pair judged on its own by a sigmoid:

    logits[i, j] = exp(t) * <img_i, txt_j> + b          (embeddings L2-normalised)
    loss = -1/B * sum_ij log sigmoid(z_ij * logits[i, j]),   z_ij = +1 if caption j fits image i, else -1

with t initialised to log 10 and b to -10 (the paper's values). Here captions that happen to
be identical (one-object scenes repeat) count as matches, not as negatives.

Batches are built from groups of near-identical scenes (hard negatives): a scene, the same
objects moved to other quadrants, one object reshaped, one recoloured. Captions of random
scenes mostly differ in colour, which a tower can match without knowing where anything is or
what shape it has; within a group only position, shape or colour tells the captions apart,
so the tower has to encode all three (`caption_groups`).

The image side is transformers' `SiglipVisionModel` with its attention-pooling head (the
embedding is `pooler_output`); the text side is a small transformer encoder over the demo's
tokenizer, mean-pooled. Only the vision tower is kept: it is saved with `save_pretrained`
(its `head.*` weights ride along and `from_components` leaves them out, as it leaves out the
text tower of a full SigLIP checkpoint), with SigLIP's image-processor file beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    get_cosine_schedule_with_warmup,
)

from onevision.model.config import VisionConfig
from onevision.model.vision import siglip_config
from onevision.processing import ImageNormalization
from onevision.utils.progress import progress_bar
from onevision.world import COLOURS, QUADRANTS, SHAPES, Scene, caption, render_scene
from onevision.world.scene import WorldObject, place_in_quadrant, random_scene

GROUP = 4
"""Scenes per hard-negative group: original, moved, reshaped, recoloured."""


@dataclass(frozen=True)
class VisionPretrainConfig:
    """Vision tower pretraining with the sigmoid contrastive loss."""

    groups: int = 1000
    """Groups of near-identical scenes (`caption_groups`), 4 image-caption pairs each."""
    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 64
    """Pairs per step, whole groups (each image is contrasted with every caption of the batch)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (both towers)."""
    warmup_steps: int = 30
    """Linear warmup steps before the cosine decay (transformers' `get_cosine_schedule_with_warmup`,
    the schedule the curriculum stages take too)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    embed_dim: int = 64
    """Width of the shared image-text embedding space."""
    text_width: int = 64
    """Width of the small text encoder."""
    text_layers: int = 1
    """Transformer layers of the small text encoder."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"{type(self).__name__}: need steps >= 1 and warmup_steps >= 0, got {self.steps}, {self.warmup_steps}")


class CaptionEncoder(nn.Module):
    """A small transformer text tower: token + position embeddings, encoder layers, mean pooling.

    Args:
        vocab_size: rows of the token embedding.
        width: model width.
        layers: encoder layers.
        max_len: longest caption in tokens.
        embed_dim: output embedding size.
    """

    def __init__(self, vocab_size: int, width: int, layers: int, max_len: int, embed_dim: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, nhead=max(1, width // 32), dim_feedforward=2 * width, dropout=0.0, batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, T] (mask 1 on real tokens) -> caption embeddings [B, embed_dim]."""
        hidden = self.tokens(ids) + self.positions[: ids.shape[1]]
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=mask == 0))
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


def sigmoid_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, matches: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss.

    Args:
        image_embeds: [B, E] image embeddings (normalised here).
        text_embeds: [B, E] caption embeddings (normalised here).
        matches: [B, B] bool, True where caption j describes image i.
        log_scale, bias: the learned temperature t (logits scaled by exp(t)) and bias b.

    Returns:
        The loss, summed over the B x B pairs and divided by B.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = image_embeds @ text_embeds.T * log_scale.exp() + bias
    signs = matches.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def siglip_vision_config(vision: VisionConfig) -> SiglipVisionConfig:
    """transformers' config of a SigLIP vision tower of shape `vision`, with its pooling head."""
    return siglip_config(vision, attn_implementation=None, head=True)


def _other(rng: np.random.Generator, options, current: str) -> str:
    return str(rng.choice([o for o in options if o != current]))


def caption_groups(n: int, seed: int = 0, *, image_size: int = 64) -> list[tuple[Image.Image, str]]:
    """`n` groups of `GROUP` (image, caption) pairs, flat: a scene of 1-4 objects, the same
    objects in other quadrants, then with one object's shape changed, then with one object's
    colour changed. Deterministic in `seed`."""
    rng = np.random.default_rng([seed, 0x516])
    pairs = []
    for _ in range(n):
        scene = random_scene(rng, image_size, int(rng.integers(1, 5)))
        objects = list(scene.objects)
        quadrants = [QUADRANTS[i] for i in rng.permutation(len(QUADRANTS))[: len(objects)]]
        if quadrants == [o.quadrant(image_size) for o in objects]:
            quadrants = quadrants[1:] + quadrants[:1] if len(objects) > 1 else [_other(rng, QUADRANTS, quadrants[0])]
        moved = [
            WorldObject(o.shape, o.colour, o.size, *place_in_quadrant(rng, q, o.radius, image_size), o.radius)
            for o, q in zip(objects, quadrants)
        ]
        k = int(rng.integers(len(objects)))
        reshaped = objects[:k] + [WorldObject(_other(rng, SHAPES, objects[k].shape), *_rest(objects[k]))] + objects[k + 1 :]
        k = int(rng.integers(len(objects)))
        recoloured = objects[:k] + [objects[k].recoloured(_other(rng, list(COLOURS), objects[k].colour))] + objects[k + 1 :]
        for variant in (objects, moved, reshaped, recoloured):
            variant_scene = Scene(tuple(variant), image_size)
            pairs.append((render_scene(variant_scene), caption(variant_scene)))
    return pairs


def _rest(obj: WorldObject) -> tuple:
    """Every field of `obj` after its shape."""
    return obj.colour, obj.size, obj.x, obj.y, obj.radius


def _pixels(images, normalization: ImageNormalization) -> torch.Tensor:
    """PIL images (all S x S) -> normalised float tensor [N, 3, S, S]."""
    array = np.stack([np.asarray(image.convert("RGB")) for image in images]).astype(np.float32) / 255.0
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    return torch.from_numpy((array - mean) / std).permute(0, 3, 1, 2).contiguous()


def _captions(captions: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenised captions: ids [N, T], mask [N, T], and a caption id [N] (equal captions share one)."""
    encoded = tokenizer(captions, add_special_tokens=False, padding=True, return_tensors="pt")
    _, caption_ids = np.unique(np.asarray(captions), return_inverse=True)
    return encoded["input_ids"], encoded["attention_mask"], torch.from_numpy(caption_ids)


def pretrain_vision(
    vision: VisionConfig,
    tokenizer,
    config: VisionPretrainConfig,
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train a SigLIP vision tower of shape `vision` on world image-caption pairs; save it to `out_dir`.

    Args:
        vision: tower shape (image and patch size included).
        tokenizer: tokenises the captions for the text tower.
        config: data size and optimisation settings.
        out_dir: where the `SiglipVisionModel` and its image-processor config are written.
        seed: seeds the pairs, the weights and the batch order.

    Returns:
        The sigmoid loss of every step.
    """
    normalization = ImageNormalization()
    pairs = caption_groups(config.groups, seed, image_size=vision.image_size)
    pixels = _pixels([image for image, _ in pairs], normalization)
    ids, mask, caption_ids = _captions([text for _, text in pairs], tokenizer)

    torch.manual_seed(seed)
    tower = SiglipVisionModel(siglip_vision_config(vision))
    text_tower = CaptionEncoder(len(tokenizer), config.text_width, config.text_layers, ids.shape[1], config.embed_dim)
    image_head = nn.Linear(vision.hidden_size, config.embed_dim)
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    bias = nn.Parameter(torch.tensor(-10.0))
    modules = nn.ModuleList([tower, text_tower, image_head])
    params = list(modules.parameters()) + [log_scale, bias]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    order = torch.Generator().manual_seed(seed)
    modules.train()
    losses = []
    per_batch = max(1, config.batch_size // GROUP)
    for _ in progress_bar(range(config.steps), desc="pretrain vision tower", disable=not progress):
        groups = torch.randperm(config.groups, generator=order)[:per_batch]
        batch = (groups[:, None] * GROUP + torch.arange(GROUP)).reshape(-1)
        image_embeds = image_head(tower(pixel_values=pixels[batch]).pooler_output)
        text_embeds = text_tower(ids[batch], mask[batch])
        matches = caption_ids[batch, None] == caption_ids[None, batch]
        loss = sigmoid_loss(image_embeds, text_embeds, matches, log_scale, bias)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    tower.eval()
    out_dir = Path(out_dir)
    tower.save_pretrained(out_dir)
    SiglipImageProcessorPil(
        size={"height": vision.image_size, "width": vision.image_size},
        image_mean=list(normalization.mean),
        image_std=list(normalization.std),
    ).save_pretrained(out_dir)
    return losses

