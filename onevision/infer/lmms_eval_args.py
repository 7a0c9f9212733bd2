"""`--model_args` of `lmms-eval --model onevision`: ours, and those of lmms-eval's own models.

Users switch between `--model llava_onevision` and `--model onevision` keeping their
`--model_args`. Every argument of the constructors of lmms-eval 0.7's `llava_onevision`,
`llava_onevision1_5`, `llava_onevision2` and `llava_onevision_moviechat` is either accepted
with the meaning it has there (translated to ours below) or refused with a message saying
what onevision does instead. Unknown arguments are refused too; nothing is ignored silently.

Accepted (ours first, then theirs -> ours):
    pretrained            checkpoint folder (any format `onevision.checkpoint` reads)
    device, device_map    one device ('cuda', 'cuda:1', 'cpu'); device_map='auto' is refused
    dtype, torch_dtype    bf16/bfloat16, fp16/float16, fp32/float32, auto (the stored dtype)
    batch_size            requests decoded together (a number; 'auto' and max_batch_size refused)
    num_frames, max_frames_num, max_num_frames, fixed_num_frames
                          frames sampled uniformly per video (fewer when the clip has fewer)
    video_pool_stride     video pooling stride (the checkpoint's `visual.video_pool_stride`)
    mm_spatial_pool_mode  bilinear, average or max: video pooling (`visual.video_pool_mode`;
                          omitted: the checkpoint's, where llava_onevision always sends bilinear)
    mm_spatial_pool_stride  2 only: lmms-eval hands it to LLaVA-NeXT, whose video path pools with
                          a fixed stride 2 whatever it says (`get_2dPool(image_feat)` in
                          llava/model/llava_arch.py at df179663); other values are refused, and
                          video_pool_stride pools with another stride here
    video_decode_backend  decord, pyav or auto
    attn_implementation   sdpa, eager or flash_attention_2
    use_cache             KV cache during generation
    system_prompt, max_new_tokens, reasoning_prompt (appended to every context)
    conv_template         'qwen_1_5' only: prompts in LLaVA-NeXT's qwen_1_5 conversation (system turn
                          "You are a helpful assistant.", `<|im_start|>user\n<image>\n...`), as
                          llava_onevision renders them, whatever the checkpoint; omitted, prompts
                          follow the checkpoint's layout (a llava-hf folder's own chat template,
                          an original LLaVA-NeXT folder's qwen_1_5, an original LLaVA one's vicuna_v1), see `onevision.infer.prompt`
    prompt_format         ours: auto, chat_template, qwen_1_5, vicuna_v1 or llava_v1 (`InferenceConfig.prompt_format`)
    token_strategy        'single' only (one placeholder per video)
    model_name            a Qwen model name (llava_qwen): the format itself is detected
    image_first=True, interleave_visuals=False, use_codec=False: what onevision does
    truncation, truncate_context: stored but never read by llava_onevision; no effect here either

Refused, each with what onevision does instead (`REFUSED`): customized_config, min_pixels,
max_pixels, fps, target_fps, messages_format, timestamp_decimals, max_length, use_codec=True
and codec_*, MovieChat's short/long_memory_length, sliding_window_length, merge_frame_length,
tmp_folder; and any value outside the lists above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from onevision.model.config import ATTN_IMPLEMENTATIONS

VIDEO_BACKENDS = ("auto", "decord", "pyav")
POOL_MODES = ("bilinear", "average", "max")
ORIGINAL_POOL_STRIDE = 2
PROMPT_FORMATS = ("auto", "chat_template", "qwen_1_5", "vicuna_v1", "llava_v1")  # as onevision.infer.prompt (a test keeps them equal)
CONV_TEMPLATE = "qwen_1_5"
DTYPE_NAMES = {
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "auto": None,
}

MEDIA_FIRST = (
    "onevision puts the media before the text when the context has no <image>/<video> "
    "placeholders, and at the placeholders when it has one per item"
)

# Arguments onevision cannot honour, with what it does instead.
REFUSED = {
    "customized_config": "onevision reads the checkpoint's own config.json; edit that file, or pass "
    "mm_spatial_pool_stride / max_frames_num",
    "min_pixels": "onevision tiles images by AnyRes-Max-N (the checkpoint's visual.anyres_max), not by pixel counts",
    "max_pixels": "onevision tiles images by AnyRes-Max-N (the checkpoint's visual.anyres_max), not by pixel counts",
    "fps": "onevision samples video frames uniformly; set their number with max_frames_num",
    "target_fps": "onevision samples video frames uniformly; set their number with max_frames_num",
    "messages_format": "onevision prompts videos as LLaVA-OneVision does (one <video> run, no timestamps)",
    "timestamp_decimals": "onevision prompts videos as LLaVA-OneVision does (one <video> run, no timestamps)",
    "max_length": "onevision never truncates a prompt; the model's context is the checkpoint's",
    "short_memory_length": "MovieChat's memory is not part of onevision; use max_frames_num",
    "long_memory_length": "MovieChat's memory is not part of onevision; use max_frames_num",
    "sliding_window_length": "MovieChat's memory is not part of onevision; use max_frames_num",
    "merge_frame_length": "MovieChat's memory is not part of onevision; use max_frames_num",
    "tmp_folder": "MovieChat's memory is not part of onevision; use max_frames_num",
}
CODEC_REFUSAL = "onevision decodes videos with decord or PyAV (video_decode_backend), not with a codec pre-inference"

# Arguments accepted with one value only: (the value, what onevision does).
FIXED = {
    "token_strategy": ("single", "onevision gives a video one <video> placeholder (token_strategy=single)"),
    "image_first": (True, MEDIA_FIRST),
    "interleave_visuals": (False, MEDIA_FIRST),
    "use_codec": (False, CODEC_REFUSAL),
}

NO_EFFECT = {
    "truncation": "stored but never read by lmms-eval's llava_onevision; onevision never truncates a prompt",
    "truncate_context": "stored but never read by lmms-eval's llava_onevision; onevision never truncates a prompt",
}


class ModelArgumentError(ValueError):
    """A `--model_args` entry onevision cannot honour; the message names it and says why."""


@dataclass
class PluginSettings:
    """What `--model_args` (and lmms-eval's --device/--batch_size) ask of the onevision model."""

    pretrained: str = ""
    """Checkpoint folder."""
    device: str | None = None
    """Torch device; None: cuda when available, else cpu."""
    dtype: str | None = None
    """'bf16', 'fp16', 'fp32'; None keeps the stored dtype."""
    batch_size: int = 1
    """Requests decoded together."""
    num_frames: int | None = None
    """Frames sampled uniformly per video; None: the checkpoint's visual.frames_upbound."""
    video_pool_stride: int | None = None
    """Video pooling stride; None: the checkpoint's visual.video_pool_stride."""
    video_pool_mode: str | None = None
    """'bilinear', 'average' or 'max'; None: the checkpoint's visual.video_pool_mode."""
    video_backend: str = "auto"
    """'auto', 'decord' or 'pyav'."""
    attn_implementation: str | None = None
    """'sdpa', 'eager' or 'flash_attention_2'; None keeps the model's (sdpa)."""
    use_cache: bool = True
    """KV cache during generation."""
    system_prompt: str | None = None
    """System turn; None keeps the chat template's default."""
    max_new_tokens: int = 256
    """Generation length for requests that set none."""
    reasoning_prompt: str | None = None
    """Appended to every context (llava_onevision1_5's reasoning_prompt)."""
    prompt_format: str = "auto"
    """'auto' (from the checkpoint's layout), 'chat_template' or 'qwen_1_5'."""
    notes: list[str] = field(default_factory=list)
    """What accepted arguments mean here, for the log."""


def _given(value: Any) -> bool:
    """lmms-eval passes `k=None` through as the string 'None'."""
    return value is not None and not (isinstance(value, str) and value.strip().lower() in ("none", ""))


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ModelArgumentError(f"model argument {name}={value!r}: expected a positive whole number") from None
    if number < 1 or number != float(value):
        raise ModelArgumentError(f"model argument {name}={value!r}: expected a positive whole number")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("0", "false", "no"):
        return False
    raise ModelArgumentError(f"model argument {name}={value!r}: expected True or False")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if str(value) not in choices:
        raise ModelArgumentError(f"model argument {name}={value!r}: onevision accepts {', '.join(choices)}")
    return str(value)


def _dtype(name: str, value: Any) -> str | None:
    key = str(value).lower()
    if key not in DTYPE_NAMES:
        raise ModelArgumentError(f"model argument {name}={value!r}: onevision accepts {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[key]


def _device(settings: PluginSettings, name: str, value: Any) -> None:
    value = str(value)
    if value == "auto" or value.startswith("{"):
        raise ModelArgumentError(f"model argument {name}={value!r}: onevision runs the whole model on one device; use device=cuda:0 (or --device)")
    if settings.device is not None and settings.device != value:
        raise ModelArgumentError(f"model argument {name}={value!r} contradicts device={settings.device!r}")
    settings.device = value


def _model_name(settings: PluginSettings, value: Any) -> None:
    if "qwen" not in str(value).lower():
        raise ModelArgumentError(
            f"model argument model_name={value!r}: onevision builds LLaVA-OneVision's Qwen2 model from the "
            "checkpoint's config (format detected); drop model_name"
        )
    settings.notes.append(f"model_name={value}: the checkpoint format is detected from its files")


def _original_stride(settings: PluginSettings, value: Any) -> None:
    if _positive_int("mm_spatial_pool_stride", value) != ORIGINAL_POOL_STRIDE:
        raise ModelArgumentError(
            f"model argument mm_spatial_pool_stride={value!r}: lmms-eval's llava_onevision hands it to LLaVA-NeXT, whose "
            f"video path pools with a fixed stride {ORIGINAL_POOL_STRIDE} whatever it says (get_2dPool's default in "
            "llava_arch.py); to pool with another stride here pass video_pool_stride="
        )
    settings.notes.append(f"mm_spatial_pool_stride={value}: the stride LLaVA-NeXT pools video with; the checkpoint's video_pool_stride is kept")


def _prompt_format(settings: PluginSettings, name: str, value: Any) -> None:
    if name == "conv_template":
        if str(value) != CONV_TEMPLATE:
            raise ModelArgumentError(
                f"model argument conv_template={value!r}: onevision renders only LLaVA-NeXT's {CONV_TEMPLATE!r} "
                "conversation (or, without conv_template, the checkpoint's own chat template)"
            )
        value = CONV_TEMPLATE
        settings.notes.append(f"conv_template={value}: prompts in LLaVA-NeXT's qwen_1_5 conversation (prompt_format=qwen_1_5)")
    else:
        value = _choice(name, value, PROMPT_FORMATS)
    if settings.prompt_format not in ("auto", value):
        raise ModelArgumentError(f"model argument {name}={value!r} contradicts prompt_format {settings.prompt_format!r}")
    settings.prompt_format = value


def _batch_size(value: Any) -> int:
    if str(value).startswith("auto"):
        raise ModelArgumentError(f"batch_size={value!r}: onevision needs a number (requests decoded together)")
    return _positive_int("batch_size", value)


# Arguments mapped onto a settings field: name -> (field, converter).
MAPPED: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "pretrained": ("pretrained", lambda n, v: str(v)),
    "dtype": ("dtype", _dtype),
    "torch_dtype": ("dtype", _dtype),
    "batch_size": ("batch_size", lambda n, v: _batch_size(v)),
    "num_frames": ("num_frames", _positive_int),
    "max_frames_num": ("num_frames", _positive_int),
    "max_num_frames": ("num_frames", _positive_int),
    "fixed_num_frames": ("num_frames", _positive_int),
    "video_pool_stride": ("video_pool_stride", _positive_int),
    "mm_spatial_pool_mode": ("video_pool_mode", lambda n, v: _choice(n, v, POOL_MODES)),
    "video_decode_backend": ("video_backend", lambda n, v: _choice(n, v, VIDEO_BACKENDS)),
    "attn_implementation": ("attn_implementation", lambda n, v: _choice(n, v, ATTN_IMPLEMENTATIONS)),
    "use_cache": ("use_cache", _bool),
    "system_prompt": ("system_prompt", lambda n, v: str(v)),
    "max_new_tokens": ("max_new_tokens", _positive_int),
    "reasoning_prompt": ("reasoning_prompt", lambda n, v: str(v).replace("\\n", "\n")),
}


def parse_model_args(args: dict[str, Any]) -> PluginSettings:
    """Settings from lmms-eval's model arguments (already split into a dict).

    Raises:
        ModelArgumentError: an argument onevision refuses, a bad value, or no `pretrained`.
    """
    settings = PluginSettings()
    unknown = []
    for name, value in args.items():
        if not _given(value):
            continue
        if name in MAPPED:
            target, convert = MAPPED[name]
            setattr(settings, target, convert(name, value))
        elif name in ("device", "device_map"):
            _device(settings, name, value)
        elif name == "model_name":
            _model_name(settings, value)
        elif name == "mm_spatial_pool_stride":
            _original_stride(settings, value)
        elif name in ("conv_template", "prompt_format"):
            _prompt_format(settings, name, value)
        elif name in FIXED:
            expected, meaning = FIXED[name]
            if (_bool(name, value) if isinstance(expected, bool) else str(value)) != expected:
                raise ModelArgumentError(f"model argument {name}={value!r}: {meaning}")
            settings.notes.append(f"{name}={value}: {meaning}")
        elif name in NO_EFFECT:
            settings.notes.append(f"{name}={value}: {NO_EFFECT[name]}")
        elif name in REFUSED:
            raise ModelArgumentError(f"model argument {name}={value!r}: {REFUSED[name]}")
        elif name.startswith("codec_"):
            raise ModelArgumentError(f"model argument {name}={value!r}: {CODEC_REFUSAL}")
        elif name == "max_batch_size":
            raise ModelArgumentError(f"max_batch_size={value!r} bounds batch_size=auto, which onevision does not offer; give --batch_size N")
        else:
            unknown.append(name)
    if unknown:
        accepted = sorted({*MAPPED, "device", "device_map", "model_name", "mm_spatial_pool_stride", "conv_template",
                           "prompt_format", *FIXED, *NO_EFFECT})
        raise ModelArgumentError(f"unknown model argument(s) {', '.join(sorted(unknown))}; onevision accepts {', '.join(accepted)}")
    if not settings.pretrained:
        raise ModelArgumentError("model argument pretrained= (the checkpoint folder) is required")
    return settings
