"""Benchmark: decoding a few uniformly sampled frames of a video, ours against two baselines.

Run from the repository root:

    python scripts/bench_video_decode.py                  # 480p and 1080p, 10 s and 3 min
    python scripts/bench_video_decode.py --quick          # 2 s and 20 s clips, a smoke run
    python scripts/bench_video_decode.py --cache /tmp/vc  # keep the generated clips

Clips are H.264 MP4s written with PyAV (libx264 "veryfast", 30 fps, a keyframe every 250
frames, B-frames on: what a typical web video looks like to a decoder), showing a textured
still background with a small moving square, so that generating a 3-minute 1080p clip takes
about a minute. Generated clips are kept in ``--cache`` (a temporary folder by default).

For every clip and frame count (8, 16, 32, uniform as ``np.linspace(0, N-1, n, dtype=int)``)
it times, in this process, one after the other:

* ours: ``load_video(path, num_frames=n, size=384)``, the default backend (PyAV with
  keyframe seeking, non-reference frames skipped, scaling in swscale);
* ours(decord): the same with ``backend="decord"`` (VideoReader scaling in FFmpeg), for
  comparison;
* decord: ``VideoReader(path).get_batch(indices)`` at full size (LLaVA-NeXT's loader);
* PyAV: decode every frame in order (threads on) and keep the sampled ones as RGB arrays.

Each time is the best of ``--repeat`` runs and includes opening the file. Two tables give
wall-clock and CPU seconds (summed over the process's threads: the work done, steadier than
wall-clock on a shared machine) and the ratio best-baseline / ours (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import av
import numpy as np
from tqdm import tqdm

from onevision.data.media import load_video

try:
    import decord
except ImportError:
    decord = None


@dataclass
class BenchConfig:
    """What to generate and time."""

    quick: bool = False
    """Short clips (2 s, 20 s) for a smoke run."""
    cache: str | None = None
    """Folder to keep generated clips in (reused when present); a temporary folder if None."""
    repeat: int = 3
    """Timed runs per measurement; the best is reported."""
    frame_counts: tuple[int, ...] = (8, 16, 32)
    """Frames sampled uniformly per clip."""
    max_side: int = 384
    """Longest side our loader decodes at (the vision tower's input size)."""


RESOLUTIONS = {"480p": (854, 480), "1080p": (1920, 1080)}
FPS = 30
GOP = 250


def make_clip(path: str, width: int, height: int, seconds: float) -> None:
    """Write an H.264 clip: textured still background, a 96-pixel square moving across it."""
    frames = round(seconds * FPS)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    luma = 64 + 96 * xs / width + 48 * ys / height + rng.integers(-12, 12, (height, width))
    luma = np.clip(luma, 16, 235).astype(np.uint8)
    chroma_u = np.full((height // 2, width // 2), 110, np.uint8)
    chroma_v = np.full((height // 2, width // 2), 150, np.uint8)
    side = 96
    tmp_path = path + ".part"
    with av.open(tmp_path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "g": str(GOP),
            "keyint_min": str(GOP),
            "sc_threshold": "0",
        }
        for index in tqdm(range(frames), desc=os.path.basename(path), leave=False):
            y = luma.copy()
            left = (index * 7) % (width - side)
            top = (index * 3) % (height - side)
            y[top : top + side, left : left + side] = 40 + (index * 5) % 180
            planes = np.concatenate([y.reshape(-1), chroma_u.reshape(-1), chroma_v.reshape(-1)])
            frame = av.VideoFrame.from_ndarray(
                planes.reshape(height * 3 // 2, width), format="yuv420p"
            )
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp_path, path)


def decord_full_size(path: str, count: int) -> np.ndarray:
    """Baseline: decord at full size, as LLaVA-NeXT's process_video_with_decord reads."""
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    indices = np.linspace(0, len(reader) - 1, count, dtype=int).tolist()
    return reader.get_batch(indices).asnumpy()


def pyav_full_decode(path: str, count: int) -> np.ndarray:
    """Baseline: PyAV decodes every frame in order and keeps the sampled ones."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        wanted = np.linspace(0, total - 1, count, dtype=int).tolist()
        targets = set(wanted)
        kept: dict[int, np.ndarray] = {}
        for position, frame in enumerate(container.decode(stream)):
            if position in targets:
                kept[position] = frame.to_ndarray(format="rgb24")
            if position >= wanted[-1]:
                break
    return np.stack([kept[i] for i in wanted])


def best_times(function, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (all threads of this process) over ``repeat`` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def format_table(title: str, rows: list[tuple[str, int, dict[str, float]]]) -> str:
    names = list(rows[0][2])
    lines = [title, f"{'clip':<13} {'n':>3} " + " ".join(f"{n:>12}" for n in names) + "  speedup"]
    for clip, count, times in rows:
        baseline = min(times[name] for name in ("decord", "pyav") if name in times)
        cells = " ".join(f"{times[name]:>11.3f}s" for name in names)
        lines.append(f"{clip:<13} {count:>3} {cells} {baseline / times['ours']:>7.2f}x")
    return "\n".join(lines)


def run(config: BenchConfig) -> None:
    durations = {"2s": 2.0, "20s": 20.0} if config.quick else {"10s": 10.0, "3min": 180.0}
    cache = config.cache or tempfile.mkdtemp(prefix="bench_video_")
    os.makedirs(cache, exist_ok=True)
    clips = {}
    for res_name, (width, height) in RESOLUTIONS.items():
        for dur_name, seconds in durations.items():
            path = os.path.join(cache, f"bench_{res_name}_{dur_name}.mp4")
            if not os.path.exists(path):
                make_clip(path, width, height, seconds)
            clips[f"{res_name} {dur_name}"] = path

    side = config.max_side
    methods = {
        "ours": lambda p, n: load_video(p, num_frames=n, size=side).frames,
        "ours(decord)": lambda p, n: (
            load_video(p, num_frames=n, size=side, backend="decord").frames
        ),
        "decord": decord_full_size,
        "pyav": pyav_full_decode,
    }
    if decord is None:
        for name in ("ours(decord)", "decord"):
            methods.pop(name)
    walls, cpus = [], []
    jobs = [(clip, count) for clip in clips for count in config.frame_counts]
    for clip, count in tqdm(jobs, desc="timing"):
        path = clips[clip]
        measured = {
            name: best_times(lambda fn=fn: fn(path, count), config.repeat)  # noqa: B023
            for name, fn in methods.items()
        }
        walls.append((clip, count, {name: wall for name, (wall, _) in measured.items()}))
        cpus.append((clip, count, {name: cpu for name, (_, cpu) in measured.items()}))
    note = f"best of {config.repeat}; speedup = best baseline (decord, pyav) / ours"
    print(f"\nclips in {cache}")
    print(format_table(f"wall-clock seconds, {note}", walls))
    print(format_table(f"\nCPU seconds (all threads), {note}", cpus))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short clips for a smoke run")
    parser.add_argument("--cache", default=None, help="folder to keep generated clips in")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per measurement (best kept)"
    )
    args = parser.parse_args(argv)
    run(BenchConfig(quick=args.quick, cache=args.cache, repeat=args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
