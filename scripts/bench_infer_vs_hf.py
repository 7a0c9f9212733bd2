"""Answering with a transformers-saved checkpoint: our pipeline against transformers' `generate`.

    python scripts/bench_infer_vs_hf.py                          # 0.5B shape, fp32, image / 4 images / 32-frame video
    python scripts/bench_infer_vs_hf.py --scenarios image --max-new-tokens 8
    python scripts/bench_infer_vs_hf.py --size debug --frames 4  # a tiny model, seconds (the smoke test)

Builds a random model of the requested shape with the real Qwen2 vocabulary, saves it with
transformers (`LlavaOnevisionForConditionalGeneration.save_pretrained`, tokenizer beside it),
then answers the same question three ways - one 640x480 image, a set of four images, a video of
--frames frames - once with `OneVision.from_pretrained(...).generate_prepared` and once with
transformers (`from_pretrained`, its PIL image processor, its `generate`). Each side runs in its
own child process, so the peak resident memory it reports (`ru_maxrss`) is its own; the sides
alternate per scenario. Both decode greedily; the script checks both saw the same prompt ids and
reports whether they produced the same tokens.

transformers' video processor needs torchvision (absent on CPU machines), so the video frames
it gets are resized straight to the tile size and normalised by hand, as its processor does.

Prints, per scenario: prompt tokens, seconds to answer (load excluded, best of --repeats),
load seconds, peak RSS, and the ratios ours / transformers (< 1 means ours is faster/smaller).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

QUESTION = "Describe what you see."
SCENARIOS = ("image", "images", "video")


def make_media(scenario: str, frames: int):
    """Deterministic inputs: a 640x480 image, four images of varied sizes, or uint8 [F, 360, 640, 3] frames."""
    rng = np.random.default_rng(0)

    def picture(width: int, height: int) -> Image.Image:
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        pixels = np.stack([np.tile(ramp, (height, 1)), np.tile(np.linspace(255, 0, height)[:, None], (1, width)),
                           rng.uniform(0, 255, (height, width))], -1)
        return Image.fromarray(pixels.astype(np.uint8), "RGB")

    if scenario == "image":
        return {"images": [picture(640, 480)]}
    if scenario == "images":
        return {"images": [picture(640, 480), picture(480, 640), picture(800, 600), picture(512, 512)]}
    return {"video": rng.integers(0, 256, (frames, 360, 640, 3), dtype=np.uint8)}


def build_checkpoint(folder: Path, size: str) -> None:
    """A random model of preset `size`, sized for the Qwen2 vocabulary, saved by transformers."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from onevision.tokenizer import build_qwen2_tokenizer
    from onevision.train.model_init import fresh_config

    tokenizer = build_qwen2_tokenizer()
    hf_config = fresh_config(size, tokenizer).to_hf()
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(hf_config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run_ours(folder: Path, media: dict, args) -> dict:
    # Imported before the clock starts, as transformers' side imports its model class first.
    import onevision.checkpoint  # noqa: F401
    import onevision.model.onevision  # noqa: F401
    from onevision.infer.pipeline import OneVision

    began = time.perf_counter()
    pipe = OneVision.from_pretrained(folder, dtype=getattr(torch, args.dtype))
    loaded = time.perf_counter() - began
    request = {"question": QUESTION, **media}
    best, tokens, prompt = float("inf"), None, None
    for _ in range(args.repeats):
        began = time.perf_counter()
        prepared = pipe.prepare(request)
        out = pipe.generate_prepared([prepared], pipe.generation_settings(max_new_tokens=args.max_new_tokens))[0]
        best = min(best, time.perf_counter() - began)
        tokens, prompt = out.tolist(), prepared.input_ids.tolist()
    return {"load_s": loaded, "answer_s": best, "prompt": prompt, "tokens": tokens}


def run_transformers(folder: Path, media: dict, args) -> dict:
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

    began = time.perf_counter()
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(folder, dtype=getattr(torch, args.dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = model.config
    side = config.vision_config.image_size
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    # The processor object itself cannot be built without torchvision (its video processor);
    # its placeholder arithmetic is used as is, on an instance given the attributes it reads.
    processor = object.__new__(LlavaOnevisionProcessor)
    processor.image_processor, processor.tokenizer = image_processor, tokenizer
    processor.num_image_tokens = (side // config.vision_config.patch_size) ** 2
    processor.vision_feature_select_strategy, processor.vision_aspect_ratio = "full", config.vision_aspect_ratio
    processor.image_token, processor.video_token = "<image>", "<video>"
    loaded = time.perf_counter() - began
    kind = "video" if "video" in media else "image"
    parts = [{"type": kind} for _ in media.get("images", [None])] + [{"type": "text", "text": QUESTION}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True)
    best, tokens, prompt = float("inf"), None, None
    for _ in range(args.repeats):
        began = time.perf_counter()
        if kind == "image":
            visual = dict(image_processor([media["images"]], return_tensors="pt"))
            expansions = iter(processor.replace_image_token(visual, i) for i in range(len(media["images"])))
        else:
            frames = [np.asarray(Image.fromarray(f).resize((side, side), Image.BICUBIC), dtype=np.float32) / 255.0 for f in media["video"]]
            visual = {"pixel_values_videos": ((torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2) - 0.5) / 0.5)[None]}
            expansions = iter([processor.replace_video_token(visual, 0)])
        placeholder = "<image>" if kind == "image" else "<video>"
        pieces = text.split(placeholder)
        expanded = pieces[0] + "".join(next(expansions) + piece for piece in pieces[1:])
        ids = tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"]
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **visual}
        inputs = {k: v.to(getattr(torch, args.dtype)) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=args.max_new_tokens, pad_token_id=0,
                                 eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
        best = min(best, time.perf_counter() - began)
        prompt = ids[0].tolist()
        tokens = out[0, len(prompt):].tolist()
    return {"load_s": loaded, "answer_s": best, "prompt": prompt, "tokens": tokens}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    media = make_media(args.scenario, args.frames)
    result = (run_ours if args.child == "ours" else run_transformers)(Path(args.folder), media, args)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report the
    # parent's peak (the checkpoint build) whenever that is higher.
    with open("/proc/self/status") as status:
        peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    result["peak_rss_mb"] = peak_kb / 1024
    print("RESULT " + json.dumps(result))


def spawn(side: str, scenario: str, folder: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", side, "--folder", str(folder), "--scenario", scenario,
               "--frames", str(args.frames), "--max-new-tokens", str(args.max_new_tokens), "--dtype", args.dtype,
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"bench_infer_vs_hf: the {side} run on {scenario} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.5b", help="model preset shape (default 0.5b; debug for a smoke run)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--frames", type=int, default=32, help="video frames (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="answers per side, the fastest counting (default 1)")
    parser.add_argument("--folder", help="an existing checkpoint folder to use instead of building one")
    parser.add_argument("--build", metavar="DIR", help="only build and save the checkpoint into DIR")
    parser.add_argument("--child", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.build:
        build_checkpoint(Path(args.build), args.size)
        return
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "checkpoint"
        if not args.folder:
            began = time.perf_counter()
            # In a child, so this process stays small while the sides run.
            subprocess.run([sys.executable, __file__, "--build", str(folder), "--size", args.size], check=True)
            print(f"checkpoint: {args.size} shape, random weights, saved by transformers in {time.perf_counter() - began:.0f} s")
        print(f"{args.dtype}, {args.threads} threads, {args.max_new_tokens} new tokens, greedy; each side in its own process\n")
        header = f"{'scenario':<8} {'prompt':>7} | {'answer s':>17} {'ratio':>6} | {'load s':>13} | {'peak RSS MB':>17} {'ratio':>6} | same"
        print(header)
        print(f"{'':<8} {'tokens':>7} | {'ours':>8} {'transf.':>8} {'':>6} | {'ours':>6} {'tr.':>6} | {'ours':>8} {'transf.':>8}")
        print("-" * len(header))
        for scenario in args.scenarios:
            ours = spawn("ours", scenario, folder, args)
            theirs = spawn("transformers", scenario, folder, args)
            if ours["prompt"] != theirs["prompt"]:
                sys.exit(f"bench_infer_vs_hf: {scenario}: the two sides built different prompts ({len(ours['prompt'])} vs {len(theirs['prompt'])} ids)")
            same = ours["tokens"] == theirs["tokens"][: len(ours["tokens"])]
            print(f"{scenario:<8} {len(ours['prompt']):>7} | {ours['answer_s']:>8.2f} {theirs['answer_s']:>8.2f} "
                  f"{ours['answer_s'] / theirs['answer_s']:>6.2f} | {ours['load_s']:>6.1f} {theirs['load_s']:>6.1f} | "
                  f"{ours['peak_rss_mb']:>8.0f} {theirs['peak_rss_mb']:>8.0f} {ours['peak_rss_mb'] / theirs['peak_rss_mb']:>6.2f} | {same}")
        print("\nratio = ours / transformers: time ratio <= 1.0 and memory ratio <= 0.7 are the targets")


if __name__ == "__main__":
    main()
