"""`onevision tokens`: the issue's examples in table and JSON form, settings flags, errors."""

from __future__ import annotations

import argparse
import json

import pytest

from onevision.budget import ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.cli import main as cli_main
from onevision.cli import tokens
from onevision.model.config import preset

EXAMPLES = [
    (["--image", "640x480"], 2929),
    (["--images", "768x768,1152x1152"], 1460),
    (["--video-frames", "32"], 6273),
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onevision")
    tokens.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["tokens", *argv])


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = tokens.run(parse(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,total", EXAMPLES)
def test_examples_human(argv, total, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == f"total: {total} visual tokens"
    header = next(i for i, line in enumerate(lines) if line.startswith("#"))
    assert lines[header].split() == ["#", "kind", "size", "tiles", "grid", "unpadded", "pooled", "tokens"]
    items = lines[header + 1 : -1]
    assert sum(int(line.split()[-1]) for line in items) == total


@pytest.mark.parametrize("argv,total", EXAMPLES)
def test_examples_json(argv, total, capsys):
    code, out, _ = run([*argv, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["total"] == total == sum(item["tokens"] for item in data["items"])
    assert data["degraded"] == [] and data["budget"] is None


def test_table_shows_geometry(capsys):
    _, out, _ = run(["--image", "640x480"], capsys)
    row = next(line for line in out.splitlines() if line.lstrip().startswith("1 "))
    assert row.split() == ["1", "image", "640x480", "5", "base+2x2", "40x54", "40x54", "2929"]
    _, out, _ = run(["--video-frames", "40", "--frames-upbound", "16", "--pool-stride", "3", "--video-newline", "frame"], capsys)
    assert "16 frames (of 40)" in out and "9x9/frame (stride 3)" in out
    assert out.splitlines()[-1] == f"total: {(81 + 1) * 16} visual tokens"


def test_settings_flags_and_visual_preset(capsys):
    _, out, _ = run(["--image", "640x480", "--visual-preset", "debug", "--json"], capsys)
    assert json.loads(out)["total"] == plan_sample([ImageMedia(640, 480)], preset("debug").visual).total == 311
    _, out, _ = run(["--image", "640x480", "--visual-preset", "debug", "--anyres-max", "9", "--max-grid", "2", "--json"], capsys)
    item = json.loads(out)["items"][0]
    assert item["anyres_max"] == 9 and item["grid"] == [2, 2] and item["base_tokens"] == 64
    _, out, _ = run(["--image", "100x100", "--image-size", "224", "--patch-size", "16", "--json"], capsys)
    assert json.loads(out)["items"][0]["base_tokens"] == 14 * 14


def test_budget_degradation_is_reported(capsys):
    code, out, _ = run(["--image", "1920x1080", "--video-frames", "64", "--max-visual-tokens", "8000"], capsys)
    assert code == 0
    total = int(out.splitlines()[-2].split()[1])
    media = [ImageMedia(1920, 1080), VideoMedia(64)]
    assert total == plan_sample(media, VisualSettings(max_visual_tokens=8000)).total <= 8000
    assert out.splitlines()[-1] == "degraded to fit the budget of 8000: frames 32->9; video pool stride 2->3"


def test_over_budget_fails_with_numbers(capsys):
    code, out, err = run(["--video-frames", "300", "--max-visual-tokens", "100"], capsys)
    assert code == 1 and out == ""
    assert "over the budget of 100" in err and "still needs 197" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--image", "640"], "argument --image: expected WIDTHxHEIGHT, got '640'"),
        (["--image", "640x"], "expected WIDTHxHEIGHT, got '640x'"),
        (["--image", "640x480x3"], "expected WIDTHxHEIGHT, got '640x480x3'"),
        (["--image=-5x10"], "expected WIDTHxHEIGHT, got '-5x10'"),
        (["--image", "0x480"], "image sides must be positive, got '0x480'"),
        (["--images", "640x480,,10x10"], "expected WIDTHxHEIGHT[,WIDTHxHEIGHT...], got '640x480,,10x10'"),
        (["--images", "640x480,big"], "expected WIDTHxHEIGHT, got 'big'"),
        (["--video-frames", "0"], "expected a positive integer, got '0'"),
    ],
)
def test_malformed_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_media_and_bad_settings(capsys):
    code, _, err = run([], capsys)
    assert code == 2 and "give at least one of --image, --images, --video-frames" in err
    code, _, err = run(["--image", "10x10", "--image-size", "8", "--patch-size", "14"], capsys)
    assert code == 2 and "image_size 8 is smaller than patch_size 14" in err


def test_onevision_main_dispatches_tokens(capsys):
    assert ("tokens", "onevision.cli.tokens") in cli_main.COMMANDS
    assert cli_main.main(["tokens", "--images", "768x768,1152x1152", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1460


def test_cli_lists_only_commands_that_exist(tmp_path, monkeypatch):
    (tmp_path / "broken_command.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli_main, "COMMANDS", [("tokens", "onevision.cli.tokens"), ("later", "onevision.cli.not_written_yet")])
    assert cli_main.main(["tokens", "--video-frames", "1", "--json"]) == 0
    monkeypatch.setattr(cli_main, "COMMANDS", [("broken", "broken_command")])
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        cli_main.build_parser()
