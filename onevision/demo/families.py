"""Other systems on the demo world: the LLaVA-1.5 curriculum, and a comparison at equal compute.

`onevision demo --family llava15` runs LLaVA-1.5's two stages with the shipped recipes
(`onevision/train/stages/llava15_stage1.yaml`, `llava15_stage2.yaml`) on the same world, from
the same pretrained parts as the OneVision demo (the world's tokenizer, its pretrained decoder
and tower, all cached and shared): what changes is the system, not the start.

* composition (`model.family=llava15`, `onevision.checkpoint.from_components`): the image
  padded to a square and resized to the tower's size (one base view, 64 tokens for the demo's
  64 px tower, no AnyRes, no newline), features from the second-to-last tower layer, a fresh
  mlp2x_gelu projector; the tower stays frozen in both stages.
* stage 1 (`plain` captions, projector only) on the world's caption mixture (as OneVision's stage
  1); stage 2 (`vicuna_v1`, projector + decoder) on its single-image instruction mixture:
  LLaVA-1.5's data is single images, and the model takes no video.
* budget (`llava15_plans`): the OneVision demo's total optimizer steps and nominal tokens
  (steps x `batch_tokens`, summed over its stages). Stage 1 is OneVision's stage 1 as it is;
  stage 2 gets the remaining steps, with `batch_tokens` set so the token totals agree, at the
  learning rate of OneVision's last stage.

Scores: the same evaluator on the same test split, every scenario the model can take (LLaVA-1.5
reads several images as several base views; video is left out and shown as '-').
"""

from __future__ import annotations

from onevision.demo.cache import Step
from onevision.demo.config import STAGES, DemoConfig, StagePlan
from onevision.demo.curriculum import StageStart
from onevision.demo.steps import DemoSteps, World

FAMILIES = ("onevision", "llava15")
"""Systems the demo runs: LLaVA-OneVision's four stages (the default) and LLaVA-1.5's two."""
LLAVA15_STAGES = ("llava15_stage1", "llava15_stage2")
"""LLaVA-1.5's curriculum, in order (shipped recipe names)."""
LLAVA15_DATA = {"llava15_stage1": "stage1", "llava15_stage2": "stage2_si"}
"""The world mixture each LLaVA-1.5 stage trains on: captions, then single-image instructions."""
LLAVA15_SCENARIOS = ("single_image", "multi_image")
"""Scenarios a LLaVA-1.5 model is asked (no video token)."""


def budget(plans: dict[str, StagePlan]) -> tuple[int, int]:
    """(optimizer steps, nominal tokens = steps x batch_tokens) summed over `plans`."""
    return sum(p.steps for p in plans.values()), sum(p.steps * p.batch_tokens for p in plans.values())


def llava15_plans(config: DemoConfig) -> dict[str, StagePlan]:
    """LLaVA-1.5's two stages at the OneVision curriculum's step and token budget (module docstring).

    Raises:
        ValueError: the OneVision plan leaves no step for stage 2.
    """
    plans = {name: config.stages[name] for name in STAGES}
    steps, tokens = budget(plans)
    first = plans[STAGES[0]]
    rest = steps - first.steps
    if rest < 1:
        raise ValueError(f"the OneVision plan has {steps} steps in all, none left for LLaVA-1.5's stage 2")
    last = plans[STAGES[-1]]
    second = StagePlan(steps=rest, lr=last.lr, warmup_ratio=last.warmup_ratio, batch_tokens=round((tokens - first.steps * first.batch_tokens) / rest))
    return {LLAVA15_STAGES[0]: first, LLAVA15_STAGES[1]: second}


def llava15_curriculum(steps: DemoSteps) -> tuple[dict[str, Step], World]:
    """The shared pretraining, then LLaVA-1.5's two stages in order (cached like the demo's).

    Returns:
        ({name: Step} for "tokenizer", "decoder", "tower" and each stage, the world).
    """
    world, done, start, depends = steps.pretrained()
    for name, plan in llava15_plans(steps.config).items():
        step = steps.stage(name, plan, start, world, depends, recipe=name, data=LLAVA15_DATA[name])
        done[name] = step
        start, depends = StageStart(init_from=step.folder / "hf"), [step]
    return done, world
