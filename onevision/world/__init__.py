"""A small procedurally generated world for demos and cross-scenario transfer experiments.

Flat shapes (4 colours, 4 shapes, 2 sizes, one per quadrant) in 64 px images, multi-image
sets and 8-frame videos, with questions whose answers are known by construction and closed
answer sets of 2-4 choices, so a tiny model learns them on a CPU in minutes:

    from onevision.world import build_world, write_world_recipes
    manifest = build_world("runs/world", seed=0, n_train=160, n_test=24)
    write_world_recipes("runs/world")      # runs/world/recipes/stage1.yaml, ...
    manifest.jsonl_paths("test", scenarios=("video",))

Records follow the official LLaVA JSON format plus "task", "scenario", "answer", "choices"
and "chance". `caption_pairs` and `world_texts` give image-caption pairs and sentences for
pretraining the vision tower and the decoder on the same world.
"""

from onevision.world.build import SPLITS, WORLD_VERSION, WorldManifest, build_world
from onevision.world.media import read_video, write_image, write_video
from onevision.world.perceive import Blob, classify_shape, find_objects
from onevision.world.recipes import STAGES, write_world_recipes
from onevision.world.sample import IMAGE_TOKEN, SCENARIOS, WorldSample, make_record
from onevision.world.scene import (
    BACKGROUND,
    COLOURS,
    QUADRANTS,
    SHAPES,
    SIZES,
    Scene,
    WorldConfig,
    WorldObject,
    random_scene,
    render_scene,
)
from onevision.world.tasks import (
    TASKS,
    Task,
    balanced_answer,
    generate,
    make_item,
    sample_rng,
    tasks_for,
)
from onevision.world.text import caption, caption_pairs, world_texts
from onevision.world.video_scene import DIRECTIONS, Track, VideoScene, render_video

__all__ = [
    "BACKGROUND",
    "Blob",
    "COLOURS",
    "DIRECTIONS",
    "IMAGE_TOKEN",
    "QUADRANTS",
    "SCENARIOS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "STAGES",
    "Scene",
    "TASKS",
    "Task",
    "Track",
    "VideoScene",
    "WORLD_VERSION",
    "WorldConfig",
    "WorldManifest",
    "WorldObject",
    "WorldSample",
    "balanced_answer",
    "build_world",
    "caption",
    "caption_pairs",
    "classify_shape",
    "find_objects",
    "generate",
    "make_item",
    "make_record",
    "random_scene",
    "read_video",
    "render_scene",
    "render_video",
    "sample_rng",
    "tasks_for",
    "world_texts",
    "write_image",
    "write_video",
    "write_world_recipes",
]
