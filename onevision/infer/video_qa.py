"""Question answering over many videos: batched, resumable, robust to broken files.

Questions come from a folder of videos (one question for all) or a JSONL of
`{"id", "video", "question"[, "options"]}` (video paths relative to the JSONL's folder). The
answers are appended to a JSONL file, one line per video, each written and flushed as soon as
it is known (a failed video at once, an answer when its batch's model call returns):

    {"id": "clips/a.mp4", "video": "/data/clips/a.mp4", "question": "...", "answer": "...",
     "seconds": 0.41}
    {"id": "q7", ..., "options": ["cat", "dog"], "answer": "dog", "choice": "B",
     "scores": [-3.2, -0.4], "seconds": 0.12}
    {"id": "clips/broken.mp4", ..., "answer": null, "error": "clips/broken.mp4: file is empty (0 bytes)", "seconds": 0.0}

Resuming: ids already in the output are skipped, so an interrupted run continues where it
stopped (with `retry_failed`, ids whose line holds an error are asked again and a new line is
appended; the last line of an id wins). A line cut short by an interruption is ignored. A video
that cannot be decoded or fits no visual budget is recorded with its error and the run goes on;
when a batch's model call fails on bad input, its questions are asked one at a time so only the
bad one fails.

File names that are not valid UTF-8 are written (as ids and in "video") with the undecodable
bytes as \\xNN, so every line is valid UTF-8 JSON and a rerun finds the same ids.

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

from onevision.budget import BudgetError
from onevision.data.media import MediaError
from onevision.infer.inputs import LoadedMedia, Request
from onevision.infer.prompt import LETTERS
from onevision.utils.progress import progress_bar

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp", ".ts")
MAX_OPTIONS = len(LETTERS)
"""Options of one question: each is named by a letter."""
# Per-item failures recorded in the output instead of ending the run.
ITEM_ERRORS = (MediaError, BudgetError, ValueError)


@dataclass
class VideoQuestion:
    """One question about one video."""

    id: str
    video: str
    question: str
    options: list[str] = field(default_factory=list)


def display_path(path: str | os.PathLike) -> str:
    """`path` as valid UTF-8 text: bytes of the file name that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def questions_from_folder(folder: str | os.PathLike, question: str, options: Sequence[str] = ()) -> list[VideoQuestion]:
    """The same question for every video file under `folder` (recursively, by extension, sorted).

    Ids are the paths relative to `folder` (as `display_path` writes them).

    Raises:
        FileNotFoundError: `folder` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder not found: {display_path(folder)}")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    return [VideoQuestion(display_path(p.relative_to(folder).as_posix()), str(p), question, list(options)) for p in paths]


def questions_from_jsonl(path: str | os.PathLike, default_question: str | None = None) -> list[VideoQuestion]:
    """Questions from a JSONL of {id, video, question[, options]}; relative videos join the file's folder.

    Raises:
        ValueError: naming the file and line: not UTF-8, not a JSON object, `video` not a path
            string, `question` not a string (and no default), `options` not a list of strings
            (a string is refused, not split into letters) of 2 to 26 entries, `id` not a string
            or integer, or an id that repeats.
    """
    path = Path(path)
    where = display_path(path)
    questions, seen = [], set()
    for number, data in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{where}:{number}: not UTF-8 text (byte {error.start + 1})") from None
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"{where}:{number}: invalid JSON: {getattr(error, 'msg', type(error).__name__)}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{where}:{number}: each line must be a JSON object, got {type(raw).__name__}")
        video = _string(raw.get("video"), f"{where}:{number}: 'video'", "a path")
        if "\0" in video:
            raise ValueError(f"{where}:{number}: 'video' holds a NUL character")
        question = raw.get("question")
        if question is None or question == "":
            question = default_question
            if not question:
                raise ValueError(f"{where}:{number}: no 'question' (and no default question given)")
        question = _string(question, f"{where}:{number}: 'question'", "text")
        options = raw.get("options")
        if options is None:
            options = []
        if not isinstance(options, list):
            kind = "a string (it would be split into letters)" if isinstance(options, str) else type(options).__name__
            raise ValueError(f"{where}:{number}: 'options' must be a list of strings such as [\"cat\", \"dog\"], got {kind}")
        options = [_string(o, f"{where}:{number}: options[{k}]", "text") for k, o in enumerate(options)]
        if options and not 2 <= len(options) <= MAX_OPTIONS:
            raise ValueError(f"{where}:{number}: 'options' needs 2 to {MAX_OPTIONS} entries (letters A-Z), got {len(options)}")
        qid = raw.get("id", f"{video}#{number}")
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise ValueError(f"{where}:{number}: 'id' must be a string or an integer, got {type(qid).__name__}")
        qid = _string(str(qid), f"{where}:{number}: 'id'", "text")
        if qid in seen:
            raise ValueError(f"{where}:{number}: id {qid!r} repeats; ids key the resumable output")
        seen.add(qid)
        video = video if os.path.isabs(video) else str(path.parent / video)
        questions.append(VideoQuestion(qid, video, question, options))
    return questions


def _string(value: object, where: str, what: str) -> str:
    """`value` if it is a non-empty string that UTF-8 can encode; else ValueError naming `where`."""
    if not isinstance(value, str) or not value:
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise ValueError(f"{where} must be {what} (a non-empty string), got {got}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} holds an unpaired surrogate (a JSON \\udc80-style escape): not text") from None
    return value


def finished_ids(out: str | os.PathLike, retry_failed: bool = False) -> set[str]:
    """Ids already in the output (with `retry_failed`, only those without an error on their last line).

    Lines that are not JSON objects (cut short by an interrupted run, say) are ignored: their
    ids are asked again.
    """
    out = Path(out)
    if not out.is_file():
        return set()
    last: dict[str, dict] = {}
    # errors="replace": a line cut inside a multi-byte character must not stop every rerun.
    with out.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(entry, dict) and "id" in entry:
                last[str(entry["id"])] = entry
    return {qid for qid, entry in last.items() if not (retry_failed and entry.get("error"))}


def check_output(out: str | os.PathLike) -> Path:
    """`out` ready for appending: a regular file or a new one (its folder created).

    Raises:
        ValueError: `out` exists and is not a regular file.
        OSError: the file cannot be opened for appending.
    """
    out = Path(out)
    if out.exists() and not out.is_file():
        raise ValueError(f"output {display_path(out)} exists and is not a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as handle:
        if handle.tell() and not _ends_with_newline(out):
            handle.write(b"\n")  # finish a line cut short, so appended lines stay whole
    return out


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


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
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(id, error) of every video that failed in this run, in the order they failed."""

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

    def failures_text(self, limit: int = 10) -> str:
        """The first `limit` failures, one per line ('' when none failed)."""
        lines = [f"failed {qid}: {error}" for qid, error in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more (their lines in the output hold 'error')")
        return "\n".join(lines)


def run_video_qa(
    pipe,
    questions: Sequence[VideoQuestion],
    out: str | os.PathLike,
    *,
    batch_size: int = 4,
    choice_by: str = "text",
    decode_workers: int = 2,
    retry_failed: bool = False,
    progress: bool = True,
    **generation,
) -> Summary:
    """Answer `questions` with `pipe` (a `OneVision`), appending one JSON line per video to `out`.

    Every line is flushed as soon as it is known, so an interruption or a crash loses at most
    the batch the model is working on.

    Args:
        batch_size: videos per model batch.
        choice_by: for questions with options: 'text' (the CLI default) or 'letter' (see `OneVision.choose`).
        decode_workers: threads decoding the next batch; 0 decodes in the main thread.
        retry_failed: ask again the ids whose output line holds an error.
        generation: max_new_tokens, temperature, top_p, top_k, seed for open questions.

    Raises:
        ValueError: bad generation settings, or `out` is not a file.
    """
    start = time.perf_counter()
    settings = pipe.generation_settings(**generation)
    out = check_output(out)
    done = finished_ids(out, retry_failed)
    pending = [q for q in questions if q.id not in done]
    summary = Summary(videos=len(questions), skipped=len(questions) - len(pending))
    batches = [pending[i : i + max(1, batch_size)] for i in range(0, len(pending), max(1, batch_size))]
    pool = ThreadPoolExecutor(decode_workers) if decode_workers > 0 else None
    bar = progress_bar(total=len(pending), desc="video-qa", unit="video", disable=not progress)
    # errors="backslashreplace" only guards against a string no check foresaw: inside a JSON
    # string the escape it writes (\udc80-style) reads back as the same character.
    handle = out.open("a", encoding="utf-8", errors="backslashreplace")

    def write(line: dict) -> None:
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        handle.flush()
        bar.update(1)

    try:
        upcoming = _submit(pipe, batches[0], pool) if batches else []
        for index, batch in enumerate(batches):
            current = upcoming
            if index + 1 < len(batches):
                upcoming = _submit(pipe, batches[index + 1], pool)
            _answer_batch(pipe, batch, [_result(f) for f in current], settings, choice_by, summary, write)
    finally:
        handle.close()
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _load(pipe, question: VideoQuestion) -> tuple[LoadedMedia | Exception, float]:
    began = time.perf_counter()
    try:
        return pipe.loader.load(_request(question)), time.perf_counter() - began
    except Exception as error:
        # A file from outside may make a decoder raise anything; that video fails, the run goes
        # on. The line keeps the error's type, so a systematic failure shows in the output.
        return error, time.perf_counter() - began


def _submit(pipe, batch: list[VideoQuestion], pool: ThreadPoolExecutor | None) -> list:
    if pool is None:
        return [_load(pipe, q) for q in batch]
    return [pool.submit(_load, pipe, q) for q in batch]


def _result(item) -> tuple[LoadedMedia | Exception, float]:
    return item.result() if isinstance(item, Future) else item


def _request(question: VideoQuestion) -> Request:
    return Request(question=question.question, video=question.video, options=question.options, id=question.id)


def _line(question: VideoQuestion) -> dict:
    line = {"id": question.id, "video": display_path(question.video), "question": question.question}
    if question.options:
        line["options"] = question.options
    line["answer"] = None
    return line


def _answer_batch(pipe, batch, loaded, settings, choice_by: str, summary: Summary, write) -> None:
    """Prepare prompts, run the model once for the open questions and once for the choices.

    A video that failed to decode or prepare is written at once; the others when their group's
    model call returns.
    """
    ready: dict[str, list[tuple[dict, float, object]]] = {"open": [], "choice": []}
    for question, (media, decode_seconds) in zip(batch, loaded, strict=True):
        summary.decode_seconds += decode_seconds
        line = _line(question)
        if not isinstance(media, Exception):
            try:
                request = _request(question)
                if question.options:
                    ready["choice"].append((line, decode_seconds, pipe.prepare_choice(request, choice_by, media=media)))
                else:
                    ready["open"].append((line, decode_seconds, pipe.prepare(request, media=media)))
            except ITEM_ERRORS as error:
                media = error
        if isinstance(media, Exception):
            _fail(line, media, decode_seconds, summary, write)

    def run_open(prepared):
        return [{"answer": pipe.decode(tokens)} for tokens in pipe.generate_prepared(prepared, settings)]

    def run_choice(prepared):
        return [
            {"answer": c.option, "choice": c.letter, "scores": [round(s, 4) for s in c.scores]}
            for c in pipe.choose_prepared(prepared, choice_by)
        ]

    _run_group(ready["open"], run_open, summary, write)
    _run_group(ready["choice"], run_choice, summary, write)


def _run_group(group: list[tuple[dict, float, object]], run, summary: Summary, write) -> None:
    """One model call for the whole group; if it fails on bad input, one call per question."""
    if not group:
        return
    began = time.perf_counter()
    try:
        results = run([prepared for _, _, prepared in group])
    except ITEM_ERRORS as error:
        summary.generate_seconds += time.perf_counter() - began
        if len(group) > 1:
            for item in group:
                _run_group([item], run, summary, write)
        else:
            _fail(group[0][0], error, group[0][1], summary, write)
        return
    spent = time.perf_counter() - began
    summary.generate_seconds += spent
    summary.answered += len(group)
    for (line, decode_seconds, _), result in zip(group, results, strict=True):
        line.update(result)
        line["seconds"] = round(decode_seconds + spent / len(group), 4)
        write(line)


def _fail(line: dict, error: Exception, seconds: float, summary: Summary, write) -> None:
    line["error"] = error_text(error)
    line["seconds"] = round(seconds, 4)
    summary.failed += 1
    summary.failures.append((line["id"], line["error"]))
    write(line)


def error_text(error: Exception) -> str:
    """The message recorded for a failed video."""
    return str(error) if isinstance(error, MediaError) else f"{type(error).__name__}: {error}"
