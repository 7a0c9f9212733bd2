"""The real `lmms-eval --model onevision` command, offline, on the local tasks of
scripts/lmms_eval_tasks: scripts/lmms_eval_local.py builds a tiny checkpoint and the datasets,
runs the command and checks the files it writes (lmms-eval itself exits 0 on errors).
Needs the 'eval' extra (lmms-eval, filelock<4.3); about a minute on two cores."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed; install the 'eval' extra: pip install -e '.[eval]'")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lmms_eval_command_scores_local_tasks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lmms_eval_local.py"), "--workdir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for phrase in ("ovl_choice: accuracy 1.0", "ovl_perplexity:", "ovl_bad_choice: the good document right", "all checks passed"):
        assert phrase in done.stdout, done.stdout[-3000:]
