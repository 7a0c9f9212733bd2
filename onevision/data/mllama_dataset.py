"""Samples of the cross-attention family: records -> tile pixels, aspect-ratio ids and one `<|image|>` per image.

`MllamaDataset[i]` does, for record i:
1. read the media headers and plan every image's tiles (`onevision.budget.mllama_tiles`), at
   most `max_num_tiles` tiles an image in this stage (the annealing stages raise it up to the
   model's own max_num_tiles; the aspect-ratio id is always the arrangement's index in the
   model's list, so the ids mean the same in every stage). Videos are frames, and each frame is
   an image of one tile: a 32-frame clip costs 32 decoder tokens and 32 tiles; a video takes
   fewer frames (uniformly) when the cross-attention budget holds fewer;
2. check the sample's two budgets, decoder tokens (`max_length`) and cross-attention keys
   (`max_cross_attention_tokens`), and skip it when over either;
3. decode the media and cut the tiles (`onevision.processing.mllama`, transformers'
   `MllamaImageProcessorPil` arithmetic), and encode the conversation in Llama 3's format
   (`onevision.data.llama3_chat`).

It returns an `MllamaSample`, or the `Skipped` marker of onevision/data/dataset.py naming the
record, the file and the reason; the collator (onevision/data/mllama_collate.py) drops and
counts those. `measure(i)` gives a sample's token count from headers alone, for the batch sampler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from onevision.budget.mllama_tiles import (
    MllamaImagePlan,
    MllamaTileSettings,
    plan_mllama_image,
    supported_aspect_ratios,
)
from onevision.budget.planner import BudgetError
from onevision.data.dataset import BadRecord, Skipped
from onevision.data.llama3_chat import Llama3ChatEncoder
from onevision.data.media import (
    MediaError,
    image_size,
    load_image,
    load_video,
    sample_frame_indices,
    video_info,
)
from onevision.data.records import Record
from onevision.data.template import SkipSample
from onevision.processing.mllama import MLLAMA_NORMALIZATION, mllama_tiles
from onevision.processing.normalize import ImageNormalization

FRAME_TILES = 1
"""Tiles of one video frame: frames are many, and each tile costs tokens_per_tile keys."""


@dataclass(frozen=True)
class MllamaDataConfig:
    """How records become samples for the cross-attention family."""

    tiles: MllamaTileSettings
    """The model's tile size, patch size and max_num_tiles (`MllamaModelConfig.tiles()`)."""
    max_num_tiles: int | None = None
    """Most tiles an image is cut into in this stage, 1..tiles.max_num_tiles; None: the model's."""
    max_length: int = 8192
    """Decoder-token budget of one sample (text plus one `<|image|>` per image or frame)."""
    max_cross_attention_tokens: int | None = None
    """Cross-attention-key budget of one sample (tokens_per_tile per real tile); None: unchecked."""
    frames_upbound: int = 32
    """Most frames taken from a video."""
    video_fps: float | None = 1.0
    """Sample frames at this rate (capped by frames_upbound); None: frames_upbound uniform frames."""
    force_sample: bool = False
    """Always exactly frames_upbound uniform frames."""
    video_backend: str = "auto"
    """'auto', 'decord' or 'pyav'."""
    normalization: ImageNormalization = MLLAMA_NORMALIZATION
    """Pixel mean, std and resize filter."""

    def __post_init__(self) -> None:
        cap = self.max_num_tiles
        if cap is not None and not 1 <= cap <= self.tiles.max_num_tiles:
            raise ValueError(f"max_num_tiles={cap}: must be 1..{self.tiles.max_num_tiles} (the model's vision max_num_tiles)")

    @property
    def cap(self) -> int:
        return self.tiles.max_num_tiles if self.max_num_tiles is None else self.max_num_tiles


def plan_capped(height: int, width: int, tiles: MllamaTileSettings, cap: int) -> MllamaImagePlan:
    """The plan of an image cut into at most `cap` tiles, numbered and padded as the model's max_num_tiles.

    The arrangements of rows * cols <= cap are the first ones the model supports, so the best
    canvas under the cap is found among them; its id is its index in the model's full list.
    """
    plan = plan_mllama_image(height, width, dataclasses.replace(tiles, max_num_tiles=cap))
    full = supported_aspect_ratios(tiles.max_num_tiles)
    return dataclasses.replace(plan, aspect_ratio_id=full.index((plan.rows, plan.cols)) + 1, max_num_tiles=tiles.max_num_tiles)


@dataclass
class MllamaSample:
    """One training sample of the cross-attention family, ready for the collator."""

    id: str
    input_ids: torch.Tensor
    """[T] int64, one `<|image|>` per image or frame."""
    labels: torch.Tensor
    """[T] int64, -100 where not supervised."""
    images: list[tuple[torch.Tensor, MllamaImagePlan]]
    """(tiles [plan.num_tiles, 3, S, S], plan) per image or frame, in placeholder order."""
    modality: str
    """'text', 'image', 'multi_image' or 'video'."""
    record: str = ""
    """Record file and line/index, with the id."""

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


class MllamaDataset(torch.utils.data.Dataset):
    """Samples of a list of records (see the module docstring); `encoder` renders the conversations."""

    def __init__(self, records: Sequence[Record | BadRecord], encoder: Llama3ChatEncoder, config: MllamaDataConfig) -> None:
        self.records = list(records)
        self.encoder = encoder
        self.config = config

    def __len__(self) -> int:
        return len(self.records)

    def modalities(self) -> list[str]:
        return [record.modality for record in self.records]

    def measure(self, index: int) -> int | Skipped:
        """Tokens of sample `index` from media headers and tokenising only, or why it will be skipped."""
        try:
            record = self._record(index)
            sizes = self._sizes(record)
            return len(self._encode(record, sizes).input_ids)
        except (MediaError, SkipSample, BudgetError) as error:
            return self._skipped(index, error)

    def lengths(self) -> tuple[list[int], list[Skipped]]:
        """Every sample's token count (0 for a sample known to be bad) and the skips found on the way."""
        lengths, bad = [], []
        for index in range(len(self)):
            measured = self.measure(index)
            bad += [measured] if isinstance(measured, Skipped) else []
            lengths.append(0 if isinstance(measured, Skipped) else measured)
        return lengths, bad

    def __getitem__(self, index: int) -> MllamaSample | Skipped:
        try:
            record = self._record(index)
            images = self._images(record)
            encoded = self._encode(record, [(image.height, image.width) for image in images])
            plans = self._plans(record, [(image.height, image.width) for image in images])
            pairs = []
            for image, plan in zip(images, plans):
                try:
                    pairs.append((mllama_tiles(image, plan, self.config.tiles.tile_size, self.config.normalization), plan))
                except ValueError as error:
                    raise MediaError(record.video or record.images[len(pairs)], str(error)) from error
        except (MediaError, SkipSample, BudgetError) as error:
            return self._skipped(index, error)
        return MllamaSample(
            id=record.id,
            input_ids=torch.tensor(encoded.input_ids, dtype=torch.long),
            labels=torch.tensor(encoded.labels, dtype=torch.long),
            images=pairs,
            modality=record.modality,
            record=record.where,
        )

    def _record(self, index: int) -> Record:
        record = self.records[index]
        if isinstance(record, BadRecord):
            raise SkipSample(record.reason)
        return record

    def frame_cap(self) -> int:
        """Most frames a video gives: frames_upbound, fewer when the cross-attention budget holds fewer one-tile frames.

        Raises:
            BudgetError: the budget holds not even one frame.
        """
        config, cap = self.config, self.config.frames_upbound
        if config.max_cross_attention_tokens is not None:
            cap = min(cap, config.max_cross_attention_tokens // (FRAME_TILES * config.tiles.tokens_per_tile))
            if cap < 1:
                raise BudgetError(f"a video frame needs {FRAME_TILES * config.tiles.tokens_per_tile} cross-attention tokens, over {config.max_cross_attention_tokens}")
        return cap

    def _video_sampling(self) -> dict:
        config, cap = self.config, self.frame_cap()
        if config.force_sample:
            return {"force_sample": True, "frames_upbound": cap}
        if config.video_fps is None:
            return {"num_frames": cap}
        return {"fps": config.video_fps, "frames_upbound": cap}

    def _sizes(self, record: Record) -> list[tuple[int, int]]:
        """(height, width) of every image, or of every frame the video will give, from headers."""
        if record.video is None:
            return [(h, w) for w, h in map(image_size, record.images)]
        info = video_info(record.video)
        frames = len(sample_frame_indices(info.num_frames, info.fps, **self._video_sampling()))
        return [(info.height, info.width)] * frames

    def _images(self, record: Record) -> list[Image.Image]:
        if record.video is None:
            return [load_image(path) for path in record.images]
        clip = load_video(record.video, backend=self.config.video_backend, **self._video_sampling())
        return [Image.fromarray(frame) for frame in clip.frames]

    def _plans(self, record: Record, sizes: list[tuple[int, int]]) -> list[MllamaImagePlan]:
        cap = FRAME_TILES if record.video is not None else self.config.cap
        return [plan_capped(h, w, self.config.tiles, cap) for h, w in sizes]

    def _encode(self, record: Record, sizes: list[tuple[int, int]]):
        """Encode the conversation and check both budgets (a video's frames fill its one placeholder)."""
        counts = [len(sizes)] if record.video is not None else [1] * len(sizes)
        encoded = self.encoder.encode([(t.role, t.text) for t in record.turns], counts, record.where + ": ")
        keys = sum(plan.cross_attention_tokens for plan in self._plans(record, sizes))
        budget = self.config.max_cross_attention_tokens
        over = []
        if len(encoded.input_ids) > self.config.max_length:
            over.append(f"{len(encoded.input_ids)} decoder tokens over max_length {self.config.max_length}")
        if budget is not None and keys > budget:
            over.append(f"{keys} cross-attention tokens over {budget}")
        if over:
            raise BudgetError(f"{record.where}: " + " and ".join(over) + f" ({len(sizes)} images or frames)")
        return encoded

    def _skipped(self, index: int, error: Exception) -> Skipped:
        record = self.records[index]
        where = record.where
        if isinstance(error, MediaError):
            kind, file, reason = "media", error.path, f"{error} (record {where})"
        elif isinstance(error, BudgetError):
            kind, file, reason = "budget", record.source, str(error)
        else:
            kind, file, reason = getattr(error, "kind", "invalid"), record.source, str(error)
        return Skipped(id=record.id, file=str(file), reason=reason, kind=kind, record=where, index=index)

