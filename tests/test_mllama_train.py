"""The cross-attention family's stages, samples, batches and training through `onevision train`.

Recipes: the family's stages load, chain by `previous`, anneal the tiles 1 -> 2 -> 4 and train
exactly the frozen-decoder set. Samples: one `<|image|>` per image, a video's frames as
one-tile images, tiles capped per stage but numbered as the model's, Llama 3's chat format as
the tokenizer's template renders it. Batches: a packed row gives each sample the logits of its
padded batch. Training: the real entry point on a tiny world, then text-only logits of the
export are bit-identical to the start's (the decoder is frozen) while image logits moved.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import yaml
from helpers_mllama import open_gates, spread_weights
from helpers_model import single_thread  # noqa: F401  (autouse fixture)

from onevision.budget.mllama_tiles import supported_aspect_ratios
from onevision.checkpoint.mllama import load_mllama
from onevision.cli.main import main
from onevision.data.dataset import Skipped, load_records
from onevision.data.llama3_chat import Llama3ChatEncoder, llama3_byte_tokenizer
from onevision.data.mllama_collate import MllamaCollator
from onevision.data.mllama_dataset import MllamaDataConfig, MllamaDataset, plan_capped
from onevision.data.recipe import load_recipe
from onevision.data.template import IGNORE_INDEX
from onevision.model.mllama import MllamaVLM, frozen_decoder_trainable, select_trainable
from onevision.model.mllama_config import PRESETS
from onevision.train.config import load_stage
from onevision.train.data import resolve_recipe
from onevision.train.mllama_run import expand_trainable
from onevision.world.build import build_world
from onevision.world.recipes import write_world_recipes

CONFIG = PRESETS["mllama-debug"]
STAGES = ["mllama_pretrain", "mllama_anneal_1", "mllama_anneal_2", "mllama_anneal_3", "mllama_instruct"]
QUICK = ["data.loader.num_workers=0", "logging.progress=false", "logging.tensorboard=false", "logging.plot=false", "model.gradient_checkpointing=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mllama_world")
    build_world(root / "world", seed=0, n_train=1, n_test=0, image_size=32, frames=4, progress=False)
    return {"root": root, "recipes": write_world_recipes(root / "world")}


@pytest.fixture(scope="module")
def tokenizer():
    return llama3_byte_tokenizer(CONFIG.image_token_id)


def test_stages_chain_and_anneal_the_tiles():
    stages = {name: load_stage(name, ["output_root=/r"]) for name in STAGES}
    assert all(stage.model.family == "mllama" for stage in stages.values())
    assert [stages[f"mllama_anneal_{i}"].data.max_num_tiles for i in (1, 2, 3)] == [1, 2, 4]
    assert stages["mllama_pretrain"].model.init_from is None and stages["mllama_pretrain"].data.max_num_tiles == 1
    for before, after in itertools.pairwise(STAGES):
        assert stages[after].previous == before and stages[after].model.init_from == f"/r/{before}/hf"
    assert all(resolve_recipe(stage.data.recipe).is_file() for stage in stages.values())
    model = MllamaVLM(CONFIG)
    reference = set(select_trainable(model, frozen_decoder_trainable(CONFIG)))
    for stage in stages.values():
        assert set(select_trainable(model, expand_trainable(stage.trainable, CONFIG))) == reference
    decoder = {name for name in reference if not name.startswith(("model.vision_model.", "model.multi_modal_projector."))}
    assert decoder and all(name.startswith("model.language_model.layers.1.") for name in decoder)


def test_encoder_is_the_tokenizers_template(tokenizer):
    encoder = Llama3ChatEncoder(tokenizer, CONFIG.image_token_id)
    encoder.check_template(tokenizer.chat_template, "test")
    turns = [("user", "<image>\nWhat<|eot_id|>?"), ("assistant", "A cat."), ("user", "And <image> here?"), ("assistant", "Dogs")]
    encoded = encoder.encode(turns, [1, 1])
    assert encoded.input_ids.count(CONFIG.image_token_id) == 2
    assert encoded.input_ids.count(tokenizer.convert_tokens_to_ids("<|eot_id|>")) == 4
    supervised = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX])
    assert supervised == "A cat.<|eot_id|>Dogs<|eot_id|>"
    plain = [("user", "<image>\nWhat?"), ("assistant", "A cat.")]
    plain_messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat?"}]}, {"role": "assistant", "content": "A cat."}]
    assert encoder.encode(plain, [1]).input_ids == tokenizer(tokenizer.apply_chat_template(plain_messages, tokenize=False), add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="does not render Llama 3"):
        encoder.check_template("{{ bos_token }}{% for m in messages %}{{ m['role'] }}{% endfor %}", "folder")


def test_capped_plans_use_the_models_aspect_ratio_ids():
    tiles = CONFIG.tiles()
    wide = plan_capped(28, 56, tiles, 2)
    tall = plan_capped(56, 28, tiles, 2)
    assert (wide.rows, wide.cols, tall.rows, tall.cols) == (1, 2, 2, 1)
    full = supported_aspect_ratios(tiles.max_num_tiles)
    assert tall.aspect_ratio_id == full.index((2, 1)) + 1 == 5  # 3 in the list of max 2: the model's numbering wins
    assert tall.max_num_tiles == 4 and tall.aspect_ratio_mask == (1, 1, 0, 0)
    assert plan_capped(90, 90, tiles, 1).num_tiles == 1 and plan_capped(90, 90, tiles, 4).num_tiles == 4


def _dataset(world, tokenizer, recipe: str, **config) -> MllamaDataset:
    records = load_records(load_recipe(world["recipes"][recipe]), progress=False)
    encoder = Llama3ChatEncoder(tokenizer, CONFIG.image_token_id)
    return MllamaDataset(records, encoder, MllamaDataConfig(tiles=CONFIG.tiles(), frames_upbound=3, video_fps=None, **config))


def test_samples_one_image_token_per_image_and_frame(world, tokenizer):
    dataset = _dataset(world, tokenizer, "stage2_ov", max_num_tiles=2)
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        assert not isinstance(sample, Skipped), sample
        assert dataset.measure(index) == sample.num_tokens
        assert int((sample.input_ids == CONFIG.image_token_id).sum()) == len(sample.images)
        assert bool((sample.labels[sample.input_ids == CONFIG.image_token_id] == IGNORE_INDEX).all())
        record = dataset.records[index]
        if record.video is not None:
            assert len(sample.images) == 3 and all(plan.num_tiles == 1 for _, plan in sample.images)
        else:
            assert len(sample.images) == len(record.images) and all(plan.num_tiles <= 2 for _, plan in sample.images)
        assert all(tiles.shape == (plan.num_tiles, 3, 28, 28) for tiles, plan in sample.images)
        seen.add(sample.modality)
    assert seen == {"image", "multi_image", "video"}
    fewer = _dataset(world, tokenizer, "stage2_ov", max_cross_attention_tokens=10)  # two one-tile frames of 5 keys
    video = next(fewer[i] for i in range(len(fewer)) if fewer.records[i].video is not None)
    assert len(video.images) == 2 and int((video.input_ids == CONFIG.image_token_id).sum()) == 2
    over = _dataset(world, tokenizer, "stage2_ov", max_cross_attention_tokens=4)  # one tile is 5 keys
    skipped = over[0]
    assert isinstance(skipped, Skipped) and skipped.kind == "budget" and "cross-attention tokens over 4" in skipped.reason


def test_packed_rows_give_each_sample_its_padded_logits(world, tokenizer):
    dataset = _dataset(world, tokenizer, "stage2_ov", max_num_tiles=4)
    samples = [dataset[i] for i in (0, len(dataset) // 2, len(dataset) - 1)]
    text_only = Llama3ChatEncoder(tokenizer, CONFIG.image_token_id).encode([("user", "hi"), ("assistant", "yo")], [])
    samples.append(type(samples[0])("text", torch.tensor(text_only.input_ids), torch.tensor(text_only.labels), [], "text"))
    torch.manual_seed(0)
    model = MllamaVLM(CONFIG, text_rows="reference").eval()
    spread_weights(model)
    open_gates(model)
    common = (tokenizer.pad_token_id, CONFIG.image_token_id, CONFIG.vision.max_num_tiles)
    packed = MllamaCollator(*common, max_tokens=sum(s.num_tokens for s in samples))(samples)
    assert packed.inputs["input_ids"].shape[0] == 1 and packed.inputs["attention_mask"] is None
    with torch.no_grad():
        row = model(**{k: v for k, v in packed.inputs.items() if k != "labels"}).logits[0]
        at = 0
        order = [samples.index(next(s for s in samples if s.id == i)) for i in packed.ids]
        for k in order:
            sample = samples[k]
            alone = MllamaCollator(*common)([sample]).inputs
            logits = model(**{key: v for key, v in alone.items() if key != "labels"}).logits[0]
            torch.testing.assert_close(row[at:at + sample.num_tokens], logits, atol=1e-4, rtol=1e-4)
            at += sample.num_tokens


def _text_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids[None]).logits[0]


def test_train_entry_point_keeps_text_logits_bit_identical(world, tmp_path, tokenizer, capsys):
    runs = tmp_path / "runs"
    base = ["model.size=mllama-debug", "model.tokenizer=llama3-bytes", f"output_root={runs}", "loop.steps=2", "optim.lr=0.05", *QUICK]
    assert main(["train", "mllama_pretrain", f"data.recipe={world['recipes']['stage1']}", *base]) == 0
    assert main(["train", "mllama_anneal_1", f"data.recipe={world['recipes']['stage2_ov']}", *base, "visual.frames_upbound=2", "data.video_fps=null"]) == 0
    assert "exported" in capsys.readouterr().out
    before, after = (load_mllama(runs / name / "hf", text_rows="reference") for name in ("mllama_pretrain", "mllama_anneal_1"))
    ids = torch.tensor(Llama3ChatEncoder(tokenizer, CONFIG.image_token_id).prompt([("user", "What colour is the sky?")], []))
    assert torch.equal(_text_logits(before, ids), _text_logits(after, ids))
    moved = [name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])]
    assert moved and all(name.startswith(("model.vision_model.", "model.multi_modal_projector.", "model.language_model.layers.1.")) for name in moved)
    assert json.loads((runs / "mllama_anneal_1" / "hf" / "config.json").read_text())["model_type"] == "mllama"
    assert (runs / "mllama_anneal_1" / "hf" / "tokenizer.json").is_file()


def test_train_refuses_what_the_family_does_not_do(world, tmp_path, capsys):
    argv = ["train", "mllama_pretrain", "model.size=mllama-debug", "model.tokenizer=llama3-bytes", f"data.recipe={world['recipes']['stage1']}", f"output_root={tmp_path}", *QUICK]
    for override, words in (("lora.enabled=true", "lora.enabled"), ("visual.anyres_max=3", "anyres_max"), ("checkpoint.every=5", "checkpoint.every"),
                            ("model.tokenizer=qwen2", "model.tokenizer=qwen2"), ("data.max_num_tiles=5", "max_num_tiles=5")):
        assert main(argv + [override]) == 2
        assert words in capsys.readouterr().err
    assert main(["train", "stage1", "model.size=debug", "data.max_num_tiles=2", f"data.recipe={world['recipes']['stage1']}", f"output_root={tmp_path}", *QUICK]) == 2
    assert "cross-attention family only" in capsys.readouterr().err


def test_training_skips_a_broken_image_and_counts_it(world, tmp_path, capsys):
    root = world["root"] / "world"
    good = json.loads((root / "train" / "si_colour.jsonl").read_text().splitlines()[0])
    good["image"] = str(root / good["image"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    bad = {**good, "id": "broken", "image": str(tmp_path / "broken.png")}
    (tmp_path / "data.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"datasets": [{"json_path": str(tmp_path / "data.jsonl"), "sampling_strategy": "all"}]}))
    argv = ["train", "mllama_pretrain", "model.size=mllama-debug", "model.tokenizer=llama3-bytes", f"data.recipe={recipe}", "loop.steps=1", *QUICK]
    assert main([*argv, f"output_root={tmp_path / 'a'}"]) == 0  # 1 of 2 skipped: within the default share 0.5
    assert main([*argv, f"output_root={tmp_path / 'b'}", "data.max_skipped_share=0.1"]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 samples tried were skipped" in err and "broken.png" in err
