"""Packing efficiency on a OneVision-shaped length mix: ours (packed) vs padding baselines.

    python scripts/bench_packing.py [--samples 20000] [--seed 0] [--window 4096] [--world-size 8]

Lengths (tokens per sample) are drawn like the OneVision stage-2 mixture, visual tokens from
the real planner (SigLIP-384, AnyRes-Max-9) plus chat text:
  single image 50%: random sizes from 240 px to 2.5k px a side -> 729..7371 visual tokens;
  multi-image 15%: 2..12 images x 730; video 20%: 196 * F + 1, F from 8 to 32 (half at 32);
  text-only 15%. Text: ~30 template tokens + a log-normal prompt/answer (median ~120).

Efficiency = real tokens / token slots. Ours: the batch sampler in packed mode (best-fit
decreasing per window, one row of max_tokens per step) for each `group_by` (modality,
visual, none). Baselines pad every batch to its longest sample, with the same number of
samples per batch as ours packs per row on average: random batches, and LLaVA's
length-grouped batches (mega-batches of world_size * batch sorted by length, one chunk per
rank). Run for max_tokens 32768 and 16384.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onevision.budget import ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.data.batch_sampler import ModalityLengthBatchSampler, SamplerConfig

MIX = (("image", 0.50), ("multi_image", 0.15), ("video", 0.20), ("text", 0.15))


def length_mix(count: int, seed: int) -> tuple[list[int], list[str]]:
    """(lengths, modalities) of `count` OneVision-shaped samples."""
    rng = np.random.default_rng(seed)
    settings = VisualSettings()
    names = [name for name, _ in MIX]
    modalities = rng.choice(names, size=count, p=[p for _, p in MIX]).tolist()
    lengths = []
    for modality in modalities:
        text = 30 + int(min(rng.lognormal(np.log(120), 1.0), 4000))
        if modality == "image":
            width, height = (int(v) for v in rng.integers(240, 2500, size=2))
            visual = plan_sample([ImageMedia(width, height)], settings).total
        elif modality == "multi_image":
            visual = 730 * int(rng.integers(2, 13))
        elif modality == "video":
            frames = 32 if rng.random() < 0.5 else int(rng.integers(8, 32))
            visual = plan_sample([VideoMedia(frames)], settings).total
        else:
            visual = 0
        lengths.append(visual + text)
    return lengths, modalities


def packed(lengths, modalities, max_tokens: int, window: int, group_by: str) -> tuple[float, int, float]:
    """(efficiency, rows, seconds to plan an epoch) of our packed sampler."""
    config = SamplerConfig(max_tokens=max_tokens, window=window, group_by=group_by)
    start = time.perf_counter()
    batches = list(ModalityLengthBatchSampler(lengths, modalities, config))
    seconds = time.perf_counter() - start
    used = sum(lengths[i] for b in batches for i in b)
    return used / (len(batches) * max_tokens), len(batches), seconds


def padded(lengths, batch_size: int, world_size: int, seed: int) -> float:
    """Efficiency of padding batches of `batch_size` samples to their longest.

    world_size 1: random batches. world_size > 1: LLaVA's length grouping, mega-batches of
    world_size * batch_size sorted by length and dealt to the ranks in chunks of batch_size.
    """
    values = np.asarray(lengths)[np.random.default_rng(seed).permutation(len(lengths))]
    mega = batch_size * world_size
    values = np.concatenate([np.sort(values[i : i + mega])[::-1] for i in range(0, len(values), mega)])
    slots = sum(len(values[i : i + batch_size]) * values[i : i + batch_size].max() for i in range(0, len(values), batch_size))
    return float(values.sum() / slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--world-size", type=int, default=8, help="ranks for LLaVA's length-grouped baseline")
    args = parser.parse_args()
    lengths, modalities = length_mix(args.samples, args.seed)
    counts = {name: modalities.count(name) for name, _ in MIX}
    print(f"{args.samples} samples {counts}; tokens per sample: mean {np.mean(lengths):.0f}, max {max(lengths)}")
    for max_tokens in (32768, 16384):
        kept = [n if n <= max_tokens else 0 for n in lengths]
        live = [n for n in kept if n]
        results = {group: packed(kept, modalities, max_tokens, args.window, group) for group in ("modality", "visual", "none")}
        eff, rows, seconds = results["modality"]
        per_row = max(1, round(len(live) / rows))
        pad_random = padded(live, per_row, 1, args.seed)
        pad_llava = padded(live, per_row, args.world_size, args.seed)
        print(f"\nmax_tokens {max_tokens}: {len(lengths) - len(live)} samples over it left out; ours packs {per_row} samples per row on average")
        print(f"  ours packed, group_by=modality (default)  {eff:7.2%}  ({rows} rows; epoch planned in {seconds:.2f}s)")
        print(f"  ours packed, group_by=visual (LLaVA's)    {results['visual'][0]:7.2%}")
        print(f"  ours packed, group_by=none                {results['none'][0]:7.2%}")
        print(f"  padding, random batches of {per_row:<2}            {pad_random:7.2%}   packed(modality)/padded = {eff / pad_random:.2f}x")
        print(
            f"  padding, LLaVA length-grouped, {args.world_size} ranks   {pad_llava:7.2%}   "
            f"packed(modality)/padded = {eff / pad_llava:.2f}x"
        )


if __name__ == "__main__":
    main()
