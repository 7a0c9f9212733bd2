"""Exact resume: 20 steps straight equal 10 steps, a stop, and 10 resumed steps (CPU, fp32)."""

import torch
from train_fixtures import debug_overrides, tiny  # noqa: F401

from onevision.train import load_stage, run_stage


def _stage(tiny, root, *extra):  # noqa: F811
    overrides = debug_overrides(root, tiny["recipe"], tiny["tokenizer"], steps=20, max_tokens=700)
    overrides += ["model.init_from=null", "optim.lr=1e-3", "checkpoint.keep_last=1", *extra]
    return load_stage("stage2_ov", overrides)


def test_stop_and_resume_gives_the_same_losses(tiny):  # noqa: F811
    torch.set_num_threads(1)
    straight = run_stage(_stage(tiny, tiny["root"] / "straight")).losses
    first = run_stage(_stage(tiny, tiny["root"] / "resumed", "loop.stop_at=10"))
    assert first.export_dir is None and len(first.losses) == 10
    second = run_stage(_stage(tiny, tiny["root"] / "resumed"))
    assert len(second.losses) == 10 and second.export_dir is not None
    resumed = first.losses + second.losses
    assert straight[-1] < straight[0]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(straight), rtol=0, atol=1e-6)
    checkpoints = sorted(p.name for p in (tiny["root"] / "resumed" / "stage2_ov" / "checkpoints").iterdir())
    assert checkpoints == ["latest", "step-00000020"]
