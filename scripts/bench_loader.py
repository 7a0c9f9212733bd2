"""Loader throughput per modality and number of workers, on generated media.

    python scripts/bench_loader.py [--samples 48] [--workers 0,1,2] [--batch-size 4] [--pixel-dtype float32]

For image (one 640x480 picture: AnyRes 2x2 crops + base = 5 tiles, 2929 tokens), multi-image
(four 320x240 pictures, 730 tokens each) and video (a 320x240, 64-frame clip, 32 frames
decoded, 196*32+1 tokens) samples, with the released models' visual settings (SigLIP-384,
AnyRes-Max-9) and a small BPE tokenizer, it times the second epoch of the full loader (decode,
pixels, tokens, padded collation; persistent workers already started by the first) and prints
samples/s, samples/s per worker and tokens/s.
The baseline is the same loader decoding in the main process (0 workers); ratios are to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media_factory import make_image, make_video

from onevision.budget import VisualSettings
from onevision.data.batch_sampler import ModalityLengthBatchSampler, SamplerConfig
from onevision.data.collate import Collator
from onevision.data.dataset import DataConfig, OneVisionDataset
from onevision.data.loader import LoaderConfig, LoaderStats, OneVisionLoader
from onevision.data.recipe import load_recipe
from onevision.tokenizer import train_small_tokenizer

QUESTION = "What is shown here? Answer in one sentence."
ANSWER = "A coloured block on a plain background, drawn for a test."


def write_media(folder: Path, samples: int) -> dict[str, Path]:
    """One recipe per modality, `samples` records each, over a few distinct media files."""
    rng = torch.Generator().manual_seed(0)
    recipes = {}
    for kind in ("image", "multi_image", "video"):
        records = []
        for i in range(samples):
            color = tuple(int(v) for v in torch.randint(0, 255, (3,), generator=rng))
            conv = [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": ANSWER}]
            if kind == "image":
                path = make_image(folder / f"si_{i % 8}.jpg", width=640, height=480, color=color)
                records.append({"id": f"si{i}", "image": path.name, "conversations": conv})
            elif kind == "multi_image":
                paths = [make_image(folder / f"mi_{(i + k) % 8}.jpg", width=320, height=240, color=color) for k in range(4)]
                conv[0]["value"] = "<image>\n" * 4 + QUESTION
                records.append({"id": f"mi{i}", "image": [p.name for p in paths], "conversations": conv})
            else:
                path = folder / f"clip_{i % 4}.mp4"
                if not path.exists():
                    make_video(path, width=320, height=240, frames=64, fps=16)
                records.append({"id": f"v{i}", "video": path.name, "conversations": conv})
        (folder / f"{kind}.json").write_text(json.dumps(records))
        recipe = folder / f"{kind}.yaml"
        recipe.write_text(f"datasets:\n  - json_path: {kind}.json\n")
        recipes[kind] = recipe
    return recipes


def run(recipe: Path, tokenizer, workers: int, batch_size: int, pixel_dtype: str) -> dict:
    config = DataConfig(visual=VisualSettings(), video_fps=None, pixel_dtype=pixel_dtype)
    dataset = OneVisionDataset.from_recipe(load_recipe(recipe), tokenizer, config, progress=False)
    sampler = ModalityLengthBatchSampler(dataset.lengths(), dataset.modalities(), SamplerConfig(batch_size=batch_size))
    loader = OneVisionLoader(dataset, sampler, Collator(tokenizer.pad_token_id), LoaderConfig(num_workers=workers))
    for _ in loader:  # warm-up epoch: starts the (persistent) workers, fills the page cache
        pass
    loader.stats = LoaderStats()
    loader.set_epoch(1)
    for _ in loader:
        pass
    if loader.stats.skipped:
        raise RuntimeError(f"benchmark samples were skipped: {loader.stats.skipped[:2]}")
    return loader.stats.as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pixel-dtype", default="float32", help="float32 or bfloat16 pixels from the workers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = train_small_tokenizer([QUESTION, ANSWER] * 50, vocab_size=400)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        recipes = write_media(Path(tmp), args.samples)
        print(
            f"{args.samples} samples per modality, batch size {args.batch_size}, {args.pixel_dtype} pixels; "
            "baseline = 0 workers (decoding in the main process)"
        )
        print(f"{'modality':<12} {'workers':>7} {'samples/s':>10} {'per worker':>11} {'tokens/s':>10} {'vs 0 workers':>13}")
        for kind, recipe in recipes.items():
            base = None
            for workers in counts:
                stats = run(recipe, tokenizer, workers, args.batch_size, args.pixel_dtype)
                rate = stats["samples_per_s"]
                base = rate if base is None else base
                per_worker = rate / max(1, workers)
                print(f"{kind:<12} {workers:>7} {rate:>10.1f} {per_worker:>11.1f} {stats['tokens_per_s']:>10.0f} {rate / base:>12.2f}x")


if __name__ == "__main__":
    main()
