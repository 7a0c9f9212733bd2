"""Original-layout (LLaVA-NeXT `llava_qwen`) checkpoint folders for tests: released shapes, tiny weights.

    from llava_next_folders import llava_video_folder
    folder = llava_video_folder(tmp_path / "llava-video")          # mm_spatial_pool_mode average, grid
    OneVision.from_pretrained(folder).ask("What happens?", video=frames)

`llava_video_config` is the config.json of lmms-lab/LLaVA-Video-7B-Qwen2 with the sizes made tiny.
Field values, and where they come from (LLaVA-VL/LLaVA-NeXT at df17966 unless named):
- scripts/video/train/SO400M_Qwen2_7B_ov_to_video_am9.sh (the LLaVA-Video-7B-Qwen2 recipe):
  mm_projector_type mlp2x_gelu, mm_vision_select_layer -2, mm_use_im_start_end / _patch_token
  False, image_aspect_ratio anyres_max_9, image_grid_pinpoints "(1x1),...,(6x6)" (train.py
  stores it expanded to 36 [width, height] pairs), mm_patch_merge_type spatial_unpad,
  frames_upbound 64, mm_newline_position grid, add_time_instruction / force_sample True,
  mm_spatial_pool_stride 2, mm_tunable_parts with the tower, mm_vision_tower_lr 2e-6,
  model_max_length 32768.
- mm_spatial_pool_mode: train.py's default is 'bilinear' (the recipe does not set it), while the
  published evaluation runs the checkpoint with `mm_spatial_pool_mode=average`
  (docs/LLaVA_Video_1003.md, lmms-eval `llava_vid` model args); `pool_mode` picks either.
- The remaining keys as in the released llava-onevision-qwen2-7b-ov config.json, which the same
  trainer wrote (a copy is in PaddlePaddle/PaddleMIX tests/models/test_llava.py):
  model_type "llava" with architectures ["LlavaQwenForCausalLM"], image_token_index 151646,
  tokenizer_padding_side right, use_pos_skipping False, pos_skipping_range 4096,
  mm_resampler_type null, rope_scaling null, tie_word_embeddings False, use_mm_proj True,
  torch_dtype bfloat16.
The SigLIP is 384 px / patch 14 (a 27x27 map per frame, as so400m) but 32 wide with 3 layers,
saved whole with its head as the training code saves it (LLaVA-NeXT deletes the last layer at
load time); the tiny shape is given as `vision_config`, since the released config names the
tower by hub id only. The tokenizer is the real Qwen2 vocabulary without `<image>` / `<video>`
(LLaVA-NeXT splices at id -200), written by `released_folders.write_tokenizer` as the lmms-lab
folders hold it; the 152,064-row embedding is the 7B's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from onevision.budget import VisualSettings
from onevision.checkpoint.llava_next import ours_key_to_llava_next
from onevision.model.config import ModelConfig, TextConfig, VisionConfig
from onevision.model.onevision import OneVisionModel

QWEN2_7B_VOCAB = 152064
IMAGE_TOKEN_INDEX = 151646
VIDEO_TOKEN_INDEX = 151647
TINY_SIGLIP_384 = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=384, patch_size=14)
TINY_QWEN2 = TextConfig(
    vocab_size=QWEN2_7B_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
)


def truncating(config: ModelConfig) -> ModelConfig:
    """`config` unpadding as LLaVA-NeXT does (int(x)): the only rounding its layout can express."""
    return dataclasses.replace(config, visual=dataclasses.replace(config.visual, unpad_rounding="truncate"))


def llava_video_config(pool_mode: str = "average", newline: str = "grid", **overrides) -> dict:
    """The tiny LLaVA-Video-7B-Qwen2 config.json (see the module docstring for every value's source)."""
    text, vision = TINY_QWEN2, TINY_SIGLIP_384
    pinpoints = [[w * 384, h * 384] for w in range(1, 7) for h in range(1, 7)]
    data = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "max_window_layers": text.num_hidden_layers,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": text.rope_theta,
        "sliding_window": 131072,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "vocab_size": text.vocab_size,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "image_token_index": IMAGE_TOKEN_INDEX,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "vision_config": {**dataclasses.asdict(vision), "model_type": "siglip_vision_model"},
        "vision_tower_pretrained": None,
        "mm_hidden_size": vision.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_projector_lr": None,
        "mm_resampler_type": None,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_vision_tower_lr": 2e-06,
        "use_mm_proj": True,
        "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": pinpoints,
        "image_crop_resolution": None,
        "image_split_resolution": None,
        "mm_spatial_pool_stride": 2,
        "mm_spatial_pool_mode": pool_mode,
        "mm_newline_position": newline,
        "frames_upbound": 64,
        "add_time_instruction": True,
        "force_sample": True,
        "add_faster_video": False,
        "faster_token_stride": 10,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "use_pos_skipping": False,
        "pos_skipping_range": 4096,
    }
    data.update(overrides)
    return data


def model_config_for(data: dict) -> ModelConfig:
    """Our config of the weights a `llava_video_config`-style dict describes (tower without its deleted layer)."""
    vision = VisionConfig(**{k: v for k, v in data["vision_config"].items() if k != "model_type"})
    vision = dataclasses.replace(vision, num_hidden_layers=vision.num_hidden_layers - 1)
    return ModelConfig(
        vision=vision,
        text=TINY_QWEN2,
        image_token_id=IMAGE_TOKEN_INDEX,
        video_token_id=VIDEO_TOKEN_INDEX,
        visual=VisualSettings(image_size=vision.image_size, patch_size=vision.patch_size),
    )


def write_original_folder(folder: str | Path, data: dict, *, seed: int = 0, tokenizer=None) -> Path:
    """`data` as config.json plus random weights under LLaVA-NeXT's key names (and `tokenizer`'s files).

    The whole SigLIP is saved, the layer LLaVA-NeXT deletes at load time (a copy of layer 0)
    and a head tensor included, as its training code saves them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = OneVisionModel(model_config_for(data))
    with torch.no_grad():
        model.image_newline.normal_()  # the constructor's zeros would hide where newlines go
    state = {ours_key_to_llava_next(k): v.contiguous() for k, v in model.state_dict().items()}
    tower = "model.vision_tower.vision_tower.vision_model."
    last = model.config.vision.num_hidden_layers
    for key in [k for k in state if k.startswith(tower + "encoder.layers.0.")]:
        state[key.replace("encoder.layers.0.", f"encoder.layers.{last}.")] = state[key].clone()
    state[tower + "head.probe"] = torch.zeros(1, 1, model.config.vision.hidden_size)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(data, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def llava_video_folder(folder: str | Path, pool_mode: str = "average", newline: str = "grid", seed: int = 0) -> Path:
    """A LLaVA-Video-7B-Qwen2-shaped original-layout folder with the real Qwen2 tokenizer files."""
    from released_folders import write_tokenizer

    folder = write_original_folder(folder, llava_video_config(pool_mode, newline), seed=seed)
    write_tokenizer(folder, media_tokens=False, template_in_config=True)
    return folder
