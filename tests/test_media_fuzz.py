"""Fuzzing the media loaders: mutated images and videos load as planned or raise MediaError.

Seeds are small valid files (JPEG, PNG, GIF, WebP; H.264 MP4, MPEG-4 Matroska, VP9 WebM,
MJPEG AVI). Mutations flip, overwrite, truncate, splice (a chunk of one seed pasted into
another), duplicate and delete bytes; hypothesis draws them, and a seeded loop adds plain
random ones. Every outcome must be either

* a successful load with the planned shape (images: the size ``image_size`` reads from the
  header; videos: the frames ``sample_frame_indices`` picks from ``video_info``'s frame
  count and rate, which the loader must agree with, at the size computed from its frame
  size), or
* a :class:`MediaError` naming the file,

never another exception, a crash or a hang. Loads run in a worker process, so a decoder that
hangs (each load gets ``ATTEMPT_TIMEOUT_S``) or crashes the process fails the test naming
the input instead of taking pytest down; the worker's address space is capped
(``WORKER_MEMORY``) so a forged size cannot exhaust the machine.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import random
import resource
import tempfile
import traceback

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_factory import make_mjpeg, make_video
from PIL import Image

ATTEMPT_TIMEOUT_S = 20
WORKER_MEMORY = 2 << 30
"""Address space the worker may map beyond what it maps after importing the loaders."""
VIDEO_SIZE = 32
"""Videos are decoded with their longest side at most this, as training would request."""

# ----------------------------------------------------------------------------- worker side


def _start_worker() -> None:
    import onevision.data.media  # noqa: F401  (import before measuring the baseline)

    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + WORKER_MEMORY, mapped + WORKER_MEMORY))


def attempt(kind: str, data: bytes, suffix: str, backend: str) -> tuple:
    """Load ``data`` as an image or video; ("ok", shape, planned), ("media_error", message,
    path) or ("other", traceback). Runs in the worker."""
    from onevision.data.media import (
        MediaError,
        image_size,
        load_image,
        load_video,
        sample_frame_indices,
        video_info,
    )
    from onevision.data.media.resize import output_size

    folder = tempfile.mkdtemp(prefix="fuzz-")
    path = os.path.join(folder, "input" + suffix)
    with open(path, "wb") as handle:
        handle.write(data)
    try:
        if kind == "image":
            width, height = image_size(path)
            image = load_image(path)
            return "ok", (image.size, image.mode), ((width, height), "RGB")
        info = video_info(path)
        clip = load_video(path, num_frames=4, size=VIDEO_SIZE, backend=backend)
        width, height = output_size(info.width, info.height, VIDEO_SIZE)
        indices = sample_frame_indices(info.num_frames, info.fps, num_frames=4)
        planned = (len(indices), height, width, 3, indices, info.num_frames, info.fps)
        return "ok", (*clip.frames.shape, clip.indices, clip.total_frames, clip.fps), planned
    except MediaError as error:
        return "media_error", str(error), error.path == path and path in str(error)
    except BaseException:  # noqa: BLE001 (the point of the fuzzer: report anything else)
        return "other", traceback.format_exc()
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


# ----------------------------------------------------------------------------- test side


@pytest.fixture(scope="module")
def worker():
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker)
    yield pool
    processes = list((pool._processes or {}).values())  # a hung worker would block shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()


def check(worker, kind: str, data: bytes, suffix: str, backend: str = "pyav") -> str:
    """Run one attempt and fail unless it loaded as planned or raised MediaError."""
    future = worker.submit(attempt, kind, data, suffix, backend)
    try:
        outcome = future.result(timeout=ATTEMPT_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"{kind} {suffix} ({len(data)} bytes, {backend}) hung: {data[:64]!r}")
    except concurrent.futures.process.BrokenProcessPool:
        pytest.fail(f"{kind} {suffix} ({len(data)} bytes, {backend}) crashed the process: {data[:64]!r}")
    status = outcome[0]
    assert status != "other", f"{kind} {suffix} ({backend}) raised outside MediaError:\n{outcome[1]}"
    if status == "ok":
        assert outcome[1] == outcome[2], f"{kind} {suffix} loaded {outcome[1]} but planned {outcome[2]}"
    else:
        assert outcome[2], f"MediaError does not name the file: {outcome[1]}"
    return status


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Small valid files by kind and suffix."""
    folder = tmp_path_factory.mktemp("seeds")
    gradient = Image.radial_gradient("L").resize((24, 16)).convert("RGB")
    images = {}
    for suffix, options in ((".jpg", {"quality": 80}), (".png", {}), (".gif", {}), (".webp", {"quality": 60})):
        gradient.save(folder / f"seed{suffix}", **options)
        images[suffix] = (folder / f"seed{suffix}").read_bytes()
    videos = {
        ".mp4": make_video(folder / "seed.mp4", width=32, height=24, frames=8, gop=4, bframes=1),
        ".mkv": make_video(folder / "seed.mkv", width=32, height=24, frames=8, codec="mpeg4"),
        ".webm": make_video(folder / "seed.webm", width=32, height=24, frames=8, codec="vp9"),
        ".avi": make_mjpeg(folder / "seed.avi", width=32, height=24, frames=6, fps=6),
    }
    return {"image": images, "video": {suffix: path.read_bytes() for suffix, path in videos.items()}}


def test_seeds_load_as_planned(worker, seeds):
    for kind, files in seeds.items():
        for suffix, data in files.items():
            for backend in ("pyav", "decord"):
                assert check(worker, kind, data, suffix, backend) == "ok", (kind, suffix, backend)


# A mutation: (operation, position in [0, 1), length or value, donor position in [0, 1)).
MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "truncate", "splice", "duplicate", "delete"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(1, 64),
    st.floats(0, 1, exclude_max=True),
)


def mutate(data: bytes, donor: bytes, mutations) -> bytes:
    """Apply ``mutations`` in order; positions are fractions of the current length."""
    out = bytearray(data)
    for operation, where, amount, donor_where in mutations:
        if not out:
            break
        at = int(where * len(out))
        if operation == "flip":
            out[at] ^= 1 << (amount % 8)
        elif operation == "set":
            out[at : at + 4] = (amount * 0x01010101 + at).to_bytes(8, "little")[:4]
        elif operation == "truncate":
            del out[max(1, at) :]
        elif operation == "splice":
            start = int(donor_where * len(donor))
            out[at : at + amount] = donor[start : start + amount]
        elif operation == "duplicate":
            out[at:at] = out[at : at + amount]
        else:
            del out[at : at + amount]
    return bytes(out)


@pytest.mark.parametrize("kind", ["image", "video"])
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_mutated_media_load_as_planned_or_raise_media_error(worker, seeds, kind, data):
    suffix = data.draw(st.sampled_from(sorted(seeds[kind])), label="seed")
    donor = data.draw(st.sampled_from(sorted(seeds[kind])), label="donor")
    mutations = data.draw(st.lists(MUTATION, min_size=1, max_size=4), label="mutations")
    backend = data.draw(st.sampled_from(["pyav", "decord"]), label="backend") if kind == "video" else "pyav"
    check(worker, kind, mutate(seeds[kind][suffix], seeds[kind][donor], mutations), suffix, backend)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_random_byte_corruption_loop(worker, seeds, kind):
    rng = random.Random(1234)
    outcomes = {"ok": 0, "media_error": 0}
    for _ in range(150):
        suffix = rng.choice(sorted(seeds[kind]))
        data = bytearray(seeds[kind][suffix])
        for _ in range(rng.randint(1, 16)):  # scattered single-byte overwrites
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(1, len(data)) :]
        outcomes[check(worker, kind, bytes(data), suffix)] += 1
    assert outcomes["media_error"] > 0  # the loop does reach the error paths


# Found by this fuzzer: an AVI header cut inside its stream list leaves a stream of unknown
# media type, whose ``Stream.type`` crashed PyAV 15 (a null string dereference).
UNKNOWN_STREAM_AVI = bytes.fromhex(
    "52494646e2250000415649204c495354ec1100006864726c61766968380000000a8b12000000000000000000"
    "1009000006000000010000000000000000000000000000400000000000000000000000000000000000000000"
    "4c495354941000007374726c7374726838000000766964737374726838000000766964734d4a504700000000"
    "00000000000000000100000006000000000000000600000086020000ffffffff000000000000000020001800"
    "7374726628000000"
)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_stream_of_unknown_type_is_a_media_error_not_a_crash(worker, backend):
    assert check(worker, "video", UNKNOWN_STREAM_AVI, ".avi", backend) == "media_error"


def test_harness_fails_on_foreign_exceptions(worker, seeds):
    # The harness itself: an exception other than MediaError (here the ValueError for an
    # unknown backend) must fail the check, not pass it.
    with pytest.raises(AssertionError, match="raised outside MediaError"):
        check(worker, "video", seeds["video"][".mp4"], ".mp4", backend="no-such-backend")
