"""Every `onevision` command's --help: exits 0, ends in an Examples block, names its values
(DIR, FILE, N ..., never argparse's echo of the option's name), and each flag shared between
commands means one thing: the same help, default and choices wherever it appears."""

from __future__ import annotations

import argparse
import re

import pytest

from onevision.cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub-)command's parser by its words, `data check` included."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[(*prefix, name)] = sub
                found.update(_commands(sub, (*prefix, name)))
    return found


COMMANDS = _commands(build_parser())


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") and action.help is not argparse.SUPPRESS}


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_the_walk_finds_every_command():
    assert {"tokens", "convert", "generate", "video-qa", "eval", "data", "world", "train", "demo", "transfer", "soup"} <= {
        words[0] for words in COMMANDS}
    assert ("data", "check") in COMMANDS


@pytest.mark.parametrize("words", [(), *COMMANDS], ids=lambda w: " ".join(w) or "onevision")
def test_help_has_examples_of_the_command(words, capsys):
    out = _help(list(words), capsys)
    assert "Examples:" in out, out
    block = out.split("Examples:", 1)[1]
    command = " ".join(("onevision", *words))
    assert re.search(rf"^\s+{re.escape(command)}\b", block, re.MULTILINE), f"no example of {command!r} in:\n{block}"


@pytest.mark.parametrize("words", [(), *COMMANDS], ids=lambda w: " ".join(w) or "onevision")
def test_no_default_metavars(words, capsys):
    out = _help(list(words), capsys)
    echoes = [m.group(0) for m in re.finditer(r"(--[a-z][a-z0-9-]*)[ =]([A-Z][A-Z0-9_]*)\b", out)
              if m.group(2) == m.group(1)[2:].upper().replace("-", "_")]
    assert not echoes, f"argparse's default metavars: {echoes}"
    parser = COMMANDS[words] if words else build_parser()
    for action in parser._actions:
        if action.help is argparse.SUPPRESS or action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.metavar is not None or action.choices is not None, (
            f"{' '.join(words)} {action.option_strings or action.dest}: give a metavar (DIR, FILE, N ...)")


# Each flag taken by more than one command: one help text and one default everywhere.
SHARED = {
    "--seed": 0,
    "--choice-by": "text",
    "--no-progress": False,
    "--device": "cpu",
    "--dtype": None,
    "--model": None,
    "--random-model": None,
    "--visual-preset": "0.5b",
    "--num-frames": None,
    "--temperature": 0.0,
    "--media-root": None,
    "--limit": None,
}
# Flags shared with a default (or wording) of their own per command, and why.
PER_COMMAND = {
    "--out": "the output of each command: a JSONL file for video-qa, a folder elsewhere",
    "--batch-size": "videos (video-qa) weigh more than records (eval, soup)",
    "--max-new-tokens": "an answer (generate) is longer than an exact-match reply (eval)",
    "--quick": "demo, transfer and compare share add_run_arguments", "--cache": "as --quick", "--no-cache": "as --quick",
    "--family": "the model family: convert assembles any family from components, the demo trains those it has a curriculum for",
    "--threads": "as --quick",
    "--tokenizer": "the tokenizer a command reads: data check's has a built-in default",
    "--image": "one image: a size (tokens) or a file (generate)",
    "--json": "print the result as JSON: each command's help says what the object holds",
    "--help": "argparse",
}


def test_each_shared_flag_has_one_meaning():
    users: dict[str, list[tuple[str, argparse.Action]]] = {}
    for words, parser in COMMANDS.items():
        for flag, action in _options(parser).items():
            users.setdefault(flag, []).append((" ".join(words), action))
    shared = {flag: uses for flag, uses in users.items() if len(uses) > 1}
    unlisted = set(shared) - set(SHARED) - set(PER_COMMAND)
    assert not unlisted, f"flags in several commands that neither table lists: {sorted(unlisted)}"
    for flag, default in SHARED.items():
        uses = users[flag]
        assert len(uses) > 1, f"{flag} is no longer shared: move it out of SHARED"
        for command, action in uses:
            assert action.default == default, f"{command} {flag} defaults to {action.default!r}, not {default!r}"
            first = uses[0][1]
            # --seed's help names what the command seeds; the rest of it is checked below.
            same_help = flag == "--seed" or action.help == first.help
            assert same_help and (action.choices, action.metavar, action.nargs) == (
                first.choices, first.metavar, first.nargs), f"{flag}: {command} differs from {uses[0][0]}"


def test_seed_help_says_why_its_default_is_zero():
    seeds = [_options(parser)["--seed"] for parser in COMMANDS.values() if "--seed" in _options(parser)]
    assert len(seeds) >= 4 and all("default 0, so rerunning a command repeats its result" in a.help for a in seeds)


@pytest.mark.parametrize("argv,words", [
    (["generate", "--model-size", "debug", "--prompt", "x"], ["--random-model", "--visual-preset"]),
    (["video-qa", "--model-size", "debug", "--videos", "v", "--question", "q", "--out", "o.jsonl"], ["--random-model"]),
    (["tokens", "--image", "640x480", "--model-size", "7b"], ["--visual-preset"]),
    (["data", "check", "recipe.yaml", "--model-size", "0.5b"], ["--visual-preset"]),
    (["world", "out", "--image-size", "64"], ["--render-size"]),
])
def test_retired_flags_are_refused_naming_the_new_one(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"onevision {' '.join(argv[:2]) if argv[0] == 'data' else argv[0]}: error: ")
    for word in words:
        assert word in last, last


@pytest.mark.parametrize("argv,words", [
    (["convert", "src", "dst", "--llm", "l", "--vision", "v", "--to", "hf"], ["--llm", "DST alone", "'src'", "'dst'"]),
    (["convert", "dst", "--to", "hf"], ["SRC DST", "--llm DIR --vision DIR"]),
    (["convert", "--vision", "v", "dst", "--to", "hf"], ["SRC DST", "--llm"]),
    (["convert", "a", "b", "c", "--to", "hf"], ["SRC DST", "3 path"]),
    (["convert", "--llm", "l", "dst", "--to", "hf"], ["--vision"]),
    (["convert", "src", "dst", "--to", "hf", "--family", "llava15"], ["--family", "--llm"]),
])
def test_convert_forms_are_explicit(argv, words, capsys):
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("onevision convert: error: ")
    for word in words:
        assert word in last, last
