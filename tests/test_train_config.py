"""Stage recipes load into typed configs, accept the debug size, and resolve their references."""

import dataclasses

import pytest
import yaml

from onevision.budget import VisualSettings
from onevision.model.config import preset
from onevision.train.config import (
    StageConfig,
    VisualOverrides,
    load_stage,
    resolve_refs,
    stage_names,
    stage_path,
    stage_to_dict,
)
from onevision.train.data import resolve_recipe
from onevision.utils.dataclass_io import ConfigError

SHIPPED = ["llava15_stage1", "llava15_stage2", "llava_v1_stage1", "llava_v1_stage2", "stage1", "stage1_5", "stage2_ov", "stage2_si", "video"]
MLLAMA = ["mllama_anneal_1", "mllama_anneal_2", "mllama_anneal_3", "mllama_instruct", "mllama_pretrain"]
"""The cross-attention family's stages (model.family=mllama; tests/test_mllama_train.py loads them)."""


def test_every_curriculum_stage_is_shipped():
    assert stage_names() == sorted(SHIPPED + MLLAMA)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_stage_loads_with_debug_size_and_names_an_existing_data_recipe(name):
    stage = load_stage(name, ["model.size=debug", "output_root=/runs"])
    assert isinstance(stage, StageConfig) and stage.model.size == "debug"
    assert stage.output_dir == f"/runs/{name}"
    assert resolve_recipe(stage.data.recipe).is_file()
    settings = stage.visual_settings(preset("debug").visual)
    assert isinstance(settings, VisualSettings) and settings.image_size == 64
    assert stage.optim.warmup_ratio == 0.03 and stage.optim.schedule == "cosine"



def test_a_former_recipe_name_resolves_to_the_stage_named_file(caplog):
    # data.recipe=data_recipes/stage2_onevision.yaml in an older config still trains on the same file.
    with caplog.at_level("WARNING", logger="onevision.data.recipe"):
        found = resolve_recipe("data_recipes/stage2_onevision.yaml")
    assert found == resolve_recipe(load_stage("stage2_ov").data.recipe) and found.name == "stage2_ov.yaml"
    assert "data recipe" in caplog.text and "was renamed" in caplog.text
    with pytest.raises(FileNotFoundError, match="data recipe data_recipes/stage9.yaml not found"):
        resolve_recipe("data_recipes/stage9.yaml")

def test_stage_settings_follow_the_curriculum():
    s1, s15, si, ov, video = (load_stage(n) for n in ("stage1", "stage1_5", "stage2_si", "stage2_ov", "video"))
    assert s1.trainable == ["^projector\\."] and s1.optim.lr == 1e-3 and s1.model.init_from is None
    for stage, anyres in ((s15, 5), (si, 9), (ov, 9), (video, 9)):
        assert stage.trainable == [".*"] and stage.optim.lr == 1e-5
        assert [(g.pattern, g.lr) for g in stage.optim.groups] == [("^vision_tower\\.", 2e-6)]
        assert stage.visual.anyres_max == anyres
    assert s15.model.init_from == "runs/stage1/hf" and si.model.init_from == "runs/stage1_5/hf"
    assert ov.model.init_from == "runs/stage2_si/hf" and video.model.init_from == "runs/stage2_ov/hf"
    assert video.visual.frames_upbound == 64 and video.visual.video_newline == "row"


def test_stages_after_stage1_use_anyres_even_from_a_base_only_export():
    # Stage 1's export carries single_image='base'; a later stage must not inherit it silently.
    stage1_export = load_stage("stage1").visual_settings(preset("debug").visual)
    assert stage1_export.single_image == "base"
    for name in ("stage1_5", "stage2_si", "stage2_ov", "video"):
        assert load_stage(name).visual_settings(stage1_export).single_image == "anyres", name


def test_stage_name_or_path(tmp_path, monkeypatch):
    assert stage_path("stage1").name == "stage1.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stage1").mkdir()
    assert stage_path("stage1").parent.name == "stages", "a folder named like a stage is not a recipe"
    copy = tmp_path / "mine.yaml"
    copy.write_text(stage_path("stage1").read_text())
    assert load_stage(copy, ["name=mine"]).output_dir == "runs/mine"
    with pytest.raises(ConfigError, match="stage name"):
        stage_path("stage9")


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown key"):
        load_stage("stage1", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="visual: unknown key"):
        load_stage("stage1", ["visual.anyres=3"])
    with pytest.raises(ConfigError, match="not a valid regex"):
        load_stage("stage1", ["trainable=['(']"])
    with pytest.raises(ConfigError, match="previous"):
        load_stage("stage1", ["model.init_from=${prev_stage_output}"])


def test_references_resolve_fields_then_environment():
    data = {"a": "x", "b": "${a}/${HOME_X}", "c": {"d": "${b}"}}
    assert resolve_refs(data, env={"HOME_X": "h"})["c"]["d"] == "x/h"
    with pytest.raises(ConfigError, match="itself"):
        resolve_refs({"a": "${b}", "b": "${a}"}, env={})


def test_visual_block_keeps_the_tower_size():
    stage = dataclasses.replace(load_stage("stage2_si"), visual=VisualOverrides(anyres_max=9, image_size=384))
    assert stage.visual_settings(preset("debug").visual).image_size == 64


def test_the_visual_block_is_typed_and_written_back_as_given():
    # A typed section: a wrong type is refused by its name; only the fields set are written.
    with pytest.raises(ConfigError, match="visual.video_newline: must be a string, got 3"):
        load_stage("stage2_si", ["visual.video_newline=3"])
    with pytest.raises(ConfigError, match=r"visual.anyres_max: must be an integer, got 'many'"):
        load_stage("stage2_si", ["visual.anyres_max=many"])
    stage = load_stage("video", ["visual.max_visual_tokens=null"])
    assert isinstance(stage.visual, VisualOverrides) and stage.visual.max_visual_tokens is None
    written = stage_to_dict(stage)["visual"]
    assert written == {**yaml.safe_load(stage_path("video").read_text())["visual"], "max_visual_tokens": None}
    # null is a value (no budget), not "keep the model's": the model's budget does not come back.
    assert stage.visual_settings(dataclasses.replace(preset("debug").visual, max_visual_tokens=99)).max_visual_tokens is None
    assert load_stage("video").visual_settings(preset("debug").visual).max_visual_tokens == 16384
    assert "base_image" not in written
