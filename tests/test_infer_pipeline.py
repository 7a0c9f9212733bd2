"""The OneVision pipeline: batching and the KV cache change no token, scenarios mix in one batch,
multiple-choice scores are true log-likelihoods, checkpoints load with their tokenizer."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_video
from onevision.infer.debug_model import debug_pipeline, save_debug_checkpoint
from onevision.infer.pipeline import OneVision
from onevision.infer.prompt import LETTERS, MC_INSTRUCTION
from onevision.tokenizer import IM_END, TokenizerNotFound

NEW = 8


def image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipe():
    return debug_pipeline(seed=0)


@pytest.fixture(scope="module")
def requests_mixed():
    """Single image (AnyRes), two images, a video (frames in memory), text only."""
    frames = np.random.default_rng(5).integers(0, 256, (5, 40, 48, 3), dtype=np.uint8)
    return [
        {"question": "What is shown?", "images": [image(90, 50, 1)]},
        {"question": "Which image has more objects?", "images": [image(64, 64, 2), image(30, 70, 3)]},
        {"question": "What happens next?", "video": frames},
        {"question": "How many shapes are there?"},
    ]


def test_batch_mixing_scenarios_equals_one_by_one(pipe, requests_mixed):
    prepared = [pipe.prepare(r) for r in requests_mixed]
    assert [p.scenario for p in prepared] == ["single_image", "multi_image", "video", "text"]
    assert len({p.input_ids.numel() for p in prepared}) == 4  # left padding really happens
    settings = pipe.generation_settings(max_new_tokens=NEW)
    batched = pipe.generate_prepared(prepared, settings)
    alone = [pipe.generate_prepared([p], settings)[0] for p in prepared]
    assert [t.tolist() for t in batched] == [t.tolist() for t in alone]
    assert pipe.generate_batch(requests_mixed, batch_size=4, max_new_tokens=NEW) == [pipe.decode(t) for t in alone]


def test_kv_cache_changes_no_token(pipe, requests_mixed):
    prepared = [pipe.prepare(r) for r in requests_mixed]
    cached = pipe.generate_prepared(prepared, pipe.generation_settings(max_new_tokens=NEW))
    recomputed = pipe.generate_prepared(prepared, pipe.generation_settings(max_new_tokens=NEW, use_cache=False))
    assert [t.tolist() for t in cached] == [t.tolist() for t in recomputed]


def test_generation_stops_at_im_end():
    pipe = debug_pipeline(seed=1)
    prepared = pipe.prepare({"question": "Hi"})
    settings = pipe.generation_settings(max_new_tokens=NEW)
    free = pipe.generate_prepared([prepared], settings)[0]
    im_end = pipe.tokenizer.convert_tokens_to_ids(IM_END)
    assert im_end not in free.tolist()[:3]
    with torch.no_grad():  # <|im_end|> now outscores the third token wherever that one wins
        head = pipe.model.language_model.lm_head.weight
        head[im_end] = 2 * head[int(free[2])]
    tokens = pipe.generate_prepared([prepared], settings)[0]
    assert tokens.tolist()[-1] == im_end and len(tokens) <= 3
    assert tokens.tolist()[:-1] == free.tolist()[: len(tokens) - 1]
    assert pipe.decode(tokens) == pipe.decode(tokens[:-1])


def test_sampling_reproducible_with_seed(pipe):
    first = pipe.ask("Describe.", image=image(40, 40, 7), max_new_tokens=NEW, temperature=1.0, seed=3)
    again = pipe.ask("Describe.", image=image(40, 40, 7), max_new_tokens=NEW, temperature=1.0, seed=3)
    assert first == again


def test_choice_scores_are_log_likelihoods(pipe):
    """Letter scores equal log-softmax of a plain forward pass over prompt + letter (no cache)."""
    options = ["red", "green", "blue"]
    choice = pipe.choose("What colour is the shape?", options, image=image(50, 40, 8))
    prepared = pipe.prepare_choice({"question": "What colour is the shape?", "images": [image(50, 40, 8)], "options": options})
    text = pipe.tokenizer.decode(prepared.input_ids[-60:])
    assert "A. red\nB. green\nC. blue\n" + MC_INSTRUCTION in text
    with torch.no_grad():
        logits = pipe.model(prepared.input_ids[None], visual=prepared.visual).logits[0, -1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    expected = [float(logprobs[pipe.tokenizer.convert_tokens_to_ids(LETTERS[k])]) for k in range(3)]
    assert choice.scores == pytest.approx(expected, abs=1e-4)
    assert choice.index == int(np.argmax(expected)) and choice.option == options[choice.index]


def test_text_choice_scores_whole_answer_and_batches(pipe, requests_mixed):
    """By text: the sum over the option's tokens and <|im_end|>; batched prompts score as alone."""
    options = ["a red circle", "blue", "two small squares"]
    requests = [dict(r, options=options) for r in requests_mixed]
    prepared = [pipe.prepare_choice(r, by="text") for r in requests]
    batched = pipe.choose_prepared(prepared, by="text")
    alone = [pipe.choose_prepared([p], by="text")[0] for p in prepared]
    for many, one in zip(batched, alone):
        assert many.scores == pytest.approx(one.scores, abs=1e-4)
    target = pipe.option_continuations(options, "text")[2]
    ids = torch.cat([prepared[3].input_ids, torch.tensor(target)])
    with torch.no_grad():
        logits = pipe.model(ids[None]).logits[0].float()
    start = prepared[3].input_ids.numel()
    logprobs = torch.log_softmax(logits[start - 1 : -1], dim=-1).gather(-1, torch.tensor(target)[:, None])
    assert alone[3].scores[2] == pytest.approx(float(logprobs.sum()), abs=1e-4)


def test_placeholders_must_match_media(pipe):
    with pytest.raises(ValueError, match="1 <image> .* 2 image"):
        pipe.prepare({"question": "<image>\nCompare.", "images": [image(20, 20, 1), image(20, 20, 2)]})
    written = pipe.prepare({"question": "First <image> then <image>?", "images": [image(20, 20, 1), image(20, 20, 2)]})
    assert written.scenario == "multi_image"


def test_video_file_sampled_to_num_frames(pipe, tmp_path):
    path = make_video(tmp_path / "clip.mp4", frames=20, width=48, height=32)
    prepared = pipe.prepare({"question": "What happens?", "video": path})
    assert prepared.media.plan.items[0].frames == pipe.loader.num_frames == 8  # the debug preset's frames_upbound
    assert prepared.media.timestamps[0] == 0.0 and len(prepared.media.timestamps) == 8


def test_from_pretrained_loads_checkpoint_and_tokenizer(pipe, tmp_path):
    folder = save_debug_checkpoint(tmp_path / "ckpt", seed=0)
    loaded = OneVision.from_pretrained(folder)
    request = {"question": "What is shown?", "images": [image(90, 50, 1)]}
    assert loaded.generate_batch([request], max_new_tokens=NEW) == pipe.generate_batch([request], max_new_tokens=NEW)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json", "chat_template*"))
    with pytest.raises(TokenizerNotFound, match="no tokenizer in .*bare"):
        OneVision.from_pretrained(bare)
    with_tokenizer = OneVision.from_pretrained(bare, tokenizer=folder)
    assert with_tokenizer.generate_batch([request], max_new_tokens=NEW) == loaded.generate_batch([request], max_new_tokens=NEW)


def test_prompt_is_the_training_prefix(pipe):
    """The inference prompt is exactly what training encodes before the assistant's reply."""
    from onevision.data.template import ChatEncoder

    prepared = pipe.prepare({"question": "What is shown?", "images": [image(90, 50, 1), image(30, 40, 2)]})
    turns = [("user", "<image>\n<image>\nWhat is shown?"), ("assistant", "two shapes")]
    trained = ChatEncoder(pipe.tokenizer).encode(turns, prepared.media.plan.items).input_ids
    assert trained[: prepared.input_ids.numel()] == prepared.input_ids.tolist()
    assert pipe.tokenizer.decode(trained[prepared.input_ids.numel() :]) == "two shapes<|im_end|>\n"
