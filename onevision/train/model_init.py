"""Where a stage's weights and tokenizer come from.

Three starts, in this order of precedence (`ModelSection`):
1. ``init_from``: a transformers llava_onevision folder: the previous stage's export
   (``${prev_stage_output}``) or a released checkpoint (`onevision.checkpoint.load_hf`);
2. ``llm_dir`` + ``vision_dir``: separate Qwen2 and SigLIP checkpoints, projector and newline
   fresh (`onevision.checkpoint.from_components`, features from SigLIP's second-to-last layer
   as LLaVA-OneVision);
3. neither: random weights of the preset ``size`` (seeded), e.g. ``debug`` for CPU runs.

Training keeps fp32 master weights; the stage's visual settings replace the model's defaults
(and so travel with the export into the next stage and into inference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from onevision.train.config import ModelSection, StageConfig


def load_tokenizer(section: ModelSection):
    """The stage's tokenizer: 'qwen2' (built locally), 'auto' (init_from's files) or a folder.

    Raises:
        FileNotFoundError: 'auto' without an init_from folder holding tokenizer files, or a
            folder without them.
    """
    from transformers import PreTrainedTokenizerFast

    from onevision.tokenizer import build_qwen2_tokenizer

    choice = section.tokenizer
    if choice == "qwen2":
        return build_qwen2_tokenizer()
    folder = section.init_from if choice == "auto" else choice
    if folder is None:
        raise FileNotFoundError("model.tokenizer is 'auto' but model.init_from is not set; give model.tokenizer=qwen2 or a folder")
    if not (Path(folder) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json; set model.tokenizer to 'qwen2' or a tokenizer folder")
    return PreTrainedTokenizerFast.from_pretrained(folder)


def build_model(stage: StageConfig, tokenizer):
    """The stage's starting `OneVisionModel` (fp32, CPU) with the stage's visual settings.

    Raises:
        ValueError: the tokenizer's `<image>` / `<video>` ids or vocabulary do not fit the model.
    """
    from onevision.checkpoint import from_components, load_hf
    from onevision.model import OneVisionModel
    from onevision.tokenizer import image_token_id, video_token_id

    section = stage.model
    if section.init_from:
        model = load_hf(section.init_from, dtype=torch.float32, progress=False)
    elif section.llm_dir or section.vision_dir:
        if not (section.llm_dir and section.vision_dir):
            raise ValueError("model.llm_dir and model.vision_dir go together (stage 1 from separate checkpoints)")
        model = from_components(section.llm_dir, section.vision_dir, vision_feature_layer=-2, tokenizer=tokenizer, dtype=torch.float32, progress=False)
    else:
        model = OneVisionModel(fresh_config(section.size, tokenizer))
    check_tokenizer(model.config, tokenizer, image_token_id(tokenizer), video_token_id(tokenizer))
    model.config = dataclasses.replace(model.config, visual=stage.visual_settings(model.config.visual))
    return model.float()


def fresh_config(size: str, tokenizer):
    """The preset `size` sized for `tokenizer`: a random model's vocabulary follows its tokenizer.

    The embedding and LM head get ``len(tokenizer)`` rows rounded up to a multiple of 64 (the
    padding Qwen2's released vocabularies use too, for matrix-unit friendly shapes), so the
    debug size trains with the real Qwen2 tokenizer and the demo's small one alike; the
    placeholder ids are the tokenizer's.
    """
    from onevision.model import preset
    from onevision.tokenizer import image_token_id, video_token_id

    config = preset(size)
    rows = -(-len(tokenizer) // 64) * 64
    text = dataclasses.replace(config.text, vocab_size=rows)
    return dataclasses.replace(config, text=text, image_token_id=image_token_id(tokenizer), video_token_id=video_token_id(tokenizer))


def check_tokenizer(config, tokenizer, image_id: int, video_id: int) -> None:
    """Raise when the tokenizer's placeholder ids or size disagree with the model."""
    if (image_id, video_id) != (config.image_token_id, config.video_token_id):
        raise ValueError(
            f"the tokenizer has <image>={image_id}, <video>={video_id} but the model expects "
            f"{config.image_token_id}, {config.video_token_id}; use the tokenizer the model was trained with"
        )
    if len(tokenizer) > config.text.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {config.text.vocab_size} rows")
