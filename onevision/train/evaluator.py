"""The held-out evaluator the training loop calls every `loop.eval_every` steps.

`HeldOutLoss(loader, runtime, batches, pad_token_id)` is called with the engine and returns
`{"eval/loss": mean token loss}` over the first `batches` batches of a held-out loader (built
by `train/data.py`'s `build_loader` from `eval.recipe`), averaged over all ranks.
"""

from __future__ import annotations

import torch

from onevision.data.loader import OneVisionLoader
from onevision.train.data import TrainData
from onevision.train.engine import Runtime
from onevision.train.loss_module import head_chunks


class HeldOutLoss:
    """The evaluator hook: mean loss over the first `batches` batches of a held-out loader.

    Every rank runs the same number of batches (ZeRO-3 needs the same collectives everywhere)
    and the mean is reduced over ranks.
    """

    def __init__(self, loader: OneVisionLoader, runtime: Runtime, batches: int, pad_token_id: int, chunk_rows: int = 4096):
        self.data = TrainData(loader, runtime, pad_token_id)
        self.runtime = runtime
        self.batches = batches
        self.chunk_rows = chunk_rows

    @torch.no_grad()
    def __call__(self, engine) -> dict[str, float]:
        self.data.loader.load_state_dict(self.data.loader.sampler.state_dict(batches_consumed=0))
        total = count = 0.0
        stream = self.data.micro_batches()
        for _ in range(min(self.batches, max(self.data.steps_per_epoch(), 1))):
            batch = next(stream)
            chunks = head_chunks(batch, engine, self.runtime, self.chunk_rows)
            _, token_losses, _ = engine(**self.data.inputs(batch), num_chunks=chunks)
            total += float(token_losses.sum())
            count += token_losses.numel()
        total, count = self.runtime.all_reduce([total, count])
        return {"eval/loss": total / max(count, 1)}
