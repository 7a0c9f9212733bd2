"""Training data: a stage's recipe as an endless, resumable stream of micro-batches.

`build_loader(stage, tokenizer, visual, runtime)` reads the data recipe, measures every sample
(lengths and modalities are known before any pixel is decoded), and builds this rank's
modality-grouped, length-aware sampler, the packed (or padded) collator and the worker loader
from onevision/data. `TrainData` walks epochs one after the other, swaps batches whose samples
were all skipped for a one-token placeholder (every rank must still step), moves batches to
the device, and saves / restores the sampler position for exact resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from onevision.budget import VisualSettings
from onevision.data.batch_sampler import ModalityLengthBatchSampler
from onevision.data.collate import Batch, CollateConfig, Collator
from onevision.data.dataset import DataConfig, OneVisionDataset
from onevision.data.loader import OneVisionLoader
from onevision.data.recipe import load_recipe, renamed_recipe
from onevision.train.config import DataSection
from onevision.train.engine import Runtime
from onevision.train.errors import DataFailure
from onevision.train.loss_module import model_inputs, placeholder_batch

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout (holds data_recipes/ when running from a clone)."""


def resolve_recipe(path: str) -> Path:
    """A data recipe path as given, else relative to the source checkout; a shipped recipe's
    former name (`RENAMED_RECIPES`) gives its file now, with a one-line note.

    Raises:
        FileNotFoundError: found in neither place.
    """
    if not path:
        raise FileNotFoundError("data.recipe is empty; set it to a data mixture YAML (data_recipes/*.yaml)")
    given = Path(path).expanduser()
    beside = SOURCE_ROOT / path
    places = [given] if given.is_absolute() else [given, beside]
    found = next((place for place in places if place.is_file()), None)
    found = found or next(filter(None, map(renamed_recipe, places)), None)
    if found is not None:
        return found
    raise FileNotFoundError(f"data recipe {path} not found (also tried {beside})")


def build_loader(
    section: DataSection,
    tokenizer,
    visual: VisualSettings,
    runtime: Runtime,
    seed: int,
    shuffle: bool = True,
    recipe: str | None = None,
    progress: bool = True,
    normalization=None,
) -> OneVisionLoader:
    """This rank's loader over `recipe` (default: section.recipe) with the stage's batching;
    `progress` shows bars (on the main rank) while records are read and measured; `normalization`:
    the tower's pixel normalisation (`onevision.processing.TOWER_NORMALIZATION`; None = SigLIP's)."""
    progress = progress and runtime.is_main
    recipe_path = resolve_recipe(recipe or section.recipe)
    config = DataConfig(
        visual=visual,
        template=section.template,
        video_fps=section.video_fps,
        force_sample=section.force_sample,
        time_instruction=section.time_instruction,
        video_backend=section.video_backend,
        seed=seed,
    )
    dataset = OneVisionDataset.from_recipe(load_recipe(recipe_path), tokenizer, config, progress=progress, normalization=normalization)
    sampler_config = dataclasses.replace(section.sampler, seed=seed, shuffle=shuffle and section.sampler.shuffle)
    sampler = ModalityLengthBatchSampler(
        dataset.lengths(progress=progress), dataset.modalities(), sampler_config, runtime.rank, runtime.world_size
    )
    packed = sampler_config.max_tokens is not None
    collate = CollateConfig(pack=packed, max_tokens=sampler_config.max_tokens, pad_to_multiple_of=section.pad_to_multiple_of)
    # Every rank must take the same number of steps: empty batches are kept and replaced.
    loader_config = dataclasses.replace(section.loader, drop_empty=False)
    return OneVisionLoader(dataset, sampler, Collator(tokenizer.pad_token_id, collate), loader_config)


class TrainData:
    """Micro-batches across epochs, on the device, with a resumable position.

    Args:
        loader: this rank's loader.
        runtime: the device batches move to.
        pad_token_id: id of the placeholder batch's one token.
    """

    def __init__(self, loader: OneVisionLoader, runtime: Runtime, pad_token_id: int):
        self.loader = loader
        self.runtime = runtime
        self.pad_token_id = pad_token_id
        self.packed = loader.collator.config.pack

    def steps_per_epoch(self) -> int:
        """Micro-batches of one epoch on this rank (the same on every rank)."""
        return self.loader.sampler.num_steps()

    def micro_batches(self) -> Iterator[Batch]:
        """Batches of the current epoch from the current position, then of the next epochs."""
        epoch = self.loader.sampler.epoch
        while True:
            self.loader.set_epoch(epoch)
            produced = False
            for batch in self.loader:
                produced = True
                yield batch if batch.num_samples else placeholder_batch(self.pad_token_id, self.packed)
            if not produced and self.steps_per_epoch() == 0:
                raise DataFailure("the data recipe yields no batches: every sample was skipped or the recipe is empty")
            epoch += 1

    def inputs(self, batch: Batch) -> dict:
        """`LossModule` keyword arguments on this rank's device."""
        return model_inputs(batch, self.runtime.device)

    def skipped(self) -> int:
        """Samples skipped so far on this rank (bad media, too long, over budget, ...)."""
        return len(self.loader.stats.skipped)

    def check_skipped(self, max_share: float, after: int, final: bool = False) -> None:
        """Stop when more than `max_share` of the samples tried (over all ranks) were skipped;
        checked once `after` were tried, or whatever the count when `final`. Every rank calls.

        Raises:
            DataFailure: with the counts by kind and the first skipped sample's reason.
        """
        stats = self.loader.stats
        tried, skipped = self.runtime.all_reduce([stats.samples + len(stats.skipped), len(stats.skipped)])
        if not tried or skipped <= max_share * tried or not (final or tried >= after):
            return
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(stats.skip_counts().items()))
        first = f"; first: {stats.skipped[0].reason}" if stats.skipped else ""
        raise DataFailure(
            f"{int(skipped)} of {int(tried)} samples tried were skipped (this rank: {kinds}), more than "
            f"data.max_skipped_share={max_share}{first}"
        )

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
