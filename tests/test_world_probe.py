"""scripts/world_probe.py: shape probes on a tower's patch features, per object size."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import SiglipVisionConfig, SiglipVisionModel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "world_probe.py"


@pytest.fixture(scope="module")
def world_probe():
    spec = importlib.util.spec_from_file_location("world_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tower(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tower")
    config = SiglipVisionConfig(image_size=64, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    SiglipVisionModel(config).save_pretrained(folder)
    return folder


def test_prints_a_row_per_size_with_accuracies(world_probe, tower, capsys):
    assert world_probe.main(["--tower", str(tower), "--scenes", "16", "--small", "0.11"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(small|large) \((0\.\d+), (\d+) px\)\s+([\d.]+)%\s+([\d.]+)%$", out, re.M)
    assert [(r[0], r[1], r[2]) for r in rows] == [("small", "0.11", "15"), ("large", "0.19", "25")]
    assert all(0.0 <= float(v) <= 100.0 for r in rows for v in r[3:])


def test_scenes_are_balanced_and_drawn_at_the_given_size(world_probe):
    images, labels = world_probe.scenes(8, 0.15, 64, seed=0)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # One object, 21 px across: its foreground spans at most 21 px in each direction.
    for image in images:
        mask = np.asarray(image).max(-1) > 60
        ys, xs = np.nonzero(mask)
        assert 0 < xs.max() - xs.min() + 1 <= 21 and 0 < ys.max() - ys.min() + 1 <= 21


def test_refuses_a_folder_that_is_not_a_model(world_probe, tmp_path, capsys):
    assert world_probe.main(["--tower", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        world_probe.main(["--tower", str(tmp_path), "--small", "0.4"])
    assert raised.value.code == 2
