"""The demo's building blocks, each cached: world, tokenizer, pretrained parts, stages, scores.

`DemoSteps` runs one step at a time and keys each one by its own settings and the keys of the
steps it depends on (`cache.py`), so the demo and the transfer experiment share the world, the
tokenizer, the pretrained decoder and tower, and stages 1 and 1.5:

    steps = DemoSteps(config, DemoCache(root))
    world = steps.world()                       # synthetic world + curriculum recipes
    tokenizer = steps.tokenizer(world)          # small BPE, Qwen2 specials and chat template
    llm, tower = steps.decoder(world, tokenizer), steps.tower(world, tokenizer)
    stage1 = steps.stage("stage1", plan, StageStart(llm_dir=..., ...), world, depends=[llm, tower, tokenizer])
    report = steps.scores(stage1, "choice")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from onevision.demo.cache import DemoCache, Step, cache_key
from onevision.demo.config import DemoConfig, StagePlan
from onevision.demo.curriculum import StageStart, run_curriculum_stage
from onevision.demo.evaluation import evaluate_export, preload, test_items
from onevision.demo.pretrain_text import pretrain_text
from onevision.demo.pretrain_vision import pretrain_vision
from onevision.infer.evaluate import Report
from onevision.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    load_tokenizer,
    train_small_tokenizer,
)
from onevision.world import WorldManifest, build_world, world_texts, write_world_recipes
from onevision.world.text import CAPTION_PROMPTS


@dataclasses.dataclass(frozen=True)
class World:
    """A built world and its cache key."""

    manifest: WorldManifest
    key: str

    @property
    def root(self) -> Path:
        return self.manifest.root

    def recipe(self, stage: str) -> Path:
        """The world's data mixture for `stage` (recipes/<stage>.yaml)."""
        return self.root / "recipes" / f"{stage}.yaml"


def world_corpus(manifest: WorldManifest, sentences: int, seed: int) -> list[str]:
    """What the tokenizer learns from: world sentences, every train prompt and answer, the
    system prompt and the caption prompts (placeholders removed)."""
    texts = world_texts(sentences, seed)
    for task in manifest.tasks:
        for record in manifest.records("train", task):
            for turn in record["conversations"]:
                texts.append(turn["value"].replace(IMAGE_TOKEN + "\n", "").replace(VIDEO_TOKEN + "\n", ""))
    return texts + [DEFAULT_SYSTEM_PROMPT, *CAPTION_PROMPTS]


class DemoSteps:
    """Cached steps of a demo run.

    Args:
        config: the demo's settings.
        cache: where steps are kept (and whether finished ones are reused).
        progress: show progress bars.
    """

    def __init__(self, config: DemoConfig, cache: DemoCache, progress: bool = True):
        self.config = config
        self.cache = cache
        self.progress = progress
        self._items = None

    def world(self) -> World:
        """The synthetic world (`build_world` caches it by its parameters) with its recipes."""
        c = self.config
        settings = {"seed": c.seed, "n_train": c.n_train, "n_test": c.n_test}
        key = cache_key("world", settings)
        folder = self.cache.folder("world", key)
        if not self.cache.enabled and folder.exists():
            shutil.rmtree(folder)
        manifest = build_world(folder, seed=c.seed, n_train=c.n_train, n_test=c.n_test, progress=self.progress)
        write_world_recipes(folder)
        return World(manifest, key)

    def tokenizer(self, world: World) -> Step:
        """A small byte-level BPE with Qwen2's special tokens and ChatML template, trained on the world."""
        c = self.config
        settings = {"world": world.key, "vocab_size": c.vocab_size, "sentences": c.tokenizer_texts, "seed": c.seed}

        def build(folder: Path) -> dict:
            tokenizer = train_small_tokenizer(world_corpus(world.manifest, c.tokenizer_texts, c.seed), c.vocab_size, save_dir=folder)
            return {"tokens": len(tokenizer)}

        return self.cache.step("tokenizer", settings, build)

    def decoder(self, tokenizer: Step) -> Step:
        """The Qwen2 decoder pretrained on world text (a `save_pretrained` folder)."""
        c = self.config
        settings = {"tokenizer": tokenizer.key, "text": dataclasses.asdict(c.text), "pretrain": dataclasses.asdict(c.text_pretrain), "seed": c.seed}

        def build(folder: Path) -> dict:
            losses = pretrain_text(c.text, load_tokenizer(tokenizer.folder), c.text_pretrain, folder, seed=c.seed, progress=self.progress)
            return {"losses": losses}

        return self.cache.step("decoder", settings, build)

    def tower(self, tokenizer: Step) -> Step:
        """The SigLIP tower pretrained with the sigmoid loss on world image-caption pairs."""
        c = self.config
        settings = {"tokenizer": tokenizer.key, "vision": dataclasses.asdict(c.vision), "pretrain": dataclasses.asdict(c.vision_pretrain), "seed": c.seed}

        def build(folder: Path) -> dict:
            losses = pretrain_vision(c.vision, load_tokenizer(tokenizer.folder), c.vision_pretrain, folder, seed=c.seed, progress=self.progress)
            return {"losses": losses}

        return self.cache.step("tower", settings, build)

    def pretrained(self) -> tuple[World, dict[str, Step], StageStart, list[Step]]:
        """The world and the pretrained parts every curriculum starts from (cached).

        Returns:
            (the world, {"tokenizer", "decoder", "tower": Step}, the first stage's start from
            those folders, the steps that start depends on).
        """
        world = self.world()
        tokenizer = self.tokenizer(world)
        decoder = self.decoder(tokenizer)
        tower = self.tower(tokenizer)
        start = StageStart(llm_dir=decoder.folder, vision_dir=tower.folder, tokenizer_dir=tokenizer.folder)
        return world, {"tokenizer": tokenizer, "decoder": decoder, "tower": tower}, start, [tokenizer, decoder, tower]

    def stage(
        self, name: str, plan: StagePlan, start: StageStart, world: World, depends: list[Step], recipe: str | None = None, data: str | None = None
    ) -> Step:
        """Train stage `name` (shipped recipe `recipe`, default `name`) on the world's `data`
        mixture (default: the recipe's), from `start`; `depends` are the steps `start` points at."""
        recipe = recipe or name
        data = data or recipe
        settings = {
            "recipe": recipe,
            "data": data,
            "plan": dataclasses.asdict(plan),
            "world": world.key,
            "from": [step.key for step in depends],
            "seed": self.config.seed,
        }

        def build(folder: Path) -> dict:
            return run_curriculum_stage(recipe, plan, start, world.recipe(data), folder, self.config, name=name, progress=self.progress)

        return self.cache.step(name, settings, build)

    def scores(self, stage: Step, world: World, metric: str = "choice", name: str | None = None, scenarios: tuple[str, ...] | None = None) -> Report:
        """The stage export's report on the world's test split (kept beside the export); `scenarios`
        keeps those scenarios' items only (a model that takes no video is not asked about videos)."""
        path = stage.folder / f"eval-{metric}.json"
        if self.cache.enabled and path.is_file():
            return Report.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if self._items is None:
            self._items = preload(test_items(world.manifest))
        items = self._items if scenarios is None else [item for item in self._items if item.scenario in scenarios]
        report = evaluate_export(
            stage.folder / "hf", items, name=name or stage.folder.name, metric=metric,
            batch_size=self.config.eval_batch_size, progress=self.progress,
        )
        staging = path.with_suffix(f".tmp-{os.getpid()}")
        staging.write_text(json.dumps(report.to_dict()) + "\n", encoding="utf-8")
        os.replace(staging, path)
        return report


def set_threads(threads: int) -> None:
    """Fix torch's CPU threads (results then do not depend on the machine's core count)."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # already set once in this process; intra-op threads are what matter for results
