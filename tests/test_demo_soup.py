"""`onevision demo --soup --quick` end to end: a table per scenario with every ingredient, both
soups and chance; the uniform soup is the mean of the ingredients, the greedy soup the mean of
the ones it kept, chosen on a held-out split other than the test split."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onevision.cli.main import main
from onevision.demo.config import StagePlan, quick_config
from onevision.demo.curriculum import StageStart, stage_overrides
from onevision.demo.soup import SoupDemoConfig, SoupRun, quick_soup_config
from onevision.train import load_stage

SCENARIOS = ("single_image", "multi_image", "video")


@pytest.fixture(scope="module")
def quick_soup(tmp_path_factory):
    """One quick soup demo through the CLI: its output folder."""
    root = tmp_path_factory.mktemp("soup")
    code = main(["demo", "--soup", "--quick", "--seed", "0", "--out", str(root / "out"), "--cache", str(root / "cache"), "--no-progress"])
    assert code == 0
    return root / "out" / "soup"


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    assert tensors, folder
    return tensors


@pytest.mark.slow
def test_every_scenario_table_has_each_ingredient_both_soups_and_chance(quick_soup):
    table = (quick_soup / "table.txt").read_text()
    names = [run.name for run in quick_soup_config().runs]
    sections = table.split("\n\n")
    for scenario in SCENARIOS:
        section = next(s for s in sections if s.startswith(f"{scenario}: test accuracy"))
        first_cells = [line.split("  ")[0].strip() for line in section.splitlines()[2:]]
        assert first_cells == ["stage1_5 (start)", *names, "uniform soup", "greedy soup", "chance"], (scenario, first_cells)
    results = json.loads((quick_soup / "results.json").read_text())
    assert list(results["ingredients"]) == names
    for row in ("uniform soup", "greedy soup", *names):
        assert set(results["rows"][row]["scores"]["scenarios"]) == set(SCENARIOS)
    assert results["rows"]["greedy soup"]["scores"]["chance"]["scenarios"]["single_image"] == pytest.approx(0.25)


@pytest.mark.slow
def test_uniform_soup_is_the_mean_of_the_ingredients(quick_soup):
    results = json.loads((quick_soup / "results.json").read_text())
    ingredients = [weights(path) for path in results["ingredients"].values()]
    soup = weights(quick_soup / "uniform_soup")
    assert set(soup) == set(ingredients[0])
    for name, tensor in soup.items():
        mean = torch.stack([w[name].float() for w in ingredients]).mean(0)
        torch.testing.assert_close(tensor.float(), mean, rtol=1e-6, atol=1e-7)
    # The runs differ (learning rate, weight decay, data seed), so the soup is none of them.
    for w in ingredients:
        assert any(not torch.equal(soup[name], w[name]) for name in soup)


@pytest.mark.slow
def test_greedy_soup_is_the_mean_of_what_it_kept_on_a_held_out_split(quick_soup):
    results = json.loads((quick_soup / "results.json").read_text())
    greedy = results["greedy"]
    names = list(results["ingredients"])
    assert greedy["held_out"]["seed"] != results["config"]["demo"]["seed"]
    assert len(greedy["steps"]) == len(names) and greedy["steps"][0]["kept"]
    assert greedy["steps"][0]["own"] == max(step["own"] for step in greedy["steps"])
    assert greedy["kept"] and set(greedy["kept"]) <= set(names)
    kept = [weights(results["ingredients"][name]) for name in greedy["kept"]]
    soup = weights(quick_soup / "greedy_soup")
    for name, tensor in soup.items():
        torch.testing.assert_close(tensor.float(), torch.stack([w[name].float() for w in kept]).mean(0), rtol=1e-6, atol=1e-7)
    recorded = json.loads((quick_soup / "greedy_soup" / "onevision_soup.json").read_text())
    assert recorded["method"] == "greedy" and len(recorded["kept"]) == len(greedy["kept"])
    assert Path(recorded["held_out"]).name.startswith("heldout-")


def test_an_ingredient_plan_sets_weight_decay_data_seed_and_scaled_tower_rate(tmp_path):
    config = SoupDemoConfig(demo=quick_config(), plan=StagePlan(steps=4, lr=1e-3, vision_lr=4e-4), runs=(SoupRun(5e-4, 0.1, 7),))
    plan = config.ingredient_plan(config.runs[0])
    assert (plan.lr, plan.vision_lr, plan.weight_decay, plan.data_seed) == (5e-4, pytest.approx(2e-4), 0.1, 7)
    overrides = stage_overrides("stage2_ov", plan, StageStart(init_from=tmp_path), tmp_path / "mix.yaml", tmp_path / "out", config.demo, "x")
    stage = load_stage("stage2_ov", overrides)
    assert stage.loop.seed == 7 and stage.optim.lr == 5e-4 and stage.optim.weight_decay == 0.1
    assert [(g.lr, g.weight_decay) for g in stage.optim.groups] == [(pytest.approx(2e-4), 0.1)]
    # Without the soup's settings a stage keeps the recipe's weight decay and the demo's seed.
    plain = load_stage("stage2_ov", stage_overrides("stage2_ov", StagePlan(steps=4, lr=1e-3), StageStart(init_from=tmp_path), tmp_path / "m.yaml", tmp_path / "o", config.demo, "x"))
    assert plain.loop.seed == config.demo.seed and plain.optim.weight_decay == 0.0


def test_soup_refuses_another_family(tmp_path, capsys):
    code = main(["demo", "--soup", "--family", "llava15", "--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert code == 2
    assert "--family llava15" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
