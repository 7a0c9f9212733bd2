"""Curriculum mixtures over a built world, written in the official LLaVA-NeXT YAML syntax.

    seed: 0
    media_root: ..
    datasets:
      - json_path: ../train/si_colour.jsonl
        sampling_strategy: all

Entries use only the official `json_path` and `sampling_strategy`; the top level adds the
`seed` (of `random:N`) and `media_root` extensions read by `onevision.data.recipe`. Paths are
relative to the YAML's folder (recipes/), so `..` is the world root, which the records' media
paths are relative to. The stages
follow the paper's curriculum (arXiv 2408.03326, Sec. 4): captions to align the projector,
then single-image knowledge with some captions, then single-image instructions, then the
OneVision mixture of single-image, multi-image and video.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from onevision.world.build import WorldManifest

SINGLE_IMAGE_QA = ("si_colour", "si_shape", "si_count", "si_position")
STAGES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "stage1": (
        "Stage 1, language-image alignment: captions only.",
        [("si_caption", "all")],
    ),
    "stage1_5": (
        "Stage 1.5, high-quality knowledge: single-image questions and half of the captions.",
        [(t, "all") for t in SINGLE_IMAGE_QA] + [("si_caption", "random:50%")],
    ),
    "stage2_si": (
        "Stage 2, single-image instructions.",
        [(t, "all") for t in SINGLE_IMAGE_QA],
    ),
    "stage2_ov": (
        "Stage 2, OneVision: single-image, multi-image and video questions together.",
        [(t, "all") for t in SINGLE_IMAGE_QA]
        + [(t, "all") for t in ("mi_odd_one_out", "mi_total_count", "mi_same_colour",
                                "mi_more_objects")]
        + [(t, "all") for t in ("vid_direction", "vid_first_colour", "vid_count",
                                "vid_colour_change")],
    ),
}
"""Stage name -> (description, [(task, sampling_strategy)]), train split."""


def write_world_recipes(out_dir: str | Path, *, split: str = "train") -> dict[str, Path]:
    """Write recipes/<stage>.yaml (recipes/<stage>_<split>.yaml for another split than
    train) for the world built in `out_dir`.

    Tasks the world was built without are left out of each mixture; a stage with none of its
    tasks is not written. Returns stage name -> YAML path.
    """
    manifest = WorldManifest.load(out_dir)
    if split not in manifest.splits:
        raise ValueError(f"{manifest.root}: no split {split!r}; it has {sorted(manifest.splits)}")
    available = manifest.splits[split]
    folder = manifest.root / "recipes"
    folder.mkdir(exist_ok=True)
    written = {}
    for stage, (description, entries) in STAGES.items():
        datasets = [
            {"json_path": f"../{available[task]['jsonl']}", "sampling_strategy": strategy}
            for task, strategy in entries
            if task in available
        ]
        if not datasets:
            continue
        seed = manifest.params["seed"]
        recipe = {"seed": seed, "media_root": "..", "datasets": datasets}
        header = f"# {description}\n# Synthetic world (seed {seed}), {split} split.\n"
        path = folder / (f"{stage}.yaml" if split == "train" else f"{stage}_{split}.yaml")
        path.write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
        written[stage] = path
    return written
