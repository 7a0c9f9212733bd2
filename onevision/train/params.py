"""Which parameters train, and with which learning rate.

Stages name trainable parameters by regex (`StageConfig.trainable`, e.g. '^projector\\.' for
stage 1) and give some of them their own learning rate (`optim.groups`, e.g. the vision tower
at 2e-6 while the rest trains at 1e-5). Names are those of `OneVisionModel.named_parameters()`
(docs/architecture.md, "State-dict contract"); LoRA adds `...q_proj.lora_A.default.weight`-
style names and moves the wrapped weight to `...q_proj.base_layer.weight`.

The LoRA adapters (`lora.py`) stay trainable next to `lora.trainable` (`apply_trainable`'s `keep`).
"""

from __future__ import annotations

import re

from torch import nn

from onevision.train.config import OptimSection


def never_used(model: nn.Module) -> set[str]:
    """Parameters no forward pass reads: the tower's post_layernorm and layers past the feature layer.

    Features come from a hidden layer before `post_layernorm` (docs/architecture.md, "Model"), so
    these never get a gradient; DDP would stop on them and the optimizer would carry them for nothing.
    """
    prefix = "vision_tower.vision_model."
    depth = getattr(model.vision_tower, "depth", None)
    layer = re.compile(re.escape(prefix) + r"encoder\.layers\.(\d+)\.")
    names = set()
    for name, _ in model.named_parameters():
        if name.startswith((prefix + "post_layernorm.", prefix + "head.")):
            names.add(name)
        match = layer.match(name)
        if match and depth is not None and int(match.group(1)) >= depth:
            names.add(name)
    return names


def apply_trainable(model: nn.Module, patterns: list[str], keep: str | None = None) -> int:
    """Set requires_grad on exactly the parameters whose name matches one of `patterns`.

    Parameters the forward never reads (`never_used`) stay frozen whatever the patterns say.

    Args:
        model: the model (its parameter names are matched with `re.search`).
        patterns: regexes of trainable parameter names.
        keep: regex of parameters that stay trainable whatever the patterns say (LoRA adapters).

    Returns:
        The number of trainable scalar parameters.

    Raises:
        ValueError: no parameter matches at all (a typo would otherwise train nothing).
    """
    compiled = [re.compile(p) for p in patterns]
    kept = re.compile(keep) if keep else None
    unused = never_used(model)
    total = 0
    for name, param in model.named_parameters():
        train = (any(c.search(name) for c in compiled) or bool(kept and kept.search(name))) and name not in unused
        param.requires_grad_(train)
        total += param.numel() if train else 0
    if total == 0:
        raise ValueError(f"no parameter matches the trainable patterns {patterns}; names look like {_examples(model)}")
    return total


def param_groups(model: nn.Module, optim: OptimSection) -> list[dict]:
    """AdamW parameter groups of the trainable parameters: named groups first-match, then 'default'.

    Returns:
        Groups for torch.optim, the empty ones left out. Every group dict has 'params', 'lr',
        'weight_decay' and 'name' (logged as lr/<name>).
    """
    named = [(g, re.compile(g.pattern)) for g in optim.groups]
    buckets: dict[str, list[nn.Parameter]] = {g.name: [] for g in optim.groups}
    buckets["default"] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = next((g.name for g, c in named if c.search(name)), "default")
        buckets[group].append(param)
    settings = {g.name: (g.lr, g.weight_decay) for g in optim.groups}
    settings["default"] = (optim.lr, optim.weight_decay)
    groups = []
    for name, params in buckets.items():
        if not params:
            continue
        lr, decay = settings[name]
        groups.append({"params": params, "lr": lr, "weight_decay": decay, "name": name})
    return groups


def _examples(model: nn.Module, count: int = 4) -> list[str]:
    return [name for name, _ in list(model.named_parameters())[:count]]
