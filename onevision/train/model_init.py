"""Where a stage's weights and tokenizer come from.

Three starts, in this order of precedence (`ModelSection`):
1. ``init_from``: a checkpoint folder, format detected (`onevision.checkpoint.load_checkpoint`):
   the previous stage's export (``${prev_stage_output}``), a released transformers
   llava_onevision folder (llava-hf) or an original LLaVA-NeXT one (lmms-lab), as published;
2. ``llm_dir`` + ``vision_dir``: separate Qwen2 and SigLIP checkpoints, projector and newline
   fresh (`onevision.checkpoint.from_components`, features from SigLIP's second-to-last layer
   as LLaVA-OneVision);
3. neither: random weights of the preset ``size`` (seeded), e.g. ``debug`` for CPU runs.

Training keeps fp32 master weights; the stage's visual settings replace the model's defaults
(and so travel with the export into the next stage and into inference).

The chat template follows the start, as `onevision.infer.pipeline.OneVision.from_pretrained`
picks it for the same folder, so a sample is rendered as inference will ask (`start_chat_template`).
It is set on the tokenizer, so the export carries it and inference on the export renders the
same prompt again.
"""

from __future__ import annotations

import dataclasses

import torch

from onevision.train.config import ModelSection, StageConfig


def load_tokenizer(section: ModelSection):
    """The stage's tokenizer: 'qwen2' (built locally), 'auto' (init_from's files, else llm_dir's) or a folder.

    With ``init_from`` set, its chat template becomes `start_chat_template`'s, and an original
    LLaVA-NeXT start's tokenizer (which has no ``<image>`` / ``<video>``: LLaVA-NeXT splices at
    id -200) gains them as special tokens, as transformers' llava_onevision conversion adds them
    (151646 / 151647 for Qwen2's; `build_model` checks they are the model's placeholder ids).

    Raises:
        FileNotFoundError: 'auto' without an init_from folder holding tokenizer files, or a
            folder without them.
        CheckpointError: init_from is not a checkpoint folder, or its chat template file is broken.
    """
    from onevision.checkpoint import add_media_tokens, detect_format
    from onevision.tokenizer import load_tokenizer as read_tokenizer

    # 'auto' reads the start's files: init_from's, else llm_dir's (the original LLaVA reads its
    # tokenizer from the LLM it starts from).
    source = (section.init_from or section.llm_dir) if section.tokenizer == "auto" else section.tokenizer
    if source is None:
        raise FileNotFoundError("model.tokenizer is 'auto' but neither model.init_from nor model.llm_dir is set; give model.tokenizer=qwen2 or a folder")
    tokenizer = read_tokenizer(source)
    if section.init_from:
        tokenizer.chat_template = start_chat_template(section, tokenizer)
        if detect_format(section.init_from) == "llava-next":
            add_media_tokens(tokenizer)
    return tokenizer


def start_chat_template(section: ModelSection, tokenizer) -> str:
    """The chat template inference renders ``init_from``'s prompts with, so training renders the same.

    As `OneVision.from_pretrained` (``prompt_format='auto'``) and `onevision.infer.prompt` decide:
    an original LLaVA-NeXT folder is asked in LLaVA-NeXT's ``qwen_1_5`` conversation, which
    `onevision.tokenizer.CHATML_TEMPLATE` renders exactly (default system turn, then
    ``<|im_start|>role\\n...<|im_end|>\\n`` per turn), whatever template its tokenizer carries;
    a transformers folder by its own processor template (`chat_template.json`, else
    `chat_template.jinja`; the released llava-hf 0.5b keeps Qwen2-Instruct's string template in
    its tokenizer config, which inference does not use), else the tokenizer folder's processor
    template, else the tokenizer's own, else `CHATML_TEMPLATE`.
    """
    from onevision.checkpoint import detect_format
    from onevision.checkpoint.files import read_chat_template
    from onevision.data.conversations import CONVERSATION_TEMPLATES
    from onevision.tokenizer import CHATML_TEMPLATE

    if detect_format(section.init_from) == "llava-next":
        return CHATML_TEMPLATE
    if detect_format(section.init_from) == "llava-original":  # asked in vicuna_v1, as the original's eval
        return CONVERSATION_TEMPLATES["vicuna_v1"]
    template = read_chat_template(section.init_from)
    if template is None and section.tokenizer not in ("qwen2", "auto"):
        template = read_chat_template(section.tokenizer)
    return template or tokenizer.chat_template or CHATML_TEMPLATE


def build_model(stage: StageConfig, tokenizer):
    """The stage's starting `OneVisionModel` (fp32, CPU) with the stage's visual settings.

    Raises:
        ValueError: the tokenizer's `<image>` / `<video>` ids or vocabulary do not fit the model.
    """
    from onevision.checkpoint import from_components, load_checkpoint
    from onevision.model import OneVisionModel
    from onevision.tokenizer import check_tokenizer

    section = stage.model
    if section.init_from:
        model = load_checkpoint(section.init_from, dtype=torch.float32, progress=False)
    elif section.llm_dir or section.vision_dir:
        if not (section.llm_dir and section.vision_dir):
            raise ValueError("model.llm_dir and model.vision_dir go together (stage 1 from separate checkpoints)")
        model = from_components(section.llm_dir, section.vision_dir, vision_feature_layer=-2, tokenizer=tokenizer, family=section.family, dtype=torch.float32, progress=False)
    else:
        model = OneVisionModel(fresh_config(section.size, tokenizer))
    config = model.config
    check_tokenizer(tokenizer, config.image_token_id, config.video_token_id, config.text.vocab_size)
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
