"""How well a vision tower's patch features tell the world's shapes apart, per object size.

    python scripts/world_probe.py                       # the demo's pretrained tower (cached)
    python scripts/world_probe.py --tower DIR --small 0.11 --scenes 640

Renders single-object scenes with every shape at each size (`onevision.world.scene`), runs them
through a SigLIP tower (`SiglipVisionModel.from_pretrained`, the demo's by default, pretrained
first if the cache lacks it), takes the hidden states of `--layer` (the layer the model's
projector reads, -2) and fits two linear probes on scenes of both sizes, as the world mixes
them, then scores fresh scenes of each size: on the mean over the patches (what attention that spreads over an object sees) and on all
patches side by side. A shape the probes cannot read is one the decoder cannot be taught.

`--small` / `--large` render those sizes at another fraction of the image side than the world
(`SIZES`), to see where shapes stop being legible. At 0.11 (15 px at 64 px, the world before
it was changed) the tower the demo pretrained on that world read small shapes at 40.8% (mean)
and 54.2% (all patches), large ones at 72.5% and 100% (chance 25%); it read 21 px ones at 66.7%
and 91.7%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import SiglipVisionModel

from onevision.processing import ImageNormalization
from onevision.world.scene import COLOURS, QUADRANTS, SHAPES, SIZES, Scene, WorldObject, place_in_quadrant, render_scene


def scenes(n: int, fraction: float, image_size: int, seed: int) -> tuple[list, torch.Tensor]:
    """`n` single-object scenes (shapes balanced, other attributes random) -> (images, labels)."""
    rng = np.random.default_rng(seed)
    radius = max(3, round(fraction * image_size))
    images, labels = [], []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        x, y = place_in_quadrant(rng, QUADRANTS[int(rng.integers(4))], radius, image_size)
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        images.append(render_scene(Scene((WorldObject(shape, colour, "small", x, y, radius),), image_size)))
        labels.append(i % len(SHAPES))
    return images, torch.tensor(labels)


def features(tower: SiglipVisionModel, images: list, layer: int, norm: ImageNormalization) -> torch.Tensor:
    """Hidden states of `layer` for `images` normalised by `norm`: [N, patches, width]."""
    pixels = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    pixels = (pixels - np.asarray(norm.mean, np.float32)) / np.asarray(norm.std, np.float32)
    with torch.no_grad():
        out = tower(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2), output_hidden_states=True)
    return out.hidden_states[layer]


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, steps: int = 300) -> float:
    """Test accuracy of a standardised linear softmax probe trained with Adam."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    head = torch.nn.Linear(train_x.shape[1], len(SHAPES))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head((train_x - mean) / std), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head((test_x - mean) / std).argmax(1) == test_y).float().mean())


def demo_tower() -> Path:
    """The demo's pretrained tower folder (pretrained now if the cache lacks it)."""
    from onevision.demo import full_config
    from onevision.demo.cache import DemoCache, default_cache_root
    from onevision.demo.steps import DemoSteps

    _, parts, _, _ = DemoSteps(full_config(), DemoCache(default_cache_root()), progress=False).pretrained()
    return parts["tower"].folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--tower", type=Path, help="a SiglipVisionModel folder (default: the demo's pretrained tower)")
    parser.add_argument("--layer", type=int, default=-2, help="hidden state to probe (default -2, what the projector reads)")
    parser.add_argument("--scenes", type=int, default=480, help="training scenes per size; a quarter as many test scenes per size (default 480)")
    parser.add_argument("--small", type=float, default=SIZES["small"], help=f"small half side, fraction of the image (default {SIZES['small']})")
    parser.add_argument("--large", type=float, default=SIZES["large"], help=f"large half side, fraction of the image (default {SIZES['large']})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.scenes < len(SHAPES) * 2:
        parser.error(f"--scenes {args.scenes}: need at least {len(SHAPES) * 2}")
    for name in ("small", "large"):
        if not 0.0 < getattr(args, name) < 0.25:
            parser.error(f"--{name} {getattr(args, name)}: a half side must be in (0, 0.25) of the image side")
    torch.manual_seed(args.seed)
    folder = args.tower or demo_tower()
    if not (Path(folder) / "config.json").is_file():
        print(f"world_probe: {folder}: no config.json, not a transformers model folder", file=sys.stderr)
        return 2
    tower = SiglipVisionModel.from_pretrained(folder).eval()
    norm = ImageNormalization.from_pretrained_dir(folder)
    image_size = tower.config.image_size
    print(f"tower {folder} (layer {args.layer}, {image_size} px, patch {tower.config.patch_size}); shape probes on fresh scenes, chance 25%")
    print(f"{'size':<22}{'mean over patches':>20}{'all patches':>14}")
    # As in the world, one probe serves both sizes: trained on both, scored on each.
    sizes = (("small", args.small), ("large", args.large))
    train = [scenes(args.scenes, fraction, image_size, args.seed + k) for k, (_, fraction) in enumerate(sizes)]
    train_h = torch.cat([features(tower, images, args.layer, norm) for images, _ in train])
    train_y = torch.cat([labels for _, labels in train])
    for k, (name, fraction) in enumerate(sizes):
        test_images, test_y = scenes(max(len(SHAPES), args.scenes // 4), fraction, image_size, args.seed + 10 + k)
        test_h = features(tower, test_images, args.layer, norm)
        mean_acc = probe(train_h.mean(1), train_y, test_h.mean(1), test_y)
        flat_acc = probe(train_h.flatten(1), train_y, test_h.flatten(1), test_y)
        label = f"{name} ({fraction:g}, {2 * max(3, round(fraction * image_size)) + 1} px)"
        print(f"{label:<22}{mean_acc:>19.1%}{flat_acc:>14.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
