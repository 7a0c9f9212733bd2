"""Replicas of the released LLaVA-OneVision checkpoint folders: their file sets, tiny random weights.

`build_replica(name, folder)` writes a folder holding the files a released checkpoint holds,
with the released field values, except that every width is tiny and the weights are random
(fp32, so the CPU tests run fast; the configs keep the released dtype field). The vocabulary is
the real Qwen2 one (`onevision.tokenizer.build_qwen2_tokenizer`), so the embedding rows cover
all of it, as the released ones do.

Replicas (`REPLICAS`):

* ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` and ``llava-hf/llava-onevision-qwen2-7b-ov-hf``
  (transformers layout): `config.json` as `LlavaOnevisionConfig.save_pretrained` writes it,
  `model.safetensors`, the Qwen2 tokenizer files with `<image>` 151646 and `<video>` 151647
  added (`tokenizer.json`, `tokenizer_config.json`, `vocab.json`, `merges.txt`,
  `added_tokens.json`, `special_tokens_map.json`), `preprocessor_config.json`,
  `processor_config.json`, `video_preprocessor_config.json`, `generation_config.json` and the
  released chat template. The 0.5b replica keeps the template in the legacy processor file
  `chat_template.json`, with Qwen2-Instruct's own (string-content, system-turn) template in
  `tokenizer_config.json`, where a tokenizer copied from Qwen2-Instruct carries it (the trap: a
  pipeline reading the tokenizer's template renders another prompt); the 7b replica keeps it in
  `chat_template.jinja`, as transformers saves a processor today, where the tokenizer reads it too.
* ``lmms-lab/llava-onevision-qwen2-0.5b-ov`` (original LLaVA-NeXT layout): the `config.json`
  LLaVA-NeXT's trainer wrote, with the released `mm_*` fields and model_type "llava" (not
  "llava_qwen": LLaVA-NeXT issue #350 quotes the warning this gives when the checkpoint is loaded), `model.safetensors` with LLaVA-NeXT's keys
  (SigLIP's last layer and head included, as the training code saved them), and Qwen2's tokenizer
  files without `<image>` / `<video>` (LLaVA-NeXT splices at id -200 instead). One departure from
  the released file: the config names the tower by hub id, which would mean a so400m-sized
  SigLIP, so it also carries a `vision_config` with the tiny tower's shape.

Where the field values come from:

* the chat template: transformers' tests/models/llava_onevision/test_processing_llava_onevision.py
  (`prepare_processor_dict`, the template the llava-hf OneVision repos carry; projects that copy
  https://huggingface.co/llava-hf/llava-onevision-qwen2-0.5b-ov-hf/blob/main/chat_template.json
  quote the same text). It renders `<|im_start|>user <image>\\n...<|im_end|>` with no system turn
  and nothing for string content;
* `num_image_tokens` 729, `vision_feature_select_strategy` "full", the SigLIP-so400m image
  processor (size 384, mean/std 0.5, bicubic) and the grid pinpoints: transformers'
  src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py, which made
  the llava-hf folders (vocabulary resized to Qwen2's + 2 padded to a multiple of 64: 152000
  for 0.5B, 152128 for 7B; `<image>` / `<video>` added as special tokens);
* the lmms-lab fields: the released llava-onevision-qwen2-7b-ov config.json as quoted in
  PaddleMIX's tests/models/test_llava.py (model_type "llava" included; the 0.5b one differs in
  widths, vocabulary (Qwen2-0.5B's 151936) and in tying its embeddings);
* Qwen2-Instruct's chat template: the Qwen2 instruct models' tokenizer_config.json.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from onevision.tokenizer import MEDIA_TOKENS, build_qwen2_tokenizer

IMAGE_ID, VIDEO_ID = 151646, 151647
BOS_ID, EOS_ID = 151643, 151645

# The released llava-hf OneVision chat template (see the module docstring for the source).
RELEASED_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2-Instruct's tokenizer template (string content, default system turn).
QWEN2_INSTRUCT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TILE, PATCH = 384, 14
PINPOINTS = [[TILE * i, TILE * j] for i in range(1, 7) for j in range(1, 7)]
# Tiny widths; geometry (tile, patch, pinpoints, AnyRes-Max-9) stays the released one.
TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}
VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


@dataclass(frozen=True)
class Replica:
    """What distinguishes one released folder from another."""

    name: str
    """The released repository."""
    layout: str
    """'hf' (transformers llava_onevision) or 'llava-next' (original llava_qwen)."""
    vocab_size: int
    """Rows of the released embedding matrix."""
    tie_word_embeddings: bool
    """The released LLM ties its head to its embeddings (Qwen2-0.5B does, 7B does not)."""
    template_file: str | None = None
    """Where the chat template lives: 'chat_template.json', 'chat_template.jinja' or None."""
    llm: str = ""
    """The Qwen2 checkpoint the LLM started from (`_name_or_path` of the text config)."""


REPLICAS = {
    r.name: r
    for r in (
        Replica("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "hf", 152000, True, "chat_template.json", "Qwen/Qwen2-0.5B-Instruct"),
        Replica("llava-hf/llava-onevision-qwen2-7b-ov-hf", "hf", 152128, False, "chat_template.jinja", "Qwen/Qwen2-7B-Instruct"),
        Replica("lmms-lab/llava-onevision-qwen2-0.5b-ov", "llava-next", 151936, True, None, "Qwen/Qwen2-0.5B-Instruct"),
    )
}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _qwen2_text_config(replica: Replica):
    from transformers import Qwen2Config

    return Qwen2Config(
        **TEXT,
        vocab_size=replica.vocab_size,
        max_position_embeddings=32768,
        max_window_layers=TEXT["num_hidden_layers"],
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        sliding_window=None,
        use_sliding_window=False,
        tie_word_embeddings=replica.tie_word_embeddings,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        architectures=["Qwen2ForCausalLM"],
        _name_or_path=replica.llm,
    )


@functools.lru_cache(maxsize=2)
def _qwen2_tokenizer(media_tokens: bool):
    """The Qwen2 tokenizer, with `<image>` / `<video>` or without; built once per process (only saved, never changed)."""
    return build_qwen2_tokenizer(MEDIA_TOKENS if media_tokens else ())


def write_tokenizer(folder: Path, *, media_tokens: bool, template_in_config: bool) -> None:
    """Qwen2's tokenizer files as the released folders hold them (legacy file set included)."""
    tokenizer = _qwen2_tokenizer(media_tokens)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + (["<image>", "<video>"] if media_tokens else [])
    added = {token: 151643 + k for k, token in enumerate(specials)}
    _write_json(folder / "added_tokens.json", added)
    token = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    _write_json(
        folder / "special_tokens_map.json",
        {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"] + (["<image>", "<video>"] if media_tokens else []),
            "eos_token": {"content": "<|im_end|>", **token},
            "pad_token": {"content": "<|endoftext|>", **token},
        },
    )
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t, **token, "special": True} for t, i in added.items()},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"] + (["<image>", "<video>"] if media_tokens else []),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if media_tokens:
        config["processor_class"] = "LlavaOnevisionProcessor"
    if template_in_config:
        config["chat_template"] = QWEN2_INSTRUCT_TEMPLATE
    _write_json(folder / "tokenizer_config.json", config)


def write_processor_files(folder: Path, replica: Replica) -> None:
    """preprocessor, video preprocessor, processor and generation configs and the chat template."""
    mean_std = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    size = {"height": TILE, "width": TILE}
    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "processor_class": "LlavaOnevisionProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": size,
        **mean_std,
    }
    _write_json(
        folder / "preprocessor_config.json",
        {**common, "do_pad": True, "image_grid_pinpoints": PINPOINTS, "image_processor_type": "LlavaOnevisionImageProcessor"},
    )
    _write_json(folder / "video_preprocessor_config.json", {**common, "video_processor_type": "LlavaOnevisionVideoProcessor"})
    _write_json(
        folder / "processor_config.json",
        {
            "image_token": "<image>",
            "num_image_tokens": (TILE // PATCH) ** 2,
            "processor_class": "LlavaOnevisionProcessor",
            "video_token": "<video>",
            "vision_aspect_ratio": "anyres_max_9",
            "vision_feature_select_strategy": "full",
        },
    )
    _write_json(folder / "generation_config.json", {"_from_model_config": True, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID})
    if replica.template_file == "chat_template.json":
        _write_json(folder / "chat_template.json", {"chat_template": RELEASED_CHAT_TEMPLATE})
    elif replica.template_file == "chat_template.jinja":
        (folder / "chat_template.jinja").write_text(RELEASED_CHAT_TEMPLATE)


def _hf_config(replica: Replica):
    from transformers import LlavaOnevisionConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(**VISION, image_size=TILE, patch_size=PATCH, vision_use_head=False)
    config = LlavaOnevisionConfig(
        text_config=_qwen2_text_config(replica),
        vision_config=vision,
        image_token_index=IMAGE_ID,
        video_token_index=VIDEO_ID,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=PINPOINTS,
        use_image_newline_parameter=True,
        multimodal_projector_bias=True,
        tie_word_embeddings=replica.tie_word_embeddings,
    )
    config.architectures = ["LlavaOnevisionForConditionalGeneration"]
    config.dtype = "float16"
    return config


def _llava_qwen_config(replica: Replica) -> dict:
    """The lmms-lab config.json: the released fields, Qwen2's at tiny widths."""
    tower = dict(VISION, num_hidden_layers=VISION["num_hidden_layers"] + 1)
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        **{k: TEXT[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads")},
        "image_aspect_ratio": "anyres_max_9",
        "image_crop_resolution": None,
        "image_grid_pinpoints": PINPOINTS,
        "image_split_resolution": None,
        "image_token_index": IMAGE_ID,
        "initializer_range": 0.02,
        "max_position_embeddings": 32768,
        "max_window_layers": TEXT["num_hidden_layers"],
        "mm_hidden_size": VISION["hidden_size"],
        "mm_newline_position": "one_token",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_vision_tower_lr": 2e-06,
        "model_type": "llava",
        "pos_skipping_range": 4096,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": replica.tie_word_embeddings,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_pos_skipping": False,
        "use_sliding_window": False,
        "vision_tower_pretrained": None,
        "vocab_size": replica.vocab_size,
        # Not in the released file (see the module docstring): the tiny tower's shape.
        "vision_config": {**tower, "image_size": TILE, "patch_size": PATCH, "model_type": "siglip_vision_model"},
    }


def build_replica(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the replica of released folder `name` (a key of `REPLICAS`) into `folder`."""
    from onevision.checkpoint.files import TensorRef, model_refs, write_tensors
    from onevision.checkpoint.hf import ours_key_to_hf, read_hf_config
    from onevision.checkpoint.llava_next import _TOWER, ours_key_to_llava_next, read_llava_next_config
    from onevision.model.onevision import OneVisionModel

    replica = REPLICAS[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if replica.layout == "hf":
        _hf_config(replica).save_pretrained(folder)
        model = OneVisionModel(read_hf_config(folder))
        refs = {ours_key_to_hf(k): r for k, r in model_refs(model).items()}
        write_tokenizer(folder, media_tokens=True, template_in_config=replica.template_file == "chat_template.json")
        write_processor_files(folder, replica)
    else:
        _write_json(folder / "config.json", _llava_qwen_config(replica))
        model = OneVisionModel(read_llava_next_config(folder))
        refs = {ours_key_to_llava_next(k): r for k, r in model_refs(model).items()}
        # The training code saved the whole SigLIP: the layer LLaVA-NeXT deletes at load time and the head.
        last = VISION["num_hidden_layers"]
        for key, ref in list(refs.items()):
            prefix = _TOWER + "encoder.layers.0."
            if key.startswith(prefix):
                refs[f"{_TOWER}encoder.layers.{last}.{key[len(prefix):]}"] = TensorRef.of(ref.load("cpu").clone())
        refs[_TOWER + "head.probe"] = TensorRef.of(torch.zeros(1, 1, VISION["hidden_size"]))
        write_tokenizer(folder, media_tokens=False, template_in_config=True)
        _write_json(folder / "generation_config.json", {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID})
    write_tensors(refs, folder, progress=False)
    return folder
