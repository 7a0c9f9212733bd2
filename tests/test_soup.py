"""Model soups (Wortsman et al. 2022): uniform mean exact in fp32, sharded = unsharded, config and
start mismatches refused by name, greedy soup never below its best ingredient on the held-out
split, the grid's runs from one pinned start, training exports that record their start, and the
CLI's one-line errors."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from train_fixtures import debug_overrides, tiny  # noqa: F401

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from onevision.checkpoint.files import TensorRef, write_tensors
from onevision.cli.main import main
from onevision.soup.average import SoupError, read_ingredient, uniform_soup
from onevision.checkpoint.fingerprint import START_FILE, read_start, start_fingerprint, write_start
from onevision.soup.greedy import greedy_soup
from onevision.soup.grid import plan_grid, run_grid

MARKER = "multi_modal_projector.linear_1.bias"


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """A random debug checkpoint (transformers' llava_onevision layout, tokenizer included)."""
    from onevision.infer.debug_model import save_debug_checkpoint

    return save_debug_checkpoint(tmp_path_factory.mktemp("soup") / "start")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder, sharded or not."""
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def ingredient(start: Path, folder: Path, seed: int, *, shard: int | None = None, marker: float | None = None, fingerprint=True) -> Path:
    """A 'fine-tune' of `start`: its weights plus seeded noise (a constant `marker` bias when given)."""
    shutil.copytree(start, folder, ignore=lambda _d, names: [n for n in names if n.endswith(".safetensors")])
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: value + 0.01 * torch.randn(value.shape, generator=generator) for name, value in weights(start).items()}
    if marker is not None:
        tensors[MARKER] = torch.full_like(tensors[MARKER], marker)
    write_tensors({n: TensorRef.of(t) for n, t in tensors.items()}, folder, max_shard_size=shard or "5GB", progress=False)
    if fingerprint:
        write_start(folder, start_fingerprint(str(start), None, None, "debug", 0, 0))
    return folder


def test_uniform_soup_is_the_exact_fp32_mean(start, tmp_path):
    parts = [ingredient(start, tmp_path / f"ft{k}", k) for k in range(3)]
    out = uniform_soup(parts, tmp_path / "soup")
    soup, inputs = weights(out), [weights(p) for p in parts]
    assert set(soup) == set(inputs[0])
    for name, value in soup.items():
        assert value.dtype == torch.float32
        assert torch.equal(value, (inputs[0][name] + inputs[1][name] + inputs[2][name]) / 3), name
        assert not torch.equal(value, inputs[0][name])
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (parts[0] / name).read_bytes()
    meta = json.loads((out / "onevision_soup.json").read_text())
    assert meta["method"] == "uniform" and meta["ingredients"] == [str(p) for p in parts]
    assert read_start(out) == read_start(parts[0])


def test_sharded_ingredients_average_as_unsharded(start, tmp_path):
    whole = [ingredient(start, tmp_path / f"whole{k}", k) for k in range(2)]
    sharded = [ingredient(start, tmp_path / f"sharded{k}", k, shard=150_000) for k in range(2)]
    assert len(list(sharded[0].glob("model-*.safetensors"))) > 2
    out_whole = uniform_soup(whole, tmp_path / "soup-whole")
    out_sharded = uniform_soup(sharded, tmp_path / "soup-sharded", dtype=torch.bfloat16)
    mixed = uniform_soup([whole[0], sharded[1]], tmp_path / "soup-mixed")
    # The soup keeps the first ingredient's layout: shards (with their index) or one file.
    assert (out_sharded / "model.safetensors.index.json").is_file() and not (out_whole / "model.safetensors.index.json").exists()
    assert json.loads((out_sharded / "config.json").read_text())["dtype"] == "bfloat16"
    a, b, c = weights(out_whole), weights(out_sharded), weights(mixed)
    assert set(a) == set(b) == set(c)
    for name in a:
        assert torch.equal(a[name], c[name]), name
        assert b[name].dtype == torch.bfloat16 and torch.equal(b[name], a[name].to(torch.bfloat16)), name


def test_mismatched_config_refused_naming_the_field(start, tmp_path, capsys):
    good = ingredient(start, tmp_path / "good", 0)
    odd = ingredient(start, tmp_path / "odd", 1)
    config = json.loads((odd / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(SoupError, match=r"text_config\.rms_norm_eps is 1e-05 there but 1e-06"):
        uniform_soup([good, odd], tmp_path / "soup")
    assert main(["soup", str(good), str(odd), "--out", str(tmp_path / "soup")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "text_config.rms_norm_eps" in err[0] and not (tmp_path / "soup").exists()


def test_different_or_unknown_start_refused_with_the_reason(start, tmp_path):
    same = ingredient(start, tmp_path / "same", 0)
    other = ingredient(start, tmp_path / "other", 1)
    write_start(other, start_fingerprint(None, None, None, "debug", 7, 512))
    with pytest.raises(SoupError, match=r"started from random debug weights, seed 7.*but .* from checkpoint .*one start"):
        uniform_soup([same, other], tmp_path / "soup")
    unknown = ingredient(start, tmp_path / "unknown", 2, fingerprint=False)
    with pytest.raises(SoupError, match="records no start.*--allow-unknown-start"):
        uniform_soup([same, unknown], tmp_path / "soup")
    out = uniform_soup([same, unknown], tmp_path / "soup", allow_unknown_start=True)
    meta = json.loads((out / "onevision_soup.json").read_text())
    assert meta["allow_unknown_start"] is True and meta["unknown_start"] == [str(unknown)]


def test_greedy_keeps_only_what_improves_the_held_out_score(start, tmp_path):
    """A stand-in score (closeness of the marker bias to 0.5) makes every decision known."""
    parts = {name: ingredient(start, tmp_path / name, k, marker=m) for k, (name, m) in enumerate([("a", 0.0), ("b", 0.9), ("c", 2.0)])}

    def score(folder: Path) -> float:
        with safe_open(str(next(folder.glob("*.safetensors"))), framework="pt") as handle:
            return -abs(float(handle.get_tensor(MARKER).mean()) - 0.5)

    lines = []
    result = greedy_soup(list(parts.values()), tmp_path / "greedy", score, log=lines.append)
    # b (-0.4) first; with a the mean marker is 0.45 (-0.05): kept; with c too it is 0.97: dropped.
    assert [(Path(s.ingredient).name, s.kept) for s in result.steps] == [("b", True), ("a", True), ("c", False)]
    assert result.accuracy == pytest.approx(-0.05, abs=1e-6) and result.accuracy >= max(s.own for s in result.steps)
    assert sum("-> kept" in line or "-> dropped" in line for line in lines) == 3
    soup, a, b = weights(result.out), weights(parts["a"]), weights(parts["b"])
    assert all(torch.equal(soup[n], (b[n] + a[n]) / 2) for n in soup)
    assert json.loads((result.out / "onevision_soup.json").read_text())["kept"] == [str(parts["b"]), str(parts["a"])]


def test_greedy_soup_on_a_world_split_is_never_below_its_best_ingredient(start, tmp_path, capsys):
    from onevision.world import build_world

    world = build_world(tmp_path / "world", n_train=0, n_test=3, tasks=("si_colour", "mi_same_colour"), progress=False)
    parts = [ingredient(start, tmp_path / f"ft{k}", k) for k in range(3)]
    code = main(["soup", *map(str, parts), "--out", str(tmp_path / "greedy"), "--greedy", "--eval", str(world.root / "test")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    steps = [line for line in out if line.startswith("[")]
    assert len(steps) == 3 and steps[0].endswith("-> kept")
    meta = json.loads((tmp_path / "greedy" / "onevision_soup.json").read_text())
    best_own = max(s["own"] for s in meta["steps"])
    assert meta["held_out_accuracy"] >= best_own
    assert meta["steps"][0]["own"] == best_own and meta["kept"][0] == meta["steps"][0]["ingredient"]


def test_grid_print_lists_one_run_per_point_from_one_start(tmp_path, capsys):
    code = main(["soup", "grid", "stage2_si", "model.size=debug", f"output_root={tmp_path}", "--lr", "1e-5", "2e-5",
                 "--data-seed", "0", "1", "loop.steps=3", "--print"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line.split() for line in lines if line.startswith("onevision train")]
    notes = [line for line in lines if line.startswith("#")]
    assert len(commands) == 4
    start = f"model.init_from={(tmp_path / 'stage1_5' / 'hf').resolve()}"
    roots = set()
    for command, (lr, seed) in zip(commands, [(1e-5, 0), (1e-5, 1), (2e-5, 0), (2e-5, 1)]):
        assert command[2] == "stage2_si" and start in command and "loop.steps=3" in command
        assert f"optim.lr={lr!r}" in command and f"loop.seed={seed}" in command
        roots.add([c for c in command if c.startswith("output_root=")][-1])  # the last one wins
    assert roots == {f"output_root={tmp_path}/grid/stage2_si/lr{lr:g}_seed{s}" for lr in (1e-5, 2e-5) for s in (0, 1)}
    assert any("vision_tower (lr 2e-06" in n for n in notes), notes


def test_grid_seeds_over_a_random_start_refused(capsys):
    assert main(["soup", "grid", "stage1", "model.size=debug", "--data-seed", "0", "1", "--print"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random debug weights drawn from loop.seed" in err[0]


def test_grid_runs_record_one_start_and_soup_them(tiny, tmp_path, monkeypatch):  # noqa: F811
    """stage1 (random start) then a stage1_5 grid over seeds, trained in process: exports carry
    their start, the grid's share it and soup; the stage1 export's start differs and is refused."""
    from onevision.train import load_stage, run_stage

    overrides = debug_overrides(tmp_path / "runs", tiny["recipe"], tiny["tokenizer"], steps=1)
    first = run_stage(load_stage("stage1", overrides)).export_dir
    assert read_start(first)["kind"] == "random" and "seed 0" in read_start(first)["source"]
    plan = plan_grid("stage1_5", overrides, data_seed=[0, 1])
    for point in plan.points:
        run_stage(load_stage("stage1_5", point.overrides))
    starts = [read_start(p.export) for p in plan.points]
    assert starts[0] == starts[1] and starts[0]["kind"] == "checkpoint" and starts[0]["source"] == str(first.resolve())
    assert uniform_soup([p.export.parent for p in plan.points], tmp_path / "soup").is_dir()
    with pytest.raises(SoupError, match="one start"):
        uniform_soup([plan.points[0].export, first], tmp_path / "bad")
    # Finished runs are skipped; the others go to `onevision train` in a subprocess.
    shutil.rmtree(plan.points[1].export)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert run_grid(plan, log=lambda line: None) == [p.export for p in plan.points]
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "onevision", "train"] and calls[0][4:] == ["stage1_5", *plan.points[1].overrides]


@pytest.mark.parametrize(
    "args, words",
    [
        (["soup", "nowhere", "--out", "x"], "nowhere: no such folder"),
        (["soup", "a", "b"], "--out is required"),
        (["soup", "a", "--out", "x", "--greedy"], "--greedy needs --eval"),
        (["soup", "a", "--out", "x", "--eval", "d"], "add --greedy"),
        (["soup", "a", "--out", "x", "--lr", "1e-5"], "--lr cannot be used"),
        (["soup", "grid", "stage2_si", "--lr", "fast"], "--lr: expected a number, got 'fast'"),
        (["soup", "grid", "stage2_si", "--data-seed", "-1"], "--data-seed: expected a seed"),
        (["soup", "grid", "stage2_si", "--print"], "at least one of --lr"),
        (["soup", "grid", "stage2_si", "--lr", "1e-5", "--out", "x"], "--out cannot be used with soup grid"),
        (["soup", "grid", "nostage", "--lr", "1e-5"], "nostage"),
        (["soup", "grid", "stage2_si", "optim.lr=1", "--lr", "1e-5"], "optim.lr=... and --lr"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_start_fingerprint_follows_the_start_bytes(start, tmp_path):
    copy = Path(shutil.copytree(start, tmp_path / "copy"))
    same = start_fingerprint(str(start), None, None, "debug", 0, 0)
    assert start_fingerprint(str(copy), None, None, "x", 5, 1)["sha256"] == same["sha256"]
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert start_fingerprint(str(copy), None, None, "debug", 0, 0)["sha256"] != same["sha256"]
    assert start_fingerprint(None, None, None, "debug", 0, 512) != start_fingerprint(None, None, None, "debug", 1, 512)
    (copy / START_FILE).write_text("[]")
    with pytest.raises(ValueError, match="not a start fingerprint"):
        read_ingredient(copy)
