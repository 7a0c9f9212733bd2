"""`onevision train CONFIG [key=value ...]`: help, resolved config, errors, and a real debug run."""

import pytest
import torch
import yaml
from train_fixtures import debug_overrides, tiny  # noqa: F401

from onevision.cli.main import main


def test_help_lists_the_stages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "stage1_5" in out and "KEY=VALUE" in out


def test_print_config_applies_overrides(capsys):
    assert main(["train", "stage2_ov", "--print-config", "model.size=debug", "loop.steps=7", "output_root=/x"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["size"] == "debug" and printed["loop"]["steps"] == 7
    assert printed["model"]["init_from"] == "/x/stage2_si/hf"


def test_bad_override_exits_2_with_the_key(capsys):
    assert main(["train", "stage1", "optim.lrate=1"]) == 2
    assert "lrate" in capsys.readouterr().err


def test_train_command_runs_a_stage(tiny, capsys):  # noqa: F811
    torch.set_num_threads(1)
    overrides = debug_overrides(tiny["root"] / "cli", tiny["recipe"], tiny["tokenizer"], steps=1)
    assert main(["train", "stage1", *overrides]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tiny["root"] / "cli" / "stage1" / "hf" / "model.safetensors").is_file()
