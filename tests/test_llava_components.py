"""LLaVA stage-1 start from a Llama (Vicuna) folder plus a CLIP folder, and `onevision convert` between
the LLaVA layouts: the tower keeps CLIP's weights up to the feature layer and gives
`CLIPVisionModel.hidden_states[-2][:, 1:]`, the decoder is the Llama's, the projector fresh; the
result opens in transformers' LlavaForConditionalGeneration with no missing or unexpected key.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

from onevision.checkpoint import CheckpointError, from_components, load_checkpoint
from onevision.cli.main import main

LLAMA = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
CLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("components")
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()
    llama.save_pretrained(root / "vicuna")
    # A full CLIPModel release (text tower, projections, logit scale), as openai/clip-vit-large-patch14-336 ships.
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=CLIP_VISION, projection_dim=16)).save_pretrained(root / "clip")
    return root, llama


def test_llava15_start_from_vicuna_and_clip(folders):
    root, llama = folders
    model = from_components(root / "vicuna", root / "clip", family="llava15", vision_feature_layer=-2, progress=False)
    config = model.config
    assert (config.vision_tower, config.text_model, config.projector_type, config.vision_feature_select_strategy) == ("clip", "llama", "mlp2x_gelu", "default")
    assert config.vision.num_hidden_layers == 2 and config.vision_feature_layer == -1 and model.image_newline is None
    assert (config.image_token_id, config.video_token_id, config.text.vocab_size) == (300, None, 301)
    assert (config.visual.base_image, config.visual.base_tokens) == ("pad", 16)
    clip = CLIPVisionModel.from_pretrained(root / "clip").eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.vision_tower.features(pixels), clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:], atol=1e-6)
        ids = torch.randint(0, 300, (1, 7))
        assert torch.allclose(model.language_model(ids).logits[..., :300], llama(ids).logits, atol=1e-5)


def test_cli_builds_llava_v1_and_converts_between_layouts(folders, tmp_path, capsys):
    root, _ = folders
    assert main(["convert", "--llm", str(root / "vicuna"), "--vision", str(root / "clip"), str(tmp_path / "v1"), "--to", "llava-original", "--family", "llava-v1"]) == 0
    data = json.loads((tmp_path / "v1" / "config.json").read_text())
    assert (data["model_type"], data["mm_projector_type"], data["image_aspect_ratio"], data["mm_vision_select_layer"]) == ("llava_llama", "linear", "square", -1)
    v1 = load_checkpoint(tmp_path / "v1", progress=False)
    assert v1.config.projector_type == "linear" and v1.config.visual.base_image == "crop"
    # A linear projector has no place in transformers' llava: refused by name, exit 2.
    assert main(["convert", str(tmp_path / "v1"), str(tmp_path / "v1-hf"), "--to", "llava-hf"]) == 2
    assert "projector_type='linear'" in capsys.readouterr().err

    layers = ["--family", "llava15", "--vision-feature-layer=-2,-3"]
    assert main(["convert", "--llm", str(root / "vicuna"), "--vision", str(root / "clip"), str(tmp_path / "l15-hf"), "--to", "llava-hf", *layers]) == 0
    # mm_vision_select_layer is one int: the original layout refuses a list, by name.
    assert main(["convert", str(tmp_path / "l15-hf"), str(tmp_path / "l15-orig"), "--to", "llava-original"]) == 2
    assert "vision_feature_layer=[2, 1]" in capsys.readouterr().err
    theirs, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "l15-hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert theirs.config.vision_feature_layer == [2, 1]
    ours = load_checkpoint(tmp_path / "l15-hf", progress=False)
    ids = torch.tensor([[3, 4] + [300] * 16 + [5]])
    pixels = torch.randn(1, 3, 32, 32)
    from onevision.budget import BaseImagePlan
    from onevision.visual_batch import VisualBatch

    plan = BaseImagePlan(width=32, height=32, base_tokens=16, newline=False)
    with torch.no_grad():
        mine = ours(ids, visual=VisualBatch(pixels, [plan])).logits
        reference = theirs.eval()(input_ids=ids, pixel_values=pixels).logits
    assert (mine - reference).abs().max().item() <= 1e-4


def test_source_options_are_checked(folders, tmp_path, capsys):
    root, _ = folders
    assert main(["convert", str(root / "vicuna"), str(tmp_path / "x"), "--to", "llava-hf", "--family", "llava15"]) == 2
    assert "--family and --vision-feature-layer apply with --llm/--vision only" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="unknown family 'llava2'"):
        from_components(root / "vicuna", root / "clip", family="llava2", progress=False)
