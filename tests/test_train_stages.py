"""Every stage recipe trains a few steps on the debug model, and each hands its export to the next.

One chain per module: stage 1 (random debug model) -> 1.5 -> 2 single-image (with gradient
checkpointing and accumulation) -> 2 OneVision (with the held-out evaluator) -> video
continuation, each from the previous stage's llava_onevision export. Checks: stage 1 changes
only the projector; later stages give the vision tower its own optimizer group and learning
rate; the next stage starts from exactly the previous export; the run leaves TensorBoard
scalars (eval loss included) and a loss-curve PNG.
"""

import itertools

import pytest
import torch
import yaml
from train_fixtures import debug_overrides, tiny  # noqa: F401
from transformers import set_seed

from onevision.checkpoint import load_hf
from onevision.train import load_stage, run_stage
from onevision.train.config import stage_to_dict
from onevision.train.engine import start_runtime
from onevision.train.model_init import build_model, load_tokenizer
from onevision.train.runner import build_run

CHAIN = ["stage1", "stage1_5", "stage2_si", "stage2_ov", "video"]


@pytest.fixture(scope="module")
def chain(tiny):  # noqa: F811
    """Run the whole curriculum (2 steps a stage); returns {stage: StageResult} and the start of stage 1."""
    torch.set_num_threads(1)
    runs = tiny["root"] / "runs"
    results, start = {}, None
    for name in CHAIN:
        extra = []
        if name == "stage2_ov":
            extra = ["logging.tensorboard=true", "logging.plot=true", f"eval.recipe={tiny['recipe']}", "eval.batches=2", "loop.eval_every=1"]
        if name == "stage2_si":
            extra = ["model.gradient_checkpointing=true", "loop.grad_accum=2"]
        tokenizer = tiny["tokenizer"] if name == "stage1" else None
        stage = load_stage(name, debug_overrides(runs, tiny["recipe"], tokenizer, steps=2) + extra)
        if name == "stage1":
            set_seed(stage.loop.seed)
            start = build_model(stage, load_tokenizer(stage.model)).state_dict()
        results[name] = run_stage(stage)
    return {"results": results, "stage1_start": start, "runs": runs, "tiny": tiny}


def test_every_stage_trains_and_exports(chain):
    for name in CHAIN:
        result = chain["results"][name]
        assert len(result.losses) == 2 and all(0 < loss < 20 for loss in result.losses), (name, result.losses)
        assert (result.export_dir / "config.json").is_file() and (result.export_dir / "tokenizer.json").is_file()
        written = result.output_dir / "config.yaml"
        assert stage_to_dict(load_stage(written)) == yaml.safe_load(written.read_text())


def test_stage1_changes_only_the_projector(chain):
    start = chain["stage1_start"]
    end = load_hf(chain["results"]["stage1"].export_dir, progress=False).state_dict()
    assert start.keys() == end.keys()
    changed = sorted(k for k in start if not torch.equal(start[k], end[k]))
    assert changed and all(k.startswith("projector.") for k in changed), changed
    assert {k for k in start if k.startswith("projector.")} == set(changed)


def test_next_stage_starts_from_the_previous_export(chain):
    for previous, name in itertools.pairwise(CHAIN):
        stage = load_stage(name, debug_overrides(chain["runs"], chain["tiny"]["recipe"], None, steps=2))
        assert stage.model.init_from == str(chain["results"][previous].export_dir)
    stage = load_stage("stage1_5", debug_overrides(chain["runs"], chain["tiny"]["recipe"], None, steps=2))
    exported = load_hf(stage.model.init_from, progress=False).state_dict()
    started = build_model(stage, load_tokenizer(stage.model)).state_dict()
    assert all(torch.equal(exported[k], started[k]) for k in exported)


def test_later_stages_give_the_vision_tower_its_own_learning_rate(chain):
    stage = load_stage("stage2_si", debug_overrides(chain["runs"] / "groups", chain["tiny"]["recipe"], None, steps=2)
                       + [f"model.init_from={chain['results']['stage1_5'].export_dir}", "checkpoint.resume=false"])
    run, parts = build_run(stage, start_runtime("cpu"))
    groups = {g["name"]: g for g in run.engine.optimizer.param_groups}
    assert set(groups) == {"vision_tower", "default"}
    assert groups["vision_tower"]["initial_lr"] == 2e-6 and groups["default"]["initial_lr"] == 1e-5
    names = {id(p): n for n, p in parts["model"].named_parameters()}
    assert all(names[id(p)].startswith("vision_tower.") for p in groups["vision_tower"]["params"])
    assert not any(names[id(p)].startswith("vision_tower.") for p in groups["default"]["params"])
    tower_before = load_hf(chain["results"]["stage1_5"].export_dir, progress=False).state_dict()
    tower_after = load_hf(chain["results"]["stage2_si"].export_dir, progress=False).state_dict()
    key = "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(tower_before[key], tower_after[key])


def test_run_leaves_tensorboard_scalars_and_a_loss_curve(chain):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = chain["results"]["stage2_ov"].output_dir
    assert (folder / "loss_curve.png").stat().st_size > 1000
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "perf/tokens_per_s", "data/padding_ratio", "lr/default", "lr/vision_tower"} <= tags
    assert any(tag.startswith("train/loss_") for tag in tags)
    evals = [event.value for event in events.Scalars("eval/loss")]
    assert len(evals) == 2 and all(0 < value < 20 for value in evals)
