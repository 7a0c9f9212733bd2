"""Benchmark: packed bf16 training of a 0.5B-shaped random model on one CUDA GPU.

    python scripts/bench_gpu_train.py                                 # 0.5b, rows of 16384 tokens
    python scripts/bench_gpu_train.py --row-tokens 32768 --steps 20 --no-grad-ckpt
    python scripts/bench_gpu_train.py --size 7b --row-tokens 8192     # needs ~130 GB: use ZeRO for real runs
    python scripts/bench_gpu_train.py --cpu-check                     # debug size on CPU: checks the script only

Trains `OneVisionModel(preset(size))` with random weights the way `onevision train` does one
rank: fp32 master weights, bf16 autocast, AdamW, gradient checkpointing, packed rows (best-fit
decreasing) with the flash kernels ('auto' attention: flash-attn's varlen kernel when
installed, else torch.nn.attention.varlen), LM head on labelled rows only. Samples are
synthetic and OneVision-shaped at 384 px: single images under AnyRes-Max-9 (random sizes),
2-4 images at base size, 8-32-frame videos, text-only chats; the answers (~20% of tokens)
are supervised.

Prints, over the timed steps (after warm-up): useful tokens/s (decoder tokens, no padding),
model FLOPs utilisation and peak memory. Model FLOPs per step (no recomputation counted):
- decoder: 6 x (decoder parameters without embedding and head) x tokens, plus causal
  attention 6 x L x d x sum(n_i^2) over the samples;
- LM head: 6 x V x d x labelled rows (it runs on those only);
- vision tower and projector: 6 x (tower + projector parameters) x 729 patches per tile, plus
  bidirectional attention 12 x L_v x d_v x 729^2 per tile.
Peak bf16 dense FLOP/s is looked up from the GPU's name (H100/H200 989 TFLOP/s, A100 312, ...)
or given with --peak-tflops. Without CUDA the script says so and exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time

import torch

PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "A10": 125.0, "4090": 165.2}


def synthetic_samples(config, count: int, seed: int = 0) -> list:
    """OneVision-shaped samples (tokens, labels, random tiles, plans) for `config`'s tower and ids."""
    from onevision.budget import ImageMedia, VideoMedia, plan_sample
    from onevision.data.dataset import Sample

    settings = dataclasses.replace(config.visual, anyres_max=9, max_grid=6, frames_upbound=32)
    side = settings.image_size
    rng = random.Random(seed)
    # One random tile viewed many times: pixels cost nothing until a batch is collated.
    tile = torch.randn(1, 3, side, side)
    mix = (("image", 0.45), ("multi_image", 0.20), ("video", 0.20), ("text", 0.15))
    samples = []
    for index in range(count):
        modality = rng.choices([m for m, _ in mix], [w for _, w in mix])[0]
        if modality == "image":
            media = [ImageMedia(rng.randint(side // 2, side * 4), rng.randint(side // 2, side * 4))]
        elif modality == "multi_image":
            media = [ImageMedia(rng.randint(side // 2, side * 2), rng.randint(side // 2, side * 2)) for _ in range(rng.randint(2, 4))]
        elif modality == "video":
            media = [VideoMedia(rng.randint(8, 32))]
        else:
            media = []
        plan = plan_sample(media, settings)
        visual = []
        for item in plan.items:
            visual += [config.video_token_id if item.kind == "video" else config.image_token_id] * item.tokens
        top = min(30000, config.text.vocab_size - 3)
        prompt = [rng.randint(10, top) for _ in range(rng.randint(20, 200))]
        answer = [rng.randint(10, top) for _ in range(rng.randint(200, 2000) if not visual else max(64, len(visual) // 4))]
        ids = prompt[:5] + visual + prompt[5:] + answer
        labels = [-100] * (len(ids) - len(answer)) + answer
        tiles = sum(item.num_tiles for item in plan.items)
        samples.append(Sample(
            id=str(index), input_ids=torch.tensor(ids), labels=torch.tensor(labels),
            pixel_values=tile.expand(tiles, -1, -1, -1) if tiles else None,
            plans=list(plan.items), modality=modality, num_tokens=len(ids),
        ))
    return samples


def step_flops(model, batch) -> float:
    """Model FLOPs of one training step on `batch` (see module docstring)."""
    config = model.config
    text, vision = config.text, config.vision
    decoder_layers = sum(p.numel() for p in model.language_model.model.layers.parameters())
    lengths = [n for _, _, n in batch.spans]
    flops = 6 * decoder_layers * sum(lengths)
    flops += 6 * text.num_hidden_layers * text.hidden_size * sum(n * n for n in lengths)
    labelled = int((batch.labels[:, 1:] != -100).sum())
    flops += 6 * text.vocab_size * text.hidden_size * labelled
    if batch.visual is not None:
        patches = (vision.image_size // vision.patch_size) ** 2
        tiles = batch.visual.num_tiles
        tower = sum(p.numel() for p in model.vision_tower.parameters()) + sum(p.numel() for p in model.projector.parameters())
        flops += 6 * tower * patches * tiles
        flops += 12 * model.vision_tower.depth * vision.hidden_size * patches * patches * tiles
    return float(flops)


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.5b", help="model preset: 0.5b, 7b, 72b (debug with --cpu-check)")
    parser.add_argument("--row-tokens", type=int, default=16384, help="packed row length")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--no-grad-ckpt", action="store_true", help="keep activations instead of recomputing them")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    parser.add_argument("--cpu-check", action="store_true", help="run the debug size on CPU for a few steps (checks the script, figures meaningless)")
    args = parser.parse_args()

    if not torch.cuda.is_available() and not args.cpu_check:
        print("bench_gpu_train: no CUDA device is visible (torch.cuda.is_available() is False); "
              "this benchmark measures GPU training. Run it on a machine with an NVIDIA GPU "
              "(or pass --cpu-check to exercise the script on the debug size).", file=sys.stderr)
        return 1

    from onevision.data.collate import CollateConfig, Collator
    from onevision.data.packing import best_fit_decreasing
    from onevision.model import OneVisionModel, preset
    from onevision.train.attention import (
        PACKED_KERNELS,
        resolve_attention,
        set_decoder_attention,
    )
    from onevision.train.config import OptimSection
    from onevision.train.engine import TorchEngine, start_runtime
    from onevision.train.loss_module import LossModule, model_inputs

    size = "debug" if args.cpu_check else args.size
    row_tokens = min(args.row_tokens, 2048) if args.cpu_check else args.row_tokens
    device = "cpu" if args.cpu_check else "cuda"
    torch.manual_seed(0)
    config = preset(size)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, max_position_embeddings=max(row_tokens, config.text.max_position_embeddings)))
    runtime = start_runtime(device)
    with torch.device(runtime.device):
        model = OneVisionModel(config)
    attention = resolve_attention("auto", runtime.device)
    set_decoder_attention(model.language_model, attention)
    if not args.no_grad_ckpt:
        model.gradient_checkpointing_enable()
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 1e-5, "weight_decay": 0.0, "name": "default"}]
    module = LossModule(model, chunk_rows=4096, packed_kernel=attention in PACKED_KERNELS)
    total = args.warmup + args.steps
    engine = TorchEngine(module, groups, OptimSection(), total, 1, runtime, bf16=device == "cuda")

    samples = [s for s in synthetic_samples(config, 16 * total) if s.num_tokens <= row_tokens]
    collator = Collator(0, CollateConfig(pack=True, max_tokens=row_tokens, pad_to_multiple_of=64))
    bins = best_fit_decreasing([s.num_tokens for s in samples], row_tokens)
    rows = [collator([samples[i] for i in b]) for b in bins[:total]]
    if len(rows) < total:
        raise SystemExit(f"only {len(rows)} packed rows for {total} steps; lower --steps or --row-tokens")

    params = sum(p.numel() for p in model.parameters())
    print(f"model {size}: {params / 1e9:.2f}B parameters, attention {attention}, gradient checkpointing {not args.no_grad_ckpt}")
    print(f"rows of {row_tokens} tokens, {args.warmup} warm-up + {args.steps} timed steps on {runtime.device}")
    tokens = flops = 0.0
    for index, batch in enumerate(rows):
        if index == args.warmup:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        loss, _, _ = engine(**model_inputs(batch, runtime.device))
        engine.backward(loss)
        engine.step()
        if index >= args.warmup:
            tokens += batch.num_tokens
            flops += step_flops(model, batch)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"loss {float(loss.detach()):.3f}; {tokens:.0f} useful tokens in {seconds:.2f}s: {tokens / seconds:,.0f} tokens/s")
    achieved = flops / seconds / 1e12
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = peak_tflops(name, args.peak_tflops)
        mfu = f"{achieved / peak:.1%} of {peak:g} TFLOP/s" if peak else "unknown peak (pass --peak-tflops)"
        print(f"{name}: {achieved:.1f} model TFLOP/s, MFU {mfu}; peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    else:
        print(f"CPU check: {achieved * 1e3:.2f} model GFLOP/s (no MFU off CUDA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
