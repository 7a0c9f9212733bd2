"""Data loader: worker processes decode and collate, the main process counts and times.

`OneVisionLoader` wraps `torch.utils.data.DataLoader` with the batch sampler
(`sampler.py`) and the collator (`collate.py`): workers run `OneVisionDataset.__getitem__`
(media decoding, pixels, tokens) and the collator, and send back whole `Batch`es, each
carrying the samples it had to skip. The loader adds those up (`stats.skipped`), so counts from
every worker arrive in the main process with the batches, whatever the number of workers.

Throughput (`loader.stats`): samples, real tokens and per-modality counts since the loader
was created, samples/s and tokens/s over the wall time spent iterating, and how much of it
the consumer waited for data; `.as_dict()` for logging, `str()` for a one-line readout.

Batches whose samples were all skipped are not yielded by default (`drop_empty`); in
multi-rank training set `drop_empty=False` so every rank takes the same number of steps, and
step on the empty batch with a zero loss.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from onevision.data.batch_sampler import ModalityLengthBatchSampler
from onevision.data.collate import Batch, Collator
from onevision.data.dataset import OneVisionDataset, Skipped


@dataclass(frozen=True)
class LoaderConfig:
    """Worker settings; the `loader:` block of training configs."""

    num_workers: int = 0
    """Decoding processes; 0 decodes in the main process."""
    prefetch_factor: int = 2
    """Batches each worker prepares ahead (workers > 0 only)."""
    persistent_workers: bool = True
    """Keep workers alive between epochs (workers > 0 only)."""
    pin_memory: bool = False
    """Pin batches in page-locked memory for faster host-to-GPU copies."""
    drop_empty: bool = True
    """Do not yield batches whose samples were all skipped (their skips are still counted)."""
    timeout: float = 0.0
    """Seconds to wait for a worker's batch before raising (0: forever)."""


@dataclass
class LoaderStats:
    """Counts and throughput of a loader."""

    samples: int = 0
    tokens: int = 0
    batches: int = 0
    seconds: float = 0.0
    """Wall time from the start of each epoch's iteration to its last batch, summed over epochs."""
    wait_seconds: float = 0.0
    """Part of `seconds` the consumer spent blocked waiting for a batch (near 0: data is not the bottleneck)."""
    modality: Counter = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        self.batches += 1
        self.samples += batch.num_samples
        self.tokens += batch.num_tokens
        self.modality.update(batch.modality)
        self.skipped.extend(batch.skipped)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.skipped))

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "wait_seconds": round(self.wait_seconds, 3),
            "samples_per_s": round(self.samples_per_s, 2),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "modality": dict(self.modality),
            "skipped": len(self.skipped),
            "skipped_by_kind": self.skip_counts(),
        }

    def __str__(self) -> str:
        modality = ", ".join(f"{k} {v}" for k, v in sorted(self.modality.items())) or "none"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skip_counts().items())) or "none"
        return (
            f"{self.samples} samples ({modality}), {self.tokens} tokens in {self.batches} batches, "
            f"{self.seconds:.1f}s ({self.wait_seconds:.1f}s waiting): {self.samples_per_s:.1f} samples/s, "
            f"{self.tokens_per_s:.0f} tokens/s; "
            f"skipped {len(self.skipped)} ({skipped})"
        )


class OneVisionLoader:
    """Iterates `Batch`es of one epoch at a time.

    Args:
        dataset: the samples.
        sampler: this rank's batch sampler (indices of each batch).
        collator: padded or packed layout.
        config: worker settings.
    """

    def __init__(
        self,
        dataset: OneVisionDataset,
        sampler: ModalityLengthBatchSampler,
        collator: Collator,
        config: LoaderConfig | None = None,
    ) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.collator = collator
        self.config = config or LoaderConfig()
        cfg = self.config
        workers = cfg.num_workers > 0
        self.dataloader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=cfg.num_workers,
            prefetch_factor=cfg.prefetch_factor if workers else None,
            persistent_workers=cfg.persistent_workers and workers,
            pin_memory=cfg.pin_memory,
            timeout=cfg.timeout,
        )
        self.stats = LoaderStats()
        self._consumed = 0

    def __len__(self) -> int:
        """Batches the next iteration draws from the sampler (empty ones included)."""
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Iterate epoch `epoch` next (from its first batch when it is a new epoch)."""
        if epoch != self.sampler.epoch:
            self._consumed = 0
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        self._consumed = self.sampler.num_steps() - len(self.sampler)
        last = time.perf_counter()
        iterator = iter(self.dataloader)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                now = time.perf_counter()
                self.stats.wait_seconds += now - asked
                self.stats.seconds += now - last
                last = now
            self._consumed += 1
            self.stats.add(batch)
            if batch.num_samples == 0 and self.config.drop_empty:
                continue
            yield batch

    def state_dict(self) -> dict:
        """The sampler position after the batches this loader has handed out (resume from here)."""
        return self.sampler.state_dict(batches_consumed=self._consumed)

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration starts after the consumed batches of the stored epoch."""
        self.sampler.load_state_dict(state)
        self._consumed = state["batches_consumed"]
