"""Scoring a stage's export on the world's test split with the shared evaluator.

Every question of the world has a closed answer set, so the robust metric is multiple choice
by likelihood: each choice's text followed by `<|im_end|>` is scored under the record's own
prompt and the most likely one is the prediction (`onevision.infer.evaluate`, mode 'choice',
by 'text'). Greedy generation scored by exact match is the stricter metric (the model must
also produce a well-formed answer and stop); the demo reports it after the last stage.

The test media are decoded once (`preload`) and shared by the evaluations of every stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PIL import Image

from onevision.data.media import load_image, load_video
from onevision.infer.evaluate import BenchmarkItem, Report, evaluate, read_benchmark
from onevision.infer.pipeline import OneVision
from onevision.world import WorldManifest

METRICS = ("choice", "exact_match")
"""'choice': multiple choice by likelihood; 'exact_match': greedy generation."""


def test_items(manifest: WorldManifest, split: str = "test") -> list[BenchmarkItem]:
    """The benchmark items of every closed-answer task of `split` (captions left out), task by task."""
    tasks = [name for name, info in manifest.tasks.items() if info["choices"]]
    return read_benchmark(manifest.jsonl_paths(split, tasks=tasks), media_root=manifest.root)


def preload(items: list[BenchmarkItem]) -> list[BenchmarkItem]:
    """Copies of `items` whose requests carry decoded media (PIL images, `VideoClip`s)."""
    loaded = []
    for item in items:
        request = item.request
        images: list[Image.Image] = [load_image(path) for path in request.images]
        video = None if request.video is None else load_video(request.video)
        request = dataclasses.replace(request, images=images, video=video)
        loaded.append(dataclasses.replace(item, request=request))
    return loaded


def evaluate_export(
    export_dir: str | Path,
    items: list[BenchmarkItem],
    *,
    name: str,
    metric: str = "choice",
    batch_size: int = 16,
    progress: bool = True,
) -> Report:
    """Score the llava_onevision folder `export_dir` on `items` with `metric` (see METRICS)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    pipe = OneVision.from_pretrained(export_dir, dtype="fp32")
    mode = "choice" if metric == "choice" else "generate"
    return evaluate(
        pipe, items, name=name, mode=mode, choice_by="text", batch_size=batch_size, max_new_tokens=8, progress=progress
    )
