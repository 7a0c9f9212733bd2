"""Execution back-ends with one interface: single process, DDP, DeepSpeed ZeRO-2/3.

The loop talks to an engine only through:

    with engine.accumulating(last):           # DDP: skip the gradient all-reduce until `last`
        out = engine(**inputs)                # forward (bf16 autocast on CUDA, fp32 on CPU)
        engine.backward(out[0])               # loss / grad_accum
    grad_norm = engine.step()                 # clip, optimizer, scheduler, zero grads
    engine.learning_rates()                   # {group name: lr}
    engine.save(folder) / engine.load(folder) # resumable state (model, optimizer, scheduler)
    engine.full_state_dict()                  # the whole model on rank 0 (ZeRO-3: gathered)

`TorchEngine` covers one process and DDP with torch's AdamW; `DeepSpeedEngine` builds the
same AdamW and schedule and hands them to `deepspeed.initialize` with a shipped ZeRO config
(onevision/train/deepspeed/zero{2,3}.json, whose "auto" fields are filled from the stage).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from onevision.train.config import OptimSection
from onevision.train.durable import cause_of, reading, save_torch, save_weights
from onevision.train.errors import CheckpointError, NonFiniteError

DEEPSPEED_DIR = Path(__file__).parent / "deepspeed"
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass
class Runtime:
    """This process's place in the job and its device."""

    rank: int
    """Global rank."""
    world_size: int
    """Number of data-parallel ranks."""
    local_rank: int
    """Rank on this node (picks the CUDA device)."""
    device: torch.device
    """Where the model and batches live."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Sum (or max) a few numbers over ranks; identity in one process."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return tensor.tolist()

    def broadcast_object(self, value):
        """`value` from rank 0, on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def start_runtime(device: str = "auto", timeout_s: int = 1800, deepspeed: bool = False) -> Runtime:
    """Read torchrun's / the deepspeed launcher's env (RANK, WORLD_SIZE, LOCAL_RANK) and join the group.

    Backend: nccl on CUDA, gloo on CPU. One process (no WORLD_SIZE) needs no process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("loop.device is 'cuda' but CUDA is not available")
    where = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(where)
    backend = "nccl" if use_cuda else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if deepspeed and not dist.is_initialized():
        # DeepSpeed always wants a process group; one process started without a launcher gets
        # a group of one (instead of DeepSpeed's MPI discovery).
        for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        import deepspeed as ds

        ds.init_distributed(dist_backend=backend, timeout=timeout)
    elif world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)
    return Runtime(rank, world, local, where)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_runtime() -> None:
    """Leave the process group (if any), so the launcher's processes exit promptly."""
    if dist.is_initialized():
        dist.destroy_process_group()


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection, total_steps: int):
    """Linear warmup over ceil(warmup_ratio * total_steps) steps, then the named decay."""
    from transformers import get_scheduler

    warmup = math.ceil(optim.warmup_ratio * total_steps)
    return get_scheduler(SCHEDULES[optim.schedule], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def build_optimizer(groups: list[dict], optim: OptimSection) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=tuple(optim.betas), eps=optim.eps)


def group_settings(groups: list[dict]) -> list[dict]:
    """Name, peak lr and weight decay of each group, copied before the optimizer adopts (and the
    schedule rewrites) the group dicts."""
    return [{key: group[key] for key in ("name", "lr", "weight_decay") if key in group} for group in groups]


def apply_optim(optimizer, scheduler, settings: list[dict], optim: OptimSection) -> None:
    """Overwrite the hyperparameters a checkpoint restored with this run's: each group's peak lr
    and weight decay, betas, eps; the schedule keeps its position (step count) and continues
    with the new peaks, and the current lr is recomputed from it.

    torch's `load_state_dict` restores the saved groups' lr / initial_lr and the scheduler's
    base_lrs, so without this a changed `optim.lr` would be silently ignored.
    """
    groups = optimizer.param_groups
    if len(groups) != len(settings):
        raise ValueError(f"the checkpoint has {len(groups)} optimizer groups, this run {len(settings)}")
    for group, wanted in zip(groups, settings):
        group.update(wanted)
        group.update(initial_lr=wanted["lr"], betas=tuple(optim.betas), eps=optim.eps)
    scheduler.base_lrs = [wanted["lr"] for wanted in settings]
    current = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(groups, current):
        group["lr"] = lr
    scheduler._last_lr = current


def _strip(state: dict, prefix: str = "model.") -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items()}


class TorchEngine:
    """One process or DDP: fp32 master weights, bf16 autocast (on CUDA by default), AdamW + schedule.

    Args:
        module: the `LossModule` (model + loss); moved to the runtime's device.
        groups: optimizer parameter groups (`params.param_groups`).
        optim: optimizer settings.
        total_steps: optimizer steps of the run (for the schedule).
        grad_accum: micro-batches per step (losses are divided by it).
        runtime: ranks and device.
        bf16: autocast the forward to bfloat16 on the runtime's device.
    """

    def __init__(self, module: nn.Module, groups: list[dict], optim: OptimSection, total_steps: int, grad_accum: int, runtime: Runtime, bf16: bool):
        self.runtime = runtime
        self.inner = module.to(runtime.device)
        self.module = self.inner
        if runtime.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.module = DistributedDataParallel(self.inner, device_ids=ids)
        self.group_settings = group_settings(groups)
        self.optim = optim
        self.optimizer = build_optimizer(groups, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, total_steps)
        self.grad_accum = grad_accum
        self.max_grad_norm = optim.max_grad_norm
        self.bf16 = bf16
        self.zero_stage = 0

    def __call__(self, **inputs):
        autocast = torch.autocast(self.runtime.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            return self.module(**inputs)

    def accumulating(self, last: bool):
        """DDP: hold the gradient all-reduce until the last micro-batch of a step."""
        if self.runtime.distributed and not last:
            return self.module.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # A micro-batch that touches no trainable parameter (a text-only batch when only the
        # projector trains, in one process) has nothing to add to the gradients.
        if loss.requires_grad:
            (loss / self.grad_accum).backward()

    def step(self) -> float:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        if not torch.isfinite(norm):
            # Clipping by a non-finite norm would write NaN into every weight: stop before it.
            raise NonFiniteError(f"gradient norm is {float(norm)} at optimizer step {self.scheduler.last_epoch + 1}; the weights were not updated")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def learning_rates(self) -> dict[str, float]:
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}

    def save(self, folder: Path) -> None:
        """Rank 0 writes model.safetensors, optimizer.pt and scheduler.pt into `folder`.

        Raises:
            CheckpointError: naming the file that could not be written and the cause.
        """
        if not self.runtime.is_main:
            return
        save_weights(self.inner.model, folder / "model.safetensors")
        save_torch(self.optimizer.state_dict(), folder / "optimizer.pt")
        save_torch(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load(self, folder: Path) -> None:
        """Restore model, optimizer and scheduler from `folder`.

        Raises:
            CheckpointError: naming the file that could not be read and the cause.
        """
        from safetensors.torch import load_model

        with reading(folder / "model.safetensors"):
            load_model(self.inner.model, str(folder / "model.safetensors"), strict=True, device=str(self.runtime.device))
        with reading(folder / "optimizer.pt"):
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.runtime.device, weights_only=True))
        with reading(folder / "scheduler.pt"):
            self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))

    def apply_optim(self) -> None:
        """Put this run's optimizer settings over the ones a checkpoint restored (an accepted change)."""
        apply_optim(self.optimizer, self.scheduler, self.group_settings, self.optim)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict on rank 0 (on CPU); {} on other ranks."""
        if not self.runtime.is_main:
            return {}
        return {k: v.detach().cpu() for k, v in self.inner.model.state_dict().items()}


def deepspeed_config(path: str | Path | None, zero_stage: int, grad_accum: int, world_size: int, max_grad_norm: float, bf16: bool) -> dict:
    """A DeepSpeed JSON with its "auto" fields filled: micro batch 1 (one packed micro-batch), accumulation, clipping, bf16."""
    if path is None:
        if zero_stage not in (2, 3):
            raise ValueError(f"distributed.zero_stage must be 2 or 3, got {zero_stage}")
        path = DEEPSPEED_DIR / f"zero{zero_stage}.json"
    config = json.loads(Path(path).read_text())
    fills = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": grad_accum * world_size,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in fills.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    bf16_block = config.setdefault("bf16", {})
    if bf16_block.get("enabled", "auto") == "auto":
        bf16_block["enabled"] = bf16
    return config


class DeepSpeedEngine:
    """DeepSpeed ZeRO-2/3 around the `LossModule`, with our AdamW groups and schedule.

    Args: as `TorchEngine`, plus zero_stage and config_path (None: the shipped JSON). With
    bf16 DeepSpeed keeps bf16 weights and fp32 master copies (no autocast).
    """

    def __init__(self, module: nn.Module, groups: list[dict], optim: OptimSection, total_steps: int, grad_accum: int, runtime: Runtime, bf16: bool, zero_stage: int = 3, config_path: str | None = None):
        import deepspeed

        self.runtime = runtime
        self.config = deepspeed_config(config_path, zero_stage, grad_accum, runtime.world_size, optim.max_grad_norm, bf16)
        self.zero_stage = int(self.config["zero_optimization"]["stage"])
        if self.zero_stage == 3 and module.model.image_newline is not None:
            # image_newline is read in OneVisionModel's methods, not in a child module's forward;
            # tell ZeRO-3 to gather it with the LossModule's forward.
            deepspeed.zero.register_external_parameter(module, module.model.image_newline)
        self.group_settings = group_settings(groups)
        self.optim = optim
        optimizer = build_optimizer(groups, optim)
        scheduler = build_scheduler(optimizer, optim, total_steps)
        self.module, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=self.config
        )
        self.inner = module

    def __call__(self, **inputs):
        return self.module(**inputs)

    def accumulating(self, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed divides by gradient_accumulation_steps and only really steps at the boundary.
        self.module.backward(loss)
        self.module.step()

    def step(self) -> float:
        norm = self.module.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def learning_rates(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    def save(self, folder: Path) -> None:
        """Every rank writes its shard under folder/deepspeed (model, optimizer, scheduler)."""
        try:
            self.module.save_checkpoint(str(folder), tag="deepspeed")
        except Exception as err:
            raise CheckpointError(f"could not write {folder / 'deepspeed'}: {cause_of(err)}") from err

    def load(self, folder: Path) -> None:
        with reading(folder / "deepspeed"):
            path, _ = self.module.load_checkpoint(str(folder), tag="deepspeed", load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"{folder / 'deepspeed'}: no DeepSpeed checkpoint under tag 'deepspeed'")

    def apply_optim(self) -> None:
        """Put this run's optimizer settings over the ones a checkpoint restored (an accepted change)."""
        apply_optim(self.optimizer, self.scheduler, self.group_settings, self.optim)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model on rank 0 (ZeRO-3: gathered from every rank; all ranks must call)."""
        if self.zero_stage == 3:
            state = self.module._zero3_consolidated_16bit_state_dict()
            return _strip({k: v.detach().cpu() for k, v in state.items()}) if self.runtime.is_main else {}
        if not self.runtime.is_main:
            return {}
        return {k: v.detach().cpu() for k, v in self.inner.model.state_dict().items()}
