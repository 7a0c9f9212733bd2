"""The LLaVA-OneVision model: SigLIP tower, projector, newline vector, Qwen2 decoder.

    from onevision.model import OneVisionModel, VisualBatch, preset
    model = OneVisionModel(preset("debug"))             # random weights
    out = model(input_ids, visual=VisualBatch(pixel_values, plans))

    from onevision.model.generate import GenerationSettings, generate, generate_batch

Names are imported lazily, so `from onevision.model import preset` (config only)
does not pull in transformers' model classes.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelConfig": "onevision.model.config",
    "TextConfig": "onevision.model.config",
    "VisionConfig": "onevision.model.config",
    "preset": "onevision.model.config",
    "VisualBatch": "onevision.visual_batch",
    "OneVisionModel": "onevision.model.onevision",
    "OneVisionOutput": "onevision.model.onevision",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onevision.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
