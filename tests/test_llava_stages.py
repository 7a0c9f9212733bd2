"""LLaVA v1 and LLaVA-1.5 as stage recipes: the published settings, the family debug sizes, and a
two-stage CPU run (plain captions, then vicuna_v1 instruction tuning from stage 1's export).

Settings: haotian-liu/LLaVA scripts/pretrain.sh, finetune_full_schedule.sh, v1_5/pretrain.sh,
v1_5/finetune.sh at c121f0432da27facab705978f83c4ada465e46fd, and the papers' batch sizes
(arXiv 2304.08485 section 5, 2310.03744).
"""

from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import CORPUS, debug_overrides, write_dataset

from onevision.data.conversations import CONVERSATION_TEMPLATES
from onevision.model.config import preset
from onevision.tokenizer import train_small_llama_tokenizer
from onevision.train import load_stage, run_stage
from onevision.train.data import resolve_recipe

GPUS = 8
"""The original scripts' per-device batches assume 8 GPUs."""
# stage -> (debug size, lr, global batch, epochs, trainable, template, ZeRO stage)
EXPECTED = {
    "llava_v1_stage1": ("llava-v1-debug", 2e-3, 128, 1, ["^projector\\."], "plain", 2),
    "llava_v1_stage2": ("llava-v1-debug", 2e-5, 32, 3, ["^projector\\.", "^language_model\\."], "vicuna_v1", 2),
    "llava15_stage1": ("llava15-debug", 1e-3, 256, 1, ["^projector\\."], "plain", 2),
    "llava15_stage2": ("llava15-debug", 2e-5, 128, 1, ["^projector\\.", "^language_model\\."], "vicuna_v1", 3),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_llava_stage_recipes_carry_the_published_settings(name):
    size, lr, batch, epochs, trainable, template, zero = EXPECTED[name]
    stage = load_stage(name, [f"model.size={size}", "output_root=/runs"])
    assert stage.model.size == size and stage.model.family == size.removesuffix("-debug")
    assert stage.optim.lr == lr and stage.loop.epochs == epochs and stage.trainable == trainable
    assert stage.data.sampler.max_tokens is None and stage.data.sampler.batch_size * GPUS * stage.loop.grad_accum == batch
    assert (stage.optim.schedule, stage.optim.warmup_ratio, stage.optim.weight_decay) == ("cosine", 0.03, 0.0)
    assert stage.data.template.template == template and stage.data.template.max_length == 2048
    assert stage.distributed.zero_stage == zero
    if template == "plain":
        assert stage.data.template.plain_end == "newline" and stage.model.init_from is None
    else:
        assert stage.data.template.image_position == "first"
        assert stage.model.init_from == f"/runs/{name.replace('stage2', 'stage1')}/hf"
    assert stage.visual_settings(preset(size).visual).single_image == "base"
    recipe = yaml.safe_load(resolve_recipe(stage.data.recipe).read_text())
    assert all(d["json_path"].startswith("${DATA_ROOT}/") for d in recipe["datasets"])


def test_llava15_two_stages_train_on_cpu_and_the_export_is_asked_in_vicuna_v1(tmp_path):
    torch.set_num_threads(1)
    recipe = write_dataset(tmp_path / "data", copies=1)
    tokenizer = tmp_path / "tokenizer"
    train_small_llama_tokenizer(CORPUS + ["USER: ASSISTANT:"], vocab_size=300, save_dir=tokenizer)
    runs = tmp_path / "runs"
    common = [o.replace("model.size=debug", "model.size=llava15-debug") for o in debug_overrides(runs, recipe, None, steps=2)]
    first = run_stage(load_stage("llava15_stage1", common + [f"model.tokenizer={tokenizer}"]))
    second = run_stage(load_stage("llava15_stage2", common))
    assert len(first.losses) == len(second.losses) == 2
    assert all(torch.isfinite(torch.tensor(first.losses + second.losses)))
    exported = Path(second.export_dir)
    from onevision.infer.pipeline import OneVision

    pipeline = OneVision.from_pretrained(exported)
    assert pipeline.encoder.chat_template == CONVERSATION_TEMPLATES["vicuna_v1"]
