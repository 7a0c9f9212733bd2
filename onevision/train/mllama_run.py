"""Run one stage of the cross-attention family (`model.family: mllama`, Llama 3.2-Vision).

    onevision train mllama_pretrain model.size=mllama-debug model.tokenizer=llama3-bytes data.recipe=...

`run_stage` (runner.py) hands stages of this family here. The stage recipe is the same
`StageConfig`; what differs is the model (`MllamaVLM`, transformers' `mllama`), the samples
(tile pixels, aspect-ratio ids and masks, one `<|image|>` per image, onevision/data/mllama_*.py)
and the export (`save_mllama`, transformers' layout, with the tokenizer). The model is built
with `text_rows="reference"`, so rows that see no image get no cross-attention output, in
packed and padded batches (onevision/model/mllama.py), and a frozen decoder leaves text-only
logits exactly as they were.

Every field is honoured or refused (`check_mllama_stage`, one `ConfigError` naming the field).
Honoured as in the other families: model.init_from / size / tokenizer / attention /
gradient_checkpointing, data.recipe / template.max_length / template.system_prompt / sampler /
loader / pad_to_multiple_of / video_fps / force_sample / video_backend / max_skipped_share /
skipped_share_after, trainable, optim, loop (but stop_at), logging, and of `visual` only
frames_upbound and max_visual_tokens (the cross-attention-key budget of a sample);
`data.max_num_tiles` caps the tiles of an image in this stage. Refused: LoRA, several ranks,
DeepSpeed, held-out evaluation, mid-run checkpoints (checkpoint.every must be 0; the export is
written at the end), loop.stop_at, the time instruction, templates other than the tokenizer's
(which must render Llama 3's chat format), and any other `visual` key.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml
from transformers import set_seed

from onevision.train.config import StageConfig, stage_to_dict
from onevision.utils.dataclass_io import ConfigError

FAMILY = "mllama"
VISUAL_HONOURED = ("frames_upbound", "max_visual_tokens")
ATTENTION = {"auto": None, "sdpa": "sdpa", "eager": "eager"}
BYTE_TOKENIZER = "llama3-bytes"
CROSS_LAYERS = "<cross_attention_layers>"
"""A `trainable` entry standing for the decoder layers the model's cross_attention_layers name."""


def expand_trainable(patterns: list[str], config) -> list[str]:
    """`patterns` with `<cross_attention_layers>` replaced by the regex of the model's cross-attention layers."""
    from onevision.model.mllama import frozen_decoder_trainable

    cross = frozen_decoder_trainable(config)[-1]
    return [cross if pattern == CROSS_LAYERS else pattern for pattern in patterns]


def check_mllama_stage(stage: StageConfig, world_size: int = 1) -> None:
    """Refuse, by name, every setting this family does not honour.

    Raises:
        ConfigError: the first such field, with what to set instead.
    """
    from onevision.model.mllama_config import PRESETS

    refused = [
        (stage.lora.enabled, "lora.enabled=true: LoRA is not wired for the cross-attention family (train the adapter layers by `trainable`)"),
        (world_size > 1, f"{world_size} ranks: the cross-attention family trains in one process"),
        (stage.distributed.strategy not in ("auto", "single"), f"distributed.strategy={stage.distributed.strategy}: the cross-attention family trains in one process"),
        (stage.eval.recipe is not None, "eval.recipe: held-out evaluation is not wired for the cross-attention family"),
        (stage.loop.eval_every != 0, "loop.eval_every: held-out evaluation is not wired for the cross-attention family"),
        (stage.checkpoint.every != 0, f"checkpoint.every={stage.checkpoint.every}: the cross-attention family writes no resumable checkpoints; set it to 0 (the export is written at the end)"),
        (stage.loop.stop_at is not None, "loop.stop_at: needs resumable checkpoints, which the cross-attention family does not write"),
        (stage.data.time_instruction, "data.time_instruction: not supported by the cross-attention family"),
        (stage.data.template.template != "chatml", f"data.template.template={stage.data.template.template}: the cross-attention family renders the tokenizer's chat template ('chatml'), which must write Llama 3's format"),
        (stage.data.template.image_position != "as_written", "data.template.image_position: the cross-attention family keeps placeholders as written"),
        (stage.model.llm_dir is not None or stage.model.vision_dir is not None, "model.llm_dir / model.vision_dir: the cross-attention family starts from model.init_from or a random model.size"),
        (stage.model.attention not in ATTENTION, f"model.attention={stage.model.attention}: the cross-attention family runs {sorted(ATTENTION)}"),
        (stage.model.tokenizer == "qwen2", f"model.tokenizer=qwen2: the cross-attention family needs a Llama 3 tokenizer ('auto', a folder, or '{BYTE_TOKENIZER}' for random debug starts)"),
        (not stage.model.init_from and stage.model.size not in PRESETS, f"model.size={stage.model.size}: the cross-attention family's sizes are {sorted(PRESETS)}"),
    ]
    unknown_visual = sorted(set(stage.visual.given()) - set(VISUAL_HONOURED))
    refused.append((bool(unknown_visual), f"visual: {unknown_visual} do not apply to the cross-attention family (it honours {list(VISUAL_HONOURED)} and data.max_num_tiles)"))
    for bad, message in refused:
        if bad:
            raise ConfigError(message)


def load_mllama_tokenizer(stage: StageConfig, image_token_id: int):
    """'llama3-bytes' (the toy Llama 3 layout), 'auto' (init_from's files) or a folder."""
    from onevision.data.llama3_chat import llama3_byte_tokenizer
    from onevision.tokenizer import load_tokenizer

    source = stage.model.tokenizer
    if source == BYTE_TOKENIZER:
        return llama3_byte_tokenizer(image_token_id)
    if source == "auto":
        if not stage.model.init_from:
            raise ConfigError(f"model.tokenizer=auto needs model.init_from; a random start takes a folder or '{BYTE_TOKENIZER}'")
        source = stage.model.init_from
    return load_tokenizer(source)


def build_mllama_model(stage: StageConfig):
    """The stage's starting `MllamaVLM` (fp32, CPU, text_rows='reference')."""
    from onevision.checkpoint.mllama import load_mllama
    from onevision.model.mllama import MllamaVLM
    from onevision.model.mllama_config import PRESETS

    if stage.model.init_from:
        model = load_mllama(stage.model.init_from, dtype=torch.float32, text_rows="reference")
    else:
        model = MllamaVLM(PRESETS[stage.model.size], text_rows="reference")
    if ATTENTION[stage.model.attention]:
        model.hf.set_attn_implementation(ATTENTION[stage.model.attention])
    return model.float()


def build_mllama_data(stage: StageConfig, model, tokenizer):
    """(dataset, sampler, collator) of this stage; samples known to be bad measure 0 and are skipped by the collator."""
    from onevision.checkpoint.mllama import read_mllama_normalization
    from onevision.data.batch_sampler import ModalityLengthBatchSampler
    from onevision.data.dataset import load_records
    from onevision.data.llama3_chat import Llama3ChatEncoder
    from onevision.data.mllama_collate import MllamaCollator
    from onevision.data.mllama_dataset import MllamaDataConfig, MllamaDataset
    from onevision.data.recipe import load_recipe
    from onevision.processing.mllama import MLLAMA_NORMALIZATION
    from onevision.train.data import resolve_recipe

    config = model.config
    encoder = Llama3ChatEncoder(tokenizer, config.image_token_id, stage.data.template.system_prompt)
    encoder.check_template(tokenizer.chat_template, f"tokenizer of {stage.model.init_from or stage.model.tokenizer}")
    if len(tokenizer) > config.text.vocab_size + 1:
        raise ConfigError(f"model.tokenizer: {len(tokenizer)} tokens, more than the model's {config.text.vocab_size} rows (+ <|image|>)")
    data = stage.data
    normalization = read_mllama_normalization(stage.model.init_from, config) if stage.model.init_from else MLLAMA_NORMALIZATION
    try:
        data_config = MllamaDataConfig(
            tiles=config.tiles(), max_num_tiles=data.max_num_tiles, max_length=data.template.max_length,
            max_cross_attention_tokens=stage.visual.given().get("max_visual_tokens"),
            frames_upbound=stage.visual.given().get("frames_upbound", 32), video_fps=data.video_fps, force_sample=data.force_sample,
            video_backend=data.video_backend, normalization=normalization,
        )
    except ValueError as error:
        raise ConfigError(f"data.{error}") from None
    dataset = MllamaDataset(load_records(load_recipe(resolve_recipe(data.recipe)), progress=False), encoder, data_config)
    lengths, _ = dataset.lengths()
    sampler = ModalityLengthBatchSampler(lengths, dataset.modalities(), _sampler_config(stage), 0, 1)
    collator = MllamaCollator(tokenizer.pad_token_id, config.image_token_id, config.vision.max_num_tiles, data.sampler.max_tokens, data.pad_to_multiple_of)
    return dataset, sampler, collator


def _sampler_config(stage: StageConfig):
    import dataclasses

    return dataclasses.replace(stage.data.sampler, seed=stage.loop.seed)


def _batches(dataset, sampler, collator, loader_section):
    """Collated micro-batches, epoch after epoch."""
    loader_kwargs = {}
    if loader_section.num_workers > 0:
        loader_kwargs = {
            "prefetch_factor": loader_section.prefetch_factor, "persistent_workers": loader_section.persistent_workers,
            "timeout": loader_section.timeout,
        }
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=loader_section.num_workers,
        pin_memory=loader_section.pin_memory, **loader_kwargs,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def run_mllama_stage(stage: StageConfig):
    """Train one stage of the cross-attention family; returns runner.StageResult."""
    from onevision.checkpoint.mllama import save_mllama
    from onevision.model.mllama import select_trainable
    from onevision.train.engine import (
        build_optimizer,
        build_scheduler,
        start_runtime,
        stop_runtime,
    )
    from onevision.train.errors import DataFailure, NonFiniteError
    from onevision.train.logger import TrainLogger
    from onevision.train.params import param_groups
    from onevision.train.runner import StageResult

    runtime = start_runtime(stage.loop.device, stage.distributed.timeout_s)
    try:
        check_mllama_stage(stage, runtime.world_size)
        set_seed(stage.loop.seed)
        output_dir = Path(stage.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(stage_to_dict(stage), sort_keys=False))
        model = build_mllama_model(stage)
        tokenizer = load_mllama_tokenizer(stage, model.config.image_token_id)
        try:
            select_trainable(model, expand_trainable(stage.trainable, model.config))
        except ValueError as error:
            raise ConfigError(f"trainable: {error}") from None
        if stage.model.gradient_checkpointing:
            model.hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        dataset, sampler, collator = build_mllama_data(stage, model, tokenizer)
        per_epoch = sampler.num_steps()
        if stage.loop.steps is not None:
            steps = stage.loop.steps
        elif per_epoch == 0:
            raise DataFailure(f"data recipe {stage.data.recipe} gives no micro-batches: every sample was skipped or it is empty")
        else:
            steps = math.floor(stage.loop.epochs * per_epoch) // stage.loop.grad_accum
            if steps < 1:
                raise ConfigError(f"loop.epochs={stage.loop.epochs} of {per_epoch} micro-batches with loop.grad_accum={stage.loop.grad_accum} gives no optimizer step")
        model.to(runtime.device).train()
        groups = param_groups(model, stage.optim)
        optimizer = build_optimizer(groups, stage.optim)
        scheduler = build_scheduler(optimizer, stage.optim, steps)
        bf16 = stage.loop.precision == "bf16" or (stage.loop.precision == "auto" and runtime.device.type == "cuda")
        logger = TrainLogger(output_dir, stage.logging, steps, active=True, run_config=stage_to_dict(stage), name=stage.name, log_every=stage.loop.log_every)
        logger.start(0)
        batches = _batches(dataset, sampler, collator, stage.data.loader)
        skipped, tried, losses = [], 0, []  # known-bad samples reach the collator too, and are counted there
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for step in range(1, steps + 1):
            total, tokens, rates = 0.0, 0, {f"lr/{g['name']}": g["lr"] for g in optimizer.param_groups}
            for _ in range(stage.loop.grad_accum):
                batch = next(batches)
                skipped += batch.skipped
                tried += batch.num_samples + len(batch.skipped)
                if not batch.num_samples:
                    continue
                autocast = torch.autocast(runtime.device.type, dtype=torch.bfloat16, enabled=bf16)
                with autocast:
                    loss = model(**batch.to(runtime.device)).loss
                if loss.requires_grad:  # a text-only batch under a frozen decoder touches nothing that trains
                    (loss / stage.loop.grad_accum).backward()
                total += float(loss.detach()) / stage.loop.grad_accum
                tokens += batch.num_tokens
            limit = stage.optim.max_grad_norm if stage.optim.max_grad_norm > 0 else float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
            if not (math.isfinite(norm) and math.isfinite(total)):
                raise NonFiniteError(f"loss {total}, gradient norm {norm} at step {step}; stopped before updating or exporting")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total)
            logger.log_step(step, {"train/loss": total, "train/grad_norm": norm, "data/tokens": tokens, "data/skipped": len(skipped), **rates})
            _check_skipped(stage, skipped, tried, final=step == steps)
        logger.close()
        export_dir = None
        if stage.checkpoint.export:
            export_dir = save_mllama(model.eval(), output_dir / "hf", dtype=torch.bfloat16 if bf16 else None)
            tokenizer.save_pretrained(export_dir)
        return StageResult(output_dir, losses, export_dir, None)
    finally:
        stop_runtime()


def _check_skipped(stage: StageConfig, skipped: list, tried: int, final: bool) -> None:
    from onevision.train.errors import DataFailure

    share = stage.data.max_skipped_share
    if not tried or len(skipped) <= share * tried or not (final or tried >= stage.data.skipped_share_after):
        return
    raise DataFailure(
        f"{len(skipped)} of {tried} samples tried were skipped, more than data.max_skipped_share={share}; first: {skipped[0].reason}"
    )
