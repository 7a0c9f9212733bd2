"""Weights on disk: lazy safetensors reading, sharded writing, loading into a model built on meta.

Every format module (`hf`, `llava_next`, `components`) reads a folder into a `Checkpoint`: our
`ModelConfig` plus, for each of our state-dict keys, a `TensorRef` that knows the tensor's shape
and dtype and reads it only when asked. From there:

- `materialize(checkpoint)` builds `OneVisionModel` with its parameters on the meta device
  (buffers stay real), checks keys and shapes, then reads each tensor once and assigns it, so a
  7B checkpoint is never held twice in memory;
- `write_tensors(refs, folder)` writes `model.safetensors`, or `model-0000i-of-0000n.safetensors`
  shards plus `model.safetensors.index.json` past `max_shard_size`, reading one shard's tensors
  at a time (a conversion never holds the whole model).

Beside the weights, a released folder carries its prompt format: `read_chat_template(folder)`
finds the chat template as transformers' processor does (`chat_template.json`, the legacy
processor file of the llava-hf releases, else `chat_template.jinja`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from onevision.model.config import ModelConfig
from onevision.utils.progress import progress_bar

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
CHAT_TEMPLATE_JSON = "chat_template.json"
CHAT_TEMPLATE_JINJA = "chat_template.jinja"
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
EMBED_KEY = "language_model.model.embed_tokens.weight"
HEAD_KEY = "language_model.lm_head.weight"

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, of an unknown format, or does not fit the model."""


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a checkpoint, read only when `load` is called."""

    shape: tuple[int, ...]
    """Shape of the tensor."""
    dtype: torch.dtype
    """dtype as stored."""
    load: Callable[[str], torch.Tensor]
    """Reads the tensor onto the given device."""
    name: str | None = None
    """Its key in the file it comes from (None when made in memory)."""

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorRef:
        """Wrap a tensor already in memory."""
        return cls(tuple(tensor.shape), tensor.dtype, lambda device: tensor.to(device))


@dataclass
class Checkpoint:
    """A checkpoint read lazily: our config and, per key of our state dict, where its tensor is."""

    config: ModelConfig
    """The model the tensors belong to."""
    tensors: dict[str, TensorRef]
    """Our state-dict key -> tensor (the tied LM head is absent when embeddings are tied)."""
    source: str
    """Folder(s) it was read from, for messages."""
    format: str
    """'hf', 'llava-next' or 'components'."""
    dropped: list[str] = field(default_factory=list)
    """Keys of the files that are deliberately not used (deleted tower layer, pooling head, ...)."""

    @property
    def stored_dtype(self) -> torch.dtype | None:
        """The first floating tensor's dtype (None without one): what a written config records
        when the writer is asked for no cast."""
        return next((r.dtype for r in self.tensors.values() if r.dtype.is_floating_point), None)


class TensorFolder:
    """The safetensors weights of a folder: one `model.safetensors`, or shards listed in an index.

    A folder with neither but other `*.safetensors` files is read as the union of those files.
    Nothing is read until `ref(name).load(device)`.

    Raises:
        CheckpointError: the folder has no safetensors weights, or the index names missing files.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._file_of: dict[str, Path] = {}
        self._handles: dict[tuple[Path, str], object] = {}
        index = self.folder / SAFE_INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            missing = sorted({f for f in weight_map.values() if not (self.folder / f).is_file()})
            if missing:
                raise CheckpointError(f"{index} lists shard files that are not in {self.folder}: {missing}")
            self._file_of = {name: self.folder / f for name, f in weight_map.items()}
            return
        files = [self.folder / SAFE_WEIGHTS] if (self.folder / SAFE_WEIGHTS).is_file() else sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no weights in {self.folder}: looked for {SAFE_WEIGHTS}, {SAFE_INDEX} or any *.safetensors")
        for path in files:
            for name in self._handle(path, "cpu").keys():
                self._file_of[name] = path

    def _handle(self, path: Path, device: str):
        key = (path, str(device))
        if key not in self._handles:
            self._handles[key] = safe_open(str(path), framework="pt", device=str(device))
        return self._handles[key]

    def names(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def ref(self, name: str) -> TensorRef:
        """A `TensorRef` for `name` (shape and dtype read from the file header)."""
        path = self._file_of[name]
        piece = self._handle(path, "cpu").get_slice(name)
        dtype = _SAFETENSORS_DTYPES[piece.get_dtype()]
        return TensorRef(tuple(piece.get_shape()), dtype, lambda device: self._handle(path, device).get_tensor(name), name)


SIZE_LIMITS = {
    "num_hidden_layers": 1024, "hidden_size": 1 << 20, "intermediate_size": 1 << 22, "vocab_size": 1 << 24,
    "num_attention_heads": 4096, "num_key_value_heads": 4096, "max_position_embeddings": 1 << 26,
    "image_size": 1 << 14, "patch_size": 1 << 14, "mm_hidden_size": 1 << 20,
}
"""Ceilings on the sizes a config.json may declare, far above any published model: transformers
builds per-layer lists and modules from these numbers before any weight is compared, so a
config claiming 10^9 layers would exhaust memory instead of failing."""


def read_json(path: Path) -> dict:
    """A JSON object from `path`, with the path in the error when it is not one; a
    `config.json` also has its sizes checked against `SIZE_LIMITS` (at any nesting depth)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, RecursionError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    if Path(path).name == "config.json":
        _check_sizes(data, path, "")
    return data


def _check_sizes(node: dict, path: Path, where: str) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _check_sizes(value, path, f"{where}{key}.")
        elif key in SIZE_LIMITS and isinstance(value, int) and not isinstance(value, bool):
            if not 0 < value <= SIZE_LIMITS[key]:
                raise CheckpointError(f"{path}: {where}{key}={value} is outside 1..{SIZE_LIMITS[key]}")


def read_chat_template(folder: str | Path) -> str | None:
    """The chat template saved in `folder` for its processor, None when there is none.

    transformers' `ProcessorMixin.from_pretrained` (5.x) reads the legacy `chat_template.json`
    (`{"chat_template": "..."}`) first and `chat_template.jinja` otherwise; so do we. A
    tokenizer's own template (in `tokenizer_config.json`) is not looked at here.

    Raises:
        CheckpointError: a template file that is unreadable or holds no template string.
    """
    folder = Path(folder)
    legacy, jinja = folder / CHAT_TEMPLATE_JSON, folder / CHAT_TEMPLATE_JINJA
    if legacy.is_file():
        template = read_json(legacy).get("chat_template")
        if not isinstance(template, str) or not template:
            raise CheckpointError(f"{legacy}: 'chat_template' must be a non-empty string, got {template!r}")
        return template
    if jinja.is_file():
        try:
            template = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CheckpointError(f"cannot read {jinja}: {error}") from error
        if not template.strip():
            raise CheckpointError(f"{jinja} is empty")
        return template
    return None


def resolve_tied_head(checkpoint: Checkpoint) -> Checkpoint:
    """Drop the LM head when embeddings are tied and the files hold it (equal) or untie them (different).

    transformers does the same on load: a tied config whose files hold two different matrices
    is loaded untied, so the logits match the files.
    """
    config = checkpoint.config
    if not config.text.tie_word_embeddings or HEAD_KEY not in checkpoint.tensors:
        return checkpoint
    head, embed = checkpoint.tensors[HEAD_KEY], checkpoint.tensors.get(EMBED_KEY)
    if embed is not None and head.shape == embed.shape and torch.equal(head.load("cpu"), embed.load("cpu")):
        del checkpoint.tensors[HEAD_KEY]
        return checkpoint
    text = dataclasses.replace(config.text, tie_word_embeddings=False)
    checkpoint.config = dataclasses.replace(config, text=text)
    return checkpoint


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create every `nn.Parameter` on the meta device; buffers (rotary tables, position ids) stay real."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def empty_model(config: ModelConfig):
    """`OneVisionModel` whose parameters are on the meta device (no memory), buffers real on CPU.

    Non-persistent buffers (rotary frequencies, SigLIP position ids) are not in checkpoints, so
    they are built for real; `nn.Module.register_parameter` is patched while the model is
    built (not thread-safe).
    """
    from onevision.model.onevision import OneVisionModel

    with _parameters_on_meta():
        return OneVisionModel(config)


def check_keys(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, TensorRef], source: str) -> None:
    """Raise `CheckpointError` listing missing / unexpected keys (ours, and the file's) and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = [
        k if found[k].name in (None, k) else f"{k} (file key {found[k].name})" for k in sorted(set(found) - set(expected))
    ]
    wrong = [
        f"{k}: file {list(found[k].shape)} vs model {list(expected[k])}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if wrong:
        problems.append(f"shape mismatches ({len(wrong)}): {wrong}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model its config describes; " + "; ".join(problems))


def model_keys(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes that a checkpoint must provide (the tied LM head excluded)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.text.tie_word_embeddings:
        shapes.pop(HEAD_KEY, None)
    return shapes


_DECODER_LAYER = re.compile(r"^language_model\.model\.layers\.(\d+)\.")


def check_depth(checkpoint: Checkpoint) -> None:
    """Refuse a config whose decoder is deeper than the stored weights, before any module is
    built: a config.json claiming 10^9 layers would otherwise build them (on the meta device,
    still minutes of work and gigabytes of Python objects) only for the key check to fail.

    Raises:
        CheckpointError: naming `text_config.num_hidden_layers`, the config's value and the
            layers the weights hold.
    """
    stored = {int(m.group(1)) for name in checkpoint.tensors if (m := _DECODER_LAYER.match(name))}
    wanted = checkpoint.config.text.num_hidden_layers
    if stored and wanted != len(stored):
        raise CheckpointError(
            f"{checkpoint.source}: text_config.num_hidden_layers is {wanted} but the weights hold {len(stored)} decoder layers"
        )


def materialize(checkpoint: Checkpoint, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, progress: bool = True):
    """Build `OneVisionModel` for `checkpoint.config` and fill it with the checkpoint's tensors.

    Parameters are created on the meta device and each tensor is read once, straight onto
    `device`, and assigned (`load_state_dict(assign=True)`). Floating tensors are cast to
    `dtype` when given, else keep the stored dtype.

    Raises:
        CheckpointError: missing or unexpected keys, or shapes that differ from the config's.
    """
    check_depth(checkpoint)
    model = empty_model(checkpoint.config)
    check_keys(model_keys(model), checkpoint.tensors, checkpoint.source)
    state = {}
    for name, ref in progress_bar(checkpoint.tensors.items(), desc=f"loading {checkpoint.source}", unit="tensor", disable=not progress):
        tensor = ref.load(str(device))
        state[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    model.load_state_dict(state, strict=not checkpoint.config.text.tie_word_embeddings, assign=True)
    if checkpoint.config.text.tie_word_embeddings:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)
    return model.eval()


def model_refs(model: nn.Module) -> dict[str, TensorRef]:
    """The model's tensors as `TensorRef`s (the tied LM head left out, as transformers saves)."""
    state = model.state_dict()
    if model.config.text.tie_word_embeddings:
        state.pop(HEAD_KEY, None)
    return {k: TensorRef.of(v.detach()) for k, v in state.items()}


def write_tensors(
    refs: Mapping[str, TensorRef],
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
) -> list[Path]:
    """Write tensors as safetensors into `folder`, sharded past `max_shard_size`.

    One shard's tensors are read (and cast to `dtype`, floating ones only) at a time. Weight
    files of an earlier save in `folder` that the new one does not overwrite are removed, so a
    folder never mixes two saves.

    Returns:
        The files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def target_dtype(ref: TensorRef) -> torch.dtype:
        return dtype if dtype is not None and ref.dtype.is_floating_point else ref.dtype

    sizes = {name: torch.empty(ref.shape, dtype=target_dtype(ref), device="meta") for name, ref in refs.items()}
    split = split_torch_state_dict_into_shards(sizes, max_shard_size=max_shard_size)
    written = []
    bar = progress_bar(total=len(refs), desc=f"writing {folder}", unit="tensor", disable=not progress)
    for filename, names in split.filename_to_tensors.items():
        shard = {}
        for name in names:
            tensor = refs[name].load("cpu")
            shard[name] = tensor.to(target_dtype(refs[name])).contiguous()
            bar.update(1)
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
        written.append(folder / filename)
        del shard
    bar.close()
    if split.is_sharded:
        index = {
            "metadata": {"total_parameters": sum(t.numel() for t in sizes.values()), **split.metadata},
            "weight_map": dict(sorted(split.tensor_to_filename.items())),
        }
        (folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(folder / SAFE_INDEX)
    keep = {p.name for p in written}
    for old in folder.iterdir():
        stale = old.name in (SAFE_WEIGHTS, SAFE_INDEX) or SHARD_PATTERN.match(old.name)
        if stale and old.name not in keep:
            old.unlink()
    return written
