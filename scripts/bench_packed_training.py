"""Benchmark: useful tokens per second of packed rows against padded batches, same samples.

    python scripts/bench_packed_training.py                      # 160 samples, rows of 2048
    python scripts/bench_packed_training.py --samples 320 --row-tokens 4096 --batch-size 8

Synthetic samples shaped like the OneVision mix for the debug model (64 px tiles, 8 px
patches): single images of random sizes under AnyRes-Max-9, 2-4 images at base size, videos
of 4-8 frames, and text-only chats, in the stage-2 proportions of arXiv 2408.03326 (roughly
45% single image, 20% multi-image, 20% video, 15% text). Token counts come from the planner
(`onevision.budget.plan_sample`), text runs are random ids, the answer part is supervised.

Every variant trains the same samples for one epoch with the real training path (collator,
`LossModule`, AdamW through `TorchEngine`):
- packed rows of `--row-tokens` (best-fit decreasing, position_ids restarting per sample),
  attention by SDPA sample by sample (`onevision_sdpa_segments`, what 'auto' picks on CPU)
  and by SDPA with transformers' derived block-diagonal mask (`sdpa`);
- padded batches of `--batch-size` samples in random order (the usual padded baseline) and in
  LLaVA's length-grouped order (group_by_modality_length), with SDPA and a padding mask.
Useful tokens are the samples' real tokens (padding excluded); the figure is useful tokens
per second of training-step wall time, after one warm-up step. Variants take turns for
`--rounds` rounds and each keeps its fastest epoch, so a busy machine hurts them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch

from onevision.budget import ImageMedia, VideoMedia, plan_sample
from onevision.data.collate import CollateConfig, Collator
from onevision.data.dataset import Sample
from onevision.data.packing import best_fit_decreasing
from onevision.model import OneVisionModel, preset
from onevision.train.attention import SEGMENT_SDPA, set_decoder_attention
from onevision.train.config import OptimSection
from onevision.train.engine import TorchEngine, start_runtime
from onevision.train.loss_module import LossModule, model_inputs

MIX = (("image", 0.45), ("multi_image", 0.20), ("video", 0.20), ("text", 0.15))
PAD_ID = 0


def synthetic_samples(count: int, seed: int = 0) -> list[Sample]:
    """`count` samples of the OneVision mix for the debug model's tiles and vocabulary."""
    config = preset("debug")
    settings = dataclasses.replace(config.visual, anyres_max=9, max_grid=6, frames_upbound=8)
    rng = random.Random(seed)
    samples = []
    for index in range(count):
        modality = rng.choices([m for m, _ in MIX], [w for _, w in MIX])[0]
        if modality == "image":
            media = [ImageMedia(rng.randint(32, 400), rng.randint(32, 400))]
        elif modality == "multi_image":
            media = [ImageMedia(rng.randint(32, 200), rng.randint(32, 200)) for _ in range(rng.randint(2, 4))]
        elif modality == "video":
            media = [VideoMedia(rng.randint(4, 8))]
        else:
            media = []
        plan = plan_sample(media, settings)
        prompt, answer = rng.randint(16, 120), rng.randint(8, 300 if modality == "text" else 120)
        visual_ids = []
        for item in plan.items:
            token = config.video_token_id if item.kind == "video" else config.image_token_id
            visual_ids += [token] * item.tokens
        prompt_ids = [rng.randint(10, 500) for _ in range(prompt)]
        answer_ids = [rng.randint(10, 500) for _ in range(answer)]
        ids = prompt_ids[:4] + visual_ids + prompt_ids[4:] + answer_ids
        labels = [-100] * (len(ids) - answer) + answer_ids
        tiles = sum(item.num_tiles for item in plan.items)
        pixels = torch.randn(tiles, 3, settings.image_size, settings.image_size) if tiles else None
        samples.append(Sample(
            id=str(index), input_ids=torch.tensor(ids), labels=torch.tensor(labels), pixel_values=pixels,
            plans=list(plan.items), modality=modality if modality != "image" else "image", num_tokens=len(ids),
        ))
    return samples


def batches(samples: list[Sample], mode: str, row_tokens: int, batch_size: int, seed: int = 0):
    """The epoch's batches: packed rows, padded in random order, or padded length-grouped."""
    if mode == "packed":
        collator = Collator(PAD_ID, CollateConfig(pack=True, max_tokens=row_tokens))
        bins = best_fit_decreasing([s.num_tokens for s in samples], row_tokens)
        return [collator([samples[i] for i in b]) for b in bins]
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    if mode == "padded-grouped":
        order.sort(key=lambda i: samples[i].num_tokens)
    collator = Collator(PAD_ID, CollateConfig(pack=False))
    return [collator([samples[i] for i in order[k : k + batch_size]]) for k in range(0, len(order), batch_size)]


def train_epoch(epoch_batches, attention: str, seed: int = 0) -> tuple[float, int, int]:
    """Seconds of training steps (after a warm-up step), useful tokens and token slots."""
    torch.manual_seed(seed)
    model = OneVisionModel(preset("debug"))
    set_decoder_attention(model.language_model, attention)
    groups = [{"params": list(model.parameters()), "lr": 1e-4, "weight_decay": 0.0, "name": "default"}]
    runtime = start_runtime("cpu")
    module = LossModule(model, chunk_rows=4096, packed_kernel=attention == SEGMENT_SDPA)
    engine = TorchEngine(module, groups, OptimSection(), len(epoch_batches) + 1, 1, runtime, bf16=False)

    def step(batch):
        loss, _, _ = engine(**model_inputs(batch, runtime.device))
        engine.backward(loss)
        engine.step()

    step(epoch_batches[0])
    start = time.perf_counter()
    for batch in epoch_batches:
        step(batch)
    seconds = time.perf_counter() - start
    return seconds, sum(b.num_tokens for b in epoch_batches), sum(b.input_ids.numel() for b in epoch_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--row-tokens", type=int, default=2048, help="packed row length")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per padded batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant; the fastest epoch counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = synthetic_samples(args.samples)
    lengths = sorted(s.num_tokens for s in samples)
    counts = {m: sum(s.modality == m for s in samples) for m, _ in MIX}
    print(f"{len(samples)} samples {counts}; tokens per sample min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    print(f"{'variant':<16} {'batches':>7} {'useful tok':>10} {'slots':>8} {'padding':>8} {'seconds':>8} {'useful tok/s':>12}")
    variants = {
        "packed": ("packed", SEGMENT_SDPA),
        "packed-mask": ("packed", "sdpa"),
        "padded-random": ("padded-random", "sdpa"),
        "padded-grouped": ("padded-grouped", "sdpa"),
    }
    epochs = {name: batches(samples, mode, args.row_tokens, args.batch_size) for name, (mode, _) in variants.items()}
    best = {}
    for _ in range(args.rounds):
        for name, (_, attention) in variants.items():
            seconds, useful, slots = train_epoch(epochs[name], attention)
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, useful, slots)
    rates = {}
    for name, (seconds, useful, slots) in best.items():
        rates[name] = useful / seconds
        print(f"{name:<16} {len(epochs[name]):>7} {useful:>10} {slots:>8} {1 - useful / slots:>8.1%} {seconds:>8.2f} {rates[name]:>12.0f}")
    for packed in ("packed", "packed-mask"):
        for padded in ("padded-random", "padded-grouped"):
            print(f"{packed} / {padded}: {rates[packed] / rates[padded]:.2f}x useful tokens per second")


if __name__ == "__main__":
    main()
