"""Every `onevision` sub-command turns bad arguments and bad files into one line on stderr.

The table drives each command in-process through `main()` with a bad argument or file and
checks: no traceback, the exit status (2 for usage and input errors), and a last line
``onevision CMD...: error: ...`` that names the argument or file. A few cases run as real
subprocesses (stdout a pipe, strict UTF-8), and a hypothesis fuzz throws argument strings at the
cheap commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media_factory import make_video

from onevision.cli.errors import EXIT_INTERNAL, MAX_MESSAGE, InputError, describe, printable
from onevision.cli.main import COMMANDS, build_parser, main
from onevision.infer.debug_model import save_debug_checkpoint
from onevision.tokenizer import train_small_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and broken inputs, by name (the table's {placeholders})."""
    root = tmp_path_factory.mktemp("cli-errors")
    ckpt = save_debug_checkpoint(root / "ckpt")
    broken = {
        "ckpt_badjson": ("config.json", b"{broken"),
        "ckpt_list": ("config.json", b"[1, 2]"),
        "ckpt_trunc": ("model.safetensors", (ckpt / "model.safetensors").read_bytes()[:1000]),
        "ckpt_garbage": ("model.safetensors", bytes(range(256)) * 20),
        "ckpt_badtok": ("tokenizer.json", b"garbage{{"),
        "ckpt_tokcfg_list": ("tokenizer_config.json", b"[1, 2]"),
        "ckpt_negative": ("config.json", _negative_width(ckpt / "config.json")),
    }
    paths = {"root": root, "ckpt": ckpt}
    for name, (file, data) in broken.items():
        shutil.copytree(ckpt, root / name)
        (root / name / file).write_bytes(data)
        paths[name] = root / name
    paths["folder"] = root / "a-folder"
    paths["folder"].mkdir()
    paths["file"] = root / "a-file.txt"
    paths["file"].write_text("not a folder\n")
    paths["missing"] = root / "missing-thing"
    paths["undecodable"] = os.fsdecode(b"caf\xe9")  # an argument that is not UTF-8
    paths["videos"] = root / "videos"
    paths["videos"].mkdir()
    make_video(paths["videos"] / "a.mp4", width=32, height=24, frames=2)
    paths["garbage_yaml"] = root / "garbage.yaml"
    paths["garbage_yaml"].write_text("{{{: [\n  - x\n")
    paths["binary"] = root / "binary.yaml"
    paths["binary"].write_bytes(b"\xff\xfe\x00 not text")
    lines = {
        "q_numeric": {"id": "a", "video": 5, "question": "Why?"},
        "q_string_options": {"id": "a", "video": "v.mp4", "question": "Which?", "options": "abc"},
        "q_list_line": [1, 2],
        "q_bad_id": {"id": [1], "video": "v.mp4", "question": "Why?"},
        "q_one_option": {"id": "a", "video": "v.mp4", "question": "Which?", "options": ["only"]},
    }
    for name, line in lines.items():
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text(json.dumps(line) + "\n")
    paths["q_blank"] = root / "q_blank.jsonl"
    paths["q_blank"].write_text("\n  \n")
    paths["q_good"] = root / "q_good.jsonl"
    paths["q_good"].write_text(json.dumps({"id": "a", "video": "v.mp4", "question": "Why?"}) + "\n")
    paths["records"] = root / "records.jsonl"
    paths["records"].write_text(json.dumps({"id": "r", "conversations": [
        {"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]}) + "\n")
    paths["recipe"] = root / "recipe.yaml"
    paths["recipe"].write_text(f"datasets:\n  - json_path: {paths['records']}\n")
    paths["tokenizer_dir"] = root / "tokenizer"
    train_small_tokenizer(["Hello? Hi. What colour is it?"] * 20, vocab_size=300).save_pretrained(paths["tokenizer_dir"])
    paths["bad_tokenizer_dir"] = root / "bad-tokenizer"
    paths["bad_tokenizer_dir"].mkdir()
    (paths["bad_tokenizer_dir"] / "tokenizer.json").write_text("garbage{{")
    return paths


def _negative_width(config: Path) -> bytes:
    data = json.loads(config.read_text())
    data["text_config"]["hidden_size"] = -4
    return json.dumps(data).encode()


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


# (argv, exit status, words the error line must hold). {name} is a path from `files`.
CASES = [
    (["tokens", "--image", "640x480", "--max-grid", "100000"], 2, ["--max-grid", "100000", "64"]),
    (["tokens", "--image", "640x480", "--anyres-max", "1000000000", "--max-visual-tokens", "1"], 2, ["--anyres-max", "64"]),
    (["tokens", "--video-frames", "9", "--frames-upbound", "100000000"], 2, ["--frames-upbound", "1024"]),
    (["tokens", "--image", "640"], 2, ["--image", "WIDTHxHEIGHT"]),
    (["tokens", "--video-frames", "0"], 2, ["--video-frames"]),
    (["tokens"], 2, ["--image"]),
    (["tokens", "--image", "640x480", "--image-size", "8"], 2, ["patch_size"]),
    (["convert", "{ckpt_badjson}", "{root}/out1", "--to", "llava-next"], 2, ["ckpt_badjson", "config.json"]),
    (["convert", "{ckpt_list}", "{root}/out2", "--to", "llava-next"], 2, ["ckpt_list", "config.json", "JSON object"]),
    (["convert", "{ckpt_trunc}", "{root}/out3", "--to", "llava-next"], 2, ["SRC", "ckpt_trunc", "SafetensorError"]),
    (["convert", "{ckpt_garbage}", "{root}/out4", "--to", "llava-next"], 2, ["SRC", "ckpt_garbage"]),
    (["convert", "{ckpt_badtok}", "{root}/out5", "--to", "llava-next"], 2, ["ckpt_badtok", "tokenizer"]),
    (["convert", "{ckpt}", "{file}", "--to", "hf"], 2, ["DST", "a-file.txt", "not a folder"]),
    (["convert", "{missing}", "{root}/out6", "--to", "hf"], 2, ["missing-thing"]),
    (["convert", "{ckpt}", "{root}/out7", "--to", "hf", "--max-shard-size", "lots"], 2, ["--max-shard-size", "lots"]),
    (["convert", "--llm", "{ckpt}", "{root}/out8", "--to", "hf"], 2, ["--vision"]),
    (["convert", "{ckpt}", "{root}/out9", "--to", "hf", "--tokenizer", "{folder}"], 2, ["--tokenizer", "a-folder"]),
    (["generate", "--model", "{missing}", "--prompt", "x"], 2, ["missing-thing"]),
    (["generate", "--model", "{ckpt_badtok}", "--prompt", "x"], 2, ["--model", "ckpt_badtok"]),
    (["generate", "--model", "{ckpt_trunc}", "--prompt", "x"], 2, ["--model", "ckpt_trunc"]),
    (["generate", "--model", "{ckpt}", "--image", "{missing}", "--prompt", "x"], 2, ["missing-thing"]),
    (["generate", "--model", "{ckpt_negative}", "--prompt", "x"], 2, ["ckpt_negative", "hidden_size=-4 is outside"]),
    (["generate", "--model", "{ckpt_tokcfg_list}", "--prompt", "x"], 2, ["--model", "ckpt_tokcfg_list", "cannot load"]),
    (["convert", "{ckpt_negative}", "{root}/out10", "--to", "llava-next"], 2, ["ckpt_negative", "hidden_size=-4 is outside"]),
    (["eval", "--checkpoints", "{ckpt_negative}", "--data", "{records}"], 2, ["ckpt_negative", "hidden_size=-4 is outside"]),
    (["generate", "--random-model", "debug", "--prompt", "x", "--num-frames", "1000000"], 2, ["--num-frames", "1024"]),
    (["generate", "--random-model", "debug", "--prompt", "x", "--max-new-tokens", "0"], 2, ["--max-new-tokens"]),
    (["generate", "--random-model", "debug", "--prompt", "x", "--device", "toaster"], 2, ["--device", "toaster"]),
    (["generate", "--random-model", "debug", "--prompt", "x", "--device", "cuda:99"], 2, ["--device", "cuda:99", "visible"]),
    (["generate", "--random-model", "debug", "--prompt", "x", "--top-p", "2"], 2, ["--top-p"]),
    (["generate", "--random-model", "debug", "--prompt", "{undecodable}"], 2, ["--prompt", "UTF-8"]),
    (["video-qa", "--random-model", "debug", "--videos", "{videos}", "--question", "q", "--out", "{folder}"], 2,
     ["a-folder", "not a file"]),
    (["video-qa", "--random-model", "debug", "--videos", "{folder}", "--question", "q", "--out", "{root}/o.jsonl"], 2,
     ["--videos", "a-folder", "no video files"]),
    (["video-qa", "--random-model", "debug", "--videos", "{videos}", "--question", "q", "--options", "yes", "--out", "{root}/o.jsonl"],
     2, ["--options", "2 to 26"]),
    (["video-qa", "--random-model", "debug", "--videos", "{videos}", "--question", "{undecodable}", "--out", "{root}/o.jsonl"],
     2, ["--question", "UTF-8"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_one_option}", "--out", "{root}/o.jsonl"], 2,
     ["q_one_option.jsonl:1", "'options'", "2 to 26"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_numeric}", "--out", "{root}/o.jsonl"], 2,
     ["q_numeric.jsonl:1", "'video'", "int"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_string_options}", "--out", "{root}/o.jsonl"], 2,
     ["q_string_options.jsonl:1", "'options'", "list of strings"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_list_line}", "--out", "{root}/o.jsonl"], 2,
     ["q_list_line.jsonl:1", "JSON object"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_bad_id}", "--out", "{root}/o.jsonl"], 2, ["q_bad_id.jsonl:1", "'id'"]),
    (["video-qa", "--random-model", "debug", "--questions", "{binary}", "--out", "{root}/o.jsonl"], 2, ["binary.yaml:1", "UTF-8"]),
    (["video-qa", "--random-model", "debug", "--questions", "{missing}", "--out", "{root}/o.jsonl"], 2, ["--questions", "missing-thing"]),
    (["video-qa", "--random-model", "debug", "--questions", "{q_blank}", "--out", "{root}/o.jsonl"], 2, ["--questions", "no questions"]),
    (["video-qa", "--random-model", "debug", "--videos", "{folder}", "--out", "{root}/o.jsonl"], 2, ["--question"]),
    (["video-qa", "--model", "{ckpt_trunc}", "--questions", "{q_good}", "--out", "{root}/o.jsonl"], 2, ["--model", "ckpt_trunc"]),
    (["video-qa", "--random-model", "debug", "--videos", "{folder}", "--question", "q", "--out", "{root}/o.jsonl",
      "--batch-size", "0"], 2, ["--batch-size"]),
    (["video-qa", "--random-model", "debug", "--videos", "{folder}", "--question", "q", "--out", "{root}/o.jsonl",
      "--num-frames", "99999"], 2, ["--num-frames"]),
    (["eval", "--checkpoints", "{missing}", "--data", "{records}"], 2, ["missing-thing"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{missing}"], 2, ["--data", "missing-thing"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{q_numeric}"], 2, ["q_numeric.jsonl"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{binary}"], 2, ["binary.yaml"]),
    (["eval", "--checkpoints", "{ckpt}", "{ckpt}", "--data", "{records}"], 2, ["--checkpoints", "differ"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{records}", "--limit", "-1"], 2, ["--limit"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{records}", "--report", "{folder}"], 2, ["--report", "a-folder"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{records}", "--plot", "{file}/p.png"], 2, ["--plot", "a-file.txt"]),
    (["eval", "--checkpoints", "{ckpt}", "--data", "{records}", "--media-root", "{missing}"], 2, ["--media-root", "missing-thing"]),
    (["data", "check", "{garbage_yaml}", "--no-progress"], 2, ["garbage.yaml", "YAML"]),
    (["data", "check", "{binary}", "--no-progress"], 2, ["binary.yaml"]),
    (["data", "check", "{missing}", "--no-progress"], 2, ["missing-thing"]),
    (["data", "check", "{folder}", "--no-progress"], 2, ["a-folder"]),
    (["data", "check", "{recipe}", "--workers", "-1"], 2, ["--workers"]),
    (["data", "check", "{recipe}", "--max-length", "0"], 2, ["--max-length"]),
    (["data", "check", "{recipe}", "--tokenizer", "{missing}", "--no-progress"], 2, ["--tokenizer", "missing-thing"]),
    (["data", "check", "{recipe}", "--tokenizer", "{bad_tokenizer_dir}", "--no-progress"], 2, ["--tokenizer", "bad-tokenizer"]),
    (["train", "{missing}"], 2, ["missing-thing"]),
    (["train", "{binary}"], 2, ["binary.yaml"]),
    (["train", "{garbage_yaml}"], 2, ["garbage.yaml"]),
    (["train", "stage1", "optim.lrate=1"], 2, ["lrate"]),
    (["train", "stage1", "lrate"], 2, ["key.path=value"]),
    (["train", "stage1", "model.size=debug", "data.recipe={missing}", "output_root={root}/runs", "model.tokenizer={tokenizer_dir}",
      "logging.tensorboard=false", "logging.plot=false", "logging.progress=false"], 2, ["data recipe", "missing-thing"]),
    (["train", "stage1", "model.size=debug", "data.recipe={recipe}", "output_root={file}", "model.tokenizer={tokenizer_dir}",
      "logging.tensorboard=false", "logging.plot=false", "logging.progress=false"], 2, ["a-file.txt"]),
    (["demo", "--threads", "0"], 2, ["--threads"]),
    (["demo", "--seed", "-1"], 2, ["--seed"]),
    (["demo", "--quick", "--out", "{file}"], 2, ["--out", "a-file.txt"]),
    (["world", "{file}", "--train", "1", "--test", "1", "--no-progress"], 2, ["a-file.txt"]),
    (["world", "{root}/world", "--frames", "100000"], 2, ["--frames", "256"]),
    (["world", "{root}/world", "--render-size", "16"], 2, ["--render-size"]),
    (["world", "{root}/world", "--seed", "-1"], 2, ["--seed"]),
    (["transfer", "--recipes", "audio"], 2, ["--recipes", "audio"]),
    (["transfer", "--quick", "--out", "{root}", "--cache", "{file}"], 2, ["--cache", "a-file.txt"]),
    (["compare", "--quick", "--families", "onevision", "onevision"], 2, ["--families", "twice"]),
    (["compare", "--quick", "--out", "{file}"], 2, ["--out", "a-file.txt"]),
    (["demo", "--quick", "--family", "llava2"], 2, ["--family", "llava2"]),
    (["soup", "{ckpt}", "{ckpt_badjson}", "--out", "{root}/soup"], 2, ["ckpt_badjson", "config.json"]),
    (["soup", "{ckpt}", "{ckpt_list}", "--out", "{root}/soup"], 2, ["ckpt_list", "config.json"]),
    (["soup", "{ckpt}", "{ckpt_garbage}", "--out", "{root}/soup"], 2, ["ckpt_garbage", "model.safetensors"]),
    (["soup", "{ckpt}", "{ckpt_trunc}", "--out", "{root}/soup"], 2, ["ckpt_trunc", "model.safetensors"]),
    (["soup", "{ckpt}", "{ckpt}", "--out", "{root}/soup"], 2, ["given twice"]),
    (["soup", "{ckpt}", "--out", "{ckpt}"], 2, ["--out", "exists"]),
    (["soup", "grid", "stage1", "--weight-decay", "-1"], 2, ["--weight-decay"]),
]


def _fill(argv: list[str], files: dict) -> list[str]:
    return [arg.format(**{k: str(v) for k, v in files.items()}) for arg in argv]


@pytest.mark.parametrize("argv,code,words", CASES, ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line(argv, code, words, files, capsys):
    got, _out, err = run(_fill(argv, files), capsys)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, "no message on stderr"
    command = "onevision " + (" ".join(argv[:2]) if argv[0] == "data" else argv[0])
    assert lines[-1].startswith(f"{command}: error: "), lines[-1]
    if not lines[-1].split(": error: ", 1)[1].startswith("argument "):  # argparse prints its usage first
        assert len(lines) == 1, err
    for word in words:
        assert word in lines[-1], f"{word!r} not in {lines[-1]!r}"
    assert got == code, err


def test_every_command_is_in_the_table():
    registered = set(build_parser()._subparsers._group_actions[0].choices)
    assert registered == {name for name, _ in COMMANDS if name in registered}
    covered = {argv[0] for argv, _, _ in CASES}
    assert registered <= covered, f"no bad-input case for {sorted(registered - covered)}"


@pytest.mark.parametrize("command", [name for name, _ in COMMANDS])
def test_unknown_option_is_a_usage_error(command, capsys):
    argv = [command, "check"] if command == "data" else [command]
    code, _, err = run([*argv, "--no-such-option"], capsys)
    if code == 2 and "invalid choice" in err:  # a command listed but not yet registered
        pytest.fail(f"{command} is listed in COMMANDS but not registered")
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    # argparse reports leftovers from the top parser ("onevision: error: unrecognized arguments").
    assert last.startswith((f"onevision {' '.join(argv)}: error: ", "onevision: error: unrecognized arguments: --no-such-option"))


def test_a_bug_still_shows_its_traceback(monkeypatch, capsys):
    from onevision.cli import tokens

    def broken(args):
        raise KeyError("a bug, not bad input")

    monkeypatch.setattr(tokens, "plan_sample", lambda *a: broken(a))
    code, _, err = run(["tokens", "--image", "640x480"], capsys)
    assert code == EXIT_INTERNAL
    assert "Traceback" in err and "KeyError" in err
    assert err.strip().splitlines()[-1].startswith("onevision tokens: internal error")


def test_messages_are_one_printable_line():
    assert describe(InputError("first\n  second\n")) == "first second"
    assert describe(FileNotFoundError("recipe not found: x.yaml")) == "recipe not found: x.yaml"
    assert describe(FileNotFoundError(2, "No such file or directory", os.fsdecode(b"clip\xff.mp4"))) == (
        "clip\\xff.mp4: No such file or directory"
    )
    assert describe(json.JSONDecodeError("Expecting value", "x", 0)).startswith("JSONDecodeError: Expecting value")
    assert printable(os.fsdecode(b"a\xffb")) == "a\\xffb" and printable("\ud800") == "\\ud800"
    long = describe(InputError("x" * (MAX_MESSAGE + 500)))
    assert long.startswith("x" * MAX_MESSAGE) and long.endswith("[500 more characters; ONEVISION_TRACEBACK=1 shows all]")


def _subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "onevision", *argv], cwd=cwd, env=env, capture_output=True, timeout=300)


def test_subprocess_data_check_prints_undecodable_names(tmp_path):
    """A recipe under a folder whose name is not UTF-8: a bad record is reported, not a crash."""
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/data\xff"))
    folder.mkdir()
    (folder / "records.jsonl").write_text(json.dumps({"id": "r", "image": "gone.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Red."}]}) + "\n")
    (folder / "recipe.yaml").write_text("datasets:\n  - json_path: records.jsonl\n")
    result = _subprocess(["data", "check", str(folder / "recipe.yaml"), "--visual-preset", "debug", "--no-progress"], tmp_path)
    out, err = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 1, err
    assert "Traceback" not in err and "data\\xff" in out and "gone.png" in out and "1 bad" in out


def test_subprocess_broken_checkpoint(tmp_path, files):
    result = _subprocess(["convert", str(files["ckpt_trunc"]), str(tmp_path / "out"), "--to", "hf"], tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"onevision convert: error: SRC {files['ckpt_trunc']}: SafetensorError: "
                                        "Error while deserializing header: invalid header length"]


# Fuzz: (flag, value) pairs of the real flags, values mostly of the right kind (so the planner
# and the data check are reached, not only argparse) and one in eight hostile.
_INT = st.sampled_from([False] * 3 + [True]).flatmap(lambda wide: st.integers(-3, 10**9) if wide else st.integers(1, 70)).map(str)
_SIZE = st.tuples(st.integers(1, 10**5), st.integers(1, 10**5)).map(lambda wh: f"{wh[0]}x{wh[1]}")
_HOSTILE = st.one_of(st.text(max_size=8), st.sampled_from(["", "-1", "nan", "1e9", "9" * 40, "0x0", "640x480,", ",", "--json"]))


def _pair(flag: str, values):
    value = st.sampled_from([False] * 7 + [True]).flatmap(lambda hostile: _HOSTILE if hostile else values)
    return st.tuples(st.just(flag), value)


def _argv(pairs, switches: list[str]):
    return st.tuples(st.lists(st.one_of(*pairs), max_size=5), st.lists(st.sampled_from(switches), max_size=2)).map(
        lambda drawn: [arg for pair in drawn[0] for arg in pair] + drawn[1]
    )


_MEDIA = [
    _pair("--image", _SIZE),
    _pair("--images", st.lists(_SIZE, min_size=1, max_size=4).map(",".join)),
    _pair("--video-frames", _INT),
]
_TOKENS_ARGV = st.tuples(
    st.one_of(*_MEDIA),  # one media flag always, so most examples reach the planner
    _argv(
        [
            *_MEDIA,
            _pair("--visual-preset", st.sampled_from(["debug", "0.5b", "7b", "72b"])),
            _pair("--video-newline", st.sampled_from(["video", "frame", "row", "none"])),
            *[_pair(flag, _INT) for flag in ("--image-size", "--patch-size", "--anyres-max", "--max-grid", "--pool-stride",
                                             "--frames-upbound", "--max-visual-tokens")],
        ],
        ["--json"],
    ),
).map(lambda drawn: [*drawn[0], *drawn[1]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=_TOKENS_ARGV)
def test_fuzz_tokens(args, capsys):
    code, _, err = run(["tokens", *args], capsys)
    assert code in (0, 1, 2) and "Traceback" not in err, (args, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recipe=st.sampled_from(["recipe"] * 5 + ["garbage_yaml", "binary", "missing", "folder", "records"]), data=st.data())
def test_fuzz_data_check(recipe, data, files, capsys):
    tokenizers = st.sampled_from([str(files[name]) for name in ("tokenizer_dir", "bad_tokenizer_dir", "missing", "file")])
    args = data.draw(_argv(
        [
            _pair("--max-length", _INT),
            _pair("--visual-preset", st.sampled_from(["debug", "0.5b", "7b"])),
            _pair("--template", st.sampled_from(["chatml", "plain"])),
            _pair("--tokenizer", tokenizers),
        ],
        ["--json", "--time-instruction"],
    ))
    if "--tokenizer" not in args:
        args = [*args, "--tokenizer", str(files["tokenizer_dir"])]
    code, _, err = run(["data", "check", str(files[recipe]), "--no-progress", *args], capsys)
    assert code in (0, 1, 2) and "Traceback" not in err, (args, err)
