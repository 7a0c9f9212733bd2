"""Settings of the CPU demo: world size, model shape, component pretraining, curriculum stages.

Two profiles: `full_config()` (the defaults, what `onevision demo` runs: seven to nine minutes on
two CPU cores) and `quick_config()` (a smoke test of about ten seconds, what CI runs). Everything that changes a
result is in `DemoConfig`, so its dict form keys the cache (see `cache.py`).

The model is the `debug` preset's geometry (64 px images, 8 px patches, vocabulary 512, the
small tokenizer's `<image>` / `<video>` ids) a little deeper and wider, so that it learns the
world in minutes: a SigLIP tower of width 64 pretrained with 4 layers, of which stage 1 keeps
3 (features from the second-to-last layer, as LLaVA-OneVision takes them from SigLIP), and a
Qwen2 decoder of width 128 with 3 layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from onevision.demo.pretrain_text import TextPretrainConfig
from onevision.demo.pretrain_vision import VisionPretrainConfig
from onevision.model.config import TextConfig, VisionConfig, preset

STAGES = ("stage1", "stage1_5", "stage2_si", "stage2_ov")
"""The curriculum, in order; each stage starts from the previous one's export."""


def demo_vision() -> VisionConfig:
    """The tower as pretrained (one layer more than stage 1 keeps)."""
    base = preset("debug").vision
    return dataclasses.replace(base, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2)


def demo_text() -> TextConfig:
    """The decoder: the debug preset's vocabulary and context, width 128, 3 layers."""
    base = preset("debug").text
    return dataclasses.replace(
        base, hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2
    )


@dataclass(frozen=True)
class StagePlan:
    """How the demo runs one curriculum stage (the rest comes from the shipped stage recipe)."""

    steps: int
    """Optimizer steps."""
    lr: float
    """Peak learning rate of the trainable parameters outside the vision tower."""
    vision_lr: float | None = None
    """Peak learning rate of the vision tower in stages whose recipe gives it a group of its own (None: `lr`)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming up."""
    batch_tokens: int = 3072
    """Tokens per packed row; one row per optimizer step."""
    weight_decay: float | None = None
    """Weight decay of every trainable group (None: the recipe's, 0 in every shipped stage)."""
    data_seed: int | None = None
    """`loop.seed`: data order and dropout (None: the demo's seed); the model soup varies it."""


def default_stages() -> dict[str, StagePlan]:
    """The full run's curriculum: most steps go to the OneVision stage, which holds every task
    (in smaller batches: more updates for the same tokens, which the multi-image tasks need).
    Stage 2 single-image (200 steps) and the OneVision stage (960) are as long as the slow tasks
    need (shape, position, the odd one out, direction: `onevision.world.recipes.SLOW_TASKS`);
    at 60 and 720 steps those stayed at chance."""
    return {
        "stage1": StagePlan(steps=60, lr=2e-3),
        "stage1_5": StagePlan(steps=200, lr=1e-3, vision_lr=5e-4),
        "stage2_si": StagePlan(steps=200, lr=7e-4, vision_lr=3e-4, batch_tokens=2048),
        "stage2_ov": StagePlan(steps=960, lr=7e-4, vision_lr=3e-4, batch_tokens=2048),
    }


@dataclass(frozen=True)
class DemoConfig:
    """Everything a demo run depends on."""

    seed: int = 0
    """Seeds the world, the pretraining corpora, every initialisation and the data order."""
    n_train: int = 240
    """World training items per task."""
    n_test: int = 32
    """World test items per task (evaluated after every stage)."""
    vocab_size: int = 512
    """Tokenizer size, special tokens included (the decoder has this many rows)."""
    tokenizer_texts: int = 3000
    """World sentences the tokenizer is trained on (with every prompt and answer of the world)."""
    vision: VisionConfig = field(default_factory=demo_vision)
    """Vision tower shape as pretrained."""
    text: TextConfig = field(default_factory=demo_text)
    """Decoder shape."""
    text_pretrain: TextPretrainConfig = field(default_factory=TextPretrainConfig)
    """Decoder language-model pretraining."""
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    """Vision tower sigmoid-loss pretraining."""
    stages: dict[str, StagePlan] = field(default_factory=default_stages)
    """Stage name (see STAGES) -> how it runs."""
    transfer: StagePlan = field(default_factory=lambda: StagePlan(steps=600, lr=7e-4, vision_lr=3e-4, batch_tokens=2048))
    """Every row of the transfer experiment (trained from stage 1.5)."""
    threads: int = 1
    """torch CPU threads: fixed, so results do not depend on the machine's core count."""
    num_workers: int = 1
    """Data-loading worker processes per stage (they decode media beside the training thread)."""
    eval_batch_size: int = 16
    """Records per evaluation batch."""
    exact_match: bool = True
    """Also score greedy generation by exact match after the last stage."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def full_config(seed: int = 0) -> DemoConfig:
    """The `onevision demo` run: about seven minutes on two idle CPU cores, nine under load."""
    return DemoConfig(seed=seed)


def quick_config(seed: int = 0) -> DemoConfig:
    """A shortened run that exercises every step in well under a minute (CI smoke test)."""
    return DemoConfig(
        seed=seed,
        n_train=24,
        n_test=4,
        tokenizer_texts=500,
        text_pretrain=TextPretrainConfig(sentences=300, chats=300, steps=15, batch_size=8, warmup_steps=3),
        vision_pretrain=VisionPretrainConfig(groups=50, steps=15, batch_size=32, warmup_steps=3),
        stages={name: StagePlan(steps=4, lr=1e-3, batch_tokens=1024) for name in STAGES},
        transfer=StagePlan(steps=4, lr=1e-3, batch_tokens=1024),
        exact_match=True,
    )
