"""`OneVision`: a checkpoint and its tokenizer behind `ask`, `generate_batch` and `choose`.

    pipe = OneVision.from_pretrained("llava-onevision-qwen2-0.5b-ov", dtype="bf16", device="cuda")
    pipe.ask("What is shown?", image="cat.jpg")
    pipe.ask("What happens next?", video="clip.mp4", max_new_tokens=64, temperature=0.7, seed=0)
    pipe.generate_batch([{"question": "Describe.", "images": ["a.jpg", "b.jpg"]},
                         {"question": "Why?", "video": "v.mp4"},
                         {"question": "Hi!"}], batch_size=8)
    pipe.choose("Which colour?", ["red", "green", "blue"], image="x.png").option

Any checkpoint `onevision.checkpoint` reads (transformers' llava_onevision, original LLaVA-NeXT;
format detected) with the tokenizer files saved beside it. Prompts are rendered as the
checkpoint's own references render them (`onevision.infer.prompt`): a transformers-layout folder
with the chat template it carries (the released llava-hf folders' typed-parts template included,
so the ids equal `AutoProcessor.from_pretrained(folder)`'s), an original LLaVA-NeXT folder with
LLaVA-NeXT's qwen_1_5 conversation, an original LLaVA `llava_llama` folder with vicuna_v1
(as LLaVA-1.5's eval scripts). `InferenceConfig.prompt_format` overrides the choice. A batch mixes scenarios freely: every
request is planned and encoded on its own, the prompts are left-padded and decoded together with
a KV cache (`onevision.model.generate`), each stopping at `<|im_end|>`.

An original LLaVA-NeXT folder is also run as LLaVA-NeXT runs it (`llava_next.OriginalRuntime`,
each overridable in `InferenceConfig`): logits cover only the `len(tokenizer)` ids its builder
keeps when it resizes the embedding (`vocab_size`), prompts with media longer than its
`tokenizer_model_max_length` are refused, never cut (`max_length`), and `add_time_instruction`
switches on the time instruction in video prompts (`time_instruction`).

Multiple choice (`choose`) compares log-likelihoods, never parses generated text:
- by='letter' (default): the options are listed as "A. ..." lines with LLaVA-OneVision's
  instruction "Answer with the option's letter from the given choices directly."; each
  option's score is the log-probability of its letter as the first answer token;
- by='text': the question is used as written (it should name the options); each option's
  score is the log-probability of the option's text followed by `<|im_end|>` (a complete
  answer), summed over its tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.convert import DTYPES
from onevision.data.template import insert_time_instruction, time_instruction
from onevision.infer.inputs import LoadedMedia, MediaLoader, Request
from onevision.infer.likelihood import Score, score_continuations
from onevision.infer.prompt import LETTERS, PROMPT_FORMATS, PromptEncoder, multiple_choice_prompt, with_placeholders
from onevision.model.generate import GenerationSettings, generate_batch
from onevision.visual_batch import VisualBatch
from onevision.processing import TOWER_NORMALIZATION, ImageNormalization
from onevision.tokenizer import ENDOFTEXT, IM_END, load_tokenizer
from onevision.utils.progress import progress_bar

if TYPE_CHECKING:
    from onevision.checkpoint.llava_next import OriginalRuntime

logger = logging.getLogger(__name__)

CHOICE_MODES = ("letter", "text")


class PromptTooLong(ValueError):
    """A prompt with media longer than the checkpoint's `tokenizer_model_max_length` (or `max_length`)."""


INFERENCE_TILE_CHUNK = 8
"""Tiles (crops or frames) the vision tower encodes at a time when answering."""


@dataclass(frozen=True)
class InferenceConfig:
    """How requests become prompts; the knobs of `OneVision`."""

    system_prompt: str | None = None
    """System turn for requests without one; None keeps the chat template's default."""
    prompt_format: str = "auto"
    """'auto' (from the checkpoint's layout), 'chat_template', 'qwen_1_5', 'vicuna_v1' or 'llava_v1'; see `onevision.infer.prompt`."""
    num_frames: int | None = None
    """Frames sampled uniformly per video; None: the checkpoint's `visual.frames_upbound`."""
    video_backend: str = "auto"
    """Video decoder: 'auto', 'decord' or 'pyav'."""
    time_instruction: bool | None = None
    """Tell the model a video's duration and frame times (LLaVA-Video's prompt); None: an original
    folder's `add_time_instruction`, else False."""
    max_length: int | None = None
    """Longest prompt with media accepted, visual tokens included (for scoring, prompt plus
    continuation); longer ones raise `PromptTooLong`. None: an original folder's
    `tokenizer_model_max_length`, else no limit."""
    vocab_size: int | None = None
    """Logits cover ids below this only (softmax, argmax, sampling); None: an original folder's
    `len(tokenizer)` (the rows its builder keeps), else every row of the head."""
    visual: VisualSettings | None = None
    """Visual token settings; None: the checkpoint's."""


@dataclass
class Prepared:
    """A request ready for the model: prompt ids with visual runs, and the tiles."""

    request: Request
    """What was asked."""
    input_ids: torch.Tensor
    """[T] prompt ids, placeholders expanded, ending with the assistant's generation prompt."""
    media: LoadedMedia
    """Plan, tiles and decode time of the request's media."""

    @property
    def visual(self) -> VisualBatch | None:
        return self.media.visual

    @property
    def scenario(self) -> str:
        """'text', 'single_image', 'multi_image' or 'video'."""
        return self.media.plan.scenario


@dataclass(frozen=True)
class Choice:
    """The outcome of a multiple-choice question."""

    options: tuple[str, ...]
    """The options, in the order given."""
    scores: tuple[float, ...]
    """Log-likelihood of each option (see the module docstring for what is scored)."""
    index: int
    """Position of the most likely option."""
    by: str
    """'letter' or 'text'."""

    @property
    def option(self) -> str:
        return self.options[self.index]

    @property
    def letter(self) -> str:
        return LETTERS[self.index]


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """torch dtype from 'bf16' / 'fp16' / 'fp32' / torch.dtype / None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


def resolve_config(config: InferenceConfig, original: OriginalRuntime | None, tokenizer) -> tuple[InferenceConfig, str]:
    """`config` with the fields left None filled from an original folder's runtime, and the name
    of the max_length's source for messages."""
    requested = config
    if original is not None:
        config = dataclasses.replace(
            config,
            time_instruction=original.time_instruction if config.time_instruction is None else config.time_instruction,
            max_length=original.max_length if config.max_length is None else config.max_length,
            vocab_size=original.vocab_rows(tokenizer) if config.vocab_size is None else config.vocab_size,
        )
    config = dataclasses.replace(config, time_instruction=bool(config.time_instruction))
    if config.max_length is not None and config.max_length < 1:
        raise ValueError(f"InferenceConfig.max_length must be >= 1 or None, got {config.max_length}")
    from_original = original is not None and requested.max_length is None
    name = f"tokenizer_model_max_length in {original.where}" if from_original else "InferenceConfig.max_length"
    return config, name


class OneVision:
    """Question answering with a OneVision model.

    Args:
        model: a `OneVisionModel` (put in eval mode here).
        tokenizer: its tokenizer (ChatML template used when it carries none).
        config: prompt and media settings.
        normalization: the vision tower's pixel normalisation (SigLIP's by default).
        chat_template: the template prompts are rendered with; None: the tokenizer's.
        original: what an original LLaVA-NeXT folder's config says about running it
            (`onevision.checkpoint.llava_next.read_llava_next_runtime`); fills the `config`
            fields left None (time_instruction, max_length, vocab_size).

    Raises:
        ValueError: an unknown `config.prompt_format`, or a `vocab_size` the head cannot cover.
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: InferenceConfig | None = None,
        normalization: ImageNormalization | None = None,
        chat_template: str | None = None,
        original: OriginalRuntime | None = None,
    ):
        self.model = model.eval()
        if getattr(model, "tile_chunk", "absent") is None:
            # The tower sees at most INFERENCE_TILE_CHUNK tiles at a time: a 32-frame video's
            # SigLIP attention would otherwise hold ~1 GB at once, for the same features.
            model.tile_chunk = INFERENCE_TILE_CHUNK
        self.tokenizer = tokenizer
        self.original = original
        self.chat_template = chat_template
        self.requested = config or InferenceConfig()
        """The config as given; `self.config` has its None fields resolved."""
        self.config, self.max_length_name = resolve_config(self.requested, original, tokenizer)
        self._told_no_times = False
        rows = model.language_model.get_output_embeddings().weight.shape[0]
        if self.config.vocab_size is not None and not 1 <= self.config.vocab_size <= rows:
            raise ValueError(
                f"vocab_size {self.config.vocab_size} (logits over the first ids) must be between 1 and the head's "
                f"{rows} rows; the tokenizer has {len(tokenizer)} tokens"
            )
        if self.config.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"InferenceConfig.prompt_format must be one of {PROMPT_FORMATS}, got {self.config.prompt_format!r}")
        model_config = model.config
        param = next(model.parameters())
        self.loader = MediaLoader(
            self.config.visual or model_config.visual,
            normalization or TOWER_NORMALIZATION[model_config.vision_tower],
            num_frames=self.config.num_frames,
            video_backend=self.config.video_backend,
            dtype=param.dtype,
        )
        self.encoder = PromptEncoder(
            tokenizer,
            model_config.image_token_id,
            model_config.video_token_id,
            self.config.system_prompt,
            chat_template=chat_template,
            prompt_format=self.config.prompt_format,
        )
        vocab = tokenizer.get_vocab()
        self.im_end_id = vocab.get(IM_END)
        stops = {self.im_end_id, tokenizer.eos_token_id} - {None}
        if not stops:
            raise ValueError(f"the tokenizer has neither {IM_END} nor an eos token; generation could not stop")
        self.eos_token_ids = tuple(sorted(stops))
        # What closes an assistant reply (`<|im_end|>`): appended to scored option texts.
        self.answer_end = [self.im_end_id if self.im_end_id is not None else self.eos_token_ids[0]]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocab.get(ENDOFTEXT, self.eos_token_ids[0])
        self.pad_token_id = int(pad)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        tokenizer: Any = None,
        config: InferenceConfig | None = None,
        progress: bool = False,
    ) -> "OneVision":
        """Load a checkpoint folder (format detected) and the tokenizer saved in it.

        Args:
            path: a transformers llava_onevision or an original LLaVA-NeXT checkpoint folder; an
                mllama folder gives an `MllamaPipeline` (onevision/infer/mllama_pipeline.py).
            device: where the weights go.
            dtype: 'bf16', 'fp16', 'fp32' or a torch dtype; None keeps the stored dtype.
            tokenizer: a tokenizer, or a folder holding one; None reads the checkpoint's.
            config: prompt and media settings.

        Raises:
            CheckpointError: unknown format, weights that do not fit the config, or an original
                folder's runtime field that is malformed (named).
            TokenizerNotFound: no tokenizer in the folder and none given.
        """
        from onevision.checkpoint import detect_format, load_checkpoint
        from onevision.checkpoint.files import read_chat_template
        from onevision.checkpoint.llava_next import read_llava_next_runtime

        path = Path(path)
        layout = detect_format(path)  # a missing folder or an unknown format says so before the tokenizer is looked for
        if layout == "mllama":  # the cross-attention family: its own pipeline (infer/mllama_pipeline.py)
            from onevision.infer.mllama_pipeline import MllamaPipeline

            return MllamaPipeline.from_pretrained(path, device=device, dtype=dtype, tokenizer=tokenizer, config=config, progress=progress)
        config = config or InferenceConfig()
        if config.prompt_format == "auto":
            formats = {"llava-next": "qwen_1_5", "llava-original": "vicuna_v1"}  # as the originals' eval asks them
            config = dataclasses.replace(config, prompt_format=formats.get(layout, "chat_template"))
        chat_template = read_chat_template(path)
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            if chat_template is None and tokenizer is not None:
                chat_template = read_chat_template(tokenizer)
            tokenizer = load_tokenizer(path if tokenizer is None else tokenizer)
        model = load_checkpoint(path, device=device, dtype=resolve_dtype(dtype), progress=progress)
        original = read_llava_next_runtime(path) if layout == "llava-next" else None
        normalization = ImageNormalization.from_pretrained_dir(path)
        return cls(model, tokenizer, config, normalization, chat_template=chat_template, original=original)

    def reconfigured(self, **changes) -> "OneVision":
        """A pipeline on the same model and tokenizer with `InferenceConfig` fields replaced.

        Everything else carries over: the chat template, the normalisation and, for an original
        folder, what its config says (fields still None are filled from it again).
        """
        return OneVision(
            self.model, self.tokenizer, dataclasses.replace(self.requested, **changes),
            self.loader.normalization, chat_template=self.chat_template, original=self.original,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ inputs

    def prepare(self, request: Request | dict | str, *, multiple_choice: bool = False, media: LoadedMedia | None = None) -> Prepared:
        """Decode and plan a request's media and encode its prompt.

        `multiple_choice` lists the request's options as lettered lines in the question.
        `media` is the request's media already loaded (`self.loader.load(request)`, which may
        run in a worker thread); the prompt is always encoded here.

        Raises:
            MediaError: a media file cannot be decoded.
            BudgetError: the media cannot fit the visual budget.
            ValueError: placeholders that do not match the media.
        """
        request = Request.coerce(request)
        if media is None:
            media = self.loader.load(request)
        question = None
        if multiple_choice:
            question = multiple_choice_prompt(request.conversation()[-1][1], request.options)
        has_video = request.video is not None
        turns = with_placeholders(request.conversation(question), len(request.images), has_video)
        if self.config.time_instruction and has_video and media.timestamps:
            instruction = time_instruction(media.duration, media.timestamps)
            turns = [(role, insert_time_instruction(text, instruction)) for role, text in turns]
        elif self.config.time_instruction and has_video and not self._told_no_times:
            self._told_no_times = True
            logger.warning(
                f"{request.describe()}: time_instruction is on but the video came as frames without times "
                "(no duration or timestamps to tell); its prompt, and those of other such videos, go without it"
            )
        prepared = Prepared(request, self.encoder.encode(turns, media.plan.items), media)
        self.check_length(prepared)
        return prepared

    def check_length(self, prepared: Prepared, extra: int = 0) -> None:
        """Refuse a prompt with media (plus `extra` scored tokens) longer than `config.max_length`.

        The original LLaVA-NeXT cuts such a sequence to `tokenizer_model_max_length`, visual tokens
        included, so its answer would come from part of an image or video; a text-only one it
        leaves whole (`prepare_inputs_labels_for_multimodal` returns early), and so do we.

        Raises:
            PromptTooLong: the message names the limit's source and both lengths.
        """
        limit = self.config.max_length
        length = int(prepared.input_ids.numel()) + extra
        if limit is None or prepared.visual is None or length <= limit:
            return
        media = prepared.media.plan.total
        raise PromptTooLong(
            f"{prepared.request.describe()}: the prompt is {length} tokens ({media} of them visual) but {self.max_length_name} "
            f"is {limit}; the original would cut it there, so it is refused. Use fewer frames (num_frames), "
            "smaller images or a shorter question"
        )

    def generation_settings(
        self,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        use_cache: bool = True,
    ) -> GenerationSettings:
        """Decoding settings: greedy when temperature is 0, else sampling; stops at `<|im_end|>`."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        sample = temperature > 0
        return GenerationSettings(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else 1.0,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=use_cache,
            vocab_size=self.config.vocab_size,
        )

    # ------------------------------------------------------------------ generation

    def generate_prepared(self, prepared: Sequence[Prepared], settings: GenerationSettings) -> list[torch.Tensor]:
        """New token ids [n] per prepared request, decoded together as one left-padded batch."""
        visual = VisualBatch.concat([p.visual for p in prepared])
        return generate_batch(self.model, [p.input_ids for p in prepared], visual, settings)

    def decode(self, tokens: torch.Tensor) -> str:
        """Text of generated tokens, special tokens (the final `<|im_end|>`) dropped."""
        return self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True).strip()

    def generate_batch(
        self,
        requests: Sequence[Request | dict | str],
        *,
        batch_size: int = 8,
        progress: bool = False,
        **generation,
    ) -> list[str]:
        """Answers to `requests`, in order, `batch_size` at a time.

        Keyword arguments go to `generation_settings` (max_new_tokens, temperature, top_p,
        top_k, seed, use_cache).
        """
        settings = self.generation_settings(**generation)
        answers: list[str] = []
        bar = progress_bar(total=len(requests), desc="generating", unit="request", disable=not progress)
        for start in range(0, len(requests), max(1, batch_size)):
            prepared = [self.prepare(r) for r in requests[start : start + batch_size]]
            answers.extend(self.decode(tokens) for tokens in self.generate_prepared(prepared, settings))
            bar.update(len(prepared))
        bar.close()
        return answers

    def ask(self, question: str, *, image=None, images=None, video=None, **generation) -> str:
        """Answer one question about an image, several images, a video, or nothing."""
        if image is not None and images is not None:
            raise ValueError("give image= or images=, not both")
        request = Request(question=question, images=[image] if image is not None else (images or ()), video=video)
        return self.generate_batch([request], batch_size=1, **generation)[0]

    # ------------------------------------------------------------------ likelihood

    def score(self, prepared: Sequence[Prepared], continuations: Sequence[Sequence[Sequence[int]]]) -> list[list[Score]]:
        """Log-likelihood of each continuation (id lists) of each prepared prompt.

        Raises:
            PromptTooLong: a prompt with media plus its longest continuation exceeds `config.max_length`.
        """
        for p, candidates in zip(prepared, continuations):
            self.check_length(p, max((len(c) for c in candidates), default=0))
        visual = VisualBatch.concat([p.visual for p in prepared])
        ids = [p.input_ids for p in prepared]
        return score_continuations(self.model, ids, visual, continuations, self.pad_token_id, self.config.vocab_size)

    def option_continuations(self, options: Sequence[str], by: str) -> list[list[int]]:
        """Ids scored per option: its letter ('letter'), or its text then `<|im_end|>` ('text')."""
        if by not in CHOICE_MODES:
            raise ValueError(f"by must be one of {CHOICE_MODES}, got {by!r}")
        if by == "letter":
            return [self.encoder.encode_reply(LETTERS[k]) for k in range(len(options))]
        return [self.encoder.encode_reply(option) + self.answer_end for option in options]

    def prepare_choice(self, request: Request | dict, by: str = "letter", media: LoadedMedia | None = None) -> Prepared:
        """`prepare` for multiple choice: options listed with letters when `by` is 'letter'."""
        request = Request.coerce(request)
        if len(request.options) < 2:
            raise ValueError(f"{request.describe()}: multiple choice needs at least 2 options, got {list(request.options)}")
        return self.prepare(request, multiple_choice=by == "letter", media=media)

    def choose_prepared(self, prepared: Sequence[Prepared], by: str = "letter") -> list[Choice]:
        """Pick the most likely option of each prepared multiple-choice request (one batch)."""
        continuations = [self.option_continuations(p.request.options, by) for p in prepared]
        choices = []
        for p, scores in zip(prepared, self.score(prepared, continuations)):
            values = tuple(s.logprob for s in scores)
            best = max(range(len(values)), key=values.__getitem__)
            choices.append(Choice(tuple(p.request.options), values, best, by))
        return choices

    def choose(self, question: str, options: Sequence[str], *, image=None, images=None, video=None, by: str = "letter") -> Choice:
        """Answer a multiple-choice question by the likelihood of each option (see module docstring)."""
        if image is not None and images is not None:
            raise ValueError("give image= or images=, not both")
        request = Request(question=question, images=[image] if image is not None else (images or ()), video=video, options=options)
        return self.choose_prepared([self.prepare_choice(request, by)], by)[0]
