"""Run one stage: build every object `train()` calls from a `StageConfig`, train, export.

    from onevision.train import load_stage, run_stage
    result = run_stage(load_stage("stage1", ["model.size=debug", "output_root=/tmp/runs"]))
    result.export_dir   # /tmp/runs/stage1/hf, the next stage's init_from

Order: join the process group, seed, choose the checkpoint to resume from and check this
config against the checkpoint's (`resume.py`: a refused resume stops before anything is built;
output_dir/config.yaml is written only once the config is accepted), tokenizer and starting
weights, attention back-end,
gradient checkpointing, LoRA, trainable parameters and their optimizer groups, data, engine
(single / DDP / DeepSpeed), checkpointer, logger, evaluator; then `train()`; then the export
in the transformers llava_onevision layout (ZeRO-3 gathers the weights first; LoRA adapters
are saved on their own and merged into the exported weights), with the fingerprint of the
start beside it (`onevision_start.json`, `onevision.checkpoint.fingerprint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from onevision.checkpoint.fingerprint import start_fingerprint, write_start
from onevision.data.conversations import conversation_template
from onevision.processing import TOWER_NORMALIZATION
from onevision.train.attention import (
    PACKED_KERNELS,
    resolve_attention,
    set_decoder_attention,
)
from onevision.train.config import StageConfig, stage_to_dict
from onevision.train.data import TrainData, build_loader
from onevision.train.engine import (
    DeepSpeedEngine,
    Runtime,
    TorchEngine,
    start_runtime,
    stop_runtime,
)
from onevision.train.errors import DataFailure
from onevision.train.evaluator import HeldOutLoss
from onevision.train.logger import TrainLogger
from onevision.train.loop import TrainRun, train
from onevision.train.lora import LORA_PARAM, add_lora, merge_lora, save_adapter
from onevision.train.loss_module import LossModule
from onevision.train.model_init import build_model, load_tokenizer
from onevision.train.params import apply_trainable, param_groups
from onevision.train.resume import fresh_plan, plan_resume, record_start
from onevision.train.run_checkpoint import Checkpointer, export_model
from onevision.utils.dataclass_io import ConfigError


@dataclass
class StageResult:
    """What a finished stage leaves behind."""

    output_dir: Path
    """The stage's folder."""
    losses: list[float]
    """Loss of every step this process ran."""
    export_dir: Path | None
    """The llava_onevision export (rank 0, when checkpoint.export)."""
    adapter_dir: Path | None
    """The LoRA adapter folder (rank 0, LoRA runs)."""


def strategy_of(stage: StageConfig, world_size: int) -> str:
    """'single', 'ddp' or 'deepspeed' for this run."""
    strategy = stage.distributed.strategy
    if strategy == "auto":
        return "ddp" if world_size > 1 else "single"
    if strategy == "single" and world_size > 1:
        raise ValueError(f"distributed.strategy is 'single' but {world_size} ranks were launched")
    return strategy


def total_steps(stage: StageConfig, data: TrainData) -> int:
    """Optimizer steps: loop.steps, else loop.epochs over the data.

    Raises:
        DataFailure: the data gives no micro-batch at all.
        ConfigError: loop.epochs is too small a fraction for one optimizer step.
    """
    if stage.loop.steps is not None:
        return stage.loop.steps
    per_epoch = data.steps_per_epoch()
    if per_epoch == 0:
        raise DataFailure(f"data recipe {stage.data.recipe} gives no micro-batches: every sample was skipped or it is empty")
    steps = math.floor(stage.loop.epochs * per_epoch) // stage.loop.grad_accum
    if steps < 1:
        raise ConfigError(
            f"loop.epochs={stage.loop.epochs} of {per_epoch} micro-batches per epoch with loop.grad_accum="
            f"{stage.loop.grad_accum} gives no optimizer step"
        )
    return steps


def build_run(stage: StageConfig, runtime: Runtime) -> tuple[TrainRun, dict]:
    """Every object `train()` calls, plus what the export needs (model, tokenizer, peft wrapper)."""
    set_seed(stage.loop.seed)  # python, numpy, torch (and CUDA) generators
    output_dir = Path(stage.output_dir)
    config = stage_to_dict(stage)
    checkpointer = Checkpointer(output_dir / "checkpoints", runtime, stage.checkpoint.keep_last)
    # Before anything is built: a refused resume or a folder of broken checkpoints stops at once.
    plan = plan_resume(config, stage.checkpoint.allow_changes, checkpointer) if stage.checkpoint.resume else fresh_plan(checkpointer)
    record_start(output_dir, config, plan, runtime, stage.checkpoint.resume)
    tokenizer = load_tokenizer(stage.model)
    if conversation_template(stage.data.template.template):  # the export is asked as it was trained
        tokenizer.chat_template = conversation_template(stage.data.template.template)
    model = build_model(stage, tokenizer)
    attention = resolve_attention(stage.model.attention, runtime.device)
    set_decoder_attention(model.language_model, attention)
    if stage.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    peft = add_lora(model, stage.lora) if stage.lora.enabled else None
    if peft is None:
        apply_trainable(model, stage.trainable)
    else:
        apply_trainable(model, stage.lora.trainable, keep=LORA_PARAM)
    groups = param_groups(model, stage.optim)

    visual = model.config.visual
    pixels = TOWER_NORMALIZATION[model.config.vision_tower]  # CLIP's mean / std for LLaVA v1 / 1.5
    loader = build_loader(stage.data, tokenizer, visual, runtime, stage.loop.seed, progress=stage.logging.progress, normalization=pixels)
    data = TrainData(loader, runtime, tokenizer.pad_token_id)
    steps = total_steps(stage, data)
    module = LossModule(model, stage.model.head_chunk_rows, attention in PACKED_KERNELS, dummy_visual=runtime.distributed)
    bf16 = stage.loop.precision == "bf16" or (stage.loop.precision == "auto" and runtime.device.type == "cuda")
    strategy = strategy_of(stage, runtime.world_size)
    common = {"groups": groups, "optim": stage.optim, "total_steps": steps, "grad_accum": stage.loop.grad_accum, "runtime": runtime, "bf16": bf16}
    if strategy == "deepspeed":
        engine = DeepSpeedEngine(module, zero_stage=stage.distributed.zero_stage, config_path=stage.distributed.deepspeed_config, **common)
    else:
        engine = TorchEngine(module, **common)

    evaluator = None
    if stage.eval.recipe:
        eval_loader = build_loader(stage.data, tokenizer, visual, runtime, stage.loop.seed, shuffle=False, recipe=stage.eval.recipe, progress=stage.logging.progress, normalization=pixels)
        evaluator = HeldOutLoss(eval_loader, runtime, stage.eval.batches, tokenizer.pad_token_id, stage.model.head_chunk_rows)
    logger = TrainLogger(
        output_dir, stage.logging, steps, active=runtime.is_main, run_config=config,
        name=stage.name, log_every=stage.loop.log_every,
    )
    run = TrainRun(
        engine=engine,
        data=data,
        checkpointer=checkpointer,
        logger=logger,
        runtime=runtime,
        total_steps=steps,
        grad_accum=stage.loop.grad_accum,
        checkpoint_every=stage.checkpoint.every,
        eval_every=stage.loop.eval_every,
        evaluator=evaluator,
        resume=stage.checkpoint.resume,
        resume_from=plan.path,
        apply_optim=bool(plan.accepted),
        config=config,
        max_skipped_share=stage.data.max_skipped_share,
        skipped_share_after=stage.data.skipped_share_after,
        stop_at=stage.loop.stop_at,
        chunk_rows=stage.model.head_chunk_rows,
    )
    # Hashed now: the start folder may be rewritten (a retrained previous stage) before this run exports.
    section = stage.model
    start = None
    if runtime.is_main:
        start = start_fingerprint(section.init_from, section.llm_dir, section.vision_dir, section.size, stage.loop.seed, model.config.text.vocab_size)
    return run, {"model": model, "tokenizer": tokenizer, "peft": peft, "bf16": bf16, "start": start}


def export_stage(stage: StageConfig, run: TrainRun, parts: dict) -> tuple[Path | None, Path | None]:
    """Write output_dir/hf (llava_onevision layout, tokenizer included) and, for LoRA, output_dir/adapter."""
    output_dir = Path(stage.output_dir)
    model, tokenizer, peft = parts["model"], parts["tokenizer"], parts["peft"]
    adapter_dir = None
    if peft is not None and run.runtime.is_main:
        adapter_dir = save_adapter(peft, model, output_dir / "adapter")

    wrappers = []  # the peft wrapper of the export's model, which merges its adapters

    def fresh():
        from onevision.checkpoint.files import empty_model

        base = empty_model(model.config)
        if peft is not None:
            wrappers.append(add_lora(base, stage.lora))
        return base

    merge = (lambda _model: merge_lora(wrappers[-1])) if peft is not None else None
    dtype = torch.bfloat16 if parts["bf16"] else None
    export_dir = export_model(run.engine, fresh, output_dir / "hf", run.runtime, tokenizer=tokenizer, merge_lora=merge, dtype=dtype)
    if export_dir is not None:
        write_start(export_dir, parts["start"])
    return export_dir, adapter_dir


def run_stage(stage: StageConfig) -> StageResult:
    """Train one stage end to end on this process's rank (launch several with torchrun / deepspeed).

    Stages of the cross-attention family (`model.family: mllama`) run in train/mllama_run.py.
    """
    if stage.model.family == "mllama":
        from onevision.train.mllama_run import run_mllama_stage

        return run_mllama_stage(stage)
    if stage.data.max_num_tiles is not None:
        raise ConfigError("data.max_num_tiles applies to the cross-attention family only (model.family=mllama); this family plans by visual.*")
    strategy = stage.distributed.strategy
    runtime = start_runtime(stage.loop.device, stage.distributed.timeout_s, deepspeed=strategy == "deepspeed")
    try:
        run, parts = build_run(stage, runtime)
        losses = train(run)
        export_dir = adapter_dir = None
        if stage.checkpoint.export and run.finished:
            export_dir, adapter_dir = export_stage(stage, run, parts)
        return StageResult(Path(stage.output_dir), losses, export_dir, adapter_dir)
    finally:
        stop_runtime()

