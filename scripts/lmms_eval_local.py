"""Run the real `lmms-eval` command on a tiny onevision checkpoint and local tasks, offline, and check what it writes.

    python scripts/lmms_eval_local.py                 # a temporary work folder, removed afterwards
    python scripts/lmms_eval_local.py --workdir runs/lmms-local --keep

lmms-eval exits 0 even when an evaluation fails, so this script checks the files it writes.
It builds, in the work folder:
- a random debug-size checkpoint with its tokenizer (`onevision.infer.debug_model.save_debug_checkpoint`);
- media (PNG images, an MP4 video, a broken image) and one JSONL dataset per task in data/;
then runs, with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1,

    lmms-eval --model onevision --model_args pretrained=<work>/ckpt --tasks ovl_image,... \\
        --include_path scripts/lmms_eval_tasks --output_path <work>/out --log_samples --device cpu --batch_size 2

over the tasks of scripts/lmms_eval_tasks (image, video, several images, multiple choice,
perplexity, multi-round; and one task of each request type with a bad document), and checks:
- every task has results; the answers of the generation tasks are the pipeline's own;
- multiple choice: accuracy 1.0, the gold of each document being the option the model itself
  scores highest (computed here, from the pipeline, when the dataset is written);
- perplexity equals exp(-mean log-probability) of the answers as the pipeline scores them;
- multi-round: every round answered;
- the bad documents (two placeholders for one image, a missing video, a broken image) are
  logged and scored as misses, and every other document of their tasks is scored as usual.
Exit status: 0 all checks pass, 1 a check failed (the message says which), 2 lmms-eval
cannot run here (not installed, or an installed filelock it cannot import).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "scripts" / "lmms_eval_tasks"
TASKS = ("ovl_image", "ovl_video", "ovl_images", "ovl_choice", "ovl_perplexity", "ovl_rounds",
         "ovl_bad_generate", "ovl_bad_choice", "ovl_bad_perplexity", "ovl_bad_rounds")
OPTIONS = ["red", "green", "blue", "yellow"]
MAX_NEW_TOKENS = 8  # as the task templates set it


class CheckFailed(Exception):
    """A result that is not what it should be."""


def write_media(data: Path) -> dict[str, str]:
    """Two PNG images, a 12-frame MP4 and a broken PNG; paths relative to the work folder."""
    import av

    rng = np.random.default_rng(0)
    for name, (height, width) in {"a.png": (40, 70), "b.png": (48, 32)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(data / name)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with av.open(str(data / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(12):
            pixels = np.full((24, 32, 3), (index * 20, 255 - index * 20, 128), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())
    return {"a": "data/a.png", "b": "data/b.png", "video": "data/clip.mp4", "broken": "data/broken.png", "missing": "data/missing.mp4"}


def documents(pipe, work: Path, media: dict[str, str]) -> dict[str, list[dict]]:
    """Every task's documents; multiple-choice golds from the model's own scores."""
    image, video = [media["a"]], media["video"]
    docs = {
        "ovl_image": [{"images": image, "question": "What is shown in the image?", "answer": "red"},
                      {"images": [media["b"]], "question": "What colour is the triangle?", "answer": "green"}],
        "ovl_video": [{"video": video, "question": "Describe the video.", "answer": "a square"}],
        "ovl_images": [{"images": [media["a"], media["b"]], "question": "Which image has more objects?", "answer": "second"}],
        "ovl_perplexity": [{"images": image, "question": "What is shown?", "answer": "A red circle."},
                           {"video": video, "question": "What happens next?", "answer": "The circle stops."}],
        "ovl_rounds": [{"images": image, "question": "What is shown?", "follow_ups": ["And the colour?", "How many?"], "answer": ""},
                       {"video": video, "question": "Describe the video.", "follow_ups": ["What happens next?"], "answer": ""}],
        "ovl_bad_generate": [{"images": image, "question": "What is shown?", "answer": "red"},
                             {"images": image, "question": "<image> or <image>: which is larger?", "answer": "left"},
                             {"video": media["missing"], "question": "Describe the video.", "answer": "a square"}],
        "ovl_bad_perplexity": [{"images": image, "question": "What is shown?", "answer": "A red circle."},
                               {"images": [media["broken"]], "question": "What is shown?", "answer": "A red circle."}],
        "ovl_bad_rounds": [{"images": image, "question": "What is shown?", "follow_ups": ["And the colour?"], "answer": ""},
                           {"video": media["missing"], "question": "Describe the video.", "follow_ups": ["Why?"], "answer": ""}],
    }
    choice = [{"images": image, "question": "What colour is the circle?"},
              {"video": video, "question": "What moves in the video?"},
              {"images": [media["a"], media["b"]], "question": "Which colour appears in both images?"}]
    docs["ovl_choice"] = [dict(d, choices=OPTIONS, gold=_likeliest(pipe, work, d)) for d in choice]
    bad_gold = _likeliest(pipe, work, choice[0])
    docs["ovl_bad_choice"] = [dict(choice[0], choices=OPTIONS, gold=bad_gold),
                              {"images": [media["broken"]], "question": "What colour is the circle?", "choices": OPTIONS, "gold": 0}]
    return docs


def _request(work: Path, doc: dict):
    from onevision.infer.inputs import Request

    return Request(question=doc["question"], images=[str(work / p) for p in doc.get("images", [])],
                   video=str(work / doc["video"]) if doc.get("video") else None)


def _scores(pipe, work: Path, doc: dict, continuations: list[str]):
    """The pipeline's scores of continuations, as the plugin builds them from lmms-eval's requests."""
    ids = [pipe.encoder.encode_text(text) + pipe.answer_end for text in continuations]
    return pipe.score([pipe.prepare(_request(work, doc))], [ids])[0]


def _likeliest(pipe, work: Path, doc: dict) -> int:
    # lmms-eval passes each option with its target delimiter, a space, in front.
    logprobs = [s.logprob for s in _scores(pipe, work, doc, [f" {o}" for o in OPTIONS])]
    return int(np.argmax(logprobs))


def run_lmms_eval(work: Path, checkpoint: Path, timeout: float) -> tuple[int, str]:
    """Run the lmms-eval command in the work folder; (exit code, its output)."""
    executable = shutil.which("lmms-eval", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [executable] if executable else [sys.executable, "-m", "lmms_eval"]
    command += ["--model", "onevision", "--model_args", f"pretrained={checkpoint}", "--tasks", ",".join(TASKS),
                "--include_path", str(TASKS_DIR), "--output_path", str(work / "out"), "--log_samples",
                "--device", "cpu", "--batch_size", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(work / "hf"), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return done.returncode, done.stdout + done.stderr


def read_outputs(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """lmms-eval's results and its samples per task (the newest run in `out`)."""
    found = sorted(out.rglob("*_results.json"))
    if not found:
        raise CheckFailed(f"lmms-eval wrote no results file under {out}")
    results = json.loads(found[-1].read_text())
    samples = {}
    for path in found[-1].parent.glob("*_samples_*.jsonl"):
        task = path.stem.split("_samples_", 1)[1]
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()), key=lambda s: s["doc_id"])
    return results, samples


def check(condition: bool, message: str, detail: str = "") -> None:
    """Print `message` when `condition` holds, else fail with it and `detail`."""
    if not condition:
        raise CheckFailed(f"{message}: {detail}" if detail else message)
    print(f"ok: {message}")


def _response(sample: dict):
    """A sample's filtered response: the text, or the list of a multi-round request's answers."""
    response = sample["filtered_resps"]
    while isinstance(response, list) and len(response) == 1 and isinstance(response[0], list):
        response = response[0]
    return response[0] if isinstance(response, list) and len(response) == 1 else response


def check_outputs(pipe, work: Path, docs: dict[str, list[dict]], log: str) -> None:
    results, samples = read_outputs(work / "out")
    metrics = results.get("results", {})
    missing = [t for t in TASKS if t not in metrics or t not in samples]
    check(not missing, f"results and samples written for all {len(TASKS)} tasks" + (f" (missing: {', '.join(missing)})" if missing else ""))
    for task in ("ovl_image", "ovl_video", "ovl_images"):
        expected = pipe.generate_batch([_request(work, d) for d in docs[task]], max_new_tokens=MAX_NEW_TOKENS)
        got = [_response(s) for s in samples[task]]
        check(got == expected, f"{task}: lmms-eval's answers are the pipeline's", f"{got!r} vs {expected!r}")
    accuracy = metrics["ovl_choice"]["acc,none"]
    check(accuracy == 1.0, "ovl_choice: accuracy 1.0 with the model's own likeliest options as gold", f"got {accuracy}")
    logprobs = [_scores(pipe, work, d, [d["answer"]])[0].logprob for d in docs["ovl_perplexity"]]
    expected = math.exp(-sum(logprobs) / len(logprobs))
    got = metrics["ovl_perplexity"]["perplexity,none"]
    check(got > 1 and math.isclose(got, expected, rel_tol=1e-3), f"ovl_perplexity: {got:.4g} = exp(-mean log-probability) = {expected:.4g}")
    rounds = [_response(s) for s in samples["ovl_rounds"]]
    check(metrics["ovl_rounds"]["answered,none"] == 1.0 and [len(r) for r in rounds] == [3, 2],
          "ovl_rounds: every round answered (3 and 2 rounds, as the documents ask)", repr(rounds))
    # Bad documents: one log line each, scored as misses; the good document of each task as usual.
    for task, bad in (("ovl_bad_generate", (1, 2)), ("ovl_bad_choice", (1,)), ("ovl_bad_perplexity", (1,)), ("ovl_bad_rounds", (1,))):
        for doc_id in bad:
            check(f"onevision: task {task} doc {doc_id}:" in log, f"{task}: doc {doc_id} reported as bad")
    generated = [_response(s) for s in samples["ovl_bad_generate"]]
    first = pipe.generate_batch([_request(work, docs["ovl_bad_generate"][0])], max_new_tokens=MAX_NEW_TOKENS)
    check(generated == [*first, "", ""], "ovl_bad_generate: the good answer, then empty answers", repr(generated))
    accuracies = [s["acc"] for s in samples["ovl_bad_choice"]]
    check(accuracies == [1.0, 0.0], "ovl_bad_choice: the good document right, the bad one a miss", repr(accuracies))
    got = metrics["ovl_bad_perplexity"]["perplexity,none"]
    check(got == math.inf, "ovl_bad_perplexity: the bad document's log-probability is -inf (perplexity inf)", f"got {got}")
    rounds = [_response(s) for s in samples["ovl_bad_rounds"]]
    check(len(rounds[0]) == 2 and all(rounds[0]) and rounds[1] == ["", ""], "ovl_bad_rounds: good rounds answered, bad ones empty", repr(rounds))


def preflight() -> None:
    """Exit 2 when lmms-eval cannot run in this environment."""
    if importlib.util.find_spec("lmms_eval") is None:
        print("error: lmms-eval is not installed; install the 'eval' extra: pip install -e '.[eval]'", file=sys.stderr)
        sys.exit(2)
    if importlib.util.find_spec("filelock._api") is None:
        import filelock

        print(f"error: filelock {filelock.__version__} has no module filelock._api, which lmms-eval 0.7's evaluator imports; "
              "install the 'eval' extra (it bounds filelock<4.3): pip install 'filelock<4.3'", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--timeout", type=float, default=600, help="seconds lmms-eval may run (default 600)")
    args = parser.parse_args(argv)
    preflight()
    sys.path.insert(0, str(ROOT))
    from onevision.infer.debug_model import save_debug_checkpoint
    from onevision.infer.pipeline import OneVision

    start = time.perf_counter()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="lmms-eval-local-"))).resolve()
    try:
        (work / "data").mkdir(parents=True, exist_ok=True)
        checkpoint = save_debug_checkpoint(work / "ckpt")
        pipe = OneVision.from_pretrained(checkpoint)
        docs = documents(pipe, work, write_media(work / "data"))
        for task, rows in docs.items():
            (work / "data" / f"{task}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        code, log = run_lmms_eval(work, checkpoint, args.timeout)
        (work / "lmms-eval.log").write_text(log)
        try:
            check_outputs(pipe, work, docs, log)
        except (CheckFailed, KeyError) as error:
            reason = f"lmms-eval's results lack {error}" if isinstance(error, KeyError) else str(error)
            tail = "\n".join(log.splitlines()[-25:])
            print(f"{tail}\nFAILED: {reason} (lmms-eval exit code {code}; its output is in {work / 'lmms-eval.log'})", file=sys.stderr)
            args.keep = True
            return 1
        print(f"lmms-eval --model onevision: all checks passed in {time.perf_counter() - start:.0f} s")
        return 0
    except subprocess.TimeoutExpired:
        print(f"FAILED: lmms-eval ran longer than {args.timeout:.0f} s", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        elif args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
