"""`onevision data check`: every bad record listed with its file and reason, nothing else;
exit status 1 with bad records, 0 for a clean recipe."""

import json

import pytest
from test_dataset import CORPUS, good_records, write_recipe, written_records

from onevision.cli.main import main
from onevision.tokenizer import train_small_tokenizer


def run_cli(argv):
    return main(argv)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    train_small_tokenizer(CORPUS, vocab_size=400, save_dir=folder)
    return str(folder)


def test_check_lists_each_bad_record_and_exits_nonzero(tmp_path, tokenizer_dir, capsys):
    recipe = write_recipe(tmp_path)
    code = run_cli(["data", "check", str(recipe), "--json", "--visual-preset", "debug", "--tokenizer", tokenizer_dir, "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    expected = written_records(recipe)
    assert len(expected) == 9
    assert sorted(b["id"] for b in report["bad"]) == sorted(r["id"] for r in expected)
    by_id = {b["id"]: b for b in report["bad"]}
    for record in expected:
        entry = by_id[record["id"]]
        media = record.get("image") or record.get("video")
        if record["id"].startswith("bad-placeholders") or record["id"] == "bad-no-conversations":
            assert entry["file"].endswith("records.json")
        else:
            assert entry["file"] == media and entry["reason"].startswith(media)
        assert entry["reason"]
    assert "no 'conversations'" in by_id["bad-no-conversations"]["reason"]
    assert "2 <image> placeholder(s) but 1 image(s)" in by_id["bad-placeholders"]["reason"]
    assert "no video stream" in by_id["bad-audio-only"]["reason"]
    counts = report["counts"]
    assert counts["good"] == len(good_records()) and counts["bad"] == len(expected)
    assert counts["modality"] == {"image": 2, "multi_image": 1, "text": 2, "video": 2}
    stats = report["stats"]["image"]
    assert stats["count"] == 2 and stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]


@pytest.mark.slow
def test_check_text_report_with_workers(tmp_path, tokenizer_dir, capsys):
    recipe = write_recipe(tmp_path)
    code = run_cli(["data", "check", str(recipe), "--workers", "2", "--visual-preset", "debug", "--tokenizer", tokenizer_dir, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    bad_lines = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(bad_lines) == len(written_records(recipe))
    assert not any("good-" in line for line in bad_lines)
    assert "truncated.jpg" in out and "text.mp4" in out and "html.png" in out
    assert "median" in out and "p95" in out


def test_clean_recipe_exits_zero(tmp_path, tokenizer_dir, capsys):
    recipe = write_recipe(tmp_path, with_bad=False)
    code = run_cli(["data", "check", str(recipe), "--json", "--visual-preset", "debug", "--tokenizer", tokenizer_dir, "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True and report["bad"] == []
    assert report["counts"]["good"] == len(good_records())


def test_missing_recipe_exits_two(tmp_path, capsys):
    assert run_cli(["data", "check", str(tmp_path / "nope.yaml"), "--tokenizer", "x", "--no-progress"]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_a_crash_is_not_bad_records(tmp_path, tokenizer_dir, monkeypatch, capsys):
    """Exit 1 means bad records were found; a bug in the check exits 3 with its traceback."""
    from onevision.cli import data as data_cli

    def crash(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(data_cli, "check_recipe", crash)
    recipe = write_recipe(tmp_path, with_bad=False)
    assert run_cli(["data", "check", str(recipe), "--tokenizer", tokenizer_dir, "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("onevision data check: internal error")
