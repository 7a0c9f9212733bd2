"""Modality-grouped, length-aware batch sampler for padded or packed batches over several ranks.

Like LLaVA's `group_by_modality_length`: each global step (the batches of all ranks at that
step) holds one group, so no rank runs a text-only step while another encodes images, and
samples of similar length land together. `group_by='modality'` (default) keeps image,
multi-image, video and text apart; 'visual' is LLaVA's own split (any media vs text-only),
which packs tighter because a video can share a row with images; 'none' mixes everything.
The plan is made per epoch from the lengths and modalities the dataset knows before decoding
anything (`OneVisionDataset.lengths()`); every rank computes the same plan from
(seed, epoch) and takes its own column of it.

Plan of an epoch:
1. split the indices into groups (`group_by`) and shuffle each with a generator seeded by
   (seed, epoch);
2. cut each group into windows; in a window
   - padded mode (`max_tokens` None): sort by length and cut batches of `batch_size`,
     so a batch pads to similar lengths;
   - packed mode: best-fit-decreasing into bins of `max_tokens` (`packing.py`); a rank's batch
     is `rows_per_step` bins (the collator packs them into rows again from the real lengths).
     Samples the dataset already knows are bad (length 0) or longer than `max_tokens` are
     packed as zero-length riders: they still reach the collator, which skips and counts them;
3. deal each group's batches out in steps of `world_size` (one batch per rank); the partial
   steps left over from all groups are merged into mixed steps at the end;
4. a last step with fewer than `world_size` batches is padded by repeating the epoch's first
   batches (`drop_last=False`, every sample seen at least once) or dropped (`drop_last=True`,
   shards strictly disjoint); every rank gets the same number of steps;
5. shuffle the order of steps.

Resuming: `state_dict()` stores (epoch, batches consumed); after `load_state_dict`, iteration
starts at that batch of that epoch. With a prefetching DataLoader the sampler runs ahead of
training, so pass the number the trainer really consumed (`OneVisionLoader` does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from onevision.data.packing import best_fit_decreasing

GROUP_BY = ("modality", "visual", "none")


@dataclass(frozen=True)
class SamplerConfig:
    """How samples are grouped into batches; the `sampler:` block of training configs."""

    batch_size: int = 1
    """Samples per rank per step in padded mode (ignored when max_tokens is set)."""
    max_tokens: int | None = None
    """Packed mode: tokens per row; None means padded batches of batch_size."""
    rows_per_step: int = 1
    """Packed mode: rows (bins of max_tokens) per rank per step."""
    group_by: str = "modality"
    """What one global step holds: 'modality' (one of text / image / multi_image / video), 'visual'
    (LLaVA's group_by_modality_length: samples with media vs text-only) or 'none' (anything)."""
    window: int = 4096
    """Samples per length-sorting or bin-packing window (larger: tighter packing, less randomness)."""
    shuffle: bool = True
    """Shuffle samples and steps by (seed, epoch); False keeps dataset order (evaluation)."""
    drop_last: bool = False
    """Drop a last step that cannot give every rank a batch, instead of repeating the first batches."""
    seed: int = 0
    """Base seed; epoch e uses (seed, e)."""

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {self.group_by!r}")
        for name in ("batch_size", "rows_per_step", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be positive or None, got {self.max_tokens}")


class ModalityLengthBatchSampler:
    """Yields this rank's batches (lists of dataset indices) for one epoch.

    Args:
        lengths: tokens per sample (0 for samples known to be bad).
        modalities: modality name per sample.
        config: batching settings.
        rank, world_size: this process's place among the data-parallel ranks.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        modalities: Sequence[str],
        config: SamplerConfig | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(lengths) != len(modalities):
            raise ValueError(f"{len(lengths)} lengths but {len(modalities)} modalities")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.modalities = list(modalities)
        self.config = config or SamplerConfig()
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._start = 0
        self._yielded = 0
        self._cache: tuple[int, list[list[list[int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the plan of `epoch` from the next iteration on (and start it from its first batch)."""
        if epoch != self.epoch:
            self._start = 0
        self.epoch = epoch

    def num_steps(self) -> int:
        """Steps (batches per rank) in a whole epoch."""
        return len(self.steps(self.epoch))

    def __len__(self) -> int:
        """Batches the next iteration yields (fewer than num_steps() after resuming)."""
        return self.num_steps() - self._start

    def __iter__(self) -> Iterator[list[int]]:
        steps = self.steps(self.epoch)
        start, self._start = self._start, 0
        self._yielded = start
        for step in steps[start:]:
            self._yielded += 1
            yield list(step[self.rank])

    def state_dict(self, batches_consumed: int | None = None) -> dict:
        """Where to resume: the epoch and how many of its batches were consumed (default: yielded)."""
        consumed = self._yielded if batches_consumed is None else batches_consumed
        return {"epoch": self.epoch, "batches_consumed": int(consumed), "seed": self.config.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume at batch `batches_consumed` of `epoch` on the next iteration.

        Raises:
            ValueError: the state comes from another seed or number of ranks (the plan would differ).
        """
        if state.get("seed", self.config.seed) != self.config.seed or state.get("world_size", self.world_size) != self.world_size:
            raise ValueError(
                f"sampler state is for seed {state.get('seed')} on {state.get('world_size')} ranks; this sampler has "
                f"seed {self.config.seed} on {self.world_size} ranks, so its batches would differ"
            )
        self.epoch = int(state["epoch"])
        total = self.num_steps()
        if not 0 <= state["batches_consumed"] <= total:
            raise ValueError(f"batches_consumed {state['batches_consumed']} is outside [0, {total}] for epoch {self.epoch}")
        self._start = int(state["batches_consumed"])
        self._yielded = self._start

    def steps(self, epoch: int) -> list[list[list[int]]]:
        """The global plan of `epoch`: per step, one batch of indices per rank."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._plan(epoch))
        return self._cache[1]

    def _plan(self, epoch: int) -> list[list[list[int]]]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        groups: dict[str, list[int]] = {}
        for index, modality in enumerate(self.modalities):
            if cfg.group_by == "modality":
                key = modality
            elif cfg.group_by == "visual":
                key = "text" if modality == "text" else "visual"
            else:
                key = "all"
            groups.setdefault(key, []).append(index)
        steps: list[list[list[int]]] = []
        leftover: list[list[int]] = []
        for name in sorted(groups):
            indices = np.asarray(groups[name], dtype=np.int64)
            if cfg.shuffle:
                indices = rng.permutation(indices)
            batches = self._batches(indices)
            full = len(batches) - len(batches) % self.world_size
            steps.extend(batches[i : i + self.world_size] for i in range(0, full, self.world_size))
            leftover.extend(batches[full:])
        for i in range(0, len(leftover), self.world_size):
            steps.append(leftover[i : i + self.world_size])
        if steps and len(steps[-1]) < self.world_size:
            if cfg.drop_last:
                steps.pop()
            else:
                pool = [batch for step in steps for batch in step]
                steps[-1] = steps[-1] + pool[: self.world_size - len(steps[-1])]
        if cfg.shuffle:
            order = rng.permutation(len(steps))
            steps = [steps[i] for i in order]
        return steps

    def _batches(self, indices: np.ndarray) -> list[list[int]]:
        """One group's shuffled indices -> rank batches (padded: batch_size samples; packed: bins)."""
        cfg = self.config
        batches: list[list[int]] = []
        for lo in range(0, len(indices), cfg.window):
            window = indices[lo : lo + cfg.window]
            lengths = self.lengths[window]
            if cfg.max_tokens is None:
                ordered = window[np.argsort(-lengths, kind="stable")].tolist()
                batches.extend(ordered[i : i + cfg.batch_size] for i in range(0, len(ordered), cfg.batch_size))
                continue
            sizes = np.where(lengths > cfg.max_tokens, 0, lengths).tolist()
            bins = [[int(window[i]) for i in b] for b in best_fit_decreasing(sizes, cfg.max_tokens)]
            batches.extend(
                [i for b in bins[j : j + cfg.rows_per_step] for i in b] for j in range(0, len(bins), cfg.rows_per_step)
            )
        return batches
