"""The debug-size pipeline: random `preset('debug')` weights and a tiny BPE tokenizer, in a second.

The debug model has a 512-token vocabulary, so it needs a tokenizer with at most 512 ids: a
byte-level BPE (`onevision.tokenizer.train_small_tokenizer`, ChatML specials and template)
trained on the built-in sentences below. The model's `<image>` / `<video>` placeholder ids are
set to the tokenizer's. Nothing is downloaded; used by `onevision generate --random-model debug`,
the tests and the benchmarks.

    pipe = debug_pipeline(seed=0)
    folder = save_debug_checkpoint("runs/debug-ckpt")    # config, weights, tokenizer
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from onevision.infer.pipeline import InferenceConfig, OneVision
from onevision.model.config import ModelConfig, preset
from onevision.tokenizer import image_token_id, train_small_tokenizer, video_token_id

DEBUG_VOCAB = 512

DEBUG_TEXTS = (
    "What is shown in the image? A red circle on a white background.",
    "Describe the video. A blue square moves from left to right.",
    "How many shapes are there? There are three shapes.",
    "What colour is the triangle? The triangle is green.",
    "Which image has more objects? The second image has more objects.",
    "Is the shape large or small? The shape is small.",
    "Where is the yellow star? It is in the top left corner.",
    "What happens next in the clip? The circle stops and turns around.",
    "Answer with the option's letter from the given choices directly.",
    "A. red B. green C. blue D. yellow",
    "You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog.",
)


def debug_tokenizer(vocab_size: int = DEBUG_VOCAB):
    """A byte-level BPE with ChatML specials and `<image>`/`<video>`, at most `vocab_size` ids."""
    return train_small_tokenizer(list(DEBUG_TEXTS) * 4, vocab_size=vocab_size)


def debug_config(tokenizer) -> ModelConfig:
    """`preset('debug')` with the tokenizer's placeholder ids."""
    config = preset("debug")
    if len(tokenizer) > config.text.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but the debug model's vocabulary is {config.text.vocab_size}")
    return dataclasses.replace(config, image_token_id=image_token_id(tokenizer), video_token_id=video_token_id(tokenizer))


def debug_model(tokenizer, seed: int = 0):
    """A random debug-size `OneVisionModel` (weights from `seed`), fp32, eval mode."""
    from onevision.model.onevision import OneVisionModel

    torch.manual_seed(seed)
    return OneVisionModel(debug_config(tokenizer)).eval()


def debug_pipeline(seed: int = 0, config: InferenceConfig | None = None) -> OneVision:
    """`OneVision` over a random debug model and the debug tokenizer."""
    tokenizer = debug_tokenizer()
    return OneVision(debug_model(tokenizer, seed), tokenizer, config)


def save_debug_checkpoint(folder: str | Path, seed: int = 0) -> Path:
    """Write a random debug checkpoint (transformers' llava_onevision layout) with its tokenizer."""
    from onevision.checkpoint import save_hf

    tokenizer = debug_tokenizer()
    save_hf(debug_model(tokenizer, seed), folder, tokenizer=tokenizer, progress=False)
    return Path(folder)
