"""Checkpoints are atomic: `latest` always names a complete, loadable checkpoint.

The kill test runs a process that saves in a tight loop and SIGKILLs it at random moments,
several times; after every kill the checkpoint `latest` names loads, and its weights, optimizer
state and recorded step agree.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from onevision.train.config import OptimSection
from onevision.train.engine import TorchEngine, start_runtime
from onevision.train.run_checkpoint import Checkpointer, write_atomic

REPO = Path(__file__).resolve().parents[1]


class Holder(nn.Module):
    """Stands in for LossModule: the engine saves `.model`."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(width, width), nn.Linear(width, width))


def make_engine(width: int = 256) -> TorchEngine:
    holder = Holder(width)
    groups = [{"params": list(holder.parameters()), "lr": 1e-3, "weight_decay": 0.0, "name": "default"}]
    return TorchEngine(holder, groups, OptimSection(), total_steps=10**6, grad_accum=1, runtime=start_runtime("cpu"), bf16=False)


def stamp(engine: TorchEngine, step: int) -> None:
    """One optimizer step, then every weight set to `step` (so a checkpoint can be checked)."""
    loss = sum(p.sum() for p in engine.inner.parameters())
    engine.backward(loss)
    engine.step()
    with torch.no_grad():
        for p in engine.inner.parameters():
            p.fill_(float(step))


def test_save_prunes_and_points_latest_at_the_newest(tmp_path):
    engine = make_engine(8)
    saver = Checkpointer(tmp_path / "ck", engine.runtime, keep_last=2)
    assert saver.latest() is None and saver.load(engine) is None
    (tmp_path / "ck" / ".tmp-step-00000099").mkdir(parents=True)
    for step in (1, 2, 3):
        stamp(engine, step)
        saver.save(step, engine, {"data": {"epoch": 0}, "logger": {}})
    assert saver.steps() == [2, 3] and saver.latest().name == "step-00000003"
    assert not list((tmp_path / "ck").glob(".tmp-*"))
    fresh = make_engine(8)
    state = Checkpointer(tmp_path / "ck", fresh.runtime).load(fresh)
    assert state["step"] == 3 and state["data"] == {"epoch": 0}
    assert all(torch.all(p == 3) for p in fresh.inner.parameters())
    assert fresh.optimizer.state_dict()["state"][0]["step"] == engine.optimizer.state_dict()["state"][0]["step"]


def test_write_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "latest"
    write_atomic(target, "a\n")
    write_atomic(target, "b\n")
    assert target.read_text() == "b\n" and [p.name for p in tmp_path.iterdir()] == ["latest"]


SAVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_train_checkpoint import Checkpointer, make_engine, stamp
    engine = make_engine()
    saver = Checkpointer({folder!r}, engine.runtime, keep_last=2)
    state = saver.load(engine)
    step = state["step"] if state else 0
    while True:
        step += 1
        stamp(engine, step)
        saver.save(step, engine, {{"data": {{}}, "logger": {{}}}})
        if step == (state["step"] if state else 0) + 1:
            print("saving", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_saves_never_breaks_latest(tmp_path):
    folder = tmp_path / "ck"
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(tests=str(Path(__file__).parent), folder=str(folder)))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    rng = random.Random(0)
    seen = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"saving"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        engine = make_engine()
        state = Checkpointer(folder, engine.runtime).load(engine)
        step = state["step"]
        assert all(torch.all(p == step) for p in engine.inner.parameters()), f"weights of step {step} are not all {step}"
        assert engine.optimizer.state_dict()["state"][0]["step"] == step
        seen.append(step)
    assert seen == sorted(seen) and seen[-1] > seen[0]
