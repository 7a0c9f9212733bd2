"""Evaluation: exact-match and multiple-choice scoring on a hand-made benchmark with forced model
outputs, per-scenario/per-task tables, the transfer matrix and its heat map, and `onevision eval`
over a synthetic world with two checkpoints."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from onevision.cli.main import main
from onevision.data.records import RecordError
from onevision.infer.debug_model import debug_pipeline, save_debug_checkpoint
from onevision.infer.evaluate import Report, Result, benchmark_item, evaluate, exact_match, normalize_answer, read_benchmark
from onevision.infer.likelihood import Score
from onevision.infer.matrix import plot_matrix, transfer_matrix


def test_normalize_answer():
    assert normalize_answer("  Red\tCar. ") == "red car"
    assert exact_match("Two.", "two") and exact_match("a  red\ncircle", "A red circle.")
    assert not exact_match("reds", "red") and not exact_match("", "red")


@pytest.fixture
def benchmark(tmp_path):
    """Six records in two files: open and multiple-choice, text-only, one image, two images, one missing image."""
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((30, 30, 3), 50, np.uint8)).save(tmp_path / "b.png")

    def rec(rid, question, answer, **extra):
        return {"id": rid, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], "answer": answer, **extra}

    colours = ["red", "green", "blue", "yellow"]
    (tmp_path / "colour.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        rec("c1", "<image>\nWhat colour?", "green", image="a.png", choices=colours, scenario="single_image"),
        rec("c2", "What colour is grass?", "B", choices=colours),  # a letter reference means choice B
        rec("c3", "<image>\n<image>\nSame colour?", "no", image=["a.png", "b.png"], choices=["yes", "no"]),
        rec("c4", "<image>\nWhat colour?", "red", image="missing.png", choices=colours),
    ]))
    (tmp_path / "count.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        rec("n1", "How many?", "two", task="count", scenario="text"),
        {"id": "n2", "image": "a.png", "conversations": [{"from": "human", "value": "How many shapes?"}], "answer": "3", "task": "count"},
    ]))
    return tmp_path


def test_forced_outputs_scored_per_scenario_and_task(benchmark, monkeypatch):
    pipe = debug_pipeline()
    texts = {"n1": "Two.", "n2": "4"}
    picks = {"c1": 1, "c2": 1, "c3": 0}

    def forced_generate(prepared, settings):
        return [torch.tensor(pipe.encoder.encode_text(texts[p.request.id]) + pipe.answer_end) for p in prepared]

    def forced_score(prepared, continuations):
        return [[Score(0.0 if j == picks[p.request.id] else -5.0, False, 1) for j in range(len(c))] for p, c in zip(prepared, continuations)]

    monkeypatch.setattr(pipe, "generate_prepared", forced_generate)
    monkeypatch.setattr(pipe, "score", forced_score)
    items = read_benchmark([benchmark / "colour.jsonl", benchmark / "count.jsonl"])
    assert [i.scenario for i in items] == ["single_image", "text", "multi_image", "single_image", "text", "single_image"]
    assert items[5].request.images and items[5].request.conversation() == [("user", "<image>\nHow many shapes?")]
    report = evaluate(pipe, items, name="forced", batch_size=4, progress=False)
    results = {r.id: r for r in report.results}
    assert {k: (r.mode, r.prediction, r.correct) for k, r in results.items() if r.error is None} == {
        "c1": ("choice", "green", True),
        "c2": ("choice", "green", True),
        "c3": ("choice", "yes", False),
        "n1": ("generate", "Two.", True),
        "n2": ("generate", "4", False),
    }
    assert "missing.png" in results["c4"].error and not results["c4"].correct
    scenarios = report.groups("scenario")
    assert (scenarios["single_image"].correct, scenarios["single_image"].total, scenarios["single_image"].failed) == (1, 2, 1)
    assert scenarios["single_image"].chance == pytest.approx((0.25 + 0.25 + 0) / 3)  # open answers count as chance 0
    assert scenarios["multi_image"].accuracy == 0.0 and scenarios["multi_image"].chance == 0.5
    tasks = report.groups("task")
    assert tasks["colour"].accuracy == pytest.approx(2 / 3) and tasks["count"].accuracy == 0.5 and tasks["count"].chance is None
    assert report.overall.accuracy == pytest.approx(3 / 5)
    table = report.table("task")
    assert "colour" in table and "0.667" in table and "all" in table


def test_transfer_matrix_table_and_png(tmp_path):
    def report(name, outcomes):
        return Report(name, [Result(f"{s}{k}", "t", s, "choice", "x", "x", ok, chance=0.5) for s, oks in outcomes.items() for k, ok in enumerate(oks)])

    reports = [
        report("image-only", {"single_image": [1, 1, 1, 0], "video": [1, 0, 0, 0]}),
        report("video-only", {"video": [1, 1, 1, 1], "multi_image": [1, 0]}),
    ]
    matrix = transfer_matrix(reports)
    assert matrix.columns == ["single_image", "multi_image", "video"]
    assert matrix.accuracy == [[0.75, None, 0.25], [None, 0.5, 1.0]]
    assert matrix.chance == [0.5, 0.5, 0.5] and matrix.counts == [[4, 0, 4], [0, 2, 4]]
    lines = matrix.table().splitlines()
    assert lines[1].split() == ["image-only", "0.750", "-", "0.250"] and lines[-1].split()[0] == "chance"
    png = plot_matrix(matrix, tmp_path / "plots" / "matrix.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="names must differ"):
        transfer_matrix([reports[0], reports[0]])


def test_eval_cli_two_checkpoints_on_world(tmp_path, capsys):
    from onevision.world import build_world

    world = build_world(tmp_path / "world", n_train=0, n_test=1, tasks=("si_colour", "si_caption", "mi_same_colour", "vid_direction"), progress=False)
    first = save_debug_checkpoint(tmp_path / "ckpt-a", seed=0)
    second = save_debug_checkpoint(tmp_path / "ckpt-b", seed=1)
    report, plot = tmp_path / "report.json", tmp_path / "matrix.png"
    code = main(["eval", "--checkpoints", f"a={first}", str(second), "--data", str(world.root / "test"),
                 "--report", str(report), "--plot", str(plot), "--no-progress", "--max-new-tokens", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "transfer matrix" in out and "ckpt-b" in out
    data = json.loads(report.read_text())
    assert [r["name"] for r in data["reports"]] == ["a", "ckpt-b"]
    assert data["transfer_matrix"]["columns"] == ["single_image", "multi_image", "video"]
    results = {r["id"]: r for r in data["reports"][0]["results"]}
    assert results["test-si_caption-00000"]["mode"] == "generate"
    colour = results["test-si_colour-00000"]
    assert colour["mode"] == "choice" and len(colour["scores"]) == 4 and colour["error"] is None
    assert colour["prediction"] == ["red", "green", "blue", "yellow"][int(np.argmax(colour["scores"]))]
    assert plot.read_bytes()[:4] == b"\x89PNG"



def deep(depth: int) -> list:
    """A list nested `depth` levels deep (built in a loop; str() of it would recurse past the limit)."""
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["id", "role", "answer", "choices", "choice", "task", "scenario", "chance"])
def test_deeply_nested_fields_give_a_short_record_error(field):
    """A 100,000-deep value in any field benchmark_item reads: one bounded RecordError naming file and line."""
    value = deep(100_000)
    record = {"id": "r1", "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "red"}], "answer": "red"}
    if field == "role":
        record["conversations"][-1]["from"] = value
    elif field == "choice":
        record["choices"] = ["red", value]
    else:
        record[field] = value
    with pytest.raises(RecordError) as error:
        benchmark_item(record, source="bench.jsonl", index=2, line=3)
    message = str(error.value)
    assert message.startswith("bench.jsonl:3"), message
    assert len(message) < 300, message
    assert "[[[[...]]]]" in message, message  # the value is quoted, a few levels deep
