"""`onevision generate`: answer one prompt about images, a video, or nothing.

Examples:
    onevision generate --random-model debug --prompt "What is shown?"       # random debug model, seconds
    onevision generate --model ckpt --image cat.jpg --prompt "What is shown?"
    onevision generate --model ckpt --image a.jpg --image b.jpg --prompt "What differs?"
    onevision generate --model ckpt --video clip.mp4 --prompt "What happens?" --temperature 0.7 --seed 0

--model is any checkpoint folder `onevision convert` reads (transformers' llava_onevision or the
original LLaVA-NeXT layout) with its tokenizer saved beside the weights. --random-model debug
builds a random debug-size model and a tiny tokenizer in memory (nothing downloaded): its
answers are noise, it shows that the whole path runs. One image is read with AnyRes, several at
base resolution each, a video as uniformly sampled frames. Greedy unless --temperature > 0.
"""

from __future__ import annotations

import argparse
import sys

from onevision.cli.errors import bounded_float, text
from onevision.cli.options import add_command, add_device_options, add_generation_options, add_model_source, add_seed, load_model_source


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "generate", "answer a prompt about images or a video with a checkpoint (or a random debug model)", __doc__)
    add_model_source(parser)
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--image", action="append", default=[], metavar="FILE", help="an image (repeat for several)")
    media.add_argument("--video", metavar="PATH", help="a video file or a folder of frames")
    parser.add_argument("--prompt", type=text, required=True, metavar="TEXT", help="the question; <image>/<video> placeholders optional")
    add_generation_options(parser, max_new_tokens=128)
    parser.add_argument("--top-p", type=bounded_float(0.0, 1.0, low_open=True), default=1.0, metavar="P", help="nucleus sampling threshold (default 1.0: off)")
    add_seed(parser, "sampling (with --temperature > 0) and of a --random-model's weights")
    add_device_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the answer; 0 on success. Bad input (checkpoint, media, settings) raises for main() to report."""
    pipe = load_model_source(args)
    answer = pipe.ask(
        args.prompt,
        images=args.image,
        video=args.video,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if args.random_model:
        print("(random debug model: the answer is noise)", file=sys.stderr)
    print(answer)
    return 0
