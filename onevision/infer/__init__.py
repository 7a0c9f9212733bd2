"""Inference: question answering, batched generation, multiple choice, evaluation, video QA.

    from onevision.infer import OneVision
    pipe = OneVision.from_pretrained("checkpoint-folder", dtype="bf16", device="cuda")
    pipe.ask("What is happening?", video="clip.mp4")

    from onevision.infer import evaluate, transfer_matrix, plot_matrix
    report = evaluate(pipe, "world/test", name="ov")

Names are imported lazily, so `import onevision.infer` costs nothing until one is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "OneVision": "onevision.infer.pipeline",
    "InferenceConfig": "onevision.infer.pipeline",
    "Prepared": "onevision.infer.pipeline",
    "Choice": "onevision.infer.pipeline",
    "TokenizerNotFound": "onevision.tokenizer",
    "load_tokenizer": "onevision.tokenizer",
    "Request": "onevision.infer.inputs",
    "MediaLoader": "onevision.infer.inputs",
    "Score": "onevision.infer.likelihood",
    "score_continuations": "onevision.infer.likelihood",
    "BenchmarkItem": "onevision.infer.evaluate",
    "Report": "onevision.infer.evaluate",
    "evaluate": "onevision.infer.evaluate",
    "read_benchmark": "onevision.infer.evaluate",
    "save_report": "onevision.infer.evaluate",
    "normalize_answer": "onevision.infer.evaluate",
    "exact_match": "onevision.infer.evaluate",
    "TransferMatrix": "onevision.infer.matrix",
    "transfer_matrix": "onevision.infer.matrix",
    "plot_matrix": "onevision.infer.matrix",
    "run_video_qa": "onevision.infer.video_qa",
    "debug_pipeline": "onevision.infer.debug_model",
    "save_debug_checkpoint": "onevision.infer.debug_model",
    "load_pipeline": "onevision.infer.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onevision.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
