"""Stored-loss regression: every shipped stage recipe, a few fixed-seed steps, against stored losses.

Each stage of `onevision/train/stages/*.yaml` trains the debug-size model for a few steps on a
tiny synthetic world (`onevision.world`), one process, no loader workers, from loop.seed, and its
per-step losses are compared with `tests/assets/losses.json`. Any change to what training
computes (records, templates and label masks, planning, pixels, packing, the model, the loss,
the optimizer groups or the schedule) moves these numbers, so it shows up here even when every
unit test still passes. The tolerance only absorbs floating-point differences between CPUs.

When a change is meant to move them, regenerate the file on purpose and commit it with the change:

    ONEVISION_UPDATE_LOSSES=1 python -m pytest -q tests/test_stored_losses.py

(each stage then rewrites its entry and is reported as skipped, so an update run never passes
for a check.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from onevision.tokenizer import train_small_llama_tokenizer, train_small_tokenizer
from onevision.train import load_stage, run_stage
from onevision.world import world_texts
from onevision.world.build import build_world
from onevision.world.recipes import write_world_recipes

pytestmark = pytest.mark.losses

ROOT = Path(__file__).resolve().parents[1]
STORED = Path(__file__).resolve().parent / "assets" / "losses.json"
STAGES = sorted(path.stem for path in (ROOT / "onevision" / "train" / "stages").glob("*.yaml"))
STEPS = 3
TOLERANCE = 1e-4
"""Absolute, on losses near 6: the same CPU reproduces them exactly (1 or 2 threads measured)."""
UPDATE = os.environ.get("ONEVISION_UPDATE_LOSSES") == "1"


def _video_recipe(world: Path) -> Path:
    """The world's video tasks as one mixture (the world writes no recipe for the video stage)."""
    manifest = json.loads((world / "manifest.json").read_text())
    tasks = sorted(name for name, task in manifest["tasks"].items() if task["scenario"] == "video")
    datasets = [{"json_path": f"../{manifest['splits']['train'][t]['jsonl']}", "sampling_strategy": "all"} for t in tasks]
    path = world / "recipes" / "video.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "media_root": "..", "datasets": datasets}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """{'root', 'recipes': stage -> data recipe, 'tokenizer'}: 2 items per task, 32 px, 4 frames."""
    root = tmp_path_factory.mktemp("losses")
    build_world(root / "world", seed=0, n_train=2, n_test=0, image_size=32, frames=4, progress=False)
    recipes = write_world_recipes(root / "world")
    recipes["video"] = _video_recipe(root / "world")
    for family in ("llava15", "llava_v1"):  # LLaVA's stages: captions, then single-image instructions
        recipes[f"{family}_stage1"], recipes[f"{family}_stage2"] = recipes["stage1"], recipes["stage2_si"]
    # The cross-attention family: captions, then the richer mixes, then everything (video frames as images).
    recipes |= {"mllama_pretrain": recipes["stage1"], "mllama_instruct": recipes["stage2_ov"]}
    recipes |= {f"mllama_anneal_{i}": recipes["stage1_5"] for i in (1, 2, 3)}
    tokenizer = root / "tokenizer"
    train_small_tokenizer(world_texts(200, 0), vocab_size=400, save_dir=tokenizer)
    llama_tokenizer = root / "llama_tokenizer"
    train_small_llama_tokenizer(world_texts(200, 0) + ["USER: ASSISTANT:"], vocab_size=400, save_dir=llama_tokenizer)
    return {"root": root, "recipes": recipes, "tokenizer": tokenizer, "llama_tokenizer": llama_tokenizer}


def _overrides(world: dict, stage: str) -> list[str]:
    """A few CPU steps of the debug model from random weights (init_from null: stages stay independent).

    LLaVA's stages run their family's debug size with a Llama-layout tokenizer, the
    cross-attention family's `mllama-debug` with `llama3-bytes`.
    """
    llava = {"llava15": "llava15-debug", "llava_v1": "llava-v1-debug"}.get(stage.rsplit("_stage", 1)[0])
    if stage.startswith("mllama_"):  # the cross-attention family: its debug size and the byte-level Llama 3 tokenizer
        model = ["model.size=mllama-debug", "model.tokenizer=llama3-bytes"]
    else:
        model = [f"model.size={llava or 'debug'}", f"model.tokenizer={world['llama_tokenizer' if llava else 'tokenizer']}"]
    return [
        *model,
        "model.init_from=null",
        "model.gradient_checkpointing=false",
        f"output_root={world['root'] / 'runs'}",
        f"data.recipe={world['recipes'][stage]}",
        "data.loader.num_workers=0",
        "data.sampler.max_tokens=2048",
        "data.template.max_length=2048",
        "data.video_fps=null",
        "visual.max_visual_tokens=null",
        f"loop.steps={STEPS}",
        "loop.seed=0",
        "loop.device=cpu",
        "checkpoint.every=0",
        "checkpoint.export=false",
        "logging.progress=false",
        "logging.tensorboard=false",
        "logging.plot=false",
    ]


def _stored() -> dict[str, list[float]]:
    return json.loads(STORED.read_text()) if STORED.is_file() else {}


def test_every_shipped_stage_has_stored_losses():
    if UPDATE:
        pytest.skip("ONEVISION_UPDATE_LOSSES=1: the stage tests rewrite tests/assets/losses.json")
    assert STAGES and sorted(_stored()) == STAGES, "run with ONEVISION_UPDATE_LOSSES=1 to store a new stage's losses"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_losses_match_the_stored_ones(world, stage):
    losses = run_stage(load_stage(stage, _overrides(world, stage))).losses
    assert len(losses) == STEPS
    if UPDATE:
        stored = _stored()
        stored[stage] = [round(loss, 6) for loss in losses]
        STORED.parent.mkdir(exist_ok=True)
        STORED.write_text(json.dumps(dict(sorted(stored.items())), indent=2) + "\n")
        pytest.skip(f"ONEVISION_UPDATE_LOSSES=1: stored {stage} losses {stored[stage]}")
    expected = _stored().get(stage)
    assert expected is not None, f"no stored losses for {stage}: run with ONEVISION_UPDATE_LOSSES=1"
    assert losses == pytest.approx(expected, abs=TOLERANCE), f"{stage}: losses {losses} moved from the stored {expected}"
