"""A checkpoint written by transformers' `LlavaOnevisionForConditionalGeneration.save_pretrained`
answers with the same greedy tokens through `OneVision.from_pretrained(...)` as through
transformers' own `generate`, for a single image and for a video.

transformers' inputs are built independently of the pipeline: its chat template rendering, its
PIL image processor, its own placeholder count; video pixels by hand (its video processor needs
torchvision), the frames resized straight to the tile size as its processor does.
"""

import numpy as np
import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from helpers_model import hf_image_processor, hf_image_token_count, hf_video_token_count, random_image, single_thread, video_pixels  # noqa: F401
from onevision.infer.debug_model import debug_config, debug_tokenizer
from onevision.infer.pipeline import OneVision

NEW = 10
QUESTION = "What is shown?"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, transformers model, our config): a random tiny model saved by transformers with a tokenizer."""
    tokenizer = debug_tokenizer()
    config = debug_config(tokenizer)
    hf_config = config.to_hf()
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    hf = LlavaOnevisionForConditionalGeneration(hf_config).eval()
    folder = tmp_path_factory.mktemp("hf-ckpt")
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, hf, config, tokenizer


def hf_prompt_ids(tokenizer, media_part: str, placeholder_id: int, count: int) -> torch.Tensor:
    """transformers-side prompt: chat template with a media part, its placeholder repeated `count` times."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": media_part}, {"type": "text", "text": QUESTION}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = []
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        ids.extend([token] * count if token == placeholder_id else [token])
    return torch.tensor([ids])


def hf_greedy(hf, input_ids, **visual) -> list[int]:
    with torch.no_grad():
        out = hf.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            **visual,
            do_sample=False,
            max_new_tokens=NEW,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out[0, input_ids.shape[1] :].tolist()


def assert_same_greedy(ours: list[int], theirs: list[int], im_end: int) -> None:
    """Ours stops at <|im_end|>; transformers (no eos given) runs on: compare up to our stop."""
    assert len(ours) >= 3
    assert ours == theirs[: len(ours)]
    assert len(ours) == NEW or ours[-1] == im_end


def test_single_image_greedy_equals_transformers(saved):
    folder, hf, config, tokenizer = saved
    pipe = OneVision.from_pretrained(folder)
    picture = random_image(90, 50, seed=3)
    prepared = pipe.prepare({"question": QUESTION, "images": [picture]})
    ours = pipe.generate_prepared([prepared], pipe.generation_settings(max_new_tokens=NEW))[0].tolist()

    processed = hf_image_processor(config)([[picture]], return_tensors="pt")
    count = hf_image_token_count(config, 90, 50)
    input_ids = hf_prompt_ids(tokenizer, "image", config.image_token_id, count)
    assert input_ids[0].tolist() == prepared.input_ids.tolist()
    theirs = hf_greedy(
        hf,
        input_ids,
        pixel_values=processed["pixel_values"],
        image_sizes=processed["image_sizes"],
        batch_num_images=processed["batch_num_images"],
    )
    assert_same_greedy(ours, theirs, pipe.im_end_id)


def test_video_greedy_equals_transformers(saved):
    folder, hf, config, tokenizer = saved
    pipe = OneVision.from_pretrained(folder)
    frames = np.random.default_rng(4).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    prepared = pipe.prepare({"question": QUESTION, "video": frames})
    ours = pipe.generate_prepared([prepared], pipe.generation_settings(max_new_tokens=NEW))[0].tolist()

    input_ids = hf_prompt_ids(tokenizer, "video", config.video_token_id, hf_video_token_count(config, 4))
    assert input_ids[0].tolist() == prepared.input_ids.tolist()
    theirs = hf_greedy(hf, input_ids, pixel_values_videos=video_pixels(frames, config.vision.image_size)[None])
    assert_same_greedy(ours, theirs, pipe.im_end_id)
