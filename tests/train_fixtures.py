"""Shared inputs of the training tests: a tiny mixed dataset, a small tokenizer, debug overrides.

`write_dataset(folder)` writes images (PIL), a video (PyAV), a JSONL record file mixing
single-image, multi-image, video and text-only conversations, and a data recipe YAML pointing
at it. `write_tokenizer(folder)` trains a small byte-level BPE (`train_small_tokenizer`) and
saves it. `debug_overrides(...)` turns any shipped stage into a CPU run of a few steps on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from media_factory import make_image, make_video

from onevision.tokenizer import train_small_tokenizer

ANSWERS = ["It is red.", "A blue square.", "Two shapes.", "The circle moves left.", "Yes.", "Green and yellow."]
QUESTIONS = ["What colour is the shape?", "Describe the picture.", "How many shapes?", "What happens?", "Same colour?"]
CORPUS = (ANSWERS + QUESTIONS + ["Hello there.", "Describe the video."]) * 20


def conversation(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_dataset(folder: Path, copies: int = 2) -> Path:
    """Media, records.jsonl and recipe.yaml in `folder`; returns the recipe path.

    Per copy: 2 single images, 1 multi-image pair, 1 video, 1 text-only record (5 samples).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_image(folder / "wide.png", width=96, height=64)
    make_image(folder / "square.png", width=64, height=64)
    make_image(folder / "tall.jpg", width=48, height=80)
    make_video(folder / "clip.mp4", frames=6, fps=2, width=64, height=64)
    records = []
    for k in range(copies):
        q = QUESTIONS[k % len(QUESTIONS)]
        a = ANSWERS[k % len(ANSWERS)]
        records += [
            {"id": f"si-{k}-a", "image": "wide.png", "conversations": conversation(f"<image>\n{q}", a)},
            {"id": f"si-{k}-b", "image": "tall.jpg", "conversations": conversation(f"<image>\n{q}", ANSWERS[(k + 1) % 6])},
            {"id": f"mi-{k}", "image": ["square.png", "wide.png"], "conversations": conversation("<image>\n<image>\nSame colour?", a)},
            {"id": f"vid-{k}", "video": "clip.mp4", "conversations": conversation("<video>\nWhat happens?", ANSWERS[3])},
            {"id": f"txt-{k}", "conversations": conversation("Hello there.", a)},
        ]
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "recipe.yaml").write_text("seed: 0\ndatasets:\n  - json_path: records.jsonl\n    sampling_strategy: all\n")
    return folder / "recipe.yaml"


def write_tokenizer(folder: Path) -> Path:
    """A byte-level BPE of at most 400 tokens with the ChatML and media specials, saved in `folder`."""
    train_small_tokenizer(CORPUS, vocab_size=400, save_dir=folder)
    return Path(folder)


def debug_overrides(root: Path, recipe: Path, tokenizer: Path | None, steps: int = 3, max_tokens: int = 2048) -> list[str]:
    """Overrides that make any stage a few-step CPU run of the debug model on the tiny dataset."""
    overrides = [
        "model.size=debug",
        f"output_root={root}",
        f"data.recipe={recipe}",
        f"data.sampler.max_tokens={max_tokens}",
        "data.sampler.window=64",
        "data.loader.num_workers=0",
        "data.template.max_length=2048",
        "data.video_fps=null",
        f"loop.steps={steps}",
        "loop.device=cpu",
        "model.gradient_checkpointing=false",
        "checkpoint.every=0",
        "logging.progress=false",
        "logging.tensorboard=false",
        "logging.plot=false",
        "visual.max_visual_tokens=null",
    ]
    if tokenizer is not None:
        overrides.append(f"model.tokenizer={tokenizer}")
    return overrides


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """{'root': folder, 'recipe': data recipe, 'tokenizer': tokenizer folder} for one test module."""
    root = tmp_path_factory.mktemp("train")
    return {"root": root, "recipe": write_dataset(root / "data"), "tokenizer": write_tokenizer(root / "tokenizer")}
