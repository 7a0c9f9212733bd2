"""Packed rows and padded batches of the same samples give the same loss and gradients (fp32),
with or without gradient checkpointing."""

import dataclasses

import torch
from train_fixtures import tiny  # noqa: F401

from onevision.data.collate import CollateConfig, Collator
from onevision.data.dataset import DataConfig, OneVisionDataset
from onevision.data.recipe import load_recipe
from onevision.data.template import TemplateConfig
from onevision.model import OneVisionModel, preset
from onevision.tokenizer import image_token_id, video_token_id
from onevision.train.config import ModelSection
from onevision.train.model_init import load_tokenizer
from onevision.train.loss_module import LossModule, model_inputs


def loss_and_grads(module, batch):
    module.model.zero_grad(set_to_none=True)
    loss, token_losses, _ = module(**model_inputs(batch, torch.device("cpu")))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    return loss.detach(), token_losses.numel(), grads


def test_packed_and_padded_first_step_agree(tiny):  # noqa: F811
    tokenizer = load_tokenizer(ModelSection(tokenizer=str(tiny["tokenizer"])))
    config = dataclasses.replace(preset("debug"), image_token_id=image_token_id(tokenizer), video_token_id=video_token_id(tokenizer))
    data = DataConfig(visual=config.visual, template=TemplateConfig(max_length=2048), video_fps=None)
    dataset = OneVisionDataset.from_recipe(load_recipe(tiny["recipe"]), tokenizer, data, progress=False)
    samples = [dataset[i] for i in range(len(dataset))]
    modalities = {s.modality for s in samples}
    assert {"image", "multi_image", "video", "text"} <= modalities
    packed = Collator(tokenizer.pad_token_id, CollateConfig(pack=True, max_tokens=1024))(samples)
    padded = Collator(tokenizer.pad_token_id, CollateConfig(pack=False))(samples)
    assert packed.input_ids.shape[0] < padded.input_ids.shape[0] and packed.attention_mask is None

    model = OneVisionModel(config)
    module = LossModule(model, chunk_rows=64)
    (loss_packed, n_packed, g_packed), (loss_padded, n_padded, g_padded) = (loss_and_grads(module, b) for b in (packed, padded))
    assert n_packed == n_padded > 0
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    assert g_packed.keys() == g_padded.keys()
    for name in g_packed:
        torch.testing.assert_close(g_packed[name], g_padded[name], rtol=1e-4, atol=1e-6, msg=name)

    model.gradient_checkpointing_enable()
    model.train()
    loss_ckpt, _, g_ckpt = loss_and_grads(module, packed)
    torch.testing.assert_close(loss_ckpt, loss_packed, rtol=1e-6, atol=1e-6)
    for name in g_packed:
        torch.testing.assert_close(g_ckpt[name], g_packed[name], rtol=1e-5, atol=1e-7, msg=name)
