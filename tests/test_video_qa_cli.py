"""`onevision video-qa`: a folder with broken videos finishes and records their errors; a rerun
answers only what is missing; questions with options are answered by likelihood; answers are
flushed one by one, so a crash keeps what was answered; names that are not UTF-8 are written
as \\xNN escapes."""

import json
import os
import shutil

import pytest

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_broken, make_video
from onevision.cli.errors import EXIT_INTERNAL, EXIT_INTERRUPTED
from onevision.cli.main import main
from onevision.infer.debug_model import save_debug_checkpoint
from onevision.infer.pipeline import OneVision

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
    summary, err = capsys.readouterr()
    assert "videos 6: answered 3, failed 3, skipped 0" in summary and "videos/s" in summary and "decode" in summary
    assert sorted(line.split(":")[0] for line in err.splitlines() if line.startswith("failed ")) == [
        "failed text.mp4", "failed truncated.mp4", "failed zero_byte_video.mp4"]
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


def test_undecodable_file_name_is_answered_and_resumed(checkpoint, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(folder / "a.mp4", width=32, height=24, frames=4)
    shutil.copy(folder / "a.mp4", os.fsdecode(bytes(folder) + b"/caf\xe9.mp4"))  # Latin-1, not UTF-8
    out = tmp_path / "answers.jsonl"
    assert run(checkpoint, "--videos", folder, "--question", "What?", "--out", out) == 0
    assert "answered 2, failed 0" in capsys.readouterr().out
    lines = {line["id"]: line for line in json.loads("[" + ",".join(out.read_bytes().decode("utf-8").splitlines()) + "]")}
    assert sorted(lines) == ["a.mp4", "caf\\xe9.mp4"]
    assert lines["caf\\xe9.mp4"]["video"].endswith("clips/caf\\xe9.mp4") and isinstance(lines["caf\\xe9.mp4"]["answer"], str)
    assert run(checkpoint, "--videos", folder, "--question", "What?", "--out", out) == 0
    assert "answered 0, failed 0, skipped 2" in capsys.readouterr().out


@pytest.mark.parametrize("stop,code", [(RuntimeError("device lost"), EXIT_INTERNAL), (KeyboardInterrupt(), EXIT_INTERRUPTED)])
def test_crash_keeps_answers_and_rerun_finishes(checkpoint, videos, tmp_path, monkeypatch, capsys, stop, code):
    """The run stops in the second batch (a bug, or Ctrl-C): the answers before it are on disk."""
    calls = []
    real = OneVision.generate_prepared

    def second_call_fails(self, prepared, settings):
        calls.append(len(prepared))
        if len(calls) == 2:
            raise stop
        return real(self, prepared, settings)

    monkeypatch.setattr(OneVision, "generate_prepared", second_call_fails)
    out = tmp_path / "answers.jsonl"
    args = ("--videos", videos, "--question", "What?", "--out", out, "--batch-size", 2, "--decode-workers", 0)
    assert run(checkpoint, *args) == code
    assert ("device lost" if code == EXIT_INTERNAL else "interrupted") in capsys.readouterr().err
    first = read_lines(out)
    answered = [line["id"] for line in first if line["answer"] is not None]
    assert len(answered) == calls[0] == 2  # sorted order: a.mp4, b.mp4 form the first batch
    # The second batch's broken video was written before its model call failed.
    assert [line["id"] for line in first if line.get("error")] == ["text.mp4"]
    monkeypatch.setattr(OneVision, "generate_prepared", real)
    assert run(checkpoint, *args) == 0
    summary = capsys.readouterr().out
    assert f"skipped {len(first)}" in summary
    ids = [line["id"] for line in read_lines(out)]
    assert len(ids) == len(set(ids)) == 6


def test_batch_failure_is_retried_one_by_one(checkpoint, videos, tmp_path, monkeypatch, capsys):
    """Bad input that fails a whole batch call fails only its own video."""
    real = OneVision.generate_prepared

    def rejects_b(self, prepared, settings):
        if any(p.request.id == "b.mp4" for p in prepared):
            raise ValueError("b.mp4: prompt too long")
        return real(self, prepared, settings)

    monkeypatch.setattr(OneVision, "generate_prepared", rejects_b)
    out = tmp_path / "answers.jsonl"
    assert run(checkpoint, "--videos", videos, "--question", "What?", "--out", out, "--batch-size", 3) == 0
    assert "answered 2, failed 4" in capsys.readouterr().out
    lines = {line["id"]: line for line in read_lines(out)}
    assert lines["b.mp4"]["answer"] is None and "prompt too long" in lines["b.mp4"]["error"]
    assert isinstance(lines["a.mp4"]["answer"], str) and isinstance(lines["sub/c.mkv"]["answer"], str)


def test_line_cut_inside_a_character_is_asked_again(checkpoint, videos, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    whole = json.dumps({"id": "a.mp4", "answer": "ok"}) + "\n"
    cut = json.dumps({"id": "b.mp4", "answer": "caf\u00e9"}, ensure_ascii=False).encode()[:-3]  # inside the 'é'
    out.write_bytes(whole.encode() + cut)
    assert run(checkpoint, "--videos", videos, "--question", "What?", "--out", out) == 0
    assert "skipped 1" in capsys.readouterr().out
    ids = [json.loads(line)["id"] for line in out.read_bytes().decode("utf-8", "replace").splitlines()[2:]]
    assert "b.mp4" in ids and "a.mp4" not in ids
