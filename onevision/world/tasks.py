"""The registry of world tasks and seeded, order-independent, balanced sample generation.

Every sample is drawn from its own generator seeded by (seed, split, task, index), so item
`i` of a task is the same whatever else is generated, a larger split extends a smaller one,
and train and test never share a random stream. Answers come in shuffled blocks that hold
each choice once (items 0..k-1, k..2k-1, ... for k choices), so a split whose size is a
multiple of k is exactly balanced and chance is exactly 1/k.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onevision.world import image_tasks, video_tasks
from onevision.world.sample import SCENARIOS, WorldSample
from onevision.world.scene import QUADRANTS, SHAPES, WorldConfig


@dataclass(frozen=True)
class Task:
    """A kind of question with a closed answer set (or free text, for captions)."""

    name: str
    """Unique name, prefixed by its scenario: si_, mi_ or vid_."""
    scenario: str
    """One of SCENARIOS."""
    choices: tuple[str, ...]
    """Every possible answer; empty for free-text answers."""
    make: Callable[[np.random.Generator, WorldConfig, str | None], WorldSample]
    """Draws one sample with the given answer (or a uniformly drawn one for None)."""
    description: str
    """One line for the manifest and --help texts."""

    @property
    def chance(self) -> float | None:
        """Accuracy of a uniform guess; None for free-text answers."""
        return 1.0 / len(self.choices) if self.choices else None


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("si_caption", "single_image", (), image_tasks.si_caption,
             "caption naming size, colour, shape and quadrant of 1-3 objects"),
        Task("si_colour", "single_image", image_tasks.COLOUR_CHOICES, image_tasks.si_colour,
             "colour of the single object"),
        Task("si_shape", "single_image", SHAPES, image_tasks.si_shape,
             "shape of the single object"),
        Task("si_count", "single_image", image_tasks.COUNT_CHOICES, image_tasks.si_count,
             "number of objects (1-4)"),
        Task("si_position", "single_image", QUADRANTS, image_tasks.si_position,
             "quadrant of the named object among 1-3"),
        Task("mi_odd_one_out", "multi_image", image_tasks.ORDINALS, image_tasks.mi_odd_one_out,
             "which of 4 images shows a different colour"),
        Task("mi_total_count", "multi_image", image_tasks.TOTAL_CHOICES,
             image_tasks.mi_total_count, "objects in 2 images together (2-5)"),
        Task("mi_same_colour", "multi_image", image_tasks.YES_NO, image_tasks.mi_same_colour,
             "whether 2 single-object images share a colour"),
        Task("mi_more_objects", "multi_image", image_tasks.ORDINALS[:2],
             image_tasks.mi_more_objects, "which of 2 images has more objects"),
        Task("vid_direction", "video", video_tasks.DIRECTION_CHOICES, video_tasks.vid_direction,
             "direction the single object moves"),
        Task("vid_first_colour", "video", image_tasks.COLOUR_CHOICES,
             video_tasks.vid_first_colour, "colour of the first of 2-3 objects to appear"),
        Task("vid_count", "video", image_tasks.COUNT_CHOICES, video_tasks.vid_count,
             "objects that appear over the clip (1-4)"),
        Task("vid_colour_change", "video", image_tasks.COLOUR_CHOICES,
             video_tasks.vid_colour_change, "colour the object turns into"),
    )
}


def tasks_for(
    scenarios: tuple[str, ...] | list[str] = SCENARIOS,
    tasks: tuple[str, ...] | list[str] | None = None,
) -> list[Task]:
    """Registered tasks of `scenarios` (registry order), restricted to `tasks` if given."""
    unknown_scenarios = set(scenarios) - set(SCENARIOS)
    if unknown_scenarios:
        raise ValueError(f"unknown scenarios {sorted(unknown_scenarios)}; expected {SCENARIOS}")
    if tasks is not None:
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {list(TASKS)}")
    chosen = [
        t for t in TASKS.values() if t.scenario in scenarios and (tasks is None or t.name in tasks)
    ]
    if not chosen:
        raise ValueError(f"no task matches scenarios={list(scenarios)} and tasks={tasks}")
    return chosen


def _code(text: str) -> int:
    return zlib.crc32(text.encode())


def sample_rng(seed: int, split: str, task: str, index: int) -> np.random.Generator:
    """The generator that draws item `index` of `task` in `split`."""
    return np.random.default_rng([seed, _code(split), _code(task), index])


def balanced_answer(seed: int, split: str, task: str, index: int) -> str | None:
    """The answer item `index` is built for: its slot in a shuffled block of all choices."""
    choices = TASKS[task].choices
    if not choices:
        return None
    block, slot = divmod(index, len(choices))
    order = np.random.default_rng([seed, _code(split), _code(task), block, 0xB10C]).permutation(
        len(choices)
    )
    return choices[int(order[slot])]


def make_item(
    task: str, index: int, *, seed: int = 0, split: str = "train", config: WorldConfig | None = None
) -> tuple[WorldSample, np.random.Generator]:
    """Item `index` of `task` in `split`, with its generator (which the caller may go on
    drawing from, e.g. to pick file formats)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {list(TASKS)}")
    rng = sample_rng(seed, split, task, index)
    answer = balanced_answer(seed, split, task, index)
    return TASKS[task].make(rng, config or WorldConfig(), answer), rng


def generate(
    task: str, n: int, *, seed: int = 0, split: str = "train", config: WorldConfig | None = None
) -> list[WorldSample]:
    """Items 0..n-1 of `task` in `split`, in memory (nothing written)."""
    config = config or WorldConfig()
    return [make_item(task, i, seed=seed, split=split, config=config)[0] for i in range(n)]
