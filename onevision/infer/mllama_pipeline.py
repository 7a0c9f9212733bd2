"""`MllamaPipeline`: a cross-attention (transformers `mllama`) folder behind `ask`, `generate_batch` and `choose`.

    pipe = OneVision.from_pretrained("runs/mllama_instruct/hf")   # an MllamaPipeline: model_type 'mllama'
    pipe.ask("What is shown?", image="cat.jpg")
    pipe.choose("Which colour?", ["red", "green"], video="clip.mp4").option

It is a `OneVision` (the same request types, generation settings, letter / text multiple
choice, `video-qa` and `eval` drive it), with what differs for this family:

- the folder is read by `load_mllama` with `text_rows="reference"` (as training builds the
  model: positions that see no image get no cross-attention output) and its pixel settings by
  `read_mllama_normalization`;
- media become tiles (`onevision.processing.mllama`): an image up to the model's
  max_num_tiles tiles, a video `num_frames` uniform frames (default 32), each frame an image
  of one tile (onevision/data/mllama_dataset.py does the same in training);
- prompts are Llama 3's chat format (`onevision.data.llama3_chat`, the training encoder), one
  `<|image|>` per image or frame; generation stops at `<|eot_id|>` or the tokenizer's eos;
- batches are left-padded for generation and right-padded for scoring, each with its
  cross-attention mask (`padded_cross_attention_mask`; padding is no image token, so it sees
  no image).

`InferenceConfig` fields honoured: system_prompt, num_frames, video_backend, max_length;
prompt_format must be 'auto' or 'chat_template' (the folder's template must render Llama 3's
format); time_instruction, visual and vocab_size (logits always cover the LM head's rows) are refused.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from onevision.budget.mllama_tiles import MllamaImagePlan
from onevision.data.cross_attention import padded_cross_attention_mask
from onevision.data.llama3_chat import EOT, Llama3ChatEncoder
from onevision.data.media import VideoClip, load_video, sample_frame_indices
from onevision.data.media.image import to_rgb
from onevision.data.mllama_dataset import FRAME_TILES, plan_capped
from onevision.infer.inputs import MediaLoader, Request
from onevision.infer.likelihood import Score
from onevision.infer.pipeline import (
    InferenceConfig,
    OneVision,
    PromptTooLong,
    resolve_dtype,
)
from onevision.infer.prompt import multiple_choice_prompt, with_placeholders
from onevision.model.generate import GenerationSettings
from onevision.processing.mllama import (
    MLLAMA_NORMALIZATION,
    mllama_tiles,
    stack_mllama_images,
)
from onevision.processing.normalize import ImageNormalization

DEFAULT_FRAMES = 32


@dataclass
class MllamaMedia:
    """A request's images and frames as (tiles, plan) pairs, and the `<|image|>` count of each placeholder."""

    pairs: list[tuple[torch.Tensor, MllamaImagePlan]]
    counts: list[int]
    scenario: str
    timestamps: list[float] = field(default_factory=list)
    duration: float = 0.0
    seconds: float = 0.0


@dataclass
class MllamaPrepared:
    """A request ready for the model: its prompt ids and tiles."""

    request: Request
    input_ids: torch.Tensor
    media: MllamaMedia

    @property
    def scenario(self) -> str:
        return self.media.scenario


class MllamaMediaLoader:
    """Decodes a request's media and cuts it into tiles for one model."""

    def __init__(self, model_config, normalization: ImageNormalization, num_frames: int, video_backend: str, dtype: torch.dtype):
        self.tiles = model_config.tiles()
        self.normalization = normalization
        self.num_frames = num_frames
        self.video_backend = video_backend
        self.dtype = dtype

    def load(self, request: Request) -> MllamaMedia:
        """Raises MediaError (a file that cannot be decoded) or ValueError (malformed frames)."""
        start = time.perf_counter()
        images = [MediaLoader._image(image) for image in request.images]
        frames, timestamps, duration = ([], [], 0.0) if request.video is None else self._video(request.video)
        pairs = [self._tiles(image, self.tiles.max_num_tiles) for image in images] + [self._tiles(f, FRAME_TILES) for f in frames]
        counts = [1] * len(images) + ([len(frames)] if request.video is not None else [])
        scenario = "video" if request.video is not None else {0: "text", 1: "single_image"}.get(len(images), "multi_image")
        return MllamaMedia(pairs, counts, scenario, timestamps, duration, time.perf_counter() - start)

    def _tiles(self, image: Image.Image, cap: int) -> tuple[torch.Tensor, MllamaImagePlan]:
        plan = plan_capped(image.height, image.width, self.tiles, cap)
        return mllama_tiles(image, plan, self.tiles.tile_size, self.normalization).to(self.dtype), plan

    def _video(self, video) -> tuple[list[Image.Image], list[float], float]:
        timestamps, duration = [], 0.0
        if isinstance(video, (str, os.PathLike)):
            video = load_video(video, num_frames=self.num_frames, backend=self.video_backend)
        if isinstance(video, VideoClip):
            frames, timestamps, duration = video.frames, list(video.timestamps), video.duration
        elif isinstance(video, (list, tuple)) and video and isinstance(video[0], Image.Image):
            frames = np.stack([np.asarray(to_rgb(frame)) for frame in video])
        else:
            frames = np.asarray(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"video frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.dtype} {frames.shape}")
        if len(frames) > self.num_frames:
            keep = sample_frame_indices(len(frames), 1.0, num_frames=self.num_frames)
            frames, timestamps = frames[keep], [timestamps[k] for k in keep] if timestamps else []
        return [Image.fromarray(frame) for frame in frames], timestamps, duration


class MllamaPipeline(OneVision):
    """Question answering with an `MllamaVLM` (see the module docstring).

    Raises:
        ValueError: a refused `InferenceConfig` field (named), or a tokenizer that does not
            fit the model (no Llama 3 control tokens, another `<|image|>` id, another template).
    """

    def __init__(self, model, tokenizer, config: InferenceConfig | None = None, normalization: ImageNormalization = MLLAMA_NORMALIZATION):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.original = None
        self.chat_template = tokenizer.chat_template
        self.requested = config or InferenceConfig()
        refused = (("time_instruction", self.requested.time_instruction), ("visual", self.requested.visual is not None),
                   ("vocab_size", self.requested.vocab_size is not None))
        for name, bad in refused:
            if bad:
                raise ValueError(f"InferenceConfig.{name} does not apply to the cross-attention family")
        if self.requested.prompt_format not in ("auto", "chat_template"):
            raise ValueError(f"InferenceConfig.prompt_format={self.requested.prompt_format!r}: the cross-attention family is asked in its chat template")
        self.config = dataclasses.replace(self.requested, prompt_format="chat_template")
        self.max_length_name = "max_length"
        self.encoder = Llama3ChatEncoder(tokenizer, model.config.image_token_id, self.config.system_prompt)
        self.encoder.check_template(tokenizer.chat_template, "the tokenizer")
        param = next(model.parameters())
        self.loader = MllamaMediaLoader(model.config, normalization, self.config.num_frames or DEFAULT_FRAMES, self.config.video_backend, param.dtype)
        eot = tokenizer.convert_tokens_to_ids(EOT)
        self.eos_token_ids = tuple(sorted({eot, tokenizer.eos_token_id} - {None}))
        self.answer_end = [eot]
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot)
        self._told_no_times = True

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                        tokenizer: Any = None, config: InferenceConfig | None = None, progress: bool = False) -> MllamaPipeline:
        """An mllama folder (config.json model_type 'mllama') with the tokenizer saved in it, or `tokenizer`."""
        from onevision.checkpoint.mllama import load_mllama, read_mllama_normalization
        from onevision.tokenizer import load_tokenizer

        path = Path(path)
        model = load_mllama(path, device=device, dtype=resolve_dtype(dtype), text_rows="reference")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(path if tokenizer is None else tokenizer)
        return cls(model, tokenizer, config, read_mllama_normalization(path, model.config))

    def reconfigured(self, **changes) -> MllamaPipeline:
        return MllamaPipeline(self.model, self.tokenizer, dataclasses.replace(self.requested, **changes), self.loader.normalization)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, request: Request | dict | str, *, multiple_choice: bool = False, media: MllamaMedia | None = None) -> MllamaPrepared:
        request = Request.coerce(request)
        media = self.loader.load(request) if media is None else media
        question = multiple_choice_prompt(request.conversation()[-1][1], request.options) if multiple_choice else None
        turns = with_placeholders(request.conversation(question), len(request.images), request.video is not None)
        ids = self.encoder.prompt(turns, list(media.counts), f"{request.describe()}: ")
        prepared = MllamaPrepared(request, torch.tensor(ids, dtype=torch.long), media)
        self.check_length(prepared)
        return prepared

    def check_length(self, prepared: MllamaPrepared, extra: int = 0) -> None:
        length, limit = int(prepared.input_ids.numel()) + extra, self.config.max_length
        if limit is not None and length > limit:
            raise PromptTooLong(f"{prepared.request.describe()}: the prompt is {length} tokens but max_length is {limit}")

    def _vision(self, prepared: Sequence[MllamaPrepared], ids: torch.Tensor) -> dict:
        rows = [p.media.pairs for p in prepared]
        if not any(rows):
            return {}
        tiles = self.model.config.vision.max_num_tiles
        pixels = stack_mllama_images(rows, tiles)
        mask = padded_cross_attention_mask(ids, pixels.num_tiles, tiles, self.model.config.image_token_id)
        out = {"pixel_values": pixels.pixel_values, "aspect_ratio_ids": pixels.aspect_ratio_ids,
               "aspect_ratio_mask": pixels.aspect_ratio_mask, "cross_attention_mask": mask}
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(dtype) if k == "pixel_values" else v).to(self.device) for k, v in out.items()}

    def generate_prepared(self, prepared: Sequence[MllamaPrepared], settings: GenerationSettings) -> list[torch.Tensor]:
        """New token ids per request (left-padded together), up to and including its stop token."""
        width = max(int(p.input_ids.numel()) for p in prepared)
        ids = torch.full((len(prepared), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, p in enumerate(prepared):
            ids[k, width - p.input_ids.numel():], mask[k, width - p.input_ids.numel():] = p.input_ids, 1
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k} if settings.do_sample else {"do_sample": False}
        ids = ids.to(self.device)
        out = self.model.generate(
            ids, attention_mask=mask.to(self.device), max_new_tokens=settings.max_new_tokens, eos_token_id=list(settings.eos_token_ids),
            pad_token_id=settings.pad_token_id, use_cache=settings.use_cache, **sampling, **self._vision(prepared, ids),
        )[:, width:].cpu()
        answers = []
        for row in out:
            stops = [k for k, t in enumerate(row.tolist()) if t in settings.eos_token_ids]
            answers.append(row[: stops[0] + 1] if stops else row)
        return answers

    @torch.no_grad()
    def score(self, prepared: Sequence[MllamaPrepared], continuations: Sequence[Sequence[Sequence[int]]]) -> list[list[Score]]:
        """Log-likelihood of each continuation of each prompt (right-padded, one row per pair)."""
        out = []
        for p, candidates in zip(prepared, continuations):
            self.check_length(p, max((len(c) for c in candidates), default=0))
            rows = [torch.cat([p.input_ids, torch.tensor(c, dtype=torch.long)]) for c in candidates]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for k, r in enumerate(rows):
                ids[k, : len(r)], mask[k, : len(r)] = r, 1
            ids = ids.to(self.device)
            logits = self.model(ids, attention_mask=mask.to(self.device), **self._vision([p] * len(rows), ids)).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            start = int(p.input_ids.numel())
            scores = []
            for k, c in enumerate(candidates):
                positions = torch.arange(start - 1, start - 1 + len(c), device=self.device)
                target = torch.tensor(c, device=self.device)
                picked = logprobs[k, positions, target]
                greedy = bool((logprobs[k, positions].argmax(-1) == target).all())
                scores.append(Score(float(picked.sum()), greedy, len(c)))
            out.append(scores)
        return out
