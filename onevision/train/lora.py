"""LoRA adapters (peft) on the decoder: inject, save, reload, and fold into the exported weights.

A stage with `lora.enabled` injects adapters into the linear layers matching `lora.target`
(the decoder's attention and MLP projections); the modules matched by `lora.trainable` (the
projector in practice) stay fully trainable next to them, so a LoRA run never ends up with
nothing but frozen weights and a constant loss. LoRA adds `...q_proj.lora_A.default.weight`-
style parameter names and moves the wrapped weight to `...q_proj.base_layer.weight`.

At the end of the stage `runner.export_stage` writes
    output_dir/adapter/   the adapter (peft format) + trainable.safetensors (the other trained weights)
    output_dir/hf/        the full model with the adapters merged in (`merge_lora`)
and `load_adapter(start_model, output_dir/adapter)` rebuilds the trained model from the start.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from onevision.train.config import LoraSection

LORA_PARAM = r"\.lora_(A|B|embedding_A|embedding_B)\."
"""Regex of LoRA adapter parameter names."""


def add_lora(model: nn.Module, lora: LoraSection):
    """Inject LoRA adapters into the decoder's linear layers, in place.

    Returns:
        The peft `PeftModel` wrapping `model` (for `save_pretrained` of the adapter and
        `merge_and_unload`); `model` itself now holds the adapter layers, so training code
        keeps calling `model`.

    Raises:
        ImportError: peft is not installed (pip install 'onevision[lora]').
        ValueError: the target regex matches no module.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("LoRA needs the peft package: pip install 'onevision[lora]'") from err
    target = re.compile(lora.target)
    if not any(target.fullmatch(name) for name, _ in model.named_modules()):
        raise ValueError(f"lora.target {lora.target!r} matches no module name")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target, bias="none")
    return get_peft_model(model, config)


def save_adapter(peft, model, folder: Path) -> Path:
    """The LoRA adapter (peft format) plus the fully trained non-LoRA weights (trainable.safetensors)."""
    from safetensors.torch import save_file

    peft.save_pretrained(str(folder))
    trained = {
        name: param.detach().cpu().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad and "lora_" not in name
    }
    save_file(trained, str(folder / "trainable.safetensors"))
    return folder


def load_adapter(model, folder: str | Path):
    """`model` (the stage's start) with a saved adapter and trainable weights applied; returns the peft model."""
    from peft import PeftModel
    from safetensors.torch import load_file

    peft = PeftModel.from_pretrained(model, str(folder))
    trained = load_file(str(Path(folder) / "trainable.safetensors"))
    missing = set(trained) - {name for name, _ in model.named_parameters()}
    if missing:
        raise KeyError(f"{folder}/trainable.safetensors holds weights the model lacks: {sorted(missing)[:4]}")
    model.load_state_dict(trained, strict=False)
    return peft


def merge_lora(peft) -> nn.Module:
    """The model `peft` wraps with its adapters folded into plain linear weights (peft's
    `merge_and_unload`): the layout the export writes."""
    return peft.merge_and_unload()
