"""`onevision video-qa`: a folder with broken videos finishes and records their errors; a rerun
answers only what is missing; questions with options are answered by likelihood."""

import json
import shutil

import pytest

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_broken, make_video
from onevision.cli.main import main
from onevision.infer.debug import save_debug_checkpoint

BROKEN = ("zero_byte_video", "text_mp4", "truncated_mp4")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_debug_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for name in ("a", "b"):
        make_video(folder / f"{name}.mp4", width=32, height=24, frames=6)
    make_video(folder / "sub" / "c.mkv", width=32, height=24, frames=4, codec="mpeg4")
    broken = make_broken(tmp_path / "broken")
    for name in BROKEN:
        shutil.copy(broken[name], folder / broken[name].name)
    (folder / "notes.txt").write_text("not a video\n")
    return folder


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(checkpoint, *extra):
    return main(["video-qa", "--model", str(checkpoint), "--max-new-tokens", "4", "--no-progress", *map(str, extra)])


def test_broken_videos_recorded_and_rerun_answers_only_missing(checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    assert run(checkpoint, "--videos", videos, "--question", "What happens?", "--out", out, "--batch-size", 2) == 0
    summary = capsys.readouterr().out
    assert "videos 6: answered 3, failed 3, skipped 0" in summary and "videos/s" in summary and "decode" in summary
    lines = {line["id"]: line for line in read_lines(out)}
    assert sorted(lines) == sorted(["a.mp4", "b.mp4", "sub/c.mkv", "zero_byte_video.mp4", "text.mp4", "truncated.mp4"])
    for qid in ("a.mp4", "b.mp4", "sub/c.mkv"):
        assert isinstance(lines[qid]["answer"], str) and "error" not in lines[qid]
        assert lines[qid]["question"] == "What happens?" and lines[qid]["seconds"] >= 0
    for qid in ("zero_byte_video.mp4", "text.mp4", "truncated.mp4"):
        assert lines[qid]["answer"] is None and qid in lines[qid]["error"]
    assert "empty" in lines["zero_byte_video.mp4"]["error"]

    # Lose one answer, add one video: the rerun asks exactly those two.
    kept = [line for line in out.read_text().splitlines() if json.loads(line)["id"] != "b.mp4"]
    out.write_text("\n".join(kept) + "\n")
    make_video(videos / "d.mp4", width=32, height=24, frames=5)
    assert run(checkpoint, "--videos", videos, "--question", "What happens?", "--out", out) == 0
    assert "videos 7: answered 2, failed 0, skipped 5" in capsys.readouterr().out
    ids = [line["id"] for line in read_lines(out)]
    assert sorted(ids) == sorted(set(ids)) and {"b.mp4", "d.mp4"} <= set(ids) and len(ids) == 7

    assert run(checkpoint, "--videos", videos, "--question", "What happens?", "--out", out, "--retry-failed") == 0
    assert "videos 7: answered 0, failed 3, skipped 4" in capsys.readouterr().out


def test_options_answered_by_likelihood(checkpoint, videos, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    rows = [
        {"id": "q1", "video": "videos/a.mp4", "question": "Which colour?", "options": ["red", "green", "blue"]},
        {"id": "q2", "video": "videos/sub/c.mkv", "question": "Is it moving?"},
        {"id": "q3", "video": "videos/text.mp4", "question": "Which shape?", "options": ["circle", "square"]},
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mc.jsonl"
    assert run(checkpoint, "--questions", questions, "--out", out, "--decode-workers", 0) == 0
    assert "answered 2, failed 1" in capsys.readouterr().out
    lines = {line["id"]: line for line in read_lines(out)}
    q1 = lines["q1"]
    assert len(q1["scores"]) == 3 and q1["answer"] == q1["options"]["ABC".index(q1["choice"])]
    assert q1["scores"]["ABC".index(q1["choice"])] == max(q1["scores"])
    assert isinstance(lines["q2"]["answer"], str) and "scores" not in lines["q2"]
    assert lines["q3"]["answer"] is None and "text.mp4" in lines["q3"]["error"]
