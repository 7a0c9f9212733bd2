"""Score a checkpoint on benchmark records of any scenario; compare checkpoints across scenarios.

Records are the official LLaVA format plus evaluation fields (what `onevision.world` writes):

    {"id": "test-si_colour-00003", "image": "media/test/si_colour/00003.png",
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the shape? ..."},
                       {"from": "gpt", "value": "red"}],
     "answer": "red", "choices": ["red", "green", "blue", "yellow"],
     "task": "si_colour", "scenario": "single_image", "chance": 0.25}

The prompt is the conversation up to its last user turn (a trailing assistant turn is the
reference answer and is dropped). The reference is "answer", else that last assistant turn.
Optional fields: "choices" (multiple choice), "task" (default: the file's name), "scenario"
(default: from the media: single_image, multi_image, video or text), "chance" (default:
1 / number of choices).

Two ways to score a record (`mode`):
- 'choice' (records with choices; the default for them under 'auto'): each choice is scored by
  likelihood (`OneVision.choose_prepared`; by='text' scores the choice's text followed by
  `<|im_end|>` under the record's own prompt, by='letter' lists the choices as lettered lines
  and scores the letters), the most likely one is the prediction;
- 'generate' (the default without choices): greedy generation, compared by exact match after
  normalising case, whitespace and trailing periods.
A reference written as a letter ("B") for a record with choices means that choice.

Records whose media cannot be read count as failed, not wrong: they are left out of the
accuracy and counted apart. `transfer_matrix(reports)` lays several checkpoints' accuracies out
per scenario (rows checkpoints, columns scenarios, with the chance level of each column) and
`plot_matrix` draws it as a heat map (both live in `onevision.infer.matrix`, exported here).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from onevision.budget import BudgetError
from onevision.data.media import MediaError
from onevision.data.records import RecordError, display, iter_raw_records, parse_record, raw_record_id, short
from onevision.infer.inputs import Request
from onevision.infer.matrix import TransferMatrix, plot_matrix, transfer_matrix
from onevision.infer.prompt import LETTERS
from onevision.utils.progress import progress_bar

MODES = ("auto", "choice", "generate")
_SPACES = re.compile(r"\s+")
_MODALITY_SCENARIO = {"text": "text", "image": "single_image", "multi_image": "multi_image", "video": "video"}


def normalize_answer(text: str) -> str:
    """Lower case, whitespace collapsed, surrounding space and trailing periods removed."""
    return _SPACES.sub(" ", str(text)).strip().rstrip(".").strip().lower()


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after `normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


@dataclass
class BenchmarkItem:
    """One benchmark record, ready to ask."""

    request: Request
    """Prompt turns (up to the last user turn), media and choices (as options)."""
    answer: str
    """The reference answer."""
    task: str
    """Task name, for the per-task table."""
    scenario: str
    """'single_image', 'multi_image', 'video' or 'text' (or the record's own label)."""
    chance: float | None
    """Accuracy of a uniform guess; None for open answers."""


def benchmark_item(raw: dict, *, source: str = "<memory>", index: int = 0, line: int | None = None, media_root=None) -> BenchmarkItem:
    """A `BenchmarkItem` from one raw record (media paths joined onto `media_root`).

    Raises:
        RecordError: the record breaks the LLaVA format, has no reference answer, or an
            evaluation field ("answer", "choices", "task", "scenario", "chance") of the wrong type.
            Messages quote values with `records.short` (at most 100 characters, a few levels
            deep), so no value, however nested, is turned whole into text.
    """
    record_id = raw_record_id(raw)
    place = f"{source}:{line}" if line is not None else f"{source}[{index}]"
    where = f"{place} (id={display(record_id)})" if record_id is not None else place

    def fail(message: str):
        raise RecordError(f"{where}: {message}")

    if not isinstance(raw, dict) or not isinstance(raw.get("conversations"), list):
        fail("expected a record with a 'conversations' list")
    conversations = list(raw["conversations"])
    last = conversations[-1] if conversations else {}
    role = last.get("from", last.get("role")) if isinstance(last, dict) else None
    last_role = role.lower() if isinstance(role, str) else ""
    answer = _field_text(raw.get("answer"), "'answer'", fail)
    if last_role in ("human", "user"):
        if answer is None:
            fail("no 'answer' and no assistant turn to score against")
        conversations.append({"from": "gpt", "value": answer})
    record = parse_record({**raw, "conversations": conversations}, source=source, index=index, line=line, media_root=media_root)
    reference = answer if answer is not None else record.turns[-1].text
    choices = raw.get("choices") or []
    if not isinstance(choices, list):
        fail(f"'choices' must be a list, got {type(choices).__name__} {short(choices)}")
    choices = [_field_text(c, f"choice {k}", fail) for k, c in enumerate(choices)]
    chance = raw.get("chance", 1.0 / len(choices) if choices else None)
    if chance is not None and (isinstance(chance, bool) or not isinstance(chance, (int, float))):
        fail(f"'chance' must be a number or null, got {type(chance).__name__} {short(chance)}")
    request = Request(
        turns=[(t.role, t.text) for t in record.turns[:-1]],
        images=record.images,
        video=record.video,
        options=choices,
        id=record.id,
    )
    task = _field_text(raw.get("task"), "'task'", fail) or Path(source).stem
    scenario = _field_text(raw.get("scenario"), "'scenario'", fail) or _MODALITY_SCENARIO[record.modality]
    return BenchmarkItem(request, reference, task, scenario, None if chance is None else float(chance))


def _field_text(value: Any, what: str, fail) -> str | None:
    """A scalar evaluation field as text (None stays None); anything else fails with its value quoted short."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    fail(f"{what} must be a string or a number, got {type(value).__name__} {short(value)}")


def read_benchmark(paths: str | os.PathLike | Iterable[str | os.PathLike], media_root=None) -> list[BenchmarkItem]:
    """Benchmark items from .jsonl / .json files, or folders of them (searched recursively).

    Media paths are relative to `media_root`, else to each file's folder, else (for files in a
    split folder such as a world's test/) to the folder above it when the paths resolve there.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.rglob("*.jsonl")) if path.is_dir() else [path])
    items = []
    for path in files:
        raws = list(iter_raw_records(path))
        root = media_root if media_root is not None else _media_root(path, [raw for _, _, raw in raws])
        items.extend(benchmark_item(raw, source=str(path), index=i, line=n, media_root=root) for i, n, raw in raws)
    return items


def _media_root(path: Path, raws: list) -> Path:
    """The file's folder, or its parent when the first media path exists only from there."""
    first = next((m for raw in raws if isinstance(raw, dict) for m in _media_of(raw)), None)
    if first is None or os.path.isabs(first) or (path.parent / first).exists():
        return path.parent
    return path.parent.parent if (path.parent.parent / first).exists() else path.parent


def _media_of(raw: dict) -> list[str]:
    """The record's media paths; a malformed field gives none here (parse_record reports it)."""
    media = raw.get("image") or raw.get("video") or []
    media = [media] if isinstance(media, str) else media if isinstance(media, list) else []
    return [m for m in media if isinstance(m, str)]


@dataclass
class Result:
    """How the model did on one record."""

    id: str
    task: str
    scenario: str
    mode: str
    """'choice' or 'generate'."""
    answer: str
    prediction: str | None
    correct: bool
    chance: float | None = None
    scores: list[float] | None = None
    """Per-choice log-likelihoods (choice mode)."""
    error: str | None = None
    """Why the record could not be asked (media unreadable, over budget); then not scored."""


@dataclass
class Group:
    """Accuracy over a set of records."""

    correct: int
    total: int
    """Records scored (failed ones excluded)."""
    failed: int
    chance: float | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


@dataclass
class Report:
    """One checkpoint's results on a benchmark."""

    name: str
    results: list[Result] = field(default_factory=list)

    def groups(self, by: str = "scenario") -> dict[str, Group]:
        """Accuracy per 'scenario' or per 'task' (sorted by name)."""
        buckets: dict[str, list[Result]] = {}
        for result in self.results:
            buckets.setdefault(getattr(result, by), []).append(result)
        return {key: _group(buckets[key]) for key in sorted(buckets)}

    @property
    def overall(self) -> Group:
        return _group(self.results)

    def table(self, by: str = "scenario") -> str:
        """A text table of `groups(by)` plus an overall row."""
        rows = [(key, g) for key, g in self.groups(by).items()] + [("all", self.overall)]
        width = max(len(by), *(len(k) for k, _ in rows))
        lines = [f"{by:<{width}}  {'n':>5}  {'failed':>6}  {'accuracy':>8}  {'chance':>6}"]
        for key, g in rows:
            lines.append(f"{key:<{width}}  {g.total:>5}  {g.failed:>6}  {_fmt(g.accuracy):>8}  {_fmt(g.chance):>6}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def summary(g: Group) -> dict:
            return {"accuracy": g.accuracy, "correct": g.correct, "total": g.total, "failed": g.failed, "chance": g.chance}

        return {
            "name": self.name,
            "overall": summary(self.overall),
            "scenarios": {k: summary(g) for k, g in self.groups("scenario").items()},
            "tasks": {k: summary(g) for k, g in self.groups("task").items()},
            "results": [asdict(r) for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        return cls(data["name"], [Result(**r) for r in data["results"]])


def _group(results: Sequence[Result]) -> Group:
    scored = [r for r in results if r.error is None]
    # An open answer cannot be hit by guessing among choices: it counts as chance 0 when the
    # group also holds multiple-choice records; a group of open answers only has no chance level.
    chances = [r.chance for r in results]
    known = [c for c in chances if c is not None]
    chance = sum(known) / len(chances) if known else None
    return Group(sum(r.correct for r in scored), len(scored), len(results) - len(scored), chance)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _reference_choice(item: BenchmarkItem) -> str:
    """The reference as choice text (a letter reference mapped to its choice)."""
    options = item.request.options
    answer = item.answer.strip()
    if answer not in options and len(answer) == 1 and answer.upper() in LETTERS[: len(options)]:
        return options[LETTERS.index(answer.upper())]
    return item.answer


def evaluate(
    model_or_pipe: Any,
    records: Sequence[BenchmarkItem | dict] | str | os.PathLike,
    *,
    name: str = "model",
    tokenizer: Any = None,
    mode: str = "auto",
    choice_by: str = "text",
    batch_size: int = 8,
    max_new_tokens: int = 32,
    media_root=None,
    progress: bool = True,
) -> Report:
    """Score a model on benchmark records.

    Args:
        model_or_pipe: a `OneVision`, a `OneVisionModel` (with `tokenizer`), or a checkpoint folder.
        records: `BenchmarkItem`s, raw record dicts, or a .jsonl file / folder of them.
        name: the report's name (a row of the transfer matrix).
        mode: 'auto' (choices -> 'choice', else 'generate'), 'choice' or 'generate'.
        choice_by: 'text' (score each choice's text) or 'letter' (list them lettered, score letters).
        batch_size: records per model batch.
        max_new_tokens: generation length for exact-match records.

    Returns:
        A `Report` with one `Result` per record, in order.
    """
    from onevision.infer.pipeline import OneVision

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    pipe = model_or_pipe
    if isinstance(pipe, (str, os.PathLike)):
        pipe = OneVision.from_pretrained(pipe)
    elif not isinstance(pipe, OneVision):
        if tokenizer is None:
            raise TypeError(f"evaluate takes a OneVision pipeline, a checkpoint folder, or a model with tokenizer=; got {type(pipe).__name__}")
        pipe = OneVision(pipe, tokenizer)
    if isinstance(records, (str, os.PathLike)):
        items = read_benchmark(records, media_root)
    else:
        items = [r if isinstance(r, BenchmarkItem) else benchmark_item(r, index=i, media_root=media_root) for i, r in enumerate(records)]
    for item in items:
        if mode == "choice" and len(item.request.options) < 2:
            raise ValueError(f"{item.request.describe()}: mode 'choice' needs choices, the record has {list(item.request.options)}")
    settings = pipe.generation_settings(max_new_tokens=max_new_tokens)
    report = Report(name)
    bar = progress_bar(total=len(items), desc=f"evaluating {name}", unit="record", disable=not progress)
    for start in range(0, len(items), max(1, batch_size)):
        batch = items[start : start + batch_size]
        results: list[Result | None] = [None] * len(batch)
        choice, generate = [], []
        for k, item in enumerate(batch):
            as_choice = mode == "choice" or (mode == "auto" and len(item.request.options) >= 2)
            try:
                prepared = pipe.prepare_choice(item.request, choice_by) if as_choice else pipe.prepare(item.request)
            except (MediaError, BudgetError) as error:
                results[k] = _result(item, "choice" if as_choice else "generate", None, False, error=str(error))
                continue
            (choice if as_choice else generate).append((k, prepared))
        if choice:
            for (k, _), picked in zip(choice, pipe.choose_prepared([p for _, p in choice], choice_by)):
                item = batch[k]
                results[k] = _result(item, "choice", picked.option, exact_match(picked.option, _reference_choice(item)), scores=list(picked.scores))
        if generate:
            for (k, _), tokens in zip(generate, pipe.generate_prepared([p for _, p in generate], settings)):
                text = pipe.decode(tokens)
                results[k] = _result(batch[k], "generate", text, exact_match(text, batch[k].answer))
        report.results.extend(results)
        bar.update(len(batch))
    bar.close()
    return report


def _result(item: BenchmarkItem, mode: str, prediction: str | None, correct: bool, scores=None, error=None) -> Result:
    return Result(
        id=str(item.request.id),
        task=item.task,
        scenario=item.scenario,
        mode=mode,
        answer=item.answer,
        prediction=prediction,
        correct=bool(correct),
        chance=item.chance,
        scores=scores,
        error=error,
    )


def save_report(reports: Report | Sequence[Report], path: str | os.PathLike, matrix=None) -> Path:
    """Write one report, or several plus their transfer matrix, as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(reports, Report):
        data = reports.to_dict()
    else:
        data = {"reports": [r.to_dict() for r in reports]}
        if matrix is not None:
            data["transfer_matrix"] = matrix.to_dict()
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = [
    "BenchmarkItem",
    "Group",
    "Report",
    "Result",
    "TransferMatrix",
    "benchmark_item",
    "evaluate",
    "exact_match",
    "normalize_answer",
    "plot_matrix",
    "read_benchmark",
    "save_report",
    "transfer_matrix",
]
