"""Mixture recipes: every shipped YAML loads, the official syntax parses, each sampling strategy
selects what it says, seeded draws are reproducible, weights, environment expansion, and errors
that name the file and the key."""

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest

from onevision.data.recipe import (
    RENAMED_RECIPES,
    RecipeError,
    SampleRef,
    SamplingStrategy,
    expand_vars,
    load_recipe,
    parse_recipe,
)

RECIPES = sorted((Path(__file__).resolve().parents[1] / "data_recipes").glob("*.yaml"))


def write_records(path: Path, n: int) -> Path:
    """A JSON list (or JSONL) of `n` text records with ids "0".."n-1"."""
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
               for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def rows(strategy: str, n: int, seed: int = 0, weight: float = 1.0) -> list[int]:
    recipe = parse_recipe(
        {"seed": seed, "datasets": [{"json_path": "/d/x.json", "sampling_strategy": strategy, "weight": weight}]}
    )
    return [ref.row for ref in recipe.plan([n])]


def test_shipped_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"stage1.yaml", "stage1_5.yaml", "stage2_si.yaml", "stage2_ov.yaml", "video.yaml"} <= names


@pytest.mark.parametrize("old, new", sorted(RENAMED_RECIPES.items()))
def test_a_former_recipe_name_loads_the_renamed_file_with_a_note(old, new, caplog):
    folder = RECIPES[0].parent
    assert not (folder / old).exists() and (folder / new).is_file()
    with caplog.at_level("WARNING", logger="onevision.data.recipe"):
        recipe = load_recipe(folder / old, check_files=False, env={"DATA_ROOT": "/r"})
    assert recipe.source == str(folder / new)
    assert [r.getMessage() for r in caplog.records] == [f"data recipe {folder / old} was renamed {folder / new}; reading that"]
    with pytest.raises(FileNotFoundError, match="recipe not found"):
        load_recipe(folder / "stage9.yaml", check_files=False)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path, check_files=False, env={"DATA_ROOT": "/datasets/llava"})
    assert recipe.datasets and recipe.source == str(path)
    for index, spec in enumerate(recipe.datasets):
        assert str(spec.json_path).startswith("/datasets/llava/"), spec.json_path
        assert spec.json_path.suffix in (".json", ".jsonl")
        assert spec.sampling.kind in ("all", "first", "end", "random")
        assert str(recipe.dataset_media_root(index)).startswith("/datasets/llava/")
    # The files are not on this machine: checking for them must fail, naming one.
    with pytest.raises(FileNotFoundError, match=r"json_path not found: /datasets/llava/"):
        load_recipe(path, env={"DATA_ROOT": "/datasets/llava"})
    with pytest.raises(RecipeError, match="DATA_ROOT is not set"):
        load_recipe(path, check_files=False, env={})


def test_onevision_recipe_covers_three_scenarios():
    recipe = load_recipe(RECIPES[[p.name for p in RECIPES].index("stage2_ov.yaml")], check_files=False,
                         env={"DATA_ROOT": "/r"})
    names = [spec.name for spec in recipe.datasets]
    assert "m4_instruct" in names and "llava_hound_255k" in names
    assert any(spec.sampling == SamplingStrategy("end", percent=20) for spec in recipe.datasets)


def test_official_syntax_parses(tmp_path):
    data = tmp_path / "data"
    write_records(data / "a.json", 30)
    write_records(data / "b.jsonl", 8)
    path = write_yaml(tmp_path / "official.yaml", f"""
datasets:
  - json_path: {data}/a.json # released in lmms-lab/LLaVA-OneVision-Data
    sampling_strategy: "first:10%"
  - json_path: {data}/b.jsonl
    sampling_strategy: all
  # - json_path: {data}/commented_out.json
  #   sampling_strategy: "first:1%"
  - json_path: {data}/a.json
    sampling_strategy: end:2
    name: a_tail
""")
    recipe = load_recipe(path)
    assert [s.name for s in recipe.datasets] == ["a", "b", "a_tail"]
    assert recipe.seed == 0 and all(s.weight == 1.0 for s in recipe.datasets)
    refs = recipe.samples()
    assert refs == [SampleRef(0, r) for r in range(3)] + [SampleRef(1, r) for r in range(8)] + [
        SampleRef(2, 28), SampleRef(2, 29)]
    records = recipe.records(progress=False)
    assert [(r.source.endswith("a.json"), r.id) for r in records[:3]] == [(True, "0"), (True, "1"), (True, "2")]
    assert [r.id for r in records[3:11]] == [str(i) for i in range(8)]
    assert [r.id for r in records[11:]] == ["28", "29"]


@pytest.mark.parametrize(
    "strategy,n,expected",
    [
        ("all", 10, list(range(10))),
        ("first:3", 10, [0, 1, 2]),
        ("end:3", 10, [7, 8, 9]),
        ("first:25%", 10, [0, 1, 2]),  # ceil(2.5)
        ("end:25%", 10, [7, 8, 9]),
        ("first:2.5%", 10, [0]),  # ceil(0.25)
        ("first:100%", 4, [0, 1, 2, 3]),
        ("first:20", 10, list(range(10))),
        ("end:20", 10, list(range(10))),
        ("first:0", 10, []),
        ("end:0", 10, []),
    ],
)
def test_first_end_all_select_exactly(strategy, n, expected):
    assert rows(strategy, n) == expected


@pytest.mark.parametrize("pct,n", [(10, 7), (10, 30), (1, 256646), (5, 19218), (30, 143000), (50, 299992), (20, 1)])
def test_percentage_matches_official_rounding(pct, n):
    official = math.ceil(int(pct) * n / 100)
    assert SamplingStrategy.parse(f"first:{pct}%").size(n) == official
    assert len(rows(f"random:{pct}%", n)) == official


def test_random_selects_distinct_rows_reproducibly():
    first = rows("random:40", 100, seed=3)
    assert len(first) == 40 and len(set(first)) == 40 and all(0 <= r < 100 for r in first)
    assert first != sorted(first)  # drawn order, like the official shuffle
    # Global random state must not matter.
    random.seed(123)
    np.random.seed(123)
    assert rows("random:40", 100, seed=3) == first
    assert rows("random:40", 100, seed=4) != first
    assert len(rows("random:50%", 9)) == 5
    assert sorted(rows("random:20", 10)) == list(range(10))


def test_random_subset_depends_on_name_not_path_or_position():
    a = parse_recipe({"datasets": [{"json_path": "/one/x.json", "sampling_strategy": "random:5"}]})
    b = parse_recipe({"datasets": [
        {"json_path": "/two/y.json", "name": "other"},
        {"json_path": "/elsewhere/x.json", "sampling_strategy": "random:5"},
    ]})
    assert [r.row for r in a.plan([50])] == [r.row for r in b.plan([3, 50])[3:]]


def test_weights():
    assert rows("all", 4, weight=2.0) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert rows("all", 4, weight=0) == []
    half = rows("all", 10, weight=0.5)
    assert len(half) == 5 and half == sorted(set(half))
    assert rows("all", 10, weight=0.5) == half
    assert rows("all", 10, weight=0.5, seed=1) != half
    assert len(rows("all", 3, weight=0.5)) == 2  # ceil(1.5)
    assert len(rows("all", 30, weight=0.1)) == 3  # exact, not ceil(3.0000000000000004)
    more = rows("first:4", 10, weight=1.5)
    assert more[:4] == [0, 1, 2, 3] and len(more) == 6 and set(more[4:]) <= {0, 1, 2, 3}
    assert len(set(more[4:])) == 2


def test_env_expansion(tmp_path, monkeypatch):
    assert expand_vars("${A}/x/${B:-dflt}", {"A": "/root"}) == "/root/x/dflt"
    assert expand_vars("${B:-dflt}", {"B": "set"}) == "set"
    assert expand_vars("${B:-}z", {}) == "z"
    data = tmp_path / "data"
    write_records(data / "d.json", 2)
    path = write_yaml(tmp_path / "r.yaml", """
media_root: ${MEDIA:-media}
datasets:
  - json_path: ${ROOT}/d.json
    media_root: ${ROOT}/imgs
  - json_path: ${ROOT}/d.json
    name: second
""")
    monkeypatch.setenv("ROOT", str(data))
    recipe = load_recipe(path)
    assert recipe.datasets[0].json_path == data / "d.json"
    assert recipe.dataset_media_root(0) == data / "imgs"
    assert recipe.dataset_media_root(1) == tmp_path / "media"  # relative: to the YAML's folder
    monkeypatch.delenv("ROOT")
    with pytest.raises(RecipeError, match=r"r\.yaml: datasets\[0\]: 'json_path' '\$\{ROOT\}/d\.json': .*ROOT is not set"):
        load_recipe(path)


def test_relative_paths_resolve_against_yaml_folder(tmp_path, monkeypatch):
    write_records(tmp_path / "recipes" / "data" / "d.jsonl", 3)
    path = write_yaml(tmp_path / "recipes" / "r.yaml", "datasets:\n  - json_path: data/d.jsonl\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path)
    assert recipe.datasets[0].json_path == tmp_path / "recipes" / "data" / "d.jsonl"
    assert recipe.dataset_media_root(0) == tmp_path / "recipes" / "data"
    assert len(recipe.samples()) == 3


def test_records_follow_media_root_lookup_and_plan(tmp_path):
    write_records(tmp_path / "d.json", 6)
    recipe = parse_recipe(
        {"seed": 5, "media_root": "top", "datasets": [
            {"json_path": "d.json", "sampling_strategy": "random:3", "weight": 2},
            {"json_path": "d.json", "name": "own", "media_root": "own_media", "sampling_strategy": "end:1"},
        ]},
        base_dir=tmp_path,
    )
    refs = recipe.samples()
    records = recipe.records(progress=False)
    assert [r.index for r in records] == [ref.row for ref in refs]
    assert len(refs) == 7 and refs[:3] == refs[3:6] and refs[6] == SampleRef(1, 5)
    assert recipe.dataset_media_root(0) == tmp_path / "top"
    assert recipe.dataset_media_root(1) == tmp_path / "own_media"


def test_count_larger_than_file_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="onevision.data.recipe"):
        assert rows("first:20", 10) == list(range(10))
    assert "asks for first:20" in caplog.text and "holds 10 records" in caplog.text


@pytest.mark.parametrize(
    "yaml_text,problem",
    [
        ("datasets:\n  - json_path: a.json\nepochs: 2\n", "unknown key 'epochs'; allowed top-level keys"),
        ("datasets:\n  - json_path: a.json\n    data_folder: x\n", r"datasets\[0\]: unknown key 'data_folder'"),
        ("datasets:\n  - sampling_strategy: all\n", r"datasets\[0\]: missing 'json_path'"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: middle:3\n", "is not one of all"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first\n", "needs a number"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:2.5\n", "a count must be a whole number"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:150%\n", "at most 100"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: all:3\n", "takes no number"),
        ("datasets:\n  - json_path: a.json\n    weight: -1\n", r"datasets\[0\]: 'weight' must be a finite number in \[0, 1000\], got -1$"),
        ("datasets:\n  - json_path: a.json\n    weight: 1.0e+12\n", r"datasets\[0\]: 'weight' must be .* in \[0, 1000\], got 1000000000000.0$"),
        ("datasets:\n  - json_path: a.json\n    weight: .nan\n", r"'weight' must be a finite number in \[0, 1000\], got nan$"),
        ("datasets:\n  - json_path: a.json\n    weight: -.inf\n", r"'weight' must be .*, got -inf$"),
        ("datasets:\n  - json_path: a.json\n    weight: '2'\n", r"'weight' must be .*, got str '2'$"),
        ("datasets:\n  - json_path: a.json\n    weight: true\n", r"'weight' must be .*, got bool True$"),
        ("datasets:\n  - json_path: a.json\n    weight: " + "9" * 4000 + "\n", r"'weight' must be .*, got 9{10,}\.\.\.9+$"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:1000000001\n", "a count must be at most 1,000,000,000"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:" + "9" * 5000 + "\n", "a count must be at most"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:1e3\n", "is not one of all"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:nan%\n", "is not one of all"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:-5\n", "is not one of all"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: first:\u0663\n", "is not one of all"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: random:100.5%\n", "at most 100"),
        ("datasets:\n  - json_path: a.json\n    sampling_strategy: [first, 3]\n", r"sampling_strategy must be a string .*, got \['first', 3\]"),
        ("datasets:\n  - json_path: a.json\n    name: \"a\\ud800\"\n", r"'name' 'a\\ud800' holds an unpaired surrogate"),
        ("datasets:\n  - json_path: \"a\\0.json\"\n", "holds a NUL character"),
        ("datasets:\n  - json_path: ~no_such_user_here/a.json\n", "cannot expand '~'"),
        ("seed: 18446744073709551616\ndatasets:\n  - json_path: a.json\n", r"'seed' must be an integer in \[0, 18,446,744,073,709,551,615\]"),
        ("seed: 1.5\ndatasets:\n  - json_path: a.json\n", r"'seed' must be an integer .*, got float 1.5"),
        ("datasets:\n  - json_path: a.json\n    weight: " + "9" * 5000 + "\n", r"bad\.yaml: line 3: unreadable YAML value: Exceeds the limit"),
        ("datasets:\n  - json_path: a.json\n    name: 2020-13-45\n", r"bad\.yaml: line 3: unreadable YAML value: month must be in 1..12"),
        ("datasets: &a [*a, [*a, *a], 2020-13-45]\n", r"bad\.yaml: line 1: unreadable YAML value: month"),
        ("datasets: &a [*a]\n", r"datasets\[0\]: expected a mapping with 'json_path', got list"),
        ("datasets:\n  - json_path: a.json\n    weight: " + "[" * 50_000 + "]" * 50_000 + "\n", r"line 3: YAML nested deeper than 64 levels"),
        ("datasets:\n  - json_path: a.json\n  - json_path: b/a.json\n", r"datasets\[1\]: name 'a' is also used by datasets\[0\]"),
        ("datasets: []\n", "'datasets' must be a non-empty list"),
        ("- json_path: a.json\n", "expected a mapping"),
        ("seed: -3\ndatasets:\n  - json_path: a.json\n", "'seed' must be an integer in \\[0, "),
        ("datasets:\n  - json_path: ''\n", "'json_path' must be a non-empty path"),
        ("datasets: [unclosed\n", "invalid YAML"),
    ],
    ids=lambda value: value[:70],
)
def test_errors_name_file_and_key(tmp_path, yaml_text, problem):
    path = write_yaml(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(RecipeError, match=problem) as error:
        load_recipe(path, check_files=False)
    assert str(error.value).startswith(str(path))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="recipe not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    path = write_yaml(tmp_path / "r.yaml", "datasets:\n  - json_path: gone.json\n")
    with pytest.raises(FileNotFoundError, match=r"r\.yaml: datasets\[0\] \(gone\): json_path not found: .*gone\.json"):
        load_recipe(path)
    recipe = load_recipe(path, check_files=False)
    with pytest.raises(FileNotFoundError, match="gone.json"):
        recipe.samples()


def test_undecodable_yaml_names_line_and_byte(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"seed: 1\ndatasets:\n  - json_path: d\xe9.json\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: line 3, byte 17: not valid UTF-8 \(invalid continuation byte"):
        load_recipe(path, check_files=False)
    path.write_bytes(b"\xef\xbb\xbfdatasets:\n  - json_path: d.json\n")
    assert load_recipe(path, check_files=False).datasets[0].name == "d"


def test_planned_samples_are_bounded_before_allocating():
    recipe = parse_recipe({"datasets": [{"json_path": "/d/x.json", "weight": 1000}, {"json_path": "/d/y.json"}]},
                          source="big.yaml")
    with pytest.raises(RecipeError, match=r"big\.yaml: datasets\[0\] \(x\): weight 1000 x 200,000 selected records = "
                                          r"200,000,000 samples; a recipe plans at most 100,000,000"):
        recipe.plan([200_000, 1])
    # Checked on the sizes, before dataset 0's 60 million rows are drawn.
    with pytest.raises(RecipeError, match=r"big\.yaml: datasets\[1\] \(y\) brings the sample list to 110,000,000"):
        recipe.plan([60_000, 50_000_000])
