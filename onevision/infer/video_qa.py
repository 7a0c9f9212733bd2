"""Question answering over many videos: batched, resumable, robust to broken files.

Questions come from a folder of videos (one question for all) or a JSONL of
`{"id", "video", "question"[, "options"]}` (video paths relative to the JSONL's folder). The
answers are appended to a JSONL file, one line per video, flushed after every batch:

    {"id": "clips/a.mp4", "video": "/data/clips/a.mp4", "question": "...", "answer": "...",
     "seconds": 0.41}
    {"id": "q7", ..., "options": ["cat", "dog"], "answer": "dog", "choice": "B",
     "scores": [-3.2, -0.4], "seconds": 0.12}
    {"id": "clips/broken.mp4", ..., "answer": null, "error": "clips/broken.mp4: file is empty (0 bytes)", "seconds": 0.0}

Resuming: ids already in the output are skipped, so an interrupted run continues where it
stopped (with `retry_failed`, ids whose line holds an error are asked again and a new line is
appended; the last line of an id wins). A video that cannot be decoded (`MediaError`) or fits no
visual budget is recorded with its error and the run goes on.

Decoding overlaps generation: worker threads decode the next batch's videos (decord and PyAV
release the GIL) while the model answers the current one. `seconds` of a line is its decode
time plus its share of its batch's model time.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from onevision.budget import BudgetError
from onevision.data.media import MediaError
from onevision.infer.inputs import LoadedMedia, Request

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp", ".ts")
# Per-item failures recorded in the output instead of ending the run.
ITEM_ERRORS = (MediaError, BudgetError, ValueError)


@dataclass
class VideoQuestion:
    """One question about one video."""

    id: str
    video: str
    question: str
    options: list[str] = field(default_factory=list)


def questions_from_folder(folder: str | os.PathLike, question: str, options: Sequence[str] = ()) -> list[VideoQuestion]:
    """The same question for every video file under `folder` (recursively, by extension, sorted).

    Ids are the paths relative to `folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    return [VideoQuestion(p.relative_to(folder).as_posix(), str(p), question, list(options)) for p in paths]


def questions_from_jsonl(path: str | os.PathLike, default_question: str | None = None) -> list[VideoQuestion]:
    """Questions from a JSONL of {id, video, question[, options]}; relative videos join the file's folder.

    Raises:
        ValueError: a line is not JSON, lacks `video`, or has no question and no default; ids repeat.
    """
    path = Path(path)
    questions, seen = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            if not isinstance(raw, dict) or not raw.get("video"):
                raise ValueError(f"{path}:{number}: each line needs a 'video' path")
            question = raw.get("question") or default_question
            if not question:
                raise ValueError(f"{path}:{number}: no 'question' (and no default question given)")
            qid = str(raw.get("id", f"{raw['video']}#{number}"))
            if qid in seen:
                raise ValueError(f"{path}:{number}: id {qid!r} repeats; ids key the resumable output")
            seen.add(qid)
            video = raw["video"] if os.path.isabs(raw["video"]) else str(path.parent / raw["video"])
            questions.append(VideoQuestion(qid, video, str(question), [str(o) for o in raw.get("options") or ()]))
    return questions


def finished_ids(out: str | os.PathLike, retry_failed: bool = False) -> set[str]:
    """Ids already in the output (with `retry_failed`, only those without an error on their last line)."""
    out = Path(out)
    if not out.is_file():
        return set()
    last: dict[str, dict] = {}
    with out.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run: that id is asked again
            if isinstance(entry, dict) and "id" in entry:
                last[str(entry["id"])] = entry
    return {qid for qid, entry in last.items() if not (retry_failed and entry.get("error"))}


@dataclass
class Summary:
    """What a run did and where its time went."""

    videos: int = 0
    """Questions in the input."""
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    """Already in the output."""
    wall_seconds: float = 0.0
    decode_seconds: float = 0.0
    """Summed over videos (in worker threads, overlapping the model)."""
    generate_seconds: float = 0.0
    """Model time (prompt, vision tower, decoding), summed over batches."""

    @property
    def videos_per_second(self) -> float:
        done = self.answered + self.failed
        return done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def text(self) -> str:
        return (
            f"videos {self.videos}: answered {self.answered}, failed {self.failed}, skipped {self.skipped} | "
            f"{self.wall_seconds:.1f} s wall, {self.videos_per_second:.2f} videos/s | "
            f"decode {self.decode_seconds:.1f} s (summed over workers), generate {self.generate_seconds:.1f} s"
        )


def run_video_qa(
    pipe,
    questions: Sequence[VideoQuestion],
    out: str | os.PathLike,
    *,
    batch_size: int = 4,
    choice_by: str = "letter",
    decode_workers: int = 2,
    retry_failed: bool = False,
    progress: bool = True,
    **generation,
) -> Summary:
    """Answer `questions` with `pipe` (a `OneVision`), appending one JSON line per video to `out`.

    Args:
        batch_size: videos per model batch.
        choice_by: for questions with options: 'letter' or 'text' (see `OneVision.choose`).
        decode_workers: threads decoding the next batch; 0 decodes in the main thread.
        retry_failed: ask again the ids whose output line holds an error.
        generation: max_new_tokens, temperature, top_p, top_k, seed for open questions.
    """
    start = time.perf_counter()
    done = finished_ids(out, retry_failed)
    pending = [q for q in questions if q.id not in done]
    summary = Summary(videos=len(questions), skipped=len(questions) - len(pending))
    settings = pipe.generation_settings(**generation)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        with out.open("a", encoding="utf-8") as handle:
            handle.write("\n")  # finish a line cut short, so appended lines stay whole
    batches = [pending[i : i + max(1, batch_size)] for i in range(0, len(pending), max(1, batch_size))]
    pool = ThreadPoolExecutor(decode_workers) if decode_workers > 0 else None
    bar = tqdm(total=len(pending), desc="video-qa", unit="video", disable=not progress)
    try:
        upcoming = _submit(pipe, batches[0], pool) if batches else []
        for index, batch in enumerate(batches):
            current = upcoming
            if index + 1 < len(batches):
                upcoming = _submit(pipe, batches[index + 1], pool)
            lines = _answer_batch(pipe, batch, [_result(f) for f in current], settings, choice_by, summary)
            with out.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
            bar.update(len(batch))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _load(pipe, question: VideoQuestion) -> tuple[LoadedMedia | Exception, float]:
    began = time.perf_counter()
    try:
        return pipe.loader.load(_request(question)), time.perf_counter() - began
    except ITEM_ERRORS as error:
        return error, time.perf_counter() - began


def _submit(pipe, batch: list[VideoQuestion], pool: ThreadPoolExecutor | None) -> list:
    if pool is None:
        return [_load(pipe, q) for q in batch]
    return [pool.submit(_load, pipe, q) for q in batch]


def _result(item) -> tuple[LoadedMedia | Exception, float]:
    return item.result() if isinstance(item, Future) else item


def _request(question: VideoQuestion) -> Request:
    return Request(question=question.question, video=question.video, options=question.options, id=question.id)


def _answer_batch(pipe, batch, loaded, settings, choice_by: str, summary: Summary) -> list[dict]:
    """Prepare prompts, run the model once for the open questions and once for the choices."""
    lines: list[dict] = []
    seconds: list[float] = []
    ready: dict[str, list[tuple[int, object]]] = {"open": [], "choice": []}
    for k, (question, (media, decode_seconds)) in enumerate(zip(batch, loaded)):
        summary.decode_seconds += decode_seconds
        seconds.append(decode_seconds)
        line = {"id": question.id, "video": question.video, "question": question.question}
        if question.options:
            line["options"] = question.options
        line["answer"] = None
        lines.append(line)
        if not isinstance(media, Exception):
            try:
                request = _request(question)
                if question.options:
                    ready["choice"].append((k, pipe.prepare_choice(request, choice_by, media=media)))
                else:
                    ready["open"].append((k, pipe.prepare(request, media=media)))
            except ITEM_ERRORS as error:
                media = error
        if isinstance(media, Exception):
            line["error"] = error_text(media)
            summary.failed += 1
    began = time.perf_counter()
    if ready["open"]:
        for (k, _), tokens in zip(ready["open"], pipe.generate_prepared([p for _, p in ready["open"]], settings)):
            lines[k]["answer"] = pipe.decode(tokens)
    if ready["choice"]:
        for (k, _), choice in zip(ready["choice"], pipe.choose_prepared([p for _, p in ready["choice"]], choice_by)):
            lines[k].update(answer=choice.option, choice=choice.letter, scores=[round(s, 4) for s in choice.scores])
    model_seconds = time.perf_counter() - began
    summary.generate_seconds += model_seconds
    asked = [k for k, _ in ready["open"] + ready["choice"]]
    summary.answered += len(asked)
    for k in asked:
        seconds[k] += model_seconds / len(asked)
    for line, spent in zip(lines, seconds):
        line["seconds"] = round(spent, 4)
    return lines


def error_text(error: Exception) -> str:
    """The message recorded for a failed video."""
    return str(error) if isinstance(error, MediaError) else f"{type(error).__name__}: {error}"
