"""Fuzzing record files and recipes: every input either parses or raises our named error
(`RecordError` / `RecipeError`) whose message starts with the file it came from, never another
exception. Two sources of input: hypothesis strategies that build record and recipe structures
(valid ones, near misses and arbitrary JSON / YAML values), and seeded byte-mutation loops over
valid files (bit flips, cut and repeated ranges, invalid UTF-8, deep nesting, huge numbers).
Hypothesis runs derandomized, so a run is reproducible; the whole file takes ~30 s."""

import json
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onevision.data.recipe import Recipe, RecipeError, load_recipe, parse_recipe
from onevision.data.records import Record, RecordError, count_records, iter_raw_records, load_records, parse_record

RECIPES = sorted((Path(__file__).resolve().parents[1] / "data_recipes").glob("*.yaml"))
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)
# Text that reaches every branch: placeholders, control tokens, surrogates, NUL, private-use characters.
PIECES = st.sampled_from(["<image>", "<video>", "<|im_end|>", "<|im_start|>", "\n", "\ud800", "\x00", "\ue000", "a", " q?"])
TEXTS = st.lists(PIECES, max_size=6).map("".join) | st.text(max_size=10)
ROLES = st.sampled_from(["human", "gpt", "user", "assistant", "system", "GPT", "robot", ""]) | SCALARS
TURNS = st.one_of(
    st.fixed_dictionaries({"from": ROLES, "value": TEXTS | SCALARS}),
    st.fixed_dictionaries({"role": ROLES, "content": TEXTS}),
    JSON_VALUES,
)
MEDIA = st.one_of(st.none(), st.sampled_from(["a.jpg", "", "x\x00.png", "\udc80.jpg"]),
                  st.lists(st.sampled_from(["a.jpg", "b.jpg", ""]), max_size=3), JSON_VALUES)


SAFE_TEXTS = st.lists(st.sampled_from(["<|im_end|>", "<|im_start|>", "\n", "\ue000", "a", " q?", "é"]), max_size=5).map("".join)


@st.composite
def records(draw):
    """A valid record of a drawn modality, then (two times in three) one field replaced by anything."""
    modality = draw(st.sampled_from(["text", "image", "multi_image", "video"]))
    n_images = {"text": 0, "image": 1, "multi_image": draw(st.integers(2, 3)), "video": 0}[modality]
    record = {"id": draw(st.text(max_size=6) | st.integers())}
    if n_images:
        record["image"] = "a.jpg" if n_images == 1 and draw(st.booleans()) else [f"{k}.jpg" for k in range(n_images)]
    if modality == "video":
        record["video"] = "v.mp4"
    marks = "<image>\n" * n_images + draw(st.sampled_from(["", "<video>\n", "<image>"])) * (modality == "video")
    turns = [{"from": "system", "value": draw(SAFE_TEXTS)}] if draw(st.booleans()) else []
    for k in range(draw(st.integers(1, 3))):
        turns.append({"from": draw(st.sampled_from(["human", "user", "Human"])), "value": (marks if k == 0 else "") + draw(SAFE_TEXTS)})
        turns.append({"from": draw(st.sampled_from(["gpt", "assistant"])), "value": draw(SAFE_TEXTS)})
    record["conversations"] = turns
    corruption = draw(st.integers(0, 5))
    if corruption == 1:
        record[draw(st.sampled_from(["id", "image", "video", "conversations"]))] = draw(MEDIA | JSON_VALUES)
    elif corruption == 2:
        turns[draw(st.integers(0, len(turns) - 1))] = draw(TURNS)
    elif corruption == 3:
        turn = turns[draw(st.integers(0, len(turns) - 1))]
        turn["value"] = draw(TEXTS | SCALARS)
    elif corruption == 4:
        del turns[draw(st.integers(0, len(turns) - 1))]
    return record


RECORDS = records() | JSON_VALUES

NUMBERS = st.one_of(st.integers(-5, 2000), st.floats(allow_nan=True, allow_infinity=True), st.integers(10**15, 10**30),
                    st.sampled_from([1.0e12, 0.5, 1000, 1000.0001]), st.text(max_size=4), st.booleans())
STRATEGIES = st.one_of(
    st.sampled_from(["all", "first:3", "end:50%", "random:2", "first:0", "random:100%", "first:1000000001",
                     "end:150%", "first:2.5", "random:nan%", "first:-1", "all:1", "first:" + "9" * 30]),
    st.builds(lambda kind, n, pct: f"{kind}:{n}{pct}", st.sampled_from(["first", "end", "random", "all", "x"]),
              st.integers(0, 10**12) | st.floats(0, 1000), st.sampled_from(["", "%"])),
    SCALARS,
)


VALID_STRATEGIES = st.sampled_from(["all", "first:3", "end:50%", "random:2", "first:0", "random:100%", "end:12.5%"])
ENTRY_VALUES = {
    "json_path": st.sampled_from(["${DATA_ROOT}/x.jsonl", "${UNSET}/y.json", "", "~nobody_xyz/a.json", "a\x00.json"]) | SCALARS,
    "sampling_strategy": STRATEGIES,
    "weight": NUMBERS,
    "name": TEXTS | SCALARS,
    "media_root": st.sampled_from(["m", "/abs", "a\x00b"]) | SCALARS,
    "epochs": SCALARS,
}


@st.composite
def recipes(draw):
    """A valid recipe, then (two times in three) one value replaced by a near miss or anything."""
    entries = []
    for k in range(draw(st.integers(1, 3))):
        entry = {"json_path": f"d{k}.json"}
        if draw(st.booleans()):
            entry["sampling_strategy"] = draw(VALID_STRATEGIES)
        if draw(st.booleans()):
            entry["weight"] = draw(st.sampled_from([0, 0.5, 1, 2.5, 3]))
        entries.append(entry)
    recipe = {"datasets": entries, "seed": draw(st.integers(0, 2**64 - 1))}
    corruption = draw(st.integers(0, 5))
    if corruption in (1, 2, 3):
        key = draw(st.sampled_from(sorted(ENTRY_VALUES)))
        entries[draw(st.integers(0, len(entries) - 1))][key] = draw(ENTRY_VALUES[key])
    elif corruption == 4:
        recipe[draw(st.sampled_from(["seed", "media_root", "datasets", "extra"]))] = draw(NUMBERS | JSON_VALUES)
    elif corruption == 5:
        return draw(JSON_VALUES)
    return recipe


# ------------------------------------------------------------------ checks


def check_records_file(path: Path) -> bool:
    """Strict load, tolerant per-record parse and counting agree; failures are named RecordErrors.
    True when the strict load succeeded."""
    loaded = None
    try:
        loaded = load_records(path)
    except RecordError as error:
        assert str(error).startswith(str(path)), error
    else:
        assert all(isinstance(r, Record) and r.source == str(path) for r in loaded)
    try:
        raws = list(iter_raw_records(path))
    except RecordError as error:
        assert str(error).startswith(str(path)), error
        return False
    assert count_records(path) == len(raws)
    for index, line, raw in raws:
        try:
            parse_record(raw, source=path, index=index, line=line)
        except RecordError as error:
            assert str(error).startswith(f"{path}:{line}" if line is not None else f"{path}[{index}]"), error
    return loaded is not None


def check_recipe_file(path: Path, lengths_seed: int = 0) -> Recipe | None:
    """A recipe loads (and plans) or raises a RecipeError naming the file."""
    try:
        recipe = load_recipe(path, check_files=False, env={"DATA_ROOT": "/data"})
    except RecipeError as error:
        assert str(error).startswith(str(path)), error
        return None
    rng = random.Random(lengths_seed)
    # Small files: MAX_SAMPLES itself is checked in test_recipe.py without allocating.
    lengths = [rng.choice([0, 1, 7, 40]) for _ in recipe.datasets]
    try:
        refs = recipe.plan(lengths)
    except RecipeError as error:
        assert str(error).startswith(str(path)), error
    else:
        assert len(refs) == sum(recipe.dataset_size(k, n) for k, n in enumerate(lengths))
    return recipe


def dump_json(value, kind: str, ensure_ascii: bool) -> str:
    if kind == "json":
        return json.dumps(value, ensure_ascii=ensure_ascii)
    rows = value if isinstance(value, list) else [value]
    return "".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows)


# ------------------------------------------------------------------ hypothesis


@FUZZ
@given(raw=RECORDS)
def test_any_record_structure_parses_or_is_named(raw):
    try:
        record = parse_record(raw, source="fuzz.json", index=4)
    except RecordError as error:
        assert str(error).startswith("fuzz.json[4]"), error
        assert len(str(error)) < 600
    else:
        assert record.modality in ("text", "image", "multi_image", "video")
        assert [t.role for t in record.turns][-1] == "assistant"
        for turn in record.turns:
            turn.text.encode("utf-8")  # no unpaired surrogate gets through


@FUZZ
@given(rows=st.lists(RECORDS, max_size=4) | JSON_VALUES, kind=st.sampled_from(["json", "jsonl"]), ascii_only=st.booleans())
def test_any_record_file_loads_or_is_named(tmp_path, rows, kind, ascii_only):
    path = tmp_path / f"fuzz.{kind}"
    path.write_text(dump_json(rows, kind, ascii_only), encoding="utf-8", errors="surrogatepass")
    check_records_file(path)


@FUZZ
@given(data=recipes())
def test_any_recipe_structure_parses_or_is_named(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable as YAML (surrogates); parse_recipe still sees it below
    finally:
        try:
            parse_recipe(data, base_dir=tmp_path, source="mem.yaml", env={"DATA_ROOT": "/data"})
        except RecipeError as error:
            assert str(error).startswith("mem.yaml"), error
    path.write_text(text, encoding="utf-8")
    check_recipe_file(path)


# ------------------------------------------------------------------ byte mutation


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of `data`."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        end = min(len(data), at + rng.randint(1, 40))
        choice = rng.randrange(10)
        if choice == 0 and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
        elif choice == 1:
            data = data[:at] + data[end:]
        elif choice == 2:
            data = data[:at] + data[at:end] * rng.randint(2, 4) + data[at:]
        elif choice == 3:
            data = data[:at] + rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xef\xbb\xbf"]) + data[at:]
        elif choice == 4:
            depth = rng.choice([10, 2000, 50_000])
            data = data[:at] + b"[" * depth + b"]" * depth * rng.randint(0, 1) + data[at:]
        elif choice == 5:
            data = data[:at] + rng.choice([b"9" * 5000, b"1e999", b"NaN", b"-Infinity", b"1.0e+12"]) + data[at:]
        elif choice == 6:
            data = data[:at] + rng.choice([b'"\\ud800"', b'"\\u0000"', b"\\u2028", b"\r", b"\x1c", b"\x00"]) + data[at:]
        elif choice == 7:
            data = data[:at] + rng.choice([b"<|im_end|>", b"<image>", b"${NOPE}", b"~x/", b"&a [*a]", b"!!python/object:os.system"]) + data[at:]
        elif choice == 8:
            data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[at:]
        else:
            data = data[:at]
    return data


VALID_RECORDS = [
    {"id": "t1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    {"id": 2, "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]},
    {"id": "m", "image": ["a.jpg", "b.jpg"], "conversations": [{"role": "user", "content": "<image><image> é?"},
                                                              {"role": "assistant", "content": "Same."}]},
    {"video": "v.mp4", "conversations": [{"from": "human", "value": "What happens?"}, {"from": "gpt", "value": "Cooking."}]},
]


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_mutated_record_files_load_or_are_named(tmp_path, kind):
    valid = dump_json(VALID_RECORDS, kind, ensure_ascii=False).encode()
    path = tmp_path / f"mutated.{kind}"
    rng = random.Random(kind)
    loaded = 0
    for _ in range(800):
        path.write_bytes(mutate(valid, rng))
        loaded += check_records_file(path)
    assert 0 < loaded < 800  # the loop reaches both outcomes


def test_mutated_recipes_load_or_are_named(tmp_path):
    sources = [p.read_bytes() for p in RECIPES]
    sources.append(b"seed: 3\nmedia_root: m\ndatasets:\n  - json_path: a.json\n    sampling_strategy: random:10%\n"
                   b"    weight: 2.5\n    name: x\n  - {json_path: b.jsonl, sampling_strategy: 'first:5'}\n")
    path = tmp_path / "mutated.yaml"
    rng = random.Random(7)
    loaded = 0
    for step in range(500):
        path.write_bytes(mutate(rng.choice(sources), rng))
        loaded += check_recipe_file(path, step) is not None
    assert 0 < loaded < 500  # the loop reaches both outcomes
