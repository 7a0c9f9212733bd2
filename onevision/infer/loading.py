"""The pipeline the `generate` and `video-qa` commands run: a checkpoint folder, or the debug model.

    pipe = load_pipeline("runs/debug-ckpt", device="cuda", dtype="bf16")
    pipe = load_pipeline(model_size="debug")     # random debug weights, tiny tokenizer, no files

A folder goes through `OneVision.from_pretrained` (any layout `onevision.checkpoint` reads);
`model_size='debug'` builds the random model of `infer/debug_model.py`, so the commands run
end to end without a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from onevision.infer.debug_model import debug_model, debug_tokenizer
from onevision.infer.pipeline import InferenceConfig, OneVision, resolve_dtype


def load_pipeline(
    model: str | Path | None = None,
    model_size: str | None = None,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    config: InferenceConfig | None = None,
    seed: int = 0,
) -> OneVision:
    """A checkpoint folder's pipeline, or the random debug one (`model_size='debug'`); for the CLIs."""
    if (model is None) == (model_size is None):
        raise ValueError("give a checkpoint folder (--model) or --random-model debug, not both")
    if model is not None:
        return OneVision.from_pretrained(model, device=device, dtype=dtype, config=config)
    if model_size != "debug":
        raise ValueError(f"only the 'debug' size can be built without a checkpoint, got {model_size!r}")
    tokenizer = debug_tokenizer()
    weights = debug_model(tokenizer, seed).to(device=device, dtype=resolve_dtype(dtype))
    return OneVision(weights, tokenizer, config)
