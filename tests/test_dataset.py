"""Dataset and loader on generated media: samples, lengths known before decoding, time
instructions, and broken inputs skipped and counted while the rest of the epoch is intact."""

import json

import pytest
import torch
from media_factory import make_broken, make_image, make_video

from onevision.data.batch_sampler import ModalityLengthBatchSampler, SamplerConfig
from onevision.data.collate import CollateConfig, Collator
from onevision.data.dataset import DataConfig, OneVisionDataset, Skipped
from onevision.data.loader import LoaderConfig, OneVisionLoader
from onevision.data.recipe import load_recipe
from onevision.data.records import Record, Turn
from onevision.data.template import TemplateConfig
from onevision.model.config import preset
from onevision.tokenizer import train_small_tokenizer

CORPUS = ["What colour is the shape?", "Describe the video.", "It is red.", "A square moves left.", "Hello there."] * 20


def conv(question, answer):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def good_records():
    """Single image, multi-image, video and text-only records (ids start with 'good')."""
    return [
        {"id": "good-si-0", "image": "wide.png", "conversations": conv("<image>\nWhat colour is the shape?", "It is red.")},
        {"id": "good-si-1", "image": "square.jpg", "conversations": conv("What colour?", "Red.")},
        {"id": "good-mi-0", "image": ["wide.png", "square.jpg"], "conversations": conv("<image>\n<image>\nSame?", "No.")},
        {"id": "good-vid-0", "video": "clip.mp4", "conversations": conv("<image>\nDescribe the video.", "A square moves left.")},
        {"id": "good-vid-1", "video": "frames.mp4", "conversations": conv("<video>\nWhat happens?", "Colours change.")},
        {"id": "good-txt-0", "conversations": conv("Hello there.", "Hello.") + conv("And?", "Nothing.")},
        {"id": "good-txt-1", "conversations": conv("Describe the video.", "There is none.")},
    ]


def bad_records(broken):
    """One record per broken input, plus a record without conversations and one with too many placeholders."""
    image = lambda i, path: {"id": i, "image": str(path), "conversations": conv("<image>\nWhat?", "Red.")}
    video = lambda i, path: {"id": i, "video": str(path), "conversations": conv("<video>\nWhat?", "Red.")}
    return [
        image("bad-missing", broken["missing_image"]),
        image("bad-zero-byte", broken["zero_byte_image"]),
        image("bad-truncated-jpeg", broken["truncated_jpeg"]),
        image("bad-html-png", broken["html_png"]),
        video("bad-truncated-mp4", broken["truncated_mp4"]),
        video("bad-text-mp4", broken["text_mp4"]),
        video("bad-audio-only", broken["audio_only_mp4"]),
        {"id": "bad-no-conversations", "image": "wide.png"},
        {"id": "bad-placeholders", "image": "wide.png", "conversations": conv("<image> and <image>?", "Two.")},
    ]


def written_records(recipe_path, prefix="bad-"):
    """The raw records of a recipe written by `write_recipe` whose id starts with `prefix`."""
    records = json.loads((recipe_path.parent / "records.json").read_text())
    return [r for r in records if r["id"].startswith(prefix)]


def write_recipe(folder, with_bad=True):
    """Media, a record file (good records interleaved with bad ones) and a recipe YAML in `folder`."""
    make_image(folder / "wide.png", width=100, height=60)
    make_image(folder / "square.jpg", width=50, height=50)
    make_video(folder / "clip.mp4", frames=12, fps=4)
    make_video(folder / "frames.mp4", frames=5, fps=2, width=40, height=30)
    records = good_records()
    if with_bad:
        bad = bad_records(make_broken(folder / "broken"))
        records = [r for pair in zip(records + [None] * len(bad), bad) for r in pair if r is not None]
    (folder / "records.json").write_text(json.dumps(records))
    (folder / "recipe.yaml").write_text("datasets:\n  - json_path: records.json\n")
    return folder / "recipe.yaml"


@pytest.fixture(scope="module")
def tokenizer():
    return train_small_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return load_recipe(write_recipe(tmp_path_factory.mktemp("data")))


def debug_config(**kwargs):
    return DataConfig(visual=preset("debug").visual, **kwargs)


def test_samples_match_plans_and_lengths_known_ahead(recipe, tokenizer):
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, debug_config(), progress=False)
    lengths = dataset.lengths()
    image_id, video_id = tokenizer.convert_tokens_to_ids(["<image>", "<video>"])
    good = 0
    for index in range(len(dataset)):
        item = dataset[index]
        if isinstance(item, Skipped):
            assert item.id.startswith("bad-")
            continue
        good += 1
        assert item.id.startswith("good-")
        assert item.num_tokens == lengths[index] == len(item.input_ids) == len(item.labels)
        visual = sum(p.tokens for p in item.plans)
        assert int((item.input_ids == image_id).sum() + (item.input_ids == video_id).sum()) == visual
        if item.plans:
            assert item.pixel_values.shape == (sum(p.num_tiles for p in item.plans), 3, 64, 64)
        else:
            assert item.pixel_values is None and item.modality == "text"
    assert good == len(good_records())
    assert dataset.modalities()[:2] == ["image", "image"]


def test_video_time_instruction_uses_sampled_timestamps(recipe, tokenizer):
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, debug_config(time_instruction=True), progress=False)
    index = next(i for i, r in enumerate(dataset.records) if r.id == "good-vid-0")
    sample = dataset[index]
    text = tokenizer.decode([t for t in sample.input_ids.tolist() if t not in tokenizer.convert_tokens_to_ids(["<video>"])])
    # 12 frames at 4 fps sampled at 1 fps: frames 0, 4, 8.
    assert "The video lasts for 3.00 seconds, and 3 frames are uniformly sampled from it." in text
    assert "located at 0.00s,1.00s,2.00s." in text
    assert sample.num_tokens == dataset.lengths()[index]


def test_more_placeholders_than_images_is_skipped_naming_record_and_file(tokenizer, tmp_path):
    make_image(tmp_path / "a.png")
    record = Record(
        id="r7", turns=[Turn("user", "<image> vs <image>?"), Turn("assistant", "Same.")],
        images=[str(tmp_path / "a.png")], modality="image", source="part1.json", index=6, line=7,
    )
    item = OneVisionDataset([record], tokenizer, debug_config())[0]
    assert isinstance(item, Skipped) and item.kind == "placeholders"
    assert item.file == "part1.json" and "part1.json:7 (id=r7)" in item.reason
    assert "2 <image>" in item.reason and "1 images" in item.reason


def test_pixels_in_the_configured_dtype(recipe, tokenizer):
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, debug_config(pixel_dtype="bfloat16"), progress=False)
    index = next(i for i, r in enumerate(dataset.records) if r.id == "good-mi-0")
    reference = OneVisionDataset(dataset.records, tokenizer, debug_config())[index].pixel_values
    pixels = dataset[index].pixel_values
    assert pixels.dtype == torch.bfloat16 and reference.dtype == torch.float32
    assert torch.allclose(pixels.float(), reference, atol=1e-2)


def test_too_long_sample_is_skipped_with_reason(recipe, tokenizer):
    config = debug_config(template=TemplateConfig(max_length=64))
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, config, progress=False)
    index = next(i for i, r in enumerate(dataset.records) if r.id == "good-si-0")
    item = dataset[index]
    assert isinstance(item, Skipped) and item.kind == "too_long" and "visual items are never cut" in item.reason


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_skips_and_counts_bad_samples_and_keeps_the_epoch(recipe, tokenizer, workers):
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, debug_config(), progress=False)
    lengths = dataset.lengths(num_workers=workers)
    assert lengths == OneVisionDataset(dataset.records, tokenizer, debug_config()).lengths()
    sampler = ModalityLengthBatchSampler(lengths, dataset.modalities(), SamplerConfig(max_tokens=1024, window=8))
    collator = Collator(tokenizer.pad_token_id, CollateConfig(pack=True, max_tokens=1024))
    loader = OneVisionLoader(dataset, sampler, collator, LoaderConfig(num_workers=workers, persistent_workers=False))
    seen = []
    for batch in loader:
        assert batch.num_samples > 0
        seen += batch.ids
        assert batch.input_ids.shape[1] <= 1024
    good = sorted(r["id"] for r in good_records())
    assert sorted(seen) == good  # every good sample exactly once
    skipped = sorted(s.id for s in loader.stats.skipped)
    assert skipped == sorted(r.id for r in dataset.records if r.id.startswith("bad-"))
    stats = loader.stats.as_dict()
    assert stats["samples"] == len(good) and stats["skipped"] == 9
    assert stats["skipped_by_kind"]["media"] == 7 and stats["skipped_by_kind"]["invalid"] == 2
    assert stats["modality"] == {"image": 2, "multi_image": 1, "video": 2, "text": 2}
    good_lengths = [n for n, r in zip(dataset.lengths(), dataset.records) if r.id.startswith("good-")]
    assert stats["tokens"] == sum(good_lengths) and "samples/s" in str(loader.stats)


def test_loader_resume_yields_the_rest_of_the_epoch(recipe, tokenizer):
    dataset = OneVisionDataset.from_recipe(recipe, tokenizer, debug_config(), progress=False)
    config = SamplerConfig(batch_size=2, seed=1)
    make = lambda: OneVisionLoader(
        dataset,
        ModalityLengthBatchSampler(dataset.lengths(), dataset.modalities(), config),
        Collator(tokenizer.pad_token_id),
        LoaderConfig(drop_empty=False),
    )
    full = [b.ids for b in make()]
    first = make()
    iterator = iter(first)
    head = [next(iterator).ids for _ in range(3)]
    state = first.state_dict()
    assert state["batches_consumed"] == 3
    second = make()
    second.load_state_dict(state)
    assert head + [b.ids for b in second] == full
