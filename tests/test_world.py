"""The synthetic world on disk: record format, manifest, determinism, cache, recipes, texts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import pytest
from PIL import Image

from onevision.data.recipe import load_recipe
from onevision.world import (
    SCENARIOS,
    TASKS,
    WorldManifest,
    WorldSample,
    build_world,
    caption_pairs,
    generate,
    world_texts,
    write_world_recipes,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return build_world(root, seed=0, n_train=4, n_test=2, progress=False)


def all_records(manifest: WorldManifest) -> list[dict]:
    return [
        record
        for split in manifest.splits
        for task in manifest.tasks
        for record in manifest.records(split, task)
    ]


def media_of(record: dict) -> list[str]:
    if "video" in record:
        return [record["video"]]
    return record["image"] if isinstance(record["image"], list) else [record["image"]]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_records_follow_the_llava_format_with_scoring_fields(world):
    records = all_records(world)
    assert len({r["id"] for r in records}) == len(records) == 13 * 6
    for r in records:
        task = TASKS[r["task"]]
        human, gpt = r["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert gpt["value"] == r["answer"]
        assert r["scenario"] == task.scenario == world.tasks[r["task"]]["scenario"]
        assert r["choices"] == list(task.choices)
        if task.choices:
            assert r["answer"] in r["choices"]
            assert r["chance"] == pytest.approx(1 / len(r["choices"]))
            assert human["value"].endswith("Answer with one of: " + ", ".join(task.choices) + ".")
        else:
            assert r["chance"] is None and r["answer"].endswith(".")
        assert human["value"].count("<image>") == len(media_of(r))
        assert "<image>" not in gpt["value"]
        if r["scenario"] == "single_image":
            assert isinstance(r["image"], str) and "video" not in r
        elif r["scenario"] == "multi_image":
            assert isinstance(r["image"], list) and len(r["image"]) in (2, 4)
        else:
            assert r["video"].endswith(".mp4") and "image" not in r


def test_manifest_counts_match_the_files(world):
    on_disk = WorldManifest.load(world.root)
    assert on_disk.to_json() == world.to_json()
    for split, n in (("train", 4), ("test", 2)):
        assert world.count(split) == 13 * n
        assert world.count(split, scenario="video") == 4 * n
        for task, entry in world.splits[split].items():
            lines = world.jsonl(split, task).read_text().splitlines()
            assert entry["records"] == len(lines) == n
            files = list((world.root / "media" / split / task).iterdir())
            assert entry["media"] == len(files) == sum(len(media_of(json.loads(x))) for x in lines)
    for name, info in world.tasks.items():
        assert info["choices"] == list(TASKS[name].choices)
        assert info["chance"] == (1 / len(info["choices"]) if info["choices"] else None)
    assert set(world.jsonl_paths("test", scenarios=("multi_image",))) == {
        world.root / "test" / f"{t}.jsonl" for t in TASKS if t.startswith("mi_")
    }


def test_every_referenced_media_file_exists_in_its_format(world):
    suffixes = Counter()
    for record in all_records(world):
        for path in media_of(record):
            full = world.root / path
            assert full.is_file(), f"{record['id']}: missing {path}"
            suffixes[full.suffix] += 1
            if full.suffix == ".mp4":
                with av.open(str(full)) as container:
                    stream = container.streams.video[0]
                    codec = stream.codec_context
                    assert (codec.name, codec.pix_fmt) == ("h264", "yuv420p")
                    # 1 fps: LLaVA's default 1-fps frame sampling keeps all 8 frames.
                    assert stream.average_rate == 1
                    assert len(list(container.decode(video=0))) == 8
            else:
                with Image.open(full) as image:
                    assert image.format == {".png": "PNG", ".jpg": "JPEG"}[full.suffix]
                    assert (image.size, image.mode) == ((64, 64), "RGB")
    assert suffixes[".png"] > 10 and suffixes[".jpg"] > 10 and suffixes[".mp4"] == 4 * 6


def test_same_seed_same_bytes_other_seed_other_records(tmp_path):
    kwargs = dict(n_train=2, n_test=1, progress=False)
    a = tree_bytes(build_world(tmp_path / "a", seed=1, **kwargs).root)
    b = tree_bytes(build_world(tmp_path / "b", seed=1, **kwargs).root)
    assert a == b
    c = tree_bytes(build_world(tmp_path / "c", seed=2, **kwargs).root)
    jsonl = [k for k in a if k.endswith(".jsonl")]
    assert len(jsonl) == 26
    assert sum(a[k] != c[k] for k in jsonl) >= 20


def test_items_do_not_depend_on_how_many_are_made():
    for task in ("si_count", "mi_odd_one_out", "vid_direction"):
        short, long = generate(task, 3, seed=4), generate(task, 7, seed=4)
        for x, y in zip(short, long):
            assert x.answer == y.answer
            pixels = [i.tobytes() for i in x.images + x.frames]
            assert pixels == [i.tobytes() for i in y.images + y.frames]
    train, test = generate("si_colour", 8, split="train"), generate("si_colour", 8, split="test")
    assert [s.images[0].tobytes() for s in train] != [s.images[0].tobytes() for s in test]


@pytest.mark.parametrize("task", [t for t in TASKS if TASKS[t].choices])
def test_answers_are_exactly_balanced(task):
    k = len(TASKS[task].choices)
    counts = Counter(s.answer for s in generate(task, 3 * k, seed=9, split="test"))
    assert counts == Counter({c: 3 for c in TASKS[task].choices})


def test_build_is_cached_and_rebuilt_when_parameters_change(tmp_path):
    root = tmp_path / "w"
    first = build_world(root, n_train=3, n_test=1, scenarios=("single_image",), progress=False)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    jsonl_stamp = first.jsonl("train", "si_count").stat().st_mtime_ns
    again = build_world(root, n_train=3, n_test=1, scenarios=("single_image",), progress=False)
    assert again.to_json() == first.to_json()
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    assert again.jsonl("train", "si_count").stat().st_mtime_ns == jsonl_stamp

    other = build_world(root, n_train=2, n_test=1, scenarios=("video",), progress=False)
    assert sorted(other.tasks) == sorted(t for t in TASKS if t.startswith("vid_"))
    assert not (root / "train" / "si_count.jsonl").exists()
    assert not (root / "media" / "train" / "si_count").exists()
    entries = sorted(p.name for p in root.iterdir())
    assert entries == [".lock", "manifest.json", "media", "test", "train"]

    other.jsonl("train", "vid_count").unlink()  # an incomplete world is rebuilt, not reused
    rebuilt = build_world(root, n_train=2, n_test=1, scenarios=("video",), progress=False)
    assert rebuilt.jsonl("train", "vid_count").is_file()


def test_recipes_load_with_the_data_recipe_reader(world):
    written = write_world_recipes(world.root)
    assert sorted(written) == ["stage1", "stage1_5", "stage2_ov", "stage2_si"]
    modalities = {}
    for stage, path in written.items():
        recipe = load_recipe(path)
        records = recipe.records(progress=False)
        for record in records:
            for media in record.images + ([record.video] if record.video else []):
                assert Path(media).is_file(), f"{path}: {record.id} -> {media}"
        modalities[stage] = Counter(r.modality for r in records)
    assert modalities["stage1"] == Counter({"image": 4})
    assert modalities["stage1_5"] == Counter({"image": 4 * 4 + 2})
    # Shape is drawn twice, position three times per pass; in the OneVision mixture also the odd
    # one out and same colour twice, direction four times, and the quickly learnt tasks half the
    # time (4 -> 2).
    assert modalities["stage2_si"] == Counter({"image": 4 + 2 * 4 + 4 + 3 * 4})
    assert modalities["stage2_ov"] == Counter({"image": 2 + 8 + 4 + 12, "multi_image": 8 + 4 + 8 + 4, "video": 16 + 2 + 4 + 2})
    test_recipes = write_world_recipes(world.root, split="test")
    assert test_recipes["stage1"].name == "stage1_test.yaml"


def test_recipes_leave_out_tasks_the_world_lacks(tmp_path):
    build_world(tmp_path, n_train=1, n_test=1, scenarios=("multi_image", "video"), progress=False)
    written = write_world_recipes(tmp_path)
    assert sorted(written) == ["stage2_ov"]
    paths = [spec.json_path.name for spec in load_recipe(written["stage2_ov"]).datasets]
    assert paths == [f"{t}.jsonl" for t in TASKS if not t.startswith("si_")]


def test_texts_and_caption_pairs_are_seeded_and_use_the_world_vocabulary():
    texts = world_texts(300, seed=1)
    assert texts == world_texts(300, seed=1) and texts != world_texts(300, seed=2)
    kinds = Counter(
        "moves" if " moves " in t else "turns" if " turns " in t else "then" if "then" in t
        else "count" if t.startswith("there") else "where" if t.startswith("the ") else "caption"
        for t in texts
    )
    assert set(kinds) == {"moves", "turns", "then", "count", "where", "caption"}
    assert all(t.endswith(".") for t in texts)
    pairs = caption_pairs(6, seed=3)
    again = caption_pairs(6, seed=3)
    assert [c for _, c in pairs] == [c for _, c in again]
    assert [i.tobytes() for i, _ in pairs] == [i.tobytes() for i, _ in again]
    assert all(i.size == (96, 96) for i, _ in caption_pairs(2, seed=0, image_size=96))


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="image_size=63"):
        build_world(tmp_path, image_size=63, progress=False)
    with pytest.raises(ValueError, match="frames=3"):
        build_world(tmp_path, frames=3, progress=False)
    with pytest.raises(ValueError, match="unknown scenarios"):
        build_world(tmp_path, scenarios=("audio",), progress=False)
    with pytest.raises(ValueError, match="unknown tasks"):
        build_world(tmp_path, tasks=("si_colour", "si_smell"), progress=False)
    with pytest.raises(ValueError, match="not in choices"):
        WorldSample("si_colour", "single_image", "q", "purple", ("red", "blue"))
    assert not any(tmp_path.iterdir()) or sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    assert SCENARIOS == ("single_image", "multi_image", "video")
