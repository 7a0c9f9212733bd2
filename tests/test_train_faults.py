"""Fault injection for training: broken checkpoints, changed configs, bad settings, NaN, bad data, full disks.

One uninterrupted 6-step run is the reference; a run stopped at step 4 (checkpoints at steps 2
and 4) is the pristine state every checkpoint case copies and then breaks. For each file of the
newest checkpoint, truncated, with a flipped byte, deleted or emptied, resuming must either
continue from step 2 with the reference's losses or stop naming the file; here it always
continues, and says which file of step 4 it skipped and why.
"""

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_train_checkpoint import make_engine, stamp
from train_fixtures import debug_overrides, tiny  # noqa: F401

from onevision.train import durable, load_stage, run_stage
from onevision.train.engine import start_runtime
from onevision.train.errors import (
    CheckpointError,
    DataFailure,
    NonFiniteError,
    ResumeRefused,
    TrainError,
)
from onevision.train.run_checkpoint import Checkpointer, export_model
from onevision.utils.dataclass_io import ConfigError

FILES = ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer.json", "config.yaml", "rng/rank-00000.pt", "manifest.json"]
MODES = ["truncate", "flip", "delete", "empty"]


def stage_for(tiny, root: Path, *extra: str):  # noqa: F811
    overrides = debug_overrides(root, tiny["recipe"], tiny["tokenizer"], steps=6, max_tokens=700)
    overrides += ["model.init_from=null", "optim.lr=1e-3", "checkpoint.every=2", "checkpoint.keep_last=2", *extra]
    return load_stage("stage2_ov", overrides)


@pytest.fixture(scope="module")
def runs(tiny):  # noqa: F811
    """The reference losses (6 steps straight) and a pristine folder stopped at step 4."""
    torch.set_num_threads(1)
    straight = run_stage(stage_for(tiny, tiny["root"] / "straight"))
    first = run_stage(stage_for(tiny, tiny["root"] / "pristine", "loop.stop_at=4"))
    assert first.losses == straight.losses[:4] and first.export_dir is None
    history = json.loads((straight.output_dir / "checkpoints" / "step-00000006" / "trainer.json").read_text())["logger"]["history"]
    return {"losses": straight.losses, "pristine": first.output_dir, "history": history, "tiny": tiny}


def copy_of(runs, tmp_path: Path) -> Path:
    """A private copy of the pristine stage folder; returns its output_root."""
    shutil.copytree(runs["pristine"], tmp_path / "stage2_ov")
    return tmp_path


def corrupt(path: Path, mode: str) -> None:
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif mode == "delete":
        path.unlink()
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FILES)
def test_a_broken_file_of_the_newest_checkpoint_falls_back_to_the_previous(runs, tmp_path, name, mode):
    folder = copy_of(runs, tmp_path) / "stage2_ov" / "checkpoints"
    corrupt(folder / "step-00000004" / name, mode)
    point = Checkpointer(folder, start_runtime("cpu")).select()
    assert point.path == folder / "step-00000002"
    assert len(point.skipped) == 1 and f"step-00000004/{name}" in point.skipped[0], point.skipped


@pytest.mark.parametrize("index", range(len(FILES)))
def test_resuming_past_a_broken_checkpoint_repeats_the_reference_losses(runs, tmp_path, index):
    name, mode = FILES[index], MODES[index % len(MODES)]
    root = copy_of(runs, tmp_path)
    corrupt(root / "stage2_ov" / "checkpoints" / "step-00000004" / name, mode)
    result = run_stage(stage_for(runs["tiny"], root))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(runs["losses"][2:]), rtol=0, atol=1e-6)
    log = (root / "stage2_ov" / "resume.log").read_text().splitlines()
    last = max(i for i, line in enumerate(log) if not line.startswith(" "))
    assert "resume from step-00000002" in log[last], log
    assert any(line.strip().startswith("skipped") and f"step-00000004/{name}" in line for line in log[last:]), log


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_latest_pointer_falls_back_to_the_newest_intact_checkpoint(runs, tmp_path, mode):
    folder = copy_of(runs, tmp_path) / "stage2_ov" / "checkpoints"
    corrupt(folder / "latest", mode)
    point = Checkpointer(folder, start_runtime("cpu")).select()
    assert point.path == folder / "step-00000004" and not point.skipped
    assert "latest names no checkpoint folder" in point.notes[0]


def test_an_edited_step_with_a_rewritten_manifest_is_still_caught(runs, tmp_path):
    folder = copy_of(runs, tmp_path) / "stage2_ov" / "checkpoints" / "step-00000004"
    trainer = json.loads((folder / "trainer.json").read_text())
    (folder / "trainer.json").write_text(json.dumps({**trainer, "step": 3}))
    durable.write_manifest(folder, 4)
    point = Checkpointer(folder.parent, start_runtime("cpu")).select()
    assert point.path.name == "step-00000002" and "records step 3" in point.skipped[0]


def test_no_intact_checkpoint_stops_naming_every_bad_file(runs, tmp_path):
    root = copy_of(runs, tmp_path)
    config_before = (root / "stage2_ov" / "config.yaml").read_text()
    corrupt(root / "stage2_ov" / "checkpoints" / "step-00000004" / "optimizer.pt", "flip")
    corrupt(root / "stage2_ov" / "checkpoints" / "step-00000002" / "model.safetensors", "truncate")
    with pytest.raises(CheckpointError, match="no intact checkpoint") as caught:
        run_stage(stage_for(runs["tiny"], root))
    assert "step-00000004/optimizer.pt" in str(caught.value) and "step-00000002/model.safetensors" in str(caught.value)
    assert (root / "stage2_ov" / "config.yaml").read_text() == config_before


def test_a_changed_config_is_refused_with_every_difference(runs, tmp_path):
    root = copy_of(runs, tmp_path)
    config_before = (root / "stage2_ov" / "config.yaml").read_text()
    changed = ["optim.lr=2e-3", "optim.schedule=linear", "loop.grad_accum=2", "data.sampler.max_tokens=800"]
    with pytest.raises(ResumeRefused) as caught:
        run_stage(stage_for(runs["tiny"], root, *changed, "loop.log_every=3"))
    message = str(caught.value)
    for line in ("optim.lr: 0.001 -> 0.002", 'optim.schedule: "cosine" -> "linear"', "loop.grad_accum: 1 -> 2",
                 "data.sampler.max_tokens: 700 -> 800"):
        assert line in message, message
    assert "loop.log_every" not in message and "checkpoint.allow_changes=[" in message
    assert (root / "stage2_ov" / "config.yaml").read_text() == config_before


def test_an_allowed_change_is_applied_and_recorded(runs, tmp_path):
    root = copy_of(runs, tmp_path)
    result = run_stage(stage_for(runs["tiny"], root, "optim.lr=2e-3", "checkpoint.allow_changes=[optim.lr]"))
    assert len(result.losses) == 2 and result.export_dir is not None
    folder = root / "stage2_ov"
    assert "accepted change optim.lr: 0.001 -> 0.002" in (folder / "resume.log").read_text()
    assert yaml.safe_load((folder / "config.yaml").read_text())["optim"]["lr"] == 2e-3
    history = [json.loads(line) for line in (folder / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["event"] == "resume" and history[-1]["changes"]["optim.lr"] == [1e-3, 2e-3]
    resumed = json.loads((folder / "checkpoints" / "step-00000006" / "trainer.json").read_text())["logger"]["history"]
    for step in (5, 6):
        new = next(h["lr/default"] for h in resumed if h["step"] == step)
        old = next(h["lr/default"] for h in runs["history"] if h["step"] == step)
        assert new == pytest.approx(2 * old, rel=1e-12), (step, new, old)
    assert next(h["lr/default"] for h in resumed if h["step"] == 4) == next(h["lr/default"] for h in runs["history"] if h["step"] == 4)


def test_stop_at_not_after_the_resumed_step_is_refused(runs, tmp_path):
    root = copy_of(runs, tmp_path)
    with pytest.raises(TrainError, match="loop.stop_at=3 is not after the resumed step 4"):
        run_stage(stage_for(runs["tiny"], root, "loop.stop_at=3"))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optim.lr=-1", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.lr=.inf", "optim.lr"),
        ("optim.eps=0", "optim.eps"), ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.betas=[0.9, 1.5]", "optim.betas[1]"), ("optim.warmup_ratio=1", "optim.warmup_ratio"),
        ("optim.max_grad_norm=nan", "optim.max_grad_norm"),
        ("optim.groups=[{name: t, pattern: x, lr: 0}]", "optim.groups[0].lr"),
        ("loop.epochs=0", "loop.epochs"), ("loop.steps=0", "loop.steps"), ("loop.stop_at=0", "loop.stop_at"),
        ("loop.grad_accum=0", "loop.grad_accum"), ("loop.seed=-1", "loop.seed"), ("loop.log_every=0", "loop.log_every"),
        ("loop.eval_every=-1", "loop.eval_every"), ("data.sampler.max_tokens=0", "data.sampler.max_tokens"),
        ("data.sampler.batch_size=0", "data.sampler.batch_size"), ("data.template.max_length=0", "data.template.max_length"),
        ("data.pad_to_multiple_of=0", "data.pad_to_multiple_of"), ("data.video_fps=0", "data.video_fps"),
        ("data.max_skipped_share=1.5", "data.max_skipped_share"), ("data.loader.num_workers=-1", "data.loader.num_workers"),
        ("checkpoint.every=-1", "checkpoint.every"), ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("model.head_chunk_rows=0", "model.head_chunk_rows"), ("lora.r=0", "lora.r"), ("lora.dropout=1", "lora.dropout"),
        ("eval.batches=0", "eval.batches"), ("distributed.timeout_s=0", "distributed.timeout_s"),
        ("checkpoint.resume=maybe", "checkpoint.resume"), ("loop.steps=2.5", "loop.steps"),
        ("checkpoint.allow_changes=[optim.learning_rate]", "checkpoint.allow_changes"),
        ("visual.frames_upbound=0", "visual"),
        ("data.sampler.seed=3", "data.sampler.seed"),
    ],
)
def test_each_setting_is_validated_by_name(override, field):
    with pytest.raises(ConfigError, match="^" + re.escape(field) + ": "):
        load_stage("stage2_ov", ["model.size=debug", override])


def test_a_sampler_seed_equal_to_the_loop_seed_is_accepted():
    assert load_stage("stage2_ov", ["model.size=debug", "loop.seed=3", "data.sampler.seed=3"]).loop.seed == 3


def test_an_epoch_fraction_without_a_step_is_refused(tiny, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="loop.epochs=0.01 of"):
        run_stage(stage_for(tiny, tmp_path, "loop.steps=null", "loop.epochs=0.01"))


def test_a_non_finite_loss_stops_the_run_and_nothing_is_exported(tiny, tmp_path):  # noqa: F811
    # Adam moves every weight by about lr per step: 1e30 overflows the next forward.
    with pytest.raises(NonFiniteError) as caught:
        run_stage(stage_for(tiny, tmp_path, "optim.lr=1e30", "optim.warmup_ratio=0", "checkpoint.every=1"))
    assert "step 2" in str(caught.value)
    folder = tmp_path / "stage2_ov"
    assert not (folder / "hf").exists()
    assert Checkpointer(folder / "checkpoints", start_runtime("cpu")).select().path.name == "step-00000001"


def test_export_refuses_non_finite_weights(tmp_path):
    class Engine:
        def full_state_dict(self):
            return {"w": torch.tensor([1.0, float("nan")])}

    with pytest.raises(NonFiniteError, match="1 weight tensor"):
        export_model(Engine(), lambda: None, tmp_path / "hf", start_runtime("cpu"))
    assert not (tmp_path / "hf").exists()


def test_a_run_whose_samples_all_fail_to_decode_stops_with_the_counts(tiny, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    whole = (Path(tiny["recipe"]).parent / "wide.png").read_bytes()
    (data / "cut.png").write_bytes(whole[:120])  # header intact (size known), pixels gone
    records = [{"id": f"bad-{i}", "image": "cut.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]} for i in range(6)]
    (data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "recipe.yaml").write_text("datasets:\n  - json_path: records.jsonl\n")
    with pytest.raises(DataFailure) as caught:
        run_stage(stage_for(tiny, tmp_path, f"data.recipe={data / 'recipe.yaml'}", "data.skipped_share_after=4", "loop.steps=3"))
    message = str(caught.value)
    assert "samples tried were skipped" in message and "media" in message and "cut.png" in message, message
    assert not (tmp_path / "stage2_ov" / "hf").exists()
    assert Checkpointer(tmp_path / "stage2_ov" / "checkpoints", start_runtime("cpu")).steps() == []


def test_a_short_run_on_mostly_skipped_data_stops_at_its_last_step(tiny, tmp_path):  # noqa: F811
    # A budget of 1 visual token skips every sample with media (8 of the 10); 2 steps try fewer than
    # data.skipped_share_after samples, so only the last step's check can stop the run.
    with pytest.raises(DataFailure, match=r"of \d+ samples tried were skipped .*budget"):
        run_stage(stage_for(tiny, tmp_path, "visual.max_visual_tokens=1", "loop.steps=2"))
    assert Checkpointer(tmp_path / "stage2_ov" / "checkpoints", start_runtime("cpu")).steps() == []


def test_a_full_disk_during_a_save_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    engine = make_engine(8)
    saver = Checkpointer(tmp_path / "ck", engine.runtime, keep_last=2)
    stamp(engine, 1)
    saver.save(1, engine, {"data": {}, "logger": {}})
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name == "optimizer.pt":
            def write(_data):
                raise OSError(errno.ENOSPC, "No space left on device")
            handle.write = write
        return handle

    monkeypatch.setattr(durable, "open", full_disk, raising=False)
    stamp(engine, 2)
    with pytest.raises(CheckpointError) as caught:
        saver.save(2, engine, {"data": {}, "logger": {}})
    message = str(caught.value)
    assert "step-00000002/optimizer.pt" in message and "No space left on device" in message, message
    assert "latest still names step-00000001" in message
    assert saver.latest().name == "step-00000001" and saver.select().path.name == "step-00000001"
    assert not list((tmp_path / "ck").glob(".tmp-*"))
