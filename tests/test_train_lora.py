"""LoRA: the loss falls (never stuck at 0), the adapter saves, merges and reloads.

A LoRA run of stage 2 trains adapters on the decoder's linear layers plus the full projector
(`lora.trainable`), nothing else. Reloading the stage's start model with the saved adapter
gives the same logits as the merged export.
"""

import torch
from train_fixtures import debug_overrides, tiny  # noqa: F401
from transformers import set_seed

from onevision.checkpoint import load_hf
from onevision.train import load_stage, run_stage
from onevision.train.engine import start_runtime
from onevision.train.lora import load_adapter
from onevision.train.model_init import build_model, load_tokenizer
from onevision.train.runner import build_run


def test_lora_trains_saves_merges_and_reloads(tiny):  # noqa: F811
    torch.set_num_threads(1)
    overrides = debug_overrides(tiny["root"] / "lora", tiny["recipe"], tiny["tokenizer"], steps=8, max_tokens=700)
    overrides += ["model.init_from=null", "lora.enabled=true", "lora.r=8", "optim.lr=3e-3"]
    stage = load_stage("stage2_si", overrides)
    run, parts = build_run(stage, start_runtime("cpu"))
    trained = {n for n, p in parts["model"].named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n or n.startswith("projector.") for n in trained)
    assert {n for n, _ in parts["model"].named_parameters() if n.startswith("projector.")} <= trained
    assert {g["name"] for g in run.engine.optimizer.param_groups} == {"default"}
    result = run_stage(stage)
    losses = result.losses
    assert all(loss > 1.0 for loss in losses), losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1, losses

    adapter = result.adapter_dir
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "trainable.safetensors").is_file()
    merged = load_hf(result.export_dir, progress=False).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())

    set_seed(stage.loop.seed)
    base = build_model(stage, load_tokenizer(stage.model))
    start_q = base.language_model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    adapted = load_adapter(base, adapter).eval()
    input_ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        want = adapted(input_ids=input_ids).logits
        got = merged(input_ids=input_ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    merged_q = merged.language_model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(merged_q, start_q)
