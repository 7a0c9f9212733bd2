"""`onevision video-qa`: ask questions about many videos, batched and resumable, into a JSONL file.

Examples:
    onevision video-qa --model ckpt --videos clips/ --question "What happens in this video?" --out answers.jsonl
    onevision video-qa --model ckpt --questions questions.jsonl --out answers.jsonl --batch-size 8
    onevision video-qa --model ckpt --videos clips/ --question "Which animal appears?" \\
        --options cat dog bird --choice-by letter --out choices.jsonl
    onevision video-qa --random-model debug --videos clips/ --question "What happens?" --out /tmp/try.jsonl

Questions: every video file under --videos (recursively; ids are the relative paths) with the
one --question, or a JSONL of {"id", "video", "question"[, "options"]} (--question is the default
for lines without one; relative video paths are read from the JSONL's folder).

Open questions are answered by generation (greedy unless --temperature > 0). Questions with
options are multiple choice, answered by likelihood, never by parsing text: with
--choice-by text (default) the question is used as written and each option's text (followed by
<|im_end|>) is scored, summed over its tokens; with --choice-by letter (the prompt the released
models were tuned on) the options are listed in the prompt as "A. cat", "B. dog", ... with
"Answer with the option's letter from the given choices directly." and the option whose letter
is most likely as the answer's first token wins.
The line then holds "answer" (the option), "choice" (its letter) and "scores" (log-likelihoods).

Output lines: {id, video, question, answer, [options, choice, scores], error?, seconds}, each
flushed as soon as it is known. Ids already in --out are skipped, so rerunning the same command
finishes an interrupted run (--retry-failed also asks again the ids that failed). A video that
cannot be decoded is recorded with its error and the run goes on. A summary (videos, answered,
failed, skipped, videos/s, decode vs generate time) ends the run; the exit status is 0 when the
run finished, failed videos included, and 2 on bad arguments, list file or checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onevision.cli.errors import InputError, bounded_int, reading, show_path, text
from onevision.cli.options import (
    MAX_BATCH,
    MAX_WORKERS,
    add_choice_by,
    add_command,
    add_device_options,
    add_generation_options,
    add_model_source,
    add_no_progress,
    add_seed,
    load_model_source,
)


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "video-qa", "answer questions about a folder or list of videos (batched, resumable) into JSONL", __doc__)
    add_model_source(parser)
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--videos", type=Path, metavar="DIR", help="folder of videos (searched recursively)")
    inputs.add_argument("--questions", type=Path, metavar="FILE", help="JSONL of {id, video, question[, options]}")
    parser.add_argument("--question", type=text, metavar="TEXT", help="the question for every video (default for JSONL lines without one)")
    parser.add_argument("--options", type=text, nargs="+", default=[], metavar="OPTION",
                        help="answer options for every video of --videos (multiple choice)")
    add_choice_by(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="output JSONL (appended to; ids in it are skipped)")
    parser.add_argument("--retry-failed", action="store_true", help="ask again the ids whose line in --out holds an error")
    parser.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=4, metavar="N", help=f"videos per model batch (default 4, at most {MAX_BATCH})")
    parser.add_argument("--decode-workers", type=bounded_int(0, MAX_WORKERS), default=2, metavar="N", help="threads decoding the next batch (default 2; 0: none)")
    add_generation_options(parser, max_new_tokens=64)
    add_seed(parser, "sampling (with --temperature > 0) and of a --random-model's weights")
    add_device_options(parser)
    add_no_progress(parser)
    parser.set_defaults(func=run)
    return parser


def load_questions(args: argparse.Namespace) -> list:
    """The questions the arguments ask, validated before any model is loaded."""
    from onevision.infer.video_qa import MAX_OPTIONS, VIDEO_EXTENSIONS, questions_from_folder, questions_from_jsonl

    if args.question is not None and not args.question.strip():
        raise InputError("--question is empty")
    if any(not option.strip() for option in args.options):
        raise InputError(f"--options must be non-empty strings, got {args.options}")
    if args.options and not 2 <= len(args.options) <= MAX_OPTIONS:
        raise InputError(f"--options: multiple choice needs 2 to {MAX_OPTIONS} options (letters A-Z), got {len(args.options)}")
    if args.videos is not None:
        if not args.question:
            raise InputError("--videos needs --question")
        if not args.videos.is_dir():
            raise InputError(f"--videos {show_path(args.videos)} is not a folder")
        questions = questions_from_folder(args.videos, args.question, args.options)
        if not questions:
            raise InputError(f"--videos {show_path(args.videos)} holds no video files (by extension: {', '.join(VIDEO_EXTENSIONS)})")
        return questions
    if args.options:
        raise InputError("with --questions, give options per line in the JSONL")
    if not args.questions.is_file():
        raise InputError(f"--questions {show_path(args.questions)} is not a file")
    with reading("--questions", args.questions):
        questions = questions_from_jsonl(args.questions, args.question)
    if not questions:
        raise InputError(f"--questions {show_path(args.questions)} holds no questions (every line is blank)")
    return questions


def run(args: argparse.Namespace) -> int:
    """Answer every pending question; 0 when the run finished (failed videos included)."""
    from onevision.infer.video_qa import check_output, run_video_qa

    questions = load_questions(args)
    with reading("--out", args.out):
        check_output(args.out)
    pipe = load_model_source(args)
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
    if summary.failures:
        print(summary.failures_text(), file=sys.stderr)
    print(f"answers in {show_path(args.out)}")
    return 0
