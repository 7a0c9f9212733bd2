"""`onevision video-qa`: ask questions about many videos, batched and resumable, into a JSONL file.

    onevision video-qa --model ckpt --videos clips/ --question "What happens in this video?" --out answers.jsonl
    onevision video-qa --model ckpt --questions questions.jsonl --out answers.jsonl --batch-size 8
    onevision video-qa --model ckpt --videos clips/ --question "Which animal appears?" \\
        --options cat dog bird --out choices.jsonl

Questions: every video file under --videos (recursively; ids are the relative paths) with the
one --question, or a JSONL of {"id", "video", "question"[, "options"]} (--question is the default
for lines without one; relative video paths are read from the JSONL's folder).

Open questions are answered by generation (greedy unless --temperature > 0). Questions with
options are multiple choice, answered by likelihood, never by parsing text: with
--choice-by letter (default) the options are listed in the prompt as "A. cat", "B. dog", ...
with "Answer with the option's letter from the given choices directly." and the option whose
letter is most likely as the answer's first token wins; with --choice-by text the question is
used as written and each option's text (followed by <|im_end|>) is scored, summed over its tokens.
The line then holds "answer" (the option), "choice" (its letter) and "scores" (log-likelihoods).

Output lines: {id, video, question, answer, [options, choice, scores], error?, seconds}.
Ids already in --out are skipped, so rerunning the same command finishes an interrupted run
(--retry-failed also asks again the ids that failed). A video that cannot be decoded is recorded
with its error and the run goes on. A summary (videos, answered, failed, skipped, videos/s,
decode vs generate time) ends the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onevision.checkpoint import CheckpointError
from onevision.cli.options import add_device_options, add_model_source


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "video-qa",
        help="answer questions about a folder or list of videos (batched, resumable) into JSONL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(parser, "a random debug model (for trying the command)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--videos", type=Path, help="folder of videos (searched recursively)")
    inputs.add_argument("--questions", type=Path, help="JSONL of {id, video, question[, options]}")
    parser.add_argument("--question", help="the question for every video (default for JSONL lines without one)")
    parser.add_argument("--options", nargs="+", default=[], help="answer options for every video of --videos (multiple choice)")
    parser.add_argument("--choice-by", choices=["letter", "text"], default="letter", help="how options are scored (default letter)")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL (appended to; ids in it are skipped)")
    parser.add_argument("--retry-failed", action="store_true", help="ask again the ids whose line in --out holds an error")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per model batch (default 4)")
    parser.add_argument("--decode-workers", type=int, default=2, help="threads decoding the next batch (default 2; 0: none)")
    parser.add_argument("--num-frames", type=int, default=None, help="frames sampled per video (default: the checkpoint's frames_upbound)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens per open answer (default 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes greedily (default); > 0 samples")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (and the debug model's weights)")
    add_device_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Answer every pending question; 0 when the run finished (failed videos included), 1/2 on setup errors."""
    from onevision.infer.debug import load_pipeline
    from onevision.infer.pipeline import InferenceConfig, TokenizerNotFound
    from onevision.infer.video_qa import questions_from_folder, questions_from_jsonl, run_video_qa

    if args.batch_size < 1:
        print(f"onevision video-qa: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        if args.videos is not None:
            if not args.question:
                print("onevision video-qa: error: --videos needs --question", file=sys.stderr)
                return 2
            questions = questions_from_folder(args.videos, args.question, args.options)
        else:
            if args.options:
                print("onevision video-qa: error: with --questions, give options per line in the JSONL", file=sys.stderr)
                return 2
            questions = questions_from_jsonl(args.questions, args.question)
        pipe = load_pipeline(
            args.model,
            args.model_size,
            device=args.device,
            dtype=args.dtype,
            config=InferenceConfig(num_frames=args.num_frames),
            seed=args.seed or 0,
        )
    except (FileNotFoundError, ValueError, CheckpointError, TokenizerNotFound) as error:
        print(f"onevision video-qa: error: {error}", file=sys.stderr)
        return 1
    summary = run_video_qa(
        pipe,
        questions,
        args.out,
        batch_size=args.batch_size,
        choice_by=args.choice_by,
        decode_workers=args.decode_workers,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(summary.text())
    print(f"answers in {args.out}")
    return 0
