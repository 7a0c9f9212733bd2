"""`onevision demo --quick` and `onevision transfer --quick` end to end (smoke tests), and determinism."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onevision.cli.main import main

SCENARIOS = ("single_image", "multi_image", "video")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick demo run through the CLI: (output folder, cache folder)."""
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "out", root / "cache"
    code = main(["demo", "--quick", "--seed", "0", "--out", str(out), "--cache", str(cache), "--no-progress"])
    assert code == 0
    return out, cache


@pytest.mark.slow
def test_quick_demo_writes_tables_plots_and_the_model(quick_demo):
    out, _ = quick_demo
    for name in ("table.txt", "results.json", "loss_curves.png", "accuracy.png", "model/config.json", "model/tokenizer.json"):
        assert (out / name).is_file(), name
    table = (out / "table.txt").read_text()
    for row in ("stage1", "stage1_5", "stage2_si", "stage2_ov", "chance", "si_colour", "vid_direction", "exact"):
        assert row in table
    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["stage1", "stage1_5", "stage2_si", "stage2_ov"]
    last = results["stages"]["stage2_ov"]["scores"]
    assert set(last["scenarios"]) == set(SCENARIOS)
    assert last["chance"]["scenarios"]["single_image"] == pytest.approx(0.25)
    assert all(len(results["stages"][s]["losses"]) == results["stages"][s]["steps"] for s in results["stages"])
    assert not any(results["cached"].values())


@pytest.mark.slow
def test_quick_demo_is_deterministic_and_reruns_from_the_cache(quick_demo, tmp_path, capsys):
    out, cache = quick_demo
    fresh = tmp_path / "fresh"
    # The fresh run is also a run into a log file, progress bars on: whole lines, not redraws.
    log = tmp_path / "demo.log"
    with log.open("wb") as handle:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "onevision", "demo", "--quick", "--out", str(fresh), "--cache", str(tmp_path / "cache")]
        assert subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=900).returncode == 0
    text = log.read_bytes()
    assert len(text) < 50_000 and text.count(b"\r") < 20, (len(text), text.count(b"\r"))
    assert b"stage2_ov: 100%" in text
    assert (fresh / "table.txt").read_text() == (out / "table.txt").read_text()
    # The quick run's accuracies sit near chance, so compare every loss as well.
    first, second = (json.loads((folder / "results.json").read_text()) for folder in (out, fresh))
    assert first["stages"] == second["stages"]
    assert first["pretraining"] == second["pretraining"]
    rerun = tmp_path / "rerun"
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(rerun), "--cache", str(cache), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (out / "table.txt").read_text().strip() in printed
    assert all(json.loads((rerun / "results.json").read_text())["cached"].values())


@pytest.mark.slow
def test_quick_transfer_reuses_the_demo_and_writes_the_matrix(quick_demo, tmp_path):
    _, cache = quick_demo
    out = tmp_path / "transfer"
    assert main(["transfer", "--quick", "--out", str(out), "--cache", str(cache), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cached"]["stage1"] and results["cached"]["stage1_5"]
    assert not results["cached"]["single_image"] and not results["cached"]["onevision"]
    matrix = results["transfer_matrix"]
    assert matrix["rows"] == ["stage1_5", "single_image", "onevision"]
    assert matrix["columns"] == list(SCENARIOS)
    assert matrix["chance"][0] == pytest.approx(0.25)
    assert (out / "transfer.png").is_file()
    assert "chance" in (out / "table.txt").read_text()


def test_transfer_rejects_unknown_recipes(tmp_path, capsys):
    assert main(["transfer", "--quick", "--recipes", "audio", "--out", str(tmp_path), "--cache", str(tmp_path)]) == 2
    assert "audio" in capsys.readouterr().err
