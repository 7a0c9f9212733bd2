"""Map-style dataset over conversation records: media -> plan -> pixels -> tokens.

`OneVisionDataset[i]` does, for record i:
1. read the media headers (`image_size`, `video_info`) and the frames the sampler will take,
   and plan the visual tokens (`onevision.budget.plan_sample`);
2. decode the media (`load_image`, `load_video` with the plan's frame count) and cut the
   pixels per plan (`onevision.processing.preprocess_item`);
3. tokenise the conversation, expanding placeholders to the planned runs (`template.py`),
   with LLaVA-Video's time instruction for videos when asked.

It returns a `Sample`, or a `Skipped` marker naming the record, the file and the reason when
anything is wrong (unreadable media, a record that breaks the format, placeholders that
disagree with the media, a sample over max_length or its visual budget). Skips are data, not
exceptions: the collator drops them and counts them, so one bad file never ends an epoch.

Step 1 plus tokenising (no pixel decoded) gives every sample's exact length ahead of time:
`lengths()` computes and caches them for the batch sampler; `modalities()` comes from the
records alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from onevision.budget import BudgetError, ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.data.media import MediaError, image_size, load_image, load_video, sample_frame_indices, video_info
from onevision.data.media.sampling import frame_timestamps
from onevision.data.recipe import Recipe
from onevision.data.records import Record, RecordError, iter_raw_records, display, parse_record, raw_record_id
from onevision.data.template import (
    ChatEncoder,
    SkipSample,
    TemplateConfig,
    insert_time_instruction,
    time_instruction,
)
from onevision.processing import ImageNormalization, preprocess_item
from onevision.utils.progress import progress_bar


PIXEL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DataConfig:
    """How records become samples; the `data:` block of training configs."""

    visual: VisualSettings = field(default_factory=VisualSettings)
    """Visual token settings (AnyRes N, video pooling and frames, per-sample budget)."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """Chat template, max length, placeholder position, system prompt."""
    video_fps: float | None = 1.0
    """Sample video frames at this rate (capped by visual.frames_upbound); None: frames_upbound uniform frames."""
    force_sample: bool = False
    """Always exactly visual.frames_upbound uniform frames per video (LLaVA-Video)."""
    time_instruction: bool = False
    """Tell the model a video's duration and frame times in the prompt (LLaVA-Video)."""
    video_backend: str = "auto"
    """Video decoder: 'auto', 'decord' or 'pyav'."""
    seed: int = 0
    """Seed of per-sample choices (image_position='random')."""
    pixel_dtype: str = "float32"
    """dtype of the normalised pixels workers send: 'float32', or 'bfloat16' / 'float16' to halve the
    bytes when the vision tower runs in that precision anyway (a 32-frame 384 px video is 57 MB in float32)."""

    def __post_init__(self) -> None:
        if self.pixel_dtype not in PIXEL_DTYPES:
            raise ValueError(f"pixel_dtype must be one of {sorted(PIXEL_DTYPES)}, got {self.pixel_dtype!r}")


@dataclass
class Sample:
    """One training sample, ready for the collator."""

    id: str
    """Record id."""
    input_ids: torch.Tensor
    """[T] int64 token ids, placeholders expanded."""
    labels: torch.Tensor
    """[T] int64 targets (-100 where not supervised), not shifted."""
    pixel_values: torch.Tensor | None
    """[tiles, 3, S, S] normalised tiles of all items in placeholder order (DataConfig.pixel_dtype); None for text-only."""
    plans: list
    """Item plans in placeholder order (`onevision.budget` AnyResPlan / BaseImagePlan / VideoPlan)."""
    modality: str
    """'text', 'image', 'multi_image' or 'video'."""
    num_tokens: int
    """T."""
    source: str = ""
    """Record file."""
    record: str = ""
    """Record file and line/index, with the id (for messages)."""


@dataclass(frozen=True)
class Skipped:
    """A record that could not become a sample, and why."""

    id: str
    """Record id (or '#index' when it has none)."""
    file: str
    """The file at fault: the media file for media errors, else the record file."""
    reason: str
    """What is wrong, with the numbers; names the file and the record."""
    kind: str
    """'media', 'invalid', 'placeholders', 'too_long' or 'budget'."""
    record: str = ""
    """Record file and line/index, with the id."""
    index: int = -1
    """Dataset index."""

    def to_dict(self) -> dict:
        return {"id": self.id, "file": self.file, "reason": self.reason, "kind": self.kind, "record": self.record}


@dataclass(frozen=True)
class BadRecord:
    """A record that failed format validation, kept in place so it is counted, not lost."""

    id: str
    source: str
    reason: str
    modality: str = "text"
    """Best guess from the raw keys, so the sampler groups it like its neighbours."""
    where: str = ""


def load_records(recipe: Recipe, progress: bool = True) -> list[Record | BadRecord]:
    """A recipe's final sample list; records that break the format become `BadRecord`s instead of raising.

    Raises:
        FileNotFoundError, RecordError: a record file is missing or is not valid JSON at all.
    """
    out: list[Record | BadRecord] = []
    for dataset in progress_bar(range(len(recipe.datasets)), desc="reading records", disable=not progress):
        path = recipe.datasets[dataset].json_path
        root = recipe.dataset_media_root(dataset)
        rows: list[Record | BadRecord] = []
        for index, line, raw in iter_raw_records(path):
            try:
                rows.append(parse_record(raw, source=path, index=index, line=line, media_root=root))
            except RecordError as error:
                rows.append(_bad_record(raw, str(path), index, line, str(error)))
        recipe.check_total(len(out), dataset, recipe.dataset_size(dataset, len(rows)))
        out.extend(rows[row] for row in recipe.dataset_rows(dataset, len(rows)))
    return out


class _Measured(torch.utils.data.Dataset):
    """(index, tokens or Skipped) of every sample of a dataset, for `lengths()` in worker processes."""

    def __init__(self, dataset: OneVisionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, int | Skipped]:
        return index, self.dataset.measure(index)


def _bad_record(raw: Any, source: str, index: int, line: int | None, reason: str) -> BadRecord:
    raw = raw if isinstance(raw, dict) else {}
    image = raw.get("image")
    if raw.get("video"):
        modality = "video"
    elif isinstance(image, list) and len(image) > 1:
        modality = "multi_image"
    else:
        modality = "image" if image else "text"
    record_id = raw_record_id(raw)
    record_id = f"#{index}" if record_id is None else record_id
    where = f"{source}:{line}" if line is not None else f"{source}[{index}]"
    return BadRecord(record_id, source, reason, modality, f"{where} (id={display(record_id)})")


@dataclass(frozen=True)
class _Planned:
    """A record with its media measured and planned, nothing decoded."""

    record: Record
    plan: Any
    video_sampling: dict
    timestamps: list[float]
    duration: float


class OneVisionDataset(torch.utils.data.Dataset):
    """Samples of a list of records (see module docstring).

    Args:
        records: `Record`s (or `BadRecord`s, counted as skips) in sample order.
        tokenizer: a tokenizer from `onevision.tokenizer`.
        config: data settings.
        normalization: the vision tower's pixel mean/std/filter (SigLIP by default).
    """

    def __init__(
        self,
        records: Sequence[Record | BadRecord],
        tokenizer: Any,
        config: DataConfig | None = None,
        normalization: ImageNormalization | None = None,
    ) -> None:
        self.records = list(records)
        self.config = config or DataConfig()
        self.encoder = ChatEncoder(tokenizer, self.config.template)
        self.normalization = normalization or ImageNormalization()
        self._lengths: np.ndarray | None = None
        self._known_bad: dict[int, Skipped] = {}

    @classmethod
    def from_recipe(cls, recipe: Recipe, tokenizer: Any, config: DataConfig | None = None, progress: bool = True, **kwargs) -> OneVisionDataset:
        """The dataset of a recipe's final sample list (bad records kept as skips)."""
        return cls(load_records(recipe, progress=progress), tokenizer, config, **kwargs)

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    def __len__(self) -> int:
        return len(self.records)

    def modalities(self) -> list[str]:
        """Modality of every sample, from the records alone (no file opened)."""
        return [r.modality for r in self.records]

    def lengths(self, progress: bool = False, num_workers: int = 0) -> list[int]:
        """Exact token count of every sample, from media headers and tokenising only (cached).

        Samples already known to be bad get 0 (they are skipped when loaded). `num_workers`
        processes share the work for large recipes.
        """
        if self._lengths is None:
            lengths = np.zeros(len(self), dtype=np.int64)
            loader = torch.utils.data.DataLoader(_Measured(self), batch_size=64, num_workers=num_workers, collate_fn=list)
            with progress_bar(total=len(self), desc="measuring samples", unit="sample", disable=not progress) as bar:
                for chunk in loader:
                    for index, result in chunk:
                        if isinstance(result, Skipped):
                            self._known_bad[index] = result
                        else:
                            lengths[index] = result
                    bar.update(len(chunk))
            self._lengths = lengths
        return self._lengths.tolist()

    def known_bad(self) -> list[Skipped]:
        """Skips found by `lengths()` without decoding (media headers, format, length, budget)."""
        return [self._known_bad[i] for i in sorted(self._known_bad)]

    def measure(self, index: int) -> int | Skipped:
        """Tokens of sample `index` without decoding pixels, or why it will be skipped."""
        try:
            planned = self._plan(index)
            turns = self._turns(planned, planned.timestamps, planned.duration)
            return len(self.encoder.encode(turns, planned.plan.items, self._rng(index), planned.record.where + ": ").input_ids)
        except (MediaError, SkipSample, BudgetError) as error:
            return self._skipped(index, error)

    def __getitem__(self, index: int) -> Sample | Skipped:
        try:
            planned = self._plan(index)
            record, plan = planned.record, planned.plan
            tiles, timestamps, duration = [], planned.timestamps, planned.duration
            paths = record.images if record.video is None else [record.video]
            for path, item in zip(paths, plan.items):
                if item.kind == "video":
                    # Decoded straight at the tower's S x S with the processing filter: the same
                    # pixels as resizing full-size frames, without holding them (bounded memory).
                    side = self.config.visual.image_size
                    clip = load_video(path, backend=self.config.video_backend, size=(side, side),
                                      resample=self.normalization.pil_filter, **planned.video_sampling)
                    if clip.num_frames != item.frames:
                        raise MediaError(path, f"decoded {clip.num_frames} frames but the plan needs {item.frames}")
                    timestamps, duration = clip.timestamps, clip.duration
                    media = clip.frames
                else:
                    media = load_image(path)
                try:
                    tiles.append(preprocess_item(media, item, self.config.visual.image_size, self.normalization))
                except ValueError as error:
                    raise MediaError(path, str(error)) from error
            turns = self._turns(planned, timestamps, duration)
            encoded = self.encoder.encode(turns, plan.items, self._rng(index), record.where + ": ")
        except (MediaError, SkipSample, BudgetError) as error:
            return self._skipped(index, error)
        return Sample(
            id=record.id,
            input_ids=torch.tensor(encoded.input_ids, dtype=torch.long),
            labels=torch.tensor(encoded.labels, dtype=torch.long),
            pixel_values=self._pixels(tiles),
            plans=list(plan.items),
            modality=record.modality,
            num_tokens=len(encoded.input_ids),
            source=record.source,
            record=record.where,
        )

    def _pixels(self, tiles: list[torch.Tensor]) -> torch.Tensor | None:
        """All items' tiles [tiles, 3, S, S] in the configured dtype; None without items."""
        if not tiles:
            return None
        pixels = tiles[0] if len(tiles) == 1 else torch.cat(tiles)
        return pixels.to(PIXEL_DTYPES[self.config.pixel_dtype])

    def _plan(self, index: int) -> _Planned:
        record = self.records[index]
        if isinstance(record, BadRecord):
            raise SkipSample(record.reason)
        settings = self.config.visual
        if record.video is None:
            media = [ImageMedia(*image_size(path)) for path in record.images]
            return _Planned(record, plan_sample(media, settings), {}, [], 0.0)
        info = video_info(record.video)
        available = len(sample_frame_indices(info.num_frames, info.fps, **self._video_sampling(settings.frames_upbound)))
        plan = plan_sample([VideoMedia(available)], settings)
        sampling = self._video_sampling(plan.items[0].frames)
        indices = sample_frame_indices(info.num_frames, info.fps, **sampling)
        return _Planned(record, plan, sampling, frame_timestamps(indices, info.fps), info.duration)

    def _video_sampling(self, frames: int) -> dict:
        """load_video / sample_frame_indices arguments that yield `frames` frames."""
        if self.config.force_sample:
            return {"force_sample": True, "frames_upbound": frames}
        if self.config.video_fps is None:
            return {"num_frames": frames}
        return {"fps": self.config.video_fps, "frames_upbound": frames}

    def _turns(self, planned: _Planned, timestamps: Sequence[float], duration: float) -> list[tuple[str, str]]:
        turns = [(t.role, t.text) for t in planned.record.turns]
        if self.config.time_instruction and planned.record.video is not None:
            instruction = time_instruction(duration, timestamps)
            for k, (role, text) in enumerate(turns):
                if role == "user" and insert_time_instruction(text, instruction) != text:
                    turns[k] = (role, insert_time_instruction(text, instruction))
                    break
        return turns

    def _rng(self, index: int) -> random.Random:
        return random.Random(self.config.seed * 1_000_003 + index)

    def _skipped(self, index: int, error: Exception) -> Skipped:
        record = self.records[index]
        where = record.where
        if isinstance(error, MediaError):
            kind, file, reason = "media", error.path, f"{error} (record {where})"
        elif isinstance(error, BudgetError):
            kind, file, reason = "budget", record.source, f"{where}: {error}"
        else:
            kind, file, reason = getattr(error, "kind", "invalid"), record.source, str(error)
        return Skipped(id=record.id, file=str(file), reason=reason, kind=kind, record=where, index=index)
