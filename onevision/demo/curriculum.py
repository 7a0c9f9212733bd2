"""Running the LLaVA-OneVision curriculum on the demo world with the shared training code.

Each stage is the shipped recipe (`onevision/train/stages/<stage>.yaml`: which parameters
train, the template, the visual settings) with the demo's overrides, exactly what
``onevision train <stage> key=value ...`` would run:

* the start: stage 1 from the pretrained Qwen2 and SigLIP folders (`model.llm_dir`,
  `model.vision_dir`, the tokenizer folder), later stages from the previous stage's export
  (`model.init_from`, tokenizer `auto`);
* the data: the world's mixture for the stage (`recipes/<stage>.yaml`, official syntax);
* the length: `loop.steps` of padded batches holding about `batch_tokens` tokens (on a CPU,
  short padded rows beat long packed ones: attention over a packed row of T tokens costs T^2),
  each a random draw of its modality (a sorting window of one batch): sorting a large window by
  length would give batches of a single task, since every task's prompts have one length, and
  a tiny model learns many tasks at once far better from mixed batches;
* learning rates: the demo's (tiny models from near scratch want far more than the paper's
  1e-5), a warmup share, no intermediate checkpoints, no gradient checkpointing;
* weight decay and data seed: the recipe's and the demo's unless the plan sets them (the
  model-soup demo, `soup.py`, varies both across its fine-tunes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onevision.demo.config import DemoConfig, StagePlan
from onevision.train import load_stage, run_stage

SAMPLE_TOKENS = 160
"""Typical tokens per world sample (136 visual + prompt); sets batch_size from batch_tokens."""


@dataclass(frozen=True)
class StageStart:
    """Where a stage's weights come from: components (stage 1) or a previous export."""

    init_from: Path | None = None
    """The previous stage's llava_onevision export."""
    llm_dir: Path | None = None
    """Pretrained Qwen2 folder (stage 1)."""
    vision_dir: Path | None = None
    """Pretrained SigLIP folder (stage 1)."""
    tokenizer_dir: Path | None = None
    """Tokenizer folder (stage 1; later stages read the export's)."""

    def overrides(self) -> list[str]:
        if self.init_from is not None:
            return [f"model.init_from={self.init_from}", "model.tokenizer=auto"]
        if self.llm_dir is None or self.vision_dir is None or self.tokenizer_dir is None:
            raise ValueError("a stage starts from init_from, or from llm_dir + vision_dir + tokenizer_dir")
        return [
            "model.init_from=null",
            f"model.llm_dir={self.llm_dir}",
            f"model.vision_dir={self.vision_dir}",
            f"model.tokenizer={self.tokenizer_dir}",
        ]


def batch_size(plan: StagePlan) -> int:
    """Samples per step for the plan's token budget."""
    return max(1, plan.batch_tokens // SAMPLE_TOKENS)


def stage_overrides(
    recipe_name: str, plan: StagePlan, start: StageStart, data_recipe: Path, output_dir: Path, config: DemoConfig, name: str
) -> list[str]:
    """`key=value` overrides that turn the shipped `recipe_name` recipe into the demo's stage."""
    overrides = [
        f"name={name}",
        f"output_dir={output_dir}",
        *start.overrides(),
        "model.attention=sdpa",
        "model.gradient_checkpointing=false",
        f"data.recipe={data_recipe}",
        "data.template.max_length=2048",
        "data.sampler.max_tokens=null",
        f"data.sampler.batch_size={batch_size(plan)}",
        f"data.sampler.window={batch_size(plan)}",
        f"data.loader.num_workers={config.num_workers}",
        f"loop.steps={plan.steps}",
        f"loop.seed={config.seed if plan.data_seed is None else plan.data_seed}",
        "loop.device=cpu",
        "loop.precision=fp32",
        f"optim.lr={plan.lr!r}",
        f"optim.warmup_ratio={plan.warmup_ratio!r}",
        "checkpoint.every=0",
        "checkpoint.keep_last=1",
        "checkpoint.resume=false",
        "distributed.strategy=single",
    ]
    if plan.weight_decay is not None:
        overrides.append(f"optim.weight_decay={plan.weight_decay!r}")
    stage = load_stage(recipe_name)
    if stage.optim.groups:
        vision_lr = plan.lr if plan.vision_lr is None else plan.vision_lr
        decay = "" if plan.weight_decay is None else f", weight_decay: {plan.weight_decay!r}"
        groups = ", ".join(
            f"{{name: {g.name}, pattern: '{g.pattern}', lr: {vision_lr!r}{decay}}}" for g in stage.optim.groups
        )
        overrides.append(f"optim.groups=[{groups}]")
    return overrides


def run_curriculum_stage(
    recipe_name: str,
    plan: StagePlan,
    start: StageStart,
    data_recipe: Path,
    output_dir: Path,
    config: DemoConfig,
    *,
    name: str | None = None,
    progress: bool = True,
) -> dict:
    """Train one stage into `output_dir` (its export lands in `output_dir/hf`).

    Returns:
        {"losses": loss per step, "steps": steps, "batch_size": samples per step}.
    """
    overrides = stage_overrides(recipe_name, plan, start, data_recipe, output_dir, config, name or recipe_name)
    overrides.append(f"logging.progress={'true' if progress else 'false'}")
    result = run_stage(load_stage(recipe_name, overrides))
    if result.export_dir is None:
        raise RuntimeError(f"stage {recipe_name} finished without an export in {output_dir}")
    return {"losses": result.losses, "steps": plan.steps, "batch_size": batch_size(plan)}
