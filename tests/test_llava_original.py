"""The original LLaVA `llava_llama` layout (haotian-liu/LLaVA c121f04): a tiny checkpoint built here
from the official key names and config fields, with its CLIP tower in a folder of its own, loads
and gives the logits of the original's computation (CLIP `hidden_states[mm_vision_select_layer]`,
class token dropped for 'patch', the `mm_projector` Sequential, Llama over the spliced embeddings),
redone below with transformers' modules; pixels as its `process_images` ('pad': `expand2square`
with int(mean * 255), then the CLIP processor; 'square': the CLIP processor alone).
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import random_image
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from onevision.budget import ImageMedia, plan_sample
from onevision.checkpoint import CheckpointError, convert, load_checkpoint
from onevision.checkpoint.llava_original import save_original
from onevision.model.onevision import OneVisionModel
from onevision.model.config import preset
from onevision.processing import CLIP, preprocess_item
from onevision.visual_batch import VisualBatch

TOL = 1e-4
VOCAB = 512
IMAGE_TOKEN_INDEX = -200  # the original's placeholder (llava/constants.py)
LLAMA = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0)
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8)
# v1: linear projector, 'square' (shortest side + centre crop); 1.5: mlp2x_gelu, 'pad'.
SYSTEMS = {
    "llava-v1": {"mm_projector_type": "linear"},
    "llava-1.5": {"mm_projector_type": "mlp2x_gelu", "image_aspect_ratio": "pad"},
    "cls_patch-layer-1": {"mm_projector_type": "mlp2x_gelu", "mm_vision_select_feature": "cls_patch", "mm_vision_select_layer": 1},
    "mlp3x_gelu": {"mm_projector_type": "mlp3x_gelu", "image_aspect_ratio": "pad"},
}


def expand2square(pil_img, background_color):
    """llava/mm_utils.py, verbatim."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def original_pixels(image, aspect) -> torch.Tensor:
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    if aspect == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    return processor(image, return_tensors="pt")["pixel_values"]


def build_original(root, system: str, seed: int = 0):
    """(folder, clip tower, projector, llama) of a tiny llava_llama checkpoint written with the official names."""
    torch.manual_seed(seed)
    clip = CLIPVisionModel(CLIPVisionConfig(**TOWER)).eval()
    clip.save_pretrained(root / "clip")
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    fields = {"mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", **SYSTEMS[system]}
    if fields["mm_projector_type"] == "linear":
        projector = nn.Linear(TOWER["hidden_size"], LLAMA["hidden_size"])
    else:  # multimodal_projector/builder.py for mlp{N}x_gelu
        modules = [nn.Linear(TOWER["hidden_size"], LLAMA["hidden_size"])]
        for _ in range(1, int(fields["mm_projector_type"][3])):
            modules += [nn.GELU(), nn.Linear(LLAMA["hidden_size"], LLAMA["hidden_size"])]
        projector = nn.Sequential(*modules)
    state = {k: v for k, v in llama.state_dict().items()}
    state.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    folder = root / "llava"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    config = {**LLAMA, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "mm_vision_tower": str(root / "clip"),
              "mm_hidden_size": TOWER["hidden_size"], "mm_patch_merge_type": "flat", "mm_use_im_start_end": False,
              "mm_use_im_patch_token": False, "tune_mm_mlp_adapter": False, "use_mm_proj": True, "freeze_mm_mlp_adapter": False,
              "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right", "pretraining_tp": 1, "torch_dtype": "float32",
              "hidden_act": "silu", "tie_word_embeddings": False, **fields}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, clip, projector.eval(), llama, fields


def original_logits(clip, projector, llama, fields, pixels, ids) -> torch.Tensor:
    """llava_arch.py's encode_images + prepare_inputs_labels_for_multimodal for one image."""
    hidden = clip(pixels, output_hidden_states=True).hidden_states[fields["mm_vision_select_layer"]]
    if fields["mm_vision_select_feature"] == "patch":
        hidden = hidden[:, 1:]
    features = projector(hidden)[0]
    at = ids.tolist().index(IMAGE_TOKEN_INDEX)
    embed = llama.get_input_embeddings()
    embeds = torch.cat([embed(ids[:at]), features, embed(ids[at + 1 :])])
    return llama(inputs_embeds=embeds[None]).logits


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_original_checkpoint_loads_and_matches(tmp_path, system):
    folder, clip, projector, llama, fields = build_original(tmp_path, system)
    ours = load_checkpoint(folder, progress=False)
    config = ours.config
    assert (config.vision_tower, config.text_model, config.use_image_newline) == ("clip", "llama", False)
    assert config.image_token_id == VOCAB and config.text.vocab_size == VOCAB + 1  # the placeholder's row added
    image = random_image(45, 29, seed=7)
    aspect = fields.get("image_aspect_ratio")
    plan = plan_sample([ImageMedia(image.width, image.height)], config.visual).items[0]
    assert plan.tokens == 16 + (fields["mm_vision_select_feature"] == "cls_patch")
    pixels = preprocess_item(image, plan, config.vision.image_size, CLIP)
    assert torch.equal(pixels, original_pixels(image, aspect))
    text = torch.randint(1, VOCAB, (9,), generator=torch.Generator().manual_seed(1))
    their_ids = torch.cat([text[:4], torch.tensor([IMAGE_TOKEN_INDEX]), text[4:]])
    our_ids = torch.cat([text[:4], torch.full((plan.tokens,), config.image_token_id), text[4:]])
    with torch.no_grad():
        reference = original_logits(clip, projector, llama, fields, pixels, their_ids)
        got = ours(our_ids[None], visual=VisualBatch(pixels, [plan])).logits[..., :VOCAB]
    assert (got - reference).abs().max().item() <= TOL


def test_written_original_reads_back_and_converts_to_llava_hf(tmp_path):
    torch.manual_seed(3)
    model = OneVisionModel(preset("llava15-debug")).eval()
    save_original(model, tmp_path / "orig", progress=False)
    data = json.loads((tmp_path / "orig" / "config.json").read_text())
    assert (data["model_type"], data["mm_projector_type"], data["image_aspect_ratio"], data["mm_vision_select_feature"]) == (
        "llava_llama", "mlp2x_gelu", "pad", "patch")
    back = load_checkpoint(tmp_path / "orig", progress=False)
    assert back.config == model.config
    convert(tmp_path / "orig", tmp_path / "hf", to="llava-hf", progress=False)
    again = load_checkpoint(tmp_path / "hf", progress=False)
    image = random_image(30, 50, seed=2)
    plan = plan_sample([ImageMedia(30, 50)], model.config.visual).items[0]
    visual = VisualBatch(preprocess_item(image, plan, 32, CLIP), [plan])
    ids = torch.tensor([[5, 6] + [model.config.image_token_id] * plan.tokens + [7, 8]])
    with torch.no_grad():
        expected = model(ids, visual=visual).logits
        for loaded in (back, again):
            assert torch.equal(loaded(ids, visual=visual).logits, expected)


@pytest.mark.parametrize(
    "field, value",
    [("mm_use_im_start_end", True), ("mm_patch_merge_type", "spatial_unpad"), ("image_aspect_ratio", "anyres"),
     ("mm_projector_type", "identity"), ("mm_vision_select_feature", "cls"), ("mm_hidden_size", 48), ("s2", True),
     ("mm_vision_select_layer", [-2, -1]), ("pretraining_tp", 2), ("attention_bias", True)],
)
def test_refused_original_field_is_named(tmp_path, field, value):
    folder, *_ = build_original(tmp_path, "llava-1.5")
    data = json.loads((folder / "config.json").read_text())
    data[field] = value
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(folder, progress=False)


def test_original_refuses_what_it_cannot_express(tmp_path):
    with pytest.raises(CheckpointError, match="vision_tower='siglip'.*use_image_newline=True"):
        save_original(OneVisionModel(preset("debug")), tmp_path / "ov", progress=False)


def test_tower_named_by_hub_id_needs_its_folder(tmp_path, caplog):
    folder, *_ = build_original(tmp_path, "llava-1.5")
    data = json.loads((folder / "config.json").read_text())
    data["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    data["shiny_new_field"] = 1
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="mm_vision_tower 'openai/clip-vit-large-patch14-336' is no CLIP folder here"):
        load_checkpoint(folder, progress=False)
    model = load_checkpoint(folder, vision_dir=tmp_path / "clip", progress=False)
    assert model.config.vision.num_hidden_layers == TOWER["num_hidden_layers"]
    assert "shiny_new_field" in caplog.text
