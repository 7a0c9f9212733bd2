"""Projector: vision features into the decoder's embedding space.

LLaVA-OneVision (arXiv 2408.03326, Sec. 3) and LLaVA-1.5 use a 2-layer MLP ('mlp2x_gelu'):
Linear(Dv -> D), GELU, Linear(D -> D), both with bias; LLaVA v1 one Linear(Dv -> D) ('linear');
LLaVA-NeXT's builder accepts 'mlpNx_gelu' for any N (haotian-liu/LLaVA
`multimodal_projector/builder.py`). Attribute names follow transformers'
`LlavaOnevisionMultiModalProjector` / `LlavaMultiModalProjector` (linear_1, act, linear_2,
and on: linear_3, ...) so keys map one to one; a linear projector has `linear_1` only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class Projector(nn.Module):
    """`depth` linear layers with an activation between each two.

    Args:
        vision_width: Dv, the tower's feature width (times the number of feature layers).
        text_width: D, the decoder's width.
        act: name of the activation in transformers' `ACT2FN` ('gelu' for the released models).
        depth: linear layers (1 = 'linear', 2 = 'mlp2x_gelu', N = 'mlpNx_gelu').
    """

    def __init__(self, vision_width: int, text_width: int, act: str = "gelu", depth: int = 2):
        super().__init__()
        if act not in ACT2FN:
            raise ValueError(f"unknown projector activation {act!r}; transformers' ACT2FN has {sorted(ACT2FN)}")
        if depth < 1:
            raise ValueError(f"a projector needs at least one linear layer, got depth {depth}")
        self.depth = depth
        self.linear_1 = nn.Linear(vision_width, text_width, bias=True)
        if depth > 1:
            self.act = ACT2FN[act]
        for index in range(2, depth + 1):
            setattr(self, f"linear_{index}", nn.Linear(text_width, text_width, bias=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[..., Dv] -> [..., D]."""
        hidden = self.linear_1(features)
        for index in range(2, self.depth + 1):
            hidden = getattr(self, f"linear_{index}")(self.act(hidden))
        return hidden
