"""The README's commands work as written: the training example runs copy-paste (on a smaller
world, so the test stays short) and its export loads in transformers; the install block is the
one CI runs first.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks(after_heading: str) -> list[list[str]]:
    """Command lines of the bash blocks of the README section `after_heading` (comments removed)."""
    section = README.split(f"\n## {after_heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_ci_starts_with_the_readme_install_and_test_lines():
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).splitlines()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd ", "export ", "rm "))]
    assert ci[: len(first)] == first


@pytest.mark.slow
def test_training_example_runs_as_written(tmp_path):
    lines = bash_blocks("Training")[0]
    assert [shlex.split(line)[:2] for line in lines] == [["onevision", "world"], ["onevision", "train"], ["onevision", "train"]]
    for line in lines:
        argv = shlex.split(line)[1:]
        # A smaller world than the default (160 items per task) keeps the test short.
        extra = ["--train", "8", "--test", "2", "--no-progress"] if argv[0] == "world" else ["logging.progress=false", "data.loader.num_workers=0"]
        done = subprocess.run([sys.executable, "-m", "onevision", *argv, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    from transformers import LlavaOnevisionForConditionalGeneration

    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "runs/debug/stage1_5/hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_token_counts_in_the_readme_are_what_the_command_prints(capsys):
    """Every `onevision tokens` line in the README prints the total its comment claims."""
    import json

    from onevision.cli.main import main

    lines = [line for line in README.splitlines() if line.startswith("onevision tokens ")]
    assert len(lines) >= 4
    for line in lines:
        command, comment = line.split("#", 1)
        claimed = int(re.search(r"\d+", comment).group())
        code = main([*shlex.split(command)[1:], "--json"] if "--json" not in command else shlex.split(command)[1:])
        out = capsys.readouterr()
        assert code in (0, 1), f"{line}\n{out.err}"
        assert json.loads(out.out)["total"] == claimed, line
