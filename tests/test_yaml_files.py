"""Every YAML file in the repository is read by the code that uses it: stage recipes by
`load_stage`, data recipes by `load_recipe` (tests/test_recipe.py), the local lmms-eval tasks
as lmms-eval reads them (an `include` chain, `!function` hooks that exist in utils.py).
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from onevision.train.config import load_stage, stage_names

ROOT = Path(__file__).resolve().parents[1]
TRACKED = subprocess.run(["git", "ls-files", "*.yaml", "*.yml"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
STAGES = ROOT / "onevision" / "train" / "stages"
TASKS = ROOT / "scripts" / "lmms_eval_tasks"


def test_every_yaml_has_a_reader():
    readers = {"onevision/train/stages/": "load_stage", "data_recipes/": "load_recipe", "scripts/lmms_eval_tasks/": "lmms-eval"}
    orphans = [path for path in TRACKED if not any(path.startswith(prefix) for prefix in readers)]
    assert not orphans, f"YAML files no test reads: {orphans}"


@pytest.mark.parametrize("name", sorted(p.stem for p in STAGES.glob("*.yaml")))
def test_every_stage_recipe_loads(name):
    assert name in stage_names()
    load_stage(name, ["output_root=/runs"])


class _TaskLoader(yaml.SafeLoader):
    """lmms-eval's task syntax: `!function module.name` hooks."""


_TaskLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))


def _task(path: Path) -> dict:
    data = yaml.load(path.read_text(), Loader=_TaskLoader)
    if "include" in data:
        data = {**_task(path.parent / data.pop("include")), **data}
    return data


@pytest.mark.parametrize("path", sorted(TASKS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_lmms_task_resolves(path):
    task = _task(path)
    assert {"task", "dataset_path", "output_type"} <= set(task)
    assert task["output_type"] in ("generate_until", "multiple_choice", "loglikelihood", "generate_until_multi_round")
    utils = (TASKS / "utils.py").read_text()
    for value in task.values():
        if isinstance(value, tuple) and value[0] == "function":
            module, name = value[1].split(".")
            assert module == "utils" and f"def {name}(" in utils, value
