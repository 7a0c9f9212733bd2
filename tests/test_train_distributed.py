"""DDP, DeepSpeed ZeRO-2 and ZeRO-3 over 2 CPU processes (torchrun, gloo, DeepSpeed's CPU accelerator).

Batches are one sample per rank drawn from a mix of single-image, multi-image, video and
text-only records, so some steps give one rank no visual item while the other has one: the
blank-tile path must keep the ranks' collectives in step (without it ZeRO-3 hangs or fails on
mismatched all-gathers; the ZeRO-3 config here keeps no parameter resident, so every module
call gathers). A timeout turns a hang into a failure. Then: the loss falls, the ZeRO-3
checkpoint exports to the transformers layout that both `load_hf` and transformers'
`LlavaOnevisionForConditionalGeneration.from_pretrained` load, with the same logits, and a
ZeRO-3 run stopped and resumed repeats a straight run's losses.
"""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from train_fixtures import debug_overrides, tiny  # noqa: F401

from onevision.train.engine import DEEPSPEED_DIR

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tiny, root: Path, zero_stage: int, *extra: str) -> Path:  # noqa: F811
    """Run stage2_ov on 2 CPU ranks (zero_stage 0: DDP, else DeepSpeed); returns the stage folder."""
    root.mkdir(parents=True, exist_ok=True)
    overrides = debug_overrides(root, tiny["recipe"], tiny["tokenizer"], steps=6)
    overrides += [
        "model.init_from=null", "optim.lr=1e-3", "checkpoint.every=3", "distributed.timeout_s=120",
        "data.sampler.max_tokens=null", "data.sampler.batch_size=1", "data.sampler.group_by=none", "data.sampler.window=1",
    ]
    if zero_stage:
        ds_config = json.loads((DEEPSPEED_DIR / f"zero{zero_stage}.json").read_text())
        if zero_stage == 3:
            ds_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        config_path = root / f"zero{zero_stage}.json"
        config_path.write_text(json.dumps(ds_config))
        overrides += ["distributed.strategy=deepspeed", f"distributed.deepspeed_config={config_path}"]
    else:
        overrides += ["distributed.strategy=ddp"]
    overrides += list(extra)
    env = dict(os.environ, DS_ACCELERATOR="cpu", NPROC_PER_NODE="2", MASTER_PORT=str(free_port()), PYTHON=os.sys.executable,
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "launch_torchrun.sh"), "stage2_ov", *overrides],
                          env=env, capture_output=True, text=True, timeout=420, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "stage2_ov"


@pytest.fixture(scope="module")
def runs(tiny):  # noqa: F811
    """zero_stage -> the stage folder of a 6-step run, launched on first use (shared by the tests)."""
    done = {}

    def get(zero_stage: int) -> Path:
        if zero_stage not in done:
            done[zero_stage] = launch(tiny, tiny["root"] / f"zero{zero_stage}", zero_stage)
        return done[zero_stage]

    return get


def history(folder: Path) -> list[dict]:
    latest = (folder / "checkpoints" / "latest").read_text().strip()
    return json.loads((folder / "checkpoints" / latest / "trainer.json").read_text())["logger"]["history"]


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 2, 3], ids=["ddp", "zero2", "zero3"])
def test_mixed_batches_train_without_hanging(runs, zero_stage):
    folder = runs(zero_stage)
    assert (folder / "hf" / "config.json").is_file()
    steps = history(folder)
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert any(s["data/no_visual_batches"] == 1 for s in steps), "no step had one rank without a visual item"
    losses = [s["train/loss"] for s in steps]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses
    checkpoint = folder / "checkpoints" / "step-00000006"
    assert (checkpoint / "deepspeed").is_dir() if zero_stage else (checkpoint / "model.safetensors").is_file()
    assert sorted(p.name for p in (checkpoint / "rng").iterdir()) == ["rank-00000.pt", "rank-00001.pt"]
    if zero_stage == 3:
        from transformers import LlavaOnevisionForConditionalGeneration

        from onevision.checkpoint import load_hf

        ours = load_hf(folder / "hf", progress=False).eval()
        theirs = LlavaOnevisionForConditionalGeneration.from_pretrained(folder / "hf").eval()
        ids = torch.randint(0, 300, (1, 16))
        with torch.no_grad():
            torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_zero3_stop_and_resume_repeats_the_losses(tiny, runs):  # noqa: F811
    """A ZeRO-3 run stopped after 3 steps and resumed (engine.load_checkpoint inside our
    atomic checkpoints) logs the losses a straight run logs."""
    straight = runs(3)
    resumed = launch(tiny, tiny["root"] / "z3-resumed", 3, "loop.stop_at=3")
    assert not (resumed / "hf").exists()
    launch(tiny, tiny["root"] / "z3-resumed", 3)
    want = [s["train/loss"] for s in history(straight)]
    got = [s["train/loss"] for s in history(resumed)]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-6)
