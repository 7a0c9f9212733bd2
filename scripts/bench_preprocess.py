"""Benchmark: single-image AnyRes pixel preprocessing, ours vs transformers' PIL processor.

Run:
    python scripts/bench_preprocess.py [--images 50] [--max-side 3000] [--repeats 3] [--threads 1]

Builds `--images` seeded random RGB images of mixed sizes (sides log-uniform from 32 px to
`--max-side`, a few extreme aspect ratios among them), then times, in this one process,
`onevision.processing.preprocess_image` (planning included) against
`transformers.LlavaOnevisionImageProcessorPil` (SigLIP-384 settings, `return_tensors="pt"`),
one image per call as a data worker sees them. Each side's best of `--repeats` interleaved passes
over all images is reported as images/s, with the ratio, and the largest pixel difference between the
two outputs (the pipelines are meant to agree bit for bit).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm
from transformers import LlavaOnevisionImageProcessorPil

from onevision.budget import ImageMedia, VisualSettings, plan_sample
from onevision.processing import ImageNormalization, preprocess_image


def make_images(count: int, max_side: int, seed: int) -> list[Image.Image]:
    """`count` random RGB images: sides log-uniform in [32, max_side], smooth content plus noise."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(32), np.log(max_side), size=(count, 2))).astype(int)
    sizes[: min(3, count)] = [(max_side, 40), (40, max_side), (max_side, max_side)][: min(3, count)]
    images = []
    for width, height in tqdm(sizes, desc="making images", leave=False):
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        base = (x * np.array([1.0, 0.3, 0.6], np.float32) + y * np.array([0.2, 1.0, 0.4], np.float32)) % 256
        noise = rng.integers(0, 32, size=(height, width, 3), dtype=np.uint8)
        images.append(Image.fromarray(base.astype(np.uint8) + noise))
    return images


def run_ours(images: list[Image.Image], settings: VisualSettings, norm: ImageNormalization) -> list[torch.Tensor]:
    outputs = []
    for image in images:
        plan = plan_sample([ImageMedia(image.width, image.height)], settings).items[0]
        outputs.append(preprocess_image(image, plan, settings.image_size, norm))
    return outputs


def run_reference(images: list[Image.Image], processor: LlavaOnevisionImageProcessorPil) -> list[torch.Tensor]:
    return [processor([image], return_tensors="pt")["pixel_values"][0] for image in images]


def best_times(fns: list, repeats: int) -> tuple[list[float], list]:
    """Best wall time of each fn over `repeats` rounds; rounds interleave the fns, so load that
    other processes put on the machine hits both sides alike."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in tqdm(range(repeats), desc="timing rounds", leave=False):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            outs[index] = fn()
            best[index] = min(best[index], time.perf_counter() - start)
    return best, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="number of images (default 50)")
    parser.add_argument("--max-side", type=int, default=3000, help="largest image side in pixels (default 3000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as in a data worker)")
    parser.add_argument("--seed", type=int, default=0, help="image seed (default 0)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = VisualSettings()
    norm = ImageNormalization()
    processor = LlavaOnevisionImageProcessorPil(image_mean=list(norm.mean), image_std=list(norm.std))
    images = make_images(args.images, args.max_side, args.seed)
    pixels = sum(image.width * image.height for image in images)
    print(f"{len(images)} images, {pixels / 1e6:.1f} Mpixel in all, largest side {max(max(i.size) for i in images)} px; "
          f"torch threads {args.threads}")

    run_ours(images[:2], settings, norm)
    run_reference(images[:2], processor)
    (ours_s, ref_s), (ours, ref) = best_times(
        [lambda: run_ours(images, settings, norm), lambda: run_reference(images, processor)], args.repeats
    )

    tiles = sum(t.shape[0] for t in ours)
    mismatched = sum(a.shape != b.shape for a, b in zip(ours, ref))
    diff = max((a - b).abs().max().item() for a, b in zip(ours, ref) if a.shape == b.shape)
    print(f"tiles: {tiles}; shape mismatches: {mismatched}; max |ours - reference|: {diff:.3g}")
    print(f"{'pipeline':<34}{'seconds':>10}{'images/s':>12}")
    print(f"{'onevision.processing':<34}{ours_s:>10.3f}{len(images) / ours_s:>12.1f}")
    print(f"{'LlavaOnevisionImageProcessorPil':<34}{ref_s:>10.3f}{len(images) / ref_s:>12.1f}")
    print(f"speed-up: {ref_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
