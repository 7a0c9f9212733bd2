"""One question of the synthetic world and its LLaVA JSON record.

A `WorldSample` is what a task generator returns: the question, the answer known by
construction, the closed answer set, and the rendered media (images or video frames). Once
the media are written, `make_record` turns it into a record in the official LLaVA format,
with evaluation fields added:

    {"id": "train-si_colour-00003", "image": "media/train/si_colour/00003.png",
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the shape? ..."},
                       {"from": "gpt", "value": "red"}],
     "task": "si_colour", "scenario": "single_image", "answer": "red",
     "choices": ["red", "green", "blue", "yellow"], "chance": 0.25}

Multi-image records carry a list under "image"; videos carry "video". Every image has one
`<image>` placeholder; a video has one, as in the official OneVision data.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

SCENARIOS: tuple[str, ...] = ("single_image", "multi_image", "video")
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class WorldSample:
    """A question with its answer and rendered media, not yet written to disk."""

    task: str
    """Task name, e.g. "si_colour"."""
    scenario: str
    """One of SCENARIOS."""
    question: str
    """The question without placeholders or the answer options."""
    answer: str
    """The answer, known by construction; one of `choices` unless `choices` is empty."""
    choices: tuple[str, ...]
    """The task's closed answer set; empty for free-text answers (captions)."""
    images: tuple[Image.Image, ...] = ()
    """RGB images, one for single_image, 2-4 for multi_image, none for video."""
    frames: tuple[Image.Image, ...] = ()
    """RGB frames of the video; empty unless scenario == "video"."""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"{self.task}: scenario {self.scenario!r} not in {SCENARIOS}")
        if self.choices and self.answer not in self.choices:
            raise ValueError(f"{self.task}: answer {self.answer!r} not in choices {self.choices}")
        n_images, n_frames = len(self.images), len(self.frames)
        ok = {
            "single_image": n_images == 1 and n_frames == 0,
            "multi_image": n_images >= 2 and n_frames == 0,
            "video": n_images == 0 and n_frames >= 1,
        }[self.scenario]
        if not ok:
            raise ValueError(
                f"{self.task}: a {self.scenario} sample got {n_images} images, {n_frames} frames"
            )

    @property
    def chance(self) -> float | None:
        """Accuracy of a uniform guess over `choices`; None for free-text answers."""
        return 1.0 / len(self.choices) if self.choices else None

    @property
    def n_placeholders(self) -> int:
        """`<image>` placeholders in the prompt: one per image, one per video."""
        return len(self.images) if self.images else 1

    def prompt(self) -> str:
        """The human turn: placeholders, then the question, then the options if any."""
        text = f"{IMAGE_TOKEN}\n" * self.n_placeholders + self.question
        if self.choices:
            text += " Answer with one of: " + ", ".join(self.choices) + "."
        return text


def make_record(sample: WorldSample, item_id: str, media: list[str]) -> dict:
    """The LLaVA JSON record of `sample` whose media were written to `media` (paths relative
    to the world's root: one per image, or the video file)."""
    record: dict = {"id": item_id}
    if sample.scenario == "video":
        if len(media) != 1:
            raise ValueError(f"{item_id}: a video record takes 1 media path, got {len(media)}")
        record["video"] = media[0]
    else:
        if len(media) != len(sample.images):
            raise ValueError(f"{item_id}: {len(sample.images)} images but {len(media)} paths")
        record["image"] = media[0] if sample.scenario == "single_image" else list(media)
    record["conversations"] = [
        {"from": "human", "value": sample.prompt()},
        {"from": "gpt", "value": sample.answer},
    ]
    record["task"] = sample.task
    record["scenario"] = sample.scenario
    record["answer"] = sample.answer
    record["choices"] = list(sample.choices)
    record["chance"] = sample.chance
    return record
