"""Read and write the cross-attention family in transformers' `mllama` layout.

    from onevision.checkpoint.mllama import load_mllama, save_mllama
    save_mllama(model, "out")            # config.json + model.safetensors, as save_pretrained writes them
    model = load_mllama("out")           # also reads folders written by MllamaForConditionalGeneration

Files are written by transformers' own `save_pretrained` on the model we wrap, so they hold
the released Llama 3.2-Vision layout and `MllamaForConditionalGeneration.from_pretrained` loads
them with no missing or unexpected key. Reading accepts that layout and transformers 5.x's
in-memory one (which is ours):

| ours (in memory)                  | released file                      |
|-----------------------------------|------------------------------------|
| `model.vision_model.*`            | `vision_model.*`                   |
| `model.multi_modal_projector.*`   | `multi_modal_projector.*`          |
| `model.language_model.*`          | `language_model.model.*`           |
| `lm_head.weight`                  | `language_model.lm_head.weight`    |

Every config field is honoured or refused by name (onevision/model/mllama_config.py); keys
that no list knows are named in a warning. The pixel settings travel in
`preprocessor_config.json`, written by transformers' `MllamaImageProcessorPil` and read back by
`read_mllama_normalization`, whose fields are sorted the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image
from transformers import MllamaConfig
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

from onevision.checkpoint.files import CheckpointError, TensorFolder, _parameters_on_meta, check_keys, read_json
from onevision.model.mllama import MllamaVLM
from onevision.model.mllama_config import MllamaModelConfig, check_unknown
from onevision.processing.mllama import MLLAMA_NORMALIZATION
from onevision.processing.normalize import PREPROCESSOR_CONFIG, ImageNormalization

logger = logging.getLogger(__name__)

# preprocessor_config.json fields of MllamaImageProcessorPil.
PIXELS_HONOURED = {
    "image_mean": "ImageNormalization.mean",
    "image_std": "ImageNormalization.std",
    "resample": "ImageNormalization.resample",
}
# Fields the model config already fixes, or steps our pixels always take: other values are refused.
PIXELS_FIXED = {
    "do_resize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_normalize": True,
    "rescale_factor": 1 / 255,
}
PIXELS_INERT = {
    "do_convert_rgb": "our pixels take RGB images only (mllama_tiles refuses other modes), where conversion changes nothing",
    "image_processor_type": "which class transformers builds",
    "processor_class": "which class transformers builds",
}

# (file prefix, our prefix), most specific first.
_RELEASED = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_model.", "model.vision_model."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
_OURS = ("lm_head.", "model.language_model.", "model.vision_model.", "model.multi_modal_projector.")


def file_key_to_ours(key: str) -> str:
    """Our key for a key of a released or in-memory-layout file (unknown keys come back unchanged)."""
    if key.startswith(_OURS):
        return key
    for theirs, ours in _RELEASED:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def read_mllama_config(folder: str | Path) -> MllamaModelConfig:
    """Our config from `folder`/config.json (model_type 'mllama').

    Raises:
        CheckpointError: the file is missing or unreadable, of another model type, or holds a
            refused value (the message names the file and the field).
    """
    path = Path(folder) / "config.json"
    data = read_json(path)
    if data.get("model_type") != "mllama":
        raise CheckpointError(f"{path}: model_type={data.get('model_type')!r}, expected 'mllama'")
    check_unknown(data, str(path))
    try:
        return MllamaModelConfig.from_hf(MllamaConfig.from_dict(data), where=f"{path}: ")
    except (ValueError, TypeError) as error:
        message = str(error)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def load_mllama(
    folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, text_rows: str = "transformers"
) -> MllamaVLM:
    """`MllamaVLM(text_rows=text_rows)` with the weights of `folder`, in eval mode.

    Parameters are created on the meta device and each tensor is read once onto `device`;
    floating tensors are cast to `dtype` when given.

    Raises:
        CheckpointError: config problems (see `read_mllama_config`), or missing / unexpected
            keys or shape mismatches (named, with the file's key).
    """
    config = read_mllama_config(folder)
    tensors = TensorFolder(folder)
    refs = {}
    for name in tensors.names():
        ours = file_key_to_ours(name)
        if ours in refs:
            raise CheckpointError(f"{folder}: {name} and {refs[ours].name} are the same tensor {ours}")
        refs[ours] = tensors.ref(name)
    with _parameters_on_meta():
        model = MllamaVLM(config, text_rows=text_rows)
    check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, refs, str(folder))
    state = {}
    for name, ref in refs.items():
        tensor = ref.load(str(device))
        state[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)
    return model.eval()


def read_mllama_normalization(folder: str | Path, config: MllamaModelConfig) -> ImageNormalization:
    """Mean, std and filter from `folder`/preprocessor_config.json; transformers' defaults when absent.

    Raises:
        CheckpointError: a fixed step is switched off or changed, or size / max_image_tiles
            disagree with the model config (the message names the file and the field).
    """
    path = Path(folder) / PREPROCESSOR_CONFIG
    if not path.is_file():
        return MLLAMA_NORMALIZATION
    data = read_json(path)
    tile = config.vision.image_size
    fixed = {**PIXELS_FIXED, "size": {"height": tile, "width": tile}, "max_image_tiles": config.vision.max_num_tiles}
    for name, value in fixed.items():
        if name in data and data[name] != value:
            raise CheckpointError(f"{path}: {name}={data[name]!r} is not supported: must be {value!r} for this model")
    unknown = sorted(set(data) - set(fixed) - set(PIXELS_HONOURED) - set(PIXELS_INERT))
    if unknown:
        logger.warning(f"{path}: ignoring keys that MllamaImageProcessorPil does not read: {unknown}")
    values = {}
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        value = data.get(theirs, getattr(MLLAMA_NORMALIZATION, ours))
        values[ours] = (value,) * 3 if isinstance(value, (int, float)) else value
    resample = data.get("resample", MLLAMA_NORMALIZATION.resample)
    try:
        values["resample"] = Image.Resampling(resample).name.lower() if isinstance(resample, int) else str(resample).lower()
        return ImageNormalization(**values)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: {error}") from None


def save_mllama(
    model: MllamaVLM, folder: str | Path, dtype: torch.dtype | None = None, normalization: ImageNormalization = MLLAMA_NORMALIZATION
) -> Path:
    """Write `model` to `folder` as transformers does (config.json, generation_config.json,
    safetensors) and its pixel settings as `MllamaImageProcessorPil` (preprocessor_config.json).

    `dtype` casts the written tensors (the model in memory is left as it is).
    """
    folder = Path(folder)
    vision = model.config.vision
    MllamaImageProcessorPil(
        size={"height": vision.image_size, "width": vision.image_size},
        max_image_tiles=vision.max_num_tiles,
        image_mean=list(normalization.mean),
        image_std=list(normalization.std),
        resample=int(normalization.pil_filter),
    ).save_pretrained(folder)
    hf = model.hf
    if dtype is None:
        hf.save_pretrained(folder)
        return folder
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in hf.state_dict().items()}
    stored = hf.config.dtype
    hf.config.dtype = dtype
    try:
        hf.save_pretrained(folder, state_dict=state)
    finally:
        hf.config.dtype = stored
    return folder
