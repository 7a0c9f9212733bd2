"""Writing the synthetic world to disk: train/test JSONL per task, media files, manifest.

Layout of a world directory:

    manifest.json                    parameters, tasks (choices, chance), files and counts
    train/<task>.jsonl               LLaVA records, one per line
    test/<task>.jsonl
    media/<split>/<task>/00000.png   images (PNG or JPEG), 00000_1.jpg for a second image
    media/<split>/<task>/00000.mp4   videos (H.264, yuv420p)
    recipes/*.yaml                   mixtures for the curriculum stages (`write_world_recipes`)
    .lock                            serialises builders of the same directory

Media paths in records are relative to the world directory. `build_world` is a cache: when
the directory already holds a manifest with the same parameters and its files, it returns
that manifest without generating anything. Building happens in a private folder that is
moved into place at the end, under a file lock, so concurrent callers (several ranks) and
interrupted runs never leave a half-written world behind a valid manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from onevision.utils.progress import progress_bar
from onevision.world.media import write_image, write_video
from onevision.world.sample import SCENARIOS, make_record
from onevision.world.scene import WorldConfig
from onevision.world.tasks import make_item, tasks_for

WORLD_VERSION = 2
"""Bumped whenever generation changes, so cached worlds are rebuilt."""
SPLITS: tuple[str, ...] = ("train", "test")
_OWNED = ("train", "test", "media", "recipes", "manifest.json")


@dataclass
class WorldManifest:
    """What a world directory holds, as read from (or written to) its manifest.json."""

    root: Path
    """The world directory; every relative path below is relative to it."""
    params: dict
    """The arguments it was built with (seed, sizes, counts, tasks, format version)."""
    tasks: dict[str, dict] = field(default_factory=dict)
    """Task name -> {"scenario", "choices", "chance", "description"}."""
    splits: dict[str, dict[str, dict]] = field(default_factory=dict)
    """Split -> task -> {"jsonl": relative path, "records": count, "media": file count}."""

    def jsonl(self, split: str, task: str) -> Path:
        """Absolute path of the records of `task` in `split`."""
        try:
            return self.root / self.splits[split][task]["jsonl"]
        except KeyError:
            raise KeyError(f"{self.root}: no {split!r} records for task {task!r}") from None

    def jsonl_paths(
        self,
        split: str,
        *,
        scenarios: tuple[str, ...] | None = None,
        tasks: list[str] | None = None,
    ) -> list[Path]:
        """Record files of `split`, optionally only those of `scenarios` and/or `tasks`."""
        return [
            self.jsonl(split, name)
            for name, info in self.tasks.items()
            if (scenarios is None or info["scenario"] in scenarios)
            and (tasks is None or name in tasks)
        ]

    def count(self, split: str, *, scenario: str | None = None) -> int:
        """Number of records in `split`, optionally of one scenario."""
        return sum(
            entry["records"]
            for name, entry in self.splits[split].items()
            if scenario is None or self.tasks[name]["scenario"] == scenario
        )

    def records(self, split: str, task: str) -> list[dict]:
        """The records of `task` in `split`."""
        with open(self.jsonl(split, task), encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def to_json(self) -> dict:
        return {"format": "onevision-world", "params": self.params, "tasks": self.tasks,
                "splits": self.splits}

    @classmethod
    def load(cls, root: str | Path) -> WorldManifest:
        """Read `root`/manifest.json."""
        root = Path(root)
        with open(root / "manifest.json", encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != "onevision-world":
            raise ValueError(f"{root / 'manifest.json'} is not an onevision world manifest")
        return cls(root, data["params"], data["tasks"], data["splits"])

    def is_complete(self) -> bool:
        """True when every record file the manifest lists exists."""
        return all(
            (self.root / entry["jsonl"]).is_file()
            for per_task in self.splits.values()
            for entry in per_task.values()
        )


def _write_split(
    tmp: Path, split: str, task: str, n: int, seed: int, config: WorldConfig, bar: tqdm
) -> dict:
    """Generate and write `n` items of `task`; returns its manifest entry."""
    media_dir = Path("media") / split / task
    (tmp / media_dir).mkdir(parents=True, exist_ok=True)
    (tmp / split).mkdir(exist_ok=True)
    jsonl = Path(split) / f"{task}.jsonl"
    media_count = 0
    with open(tmp / jsonl, "w", encoding="utf-8", newline="\n") as out:
        for i in range(n):
            sample, rng = make_item(task, i, seed=seed, split=split, config=config)
            if sample.scenario == "video":
                paths = [media_dir / f"{i:05d}.mp4"]
                write_video(sample.frames, tmp / paths[0], fps=config.video_fps)
            else:
                paths = []
                for k, image in enumerate(sample.images):
                    ext = "jpg" if rng.random() < config.jpeg_fraction else "png"
                    paths.append(media_dir / (f"{i:05d}.{ext}" if k == 0 else f"{i:05d}_{k}.{ext}"))
                    write_image(image, tmp / paths[-1], jpeg_quality=config.jpeg_quality)
            media_count += len(paths)
            record = make_record(sample, f"{split}-{task}-{i:05d}", [p.as_posix() for p in paths])
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(1)
    return {"jsonl": jsonl.as_posix(), "records": n, "media": media_count}


def build_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 160,
    n_test: int = 24,
    image_size: int = 64,
    frames: int = 8,
    scenarios: tuple[str, ...] = SCENARIOS,
    tasks: tuple[str, ...] | None = None,
    jpeg_fraction: float = 0.5,
    progress: bool = True,
) -> WorldManifest:
    """Write (or reuse) a world of `n_train` train and `n_test` test items *per task*.

    Args:
        out_dir: the world directory (created if missing). Only the entries a world owns
            (train/, test/, media/, recipes/, manifest.json) are replaced on a rebuild.
        seed: root seed; item i of a task depends only on (seed, split, task, i).
        n_train, n_test: items per task in each split.
        image_size: side of images and video frames in pixels (even, for yuv420p video).
        frames: frames per video.
        scenarios: which of "single_image", "multi_image", "video" to generate.
        tasks: restrict to these task names (default: every task of `scenarios`).
        jpeg_fraction: share of images written as JPEG rather than PNG.
        progress: show a progress bar.
    Returns:
        The manifest of the world in `out_dir`.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"build_world: n_train={n_train}, n_test={n_test} must be >= 0")
    if image_size % 2:
        raise ValueError(f"build_world: image_size={image_size} must be even (yuv420p video)")
    config = WorldConfig(image_size=image_size, frames=frames, jpeg_fraction=jpeg_fraction)
    chosen = tasks_for(tuple(scenarios), None if tasks is None else list(tasks))
    params = {
        "version": WORLD_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
        "image_size": image_size, "frames": frames,
        "scenarios": [s for s in SCENARIOS if s in scenarios],
        "tasks": [t.name for t in chosen], "jpeg_fraction": jpeg_fraction,
        "jpeg_quality": config.jpeg_quality, "video_fps": config.video_fps,
    }
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(root, params)
        if cached is not None:
            return cached
        # Holding the lock, no other builder is running: any build folder is a killed run's.
        for stale in root.glob(".build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".build-{os.getpid()}"
        tmp.mkdir()
        counts = {"train": n_train, "test": n_test}
        manifest = WorldManifest(
            root, params,
            tasks={t.name: {"scenario": t.scenario, "choices": list(t.choices), "chance": t.chance,
                            "description": t.description} for t in chosen},
        )
        total = len(chosen) * (n_train + n_test)
        try:
            bar = progress_bar(total=total, desc=f"world {root.name}", disable=not progress, unit="item")
            with bar:
                for split in SPLITS:
                    manifest.splits[split] = {
                        t.name: _write_split(tmp, split, t.name, counts[split], seed, config, bar)
                        for t in chosen
                    }
            _install(tmp, root, manifest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _cached(root: Path, params: dict) -> WorldManifest | None:
    if not (root / "manifest.json").is_file():
        return None
    try:
        manifest = WorldManifest.load(root)
    except (ValueError, KeyError, json.JSONDecodeError):
        return None
    return manifest if manifest.params == params and manifest.is_complete() else None


def _install(tmp: Path, root: Path, manifest: WorldManifest) -> None:
    """Replace the world entries of `root` with those built in `tmp`; manifest last."""
    for name in _OWNED:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in ("train", "test", "media"):
        os.replace(tmp / name, root / name)
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest.to_json(), f, indent=1)
        f.write("\n")
    os.replace(tmp / "manifest.json", root / "manifest.json")
