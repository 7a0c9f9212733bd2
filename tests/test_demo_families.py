"""`onevision demo --family llava15` and `onevision compare`: LLaVA-1.5's curriculum on the demo
world at the OneVision demo's step and token budget, and the side-by-side tables."""

import json

import pytest

from onevision.cli.main import main
from onevision.demo import full_config, quick_config
from onevision.demo.families import LLAVA15_STAGES, budget, llava15_plans
from onevision.demo.report import accuracy_table, task_table


@pytest.mark.parametrize("make", [full_config, quick_config])
def test_llava15_gets_the_onevision_steps_and_tokens(make):
    config = make(0)
    plans = llava15_plans(config)
    assert list(plans) == list(LLAVA15_STAGES)
    assert plans["llava15_stage1"] == config.stages["stage1"]
    steps, tokens = budget(plans)
    ov_steps, ov_tokens = budget(config.stages)
    assert steps == ov_steps
    assert abs(tokens - ov_tokens) <= plans["llava15_stage2"].steps / 2  # batch_tokens rounded to a whole token
    assert plans["llava15_stage2"].lr == config.stages["stage2_ov"].lr


def _scores(tasks: dict[str, float], chance: dict[str, float], scenarios: dict[str, float]) -> dict:
    return {"tasks": tasks, "scenarios": scenarios, "overall": 0.5, "n": {},
            "chance": {"tasks": chance, "scenarios": {s: 0.25 for s in scenarios}, "overall": 0.25}}


def test_tables_show_a_task_only_one_system_was_asked():
    onevision = _scores({"si_colour": 0.5, "vid_count": 0.75}, {"si_colour": 0.25, "vid_count": 0.25}, {"single_image": 0.5, "video": 0.75})
    llava = _scores({"si_colour": 1.0}, {"si_colour": 0.25}, {"single_image": 1.0})
    tasks = task_table(["onevision", "llava15"], [onevision, llava]).splitlines()
    row = next(line for line in tasks if line.startswith("vid_count"))
    assert row.split() == ["vid_count", "25.0%", "75.0%", "-"]
    scenarios = accuracy_table(["onevision", "llava15"], [onevision, llava]).splitlines()
    assert scenarios[-1].split()[:3] == ["chance", "25.0%", "25.0%"]


def test_compare_refuses_an_unknown_family(capsys):
    assert main(["compare", "--quick", "--families", "onevision", "llava2"]) == 2
    assert "--families: unknown llava2" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_compare_and_llava15_demo_share_the_cache(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "compare"
    assert main(["compare", "--quick", "--out", str(out), "--cache", str(cache), "--no-progress"]) == 0
    table = (out / "table.txt").read_text()
    results = json.loads((out / "results.json").read_text())["families"]
    assert results["onevision"]["steps"] == results["llava15"]["steps"]
    assert "video" in results["onevision"]["scores"]["scenarios"] and "video" not in results["llava15"]["scores"]["scenarios"]
    assert "vid_direction" in table and (out / "compare.png").is_file()
    demo = tmp_path / "demo"
    assert main(["demo", "--quick", "--family", "llava15", "--out", str(demo), "--cache", str(cache), "--no-progress"]) == 0
    run = json.loads((demo / "results.json").read_text())
    assert list(run["stages"]) == list(LLAVA15_STAGES) and all(run["cached"].values())
    assert "USER:" in (demo / "model" / "tokenizer_config.json").read_text() + "".join(
        p.read_text() for p in (demo / "model").glob("chat_template*")
    )
