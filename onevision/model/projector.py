"""Projector: vision features into the decoder's embedding space.

LLaVA-OneVision (arXiv 2408.03326, Sec. 3) uses LLaVA-1.5's 2-layer MLP: Linear(Dv -> D),
GELU, Linear(D -> D), both with bias. Attribute names follow transformers'
`LlavaOnevisionMultiModalProjector` (linear_1, act, linear_2) so keys map one to one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


class Projector(nn.Module):
    """Two linear layers with an activation between them.

    Args:
        vision_width: Dv, the tower's width.
        text_width: D, the decoder's width.
        act: name of the activation in transformers' `ACT2FN` ('gelu' for the released models).
    """

    def __init__(self, vision_width: int, text_width: int, act: str = "gelu"):
        super().__init__()
        if act not in ACT2FN:
            raise ValueError(f"unknown projector activation {act!r}; transformers' ACT2FN has {sorted(ACT2FN)}")
        self.linear_1 = nn.Linear(vision_width, text_width, bias=True)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_width, text_width, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[..., Dv] -> [..., D]."""
        return self.linear_2(self.act(self.linear_1(features)))
