"""The benchmarks under scripts/ still run: each on a tiny workload, checking that it finishes
and prints its comparison (the figures themselves are not asserted: timings are noisy).

The GPU training benchmark runs with --cpu-check, so a GPU session does not spend its device
time finding a broken script.

Tier `bench` (about a minute): left out of a plain `python -m pytest -q` by setup.cfg's addopts,
run with `python -m pytest -q -m bench`.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SMOKE = {
    "bench_gpu_train.py": (["--cpu-check", "--steps", "2", "--warmup", "1"], ["useful tokens", "model GFLOP/s"]),
    "bench_packing.py": (["--samples", "400"], ["ours packed, group_by=modality", "packed(modality)/padded"]),
    "bench_preprocess.py": (["--images", "3", "--max-side", "300", "--repeats", "1"], ["LlavaOnevisionImageProcessorPil", "speed-up"]),
    "bench_batched_inference.py": (
        ["--videos", "4", "--batch-size", "2", "--frames", "4", "--repeats", "1", "--max-new-tokens", "4"],
        ["batched / one by one", "same answers in both passes: True"],
    ),
    "bench_packed_training.py": (["--samples", "24", "--rounds", "1", "--row-tokens", "1024"], ["packed / padded-random"]),
    "bench_loader.py": (["--samples", "4", "--workers", "0"], ["video "]),
    "bench_infer_vs_hf.py": (
        ["--size", "debug", "--frames", "4", "--max-new-tokens", "3", "--threads", "1", "--scenarios", "image", "video"],
        ["ratio = ours / transformers", "image "],
    ),
    "bench_lm_head.py": (["--tokens", "256", "--repeats", "1"], ["than the full head"]),
    "bench_video_decode.py": (["--quick", "--repeat", "1", "--cache", "{tmp}"], ["wall-clock seconds", "CPU seconds", "1080p 20s"]),
}


def run_script(name: str, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.bench
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_runs_on_a_tiny_workload(name, tmp_path):
    args, expected = SMOKE[name]
    result = run_script(name, [arg.format(tmp=tmp_path) for arg in args])
    assert result.returncode == 0, result.stderr[-3000:]
    for phrase in expected:
        assert phrase in result.stdout, f"{name} printed no {phrase!r}:\n{result.stdout[-3000:]}"


def test_every_benchmark_is_smoke_tested():
    assert sorted(p.name for p in (ROOT / "scripts").glob("bench_*.py")) == sorted(SMOKE)


@pytest.mark.bench
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed where there is no GPU")
def test_gpu_benchmark_without_cuda_says_so():
    result = run_script("bench_gpu_train.py", [])
    assert result.returncode == 1
    assert "no CUDA device is visible" in result.stderr and "--cpu-check" in result.stderr
