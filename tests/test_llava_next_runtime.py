"""An original LLaVA-NeXT folder runs as LLaVA-NeXT runs it: the fields that act around the weights.

The reference is LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9:
- `llava/model/builder.py` `load_pretrained_model` adds `<im_patch>` when `mm_use_im_patch_token`
  (default true) and calls `model.resize_token_embeddings(len(tokenizer))`: the head keeps the
  first len(tokenizer) rows, so log-probabilities and argmax cover those ids only;
- `llava/model/llava_arch.py` `prepare_inputs_labels_for_multimodal` cuts sequences with media to
  `tokenizer_model_max_length` (we refuse them instead);
- `playground/demo/video_demo.py` (and lmms-eval's llava_vid) put `time_instruciton` in front of
  the question when `add_time_instruction`, the image token before both.
The folder is the tiny LLaVA-Video-7B-Qwen2 of `llava_next_folders` (152,064 rows, the real Qwen2
tokenizer of 151,646 tokens, add_time_instruction true, mm_use_im_patch_token false).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from llava_next_folders import llava_video_config, llava_video_folder
from PIL import Image

from onevision.checkpoint import CheckpointError
from onevision.checkpoint.llava_next import OriginalRuntime, read_llava_next_runtime
from onevision.data.media.video import VideoClip
from onevision.infer.pipeline import InferenceConfig, OneVision, PromptTooLong
from onevision.tokenizer import load_tokenizer

ROWS = 152064
QWEN2_TOKENS = 151646
FRAMES = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
IMAGE = Image.fromarray(FRAMES[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return llava_video_folder(tmp_path_factory.mktemp("llava-video"))


@pytest.fixture(scope="module")
def pipe(folder):
    return OneVision.from_pretrained(folder)


def variant(folder, tmp_path, **fields):
    """`folder` with config.json fields replaced (weights and tokenizer files linked, not copied)."""
    for path in folder.iterdir():
        if path.name != "config.json":
            (tmp_path / path.name).symlink_to(path)
    (tmp_path / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()), **fields}))
    return tmp_path


def clip(frames=FRAMES, fps=2.0, total=40):
    """A decoded clip: `frames` sampled uniformly from `total` frames at `fps`."""
    indices = np.linspace(0, total - 1, len(frames), dtype=int).tolist()
    return VideoClip(frames, indices, [i / fps for i in indices], total / fps, fps, total, "frames")


# ---------------------------------------------------------------- the embedding the builder resizes

def resized_like_the_builder(pipe):
    """A copy of the model after `model.resize_token_embeddings(len(tokenizer))`, as builder.py does.

    The input embedding keeps every row here: the placeholder ids (151646, 151647) lie past
    len(tokenizer), and the original never looks them up (it splices at -200); text ids are
    below len(tokenizer), where the resized rows are the same.
    """
    reference = copy.deepcopy(pipe.model)
    embedding = copy.deepcopy(reference.language_model.get_input_embeddings())  # resized in place below
    reference.language_model.resize_token_embeddings(len(pipe.tokenizer))
    reference.language_model.set_input_embeddings(embedding)
    assert reference.language_model.get_output_embeddings().weight.shape[0] == QWEN2_TOKENS
    return OneVision(reference, pipe.tokenizer, InferenceConfig(prompt_format="qwen_1_5", time_instruction=False))


def test_logits_cover_the_rows_the_builder_keeps(pipe):
    assert pipe.model.language_model.get_output_embeddings().weight.shape[0] == ROWS
    assert pipe.config.vocab_size == len(pipe.tokenizer) == QWEN2_TOKENS
    reference = resized_like_the_builder(pipe)
    every_row = pipe.reconfigured(vocab_size=ROWS)
    question, options = "Which colour?", ["red", "green", "blue"]
    image = IMAGE
    for by in ("letter", "text"):
        ours = pipe.choose(question, options, image=image, by=by).scores
        theirs = reference.choose(question, options, image=image, by=by).scores
        assert np.allclose(ours, theirs, atol=1e-4), (by, ours, theirs)
        # Over all 152,064 rows the normalisation differs (the test would fail without the cut).
        assert not np.allclose(every_row.choose(question, options, image=image, by=by).scores, theirs, atol=1e-3)


def test_generation_never_yields_ids_past_len_tokenizer(pipe):
    rigged = copy.deepcopy(pipe.model)
    prepared = pipe.prepare({"question": "What is shown?", "image": IMAGE})
    with torch.no_grad():
        embeds = rigged.embed(prepared.input_ids[None], prepared.visual)
        hidden = rigged.language_model.model(inputs_embeds=embeds).last_hidden_state[0, -1]
        head = rigged.language_model.get_output_embeddings().weight
        best = int((head[:QWEN2_TOKENS] @ hidden).argmax())
        # A row past len(tokenizer) that beats every real token (twice the best one's logit).
        head[QWEN2_TOKENS + 5] = 2 * head[best]
    ours = OneVision(rigged, pipe.tokenizer, pipe.requested, original=pipe.original)
    settings = ours.generation_settings(max_new_tokens=3)
    assert settings.vocab_size == QWEN2_TOKENS
    tokens = ours.generate_prepared([prepared], settings)[0]
    assert int(tokens[0]) == best and int(tokens.max()) < QWEN2_TOKENS
    reference = resized_like_the_builder(ours)
    assert torch.equal(tokens, reference.generate_prepared([prepared], reference.generation_settings(max_new_tokens=3))[0])
    unlimited = ours.reconfigured(vocab_size=ROWS)
    assert int(unlimited.generate_prepared([prepared], unlimited.generation_settings(max_new_tokens=1))[0][0]) == QWEN2_TOKENS + 5


def test_patch_token_counts_when_the_builder_adds_it(pipe):
    assert OriginalRuntime(adds_patch_token=True).vocab_rows(pipe.tokenizer) == QWEN2_TOKENS + 1
    assert OriginalRuntime(adds_patch_token=False).vocab_rows(pipe.tokenizer) == QWEN2_TOKENS
    with pytest.raises(ValueError, match=f"vocab_size {ROWS + 1}.*{ROWS} rows"):
        pipe.reconfigured(vocab_size=ROWS + 1)


# ---------------------------------------------------------------- tokenizer_model_max_length

def test_prompts_longer_than_tokenizer_model_max_length_are_refused(folder, tmp_path):
    short = OneVision.from_pretrained(variant(folder, tmp_path, tokenizer_model_max_length=700))
    with pytest.raises(PromptTooLong, match=r"prompt is \d+ tokens \(728 of them visual\) but tokenizer_model_max_length in .*config.json is 700"):
        short.prepare({"question": "What happens?", "video": FRAMES})
    # Text alone is never cut by the original (prepare_inputs_labels_for_multimodal returns early).
    assert short.prepare({"question": "word " * 800}).input_ids.numel() > 700
    image = short.reconfigured(max_length=10**6).prepare({"question": "What is shown?", "image": IMAGE})
    length = image.input_ids.numel()
    exact = short.reconfigured(max_length=length + 2)
    exact.score([image], [[[15, 16]]])  # prompt plus continuation fits exactly
    with pytest.raises(PromptTooLong, match=f"prompt is {length + 3} tokens .* InferenceConfig.max_length is {length + 2}"):
        exact.score([image], [[[15, 16], [15, 16, 17]]])


@pytest.mark.parametrize(
    "field, value", [("tokenizer_model_max_length", 0), ("tokenizer_model_max_length", "4096"), ("add_time_instruction", "yes")]
)
def test_malformed_runtime_fields_are_named(tmp_path, field, value):
    (tmp_path / "config.json").write_text(json.dumps(llava_video_config(**{field: value})))
    with pytest.raises(CheckpointError, match=f"{field} {value!r}"):
        read_llava_next_runtime(tmp_path)


# ---------------------------------------------------------------- add_time_instruction

def original_prompt_ids(pipe, question, video):
    """The original's ids: video_demo.py's prompt, conv_qwen, tokenizer_image_token (one run for -200)."""
    frame_time = ",".join(f"{t:.2f}s" for t in video.timestamps)
    time_instruciton = (
        f"The video lasts for {video.duration:.2f} seconds, and {len(video.frames)} frames are uniformly sampled from it. "
        f"These frames are located at {frame_time}.Please answer the following questions related to this video."
    )
    qs = "<image>" + "\n" + f"{time_instruciton}\n{question}"
    prompt = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{qs}<|im_end|>\n<|im_start|>assistant\n"
    )
    before, after = (pipe.tokenizer(chunk).input_ids for chunk in prompt.split("<image>"))
    run = pipe.prepare({"question": question, "video": video}).media.plan.total
    return before + [pipe.model.config.video_token_id] * run + after


def text_of(pipe, prepared):
    return pipe.tokenizer.decode([t for t in prepared.input_ids.tolist() if t != pipe.model.config.video_token_id])


def test_add_time_instruction_gives_the_original_prompt(pipe, folder, tmp_path, caplog):
    assert pipe.config.time_instruction is True
    video = clip()
    prepared = pipe.prepare({"question": "What happens?", "video": video})
    assert prepared.input_ids.tolist() == original_prompt_ids(pipe, "What happens?", video)
    assert "lasts for 20.00 seconds, and 4 frames are uniformly sampled from it. These frames are located at " \
        "0.00s,6.50s,13.00s,19.50s.Please answer" in text_of(pipe, prepared)
    # Overridden by InferenceConfig, and off where the config does not ask for it.
    assert "The video lasts" not in text_of(pipe, pipe.reconfigured(time_instruction=False).prepare({"question": "Q?", "video": video}))
    # Frames without times cannot be told about; said once, not silently.
    with caplog.at_level(logging.WARNING, logger="onevision.infer.pipeline"):
        untimed = pipe.reconfigured()
        for _ in range(2):
            assert "The video lasts" not in text_of(untimed, untimed.prepare({"question": "Q?", "video": FRAMES}))
    assert [r.getMessage().count("time_instruction is on") for r in caplog.records] == [1]
    plain = OneVision.from_pretrained(variant(folder, tmp_path, add_time_instruction=False))
    assert plain.config.time_instruction is False
    assert "The video lasts" not in text_of(plain, plain.prepare({"question": "Q?", "video": video}))


def test_reconfigured_keeps_the_folders_settings(pipe):
    pooled = pipe.reconfigured(visual=dataclasses.replace(pipe.model.config.visual, video_pool_mode="max"))
    assert pooled.config.prompt_format == "qwen_1_5" and pooled.config.vocab_size == QWEN2_TOKENS
    assert pooled.config.time_instruction is True and pooled.config.max_length == 32768
    assert pooled.prepare({"question": "Q?", "video": FRAMES}).visual.plans[0].pool_mode == "max"


# ---------------------------------------------------------------- transformers' messages on loading the tokenizer

def test_loading_the_tokenizer_prints_no_config_warnings(folder, tmp_path):
    source = variant(folder, tmp_path, model_type="llava_qwen", rope_scaling=None)
    logger = logging.getLogger("transformers.configuration_utils")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokenizer = load_tokenizer(source)
            logger.warning("another configuration message")  # others still reach the log
            warnings.warn("another deprecation", FutureWarning)
    finally:
        logger.removeHandler(handler)
    assert len(tokenizer) == QWEN2_TOKENS
    assert seen == ["another configuration message"]
    assert [str(w.message) for w in caught] == ["another deprecation"]
