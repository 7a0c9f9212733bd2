"""lmms-eval's requests as onevision sees them: visuals and contexts -> `Request`, batched generation.

Used by the lmms-eval model (`onevision.infer.lmms_eval_model`); nothing here imports
lmms-eval. `visual_request` reads what a task's `doc_to_visual` returns (PIL images, image
paths, one video path or frame folder) and a context that may be a JSON list of turns;
`Generator` decodes prepared requests in batches of equal generation settings and cuts each
answer at the task's `until` strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from PIL import Image

from onevision.budget import BudgetError
from onevision.data.media import MediaError
from onevision.infer.inputs import Request

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

BAD_INPUT = (MediaError, BudgetError, ValueError, OSError)
"""What a bad document raises: undecodable or missing media (a task's `doc_to_visual` opening a
missing file raises OSError), media over the visual budget, placeholders that do not match."""


def visual_request(context: str, visuals) -> Request:
    """A `Request` from lmms-eval's context and a document's visuals.

    Raises:
        ValueError: a visual of an unreadable type, several videos, or a malformed conversation.
    """
    images, video = [], None
    for visual in [] if visuals is None else (visuals if isinstance(visuals, (list, tuple)) else [visuals]):
        if isinstance(visual, Image.Image):
            images.append(visual)
        elif isinstance(visual, (str, os.PathLike)) and (os.path.isdir(visual) or not str(visual).lower().endswith(IMAGE_EXTENSIONS)):
            if video is not None:
                raise ValueError("onevision reads one video per request; the document gives several")
            video = os.fspath(visual)
        elif isinstance(visual, (str, os.PathLike)):
            images.append(os.fspath(visual))
        else:
            raise ValueError(f"onevision cannot read a visual of type {type(visual).__name__} (PIL images or paths only)")
    turns = conversation(context)
    if turns:
        return Request(turns=turns, images=images, video=video)
    return Request(question=context, images=images, video=video)


def conversation(context: str) -> list[tuple[str, str]]:
    """(role, text) turns of a context that is a JSON list of `{"value": ...}` messages
    alternating user and assistant (lmms-eval's multi-round tasks), else []."""
    if not context.lstrip().startswith("["):
        return []
    try:
        messages = json.loads(context)
    except ValueError:
        return []
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "value" in m for m in messages):
        return []
    if len(messages) % 2 == 0:
        raise ValueError(f"a multi-round context must end with a user message; it has {len(messages)} messages")
    return [("user" if k % 2 == 0 else "assistant", str(m["value"])) for k, m in enumerate(messages)]


def cut(text: str, until: list[str]) -> str:
    """`text` up to the first of the stop strings."""
    for stop in until:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def generation_kwargs(gen_kwargs: dict, default_max: int) -> tuple[dict, list[str]]:
    """Our generation settings and the stop strings from lmms-eval's gen_kwargs."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if not gen_kwargs.get("do_sample", temperature > 0):
        temperature = 0.0
    settings = {
        "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or default_max),
        "temperature": temperature,
        "top_p": float(gen_kwargs.get("top_p") or 1.0),
    }
    return settings, until


class Generator:
    """Collects prepared requests with their gen_kwargs, then answers them in batches.

    Args:
        pipe: the `OneVision` pipeline.
        default_max: max_new_tokens for requests whose gen_kwargs set none.
        batch_size: requests decoded together.
        use_cache: KV cache during generation.
    """

    def __init__(self, pipe, default_max: int, batch_size: int, use_cache: bool = True):
        self.pipe = pipe
        self.default_max = default_max
        self.batch_size = max(1, batch_size)
        self.use_cache = use_cache
        self.groups: dict[str, list[tuple[Any, Any, dict]]] = {}

    def add(self, key, prepared, gen_kwargs: dict | None) -> None:
        """Queue one prepared request under the caller's `key`."""
        gen_kwargs = dict(gen_kwargs or {})
        group = json.dumps({k: v for k, v in gen_kwargs.items() if k != "until"}, sort_keys=True, default=str)
        self.groups.setdefault(group, []).append((key, prepared, gen_kwargs))

    def run(self, bar=None) -> Iterator[tuple[Any, str]]:
        """(key, answer) of every queued request, requests of equal settings batched together."""
        for items in self.groups.values():
            settings, _ = generation_kwargs(items[0][2], self.default_max)
            generation = self.pipe.generation_settings(**settings, use_cache=self.use_cache)
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                outputs = self.pipe.generate_prepared([prepared for _, prepared, _ in chunk], generation)
                for (key, _, gen_kwargs), tokens in zip(chunk, outputs):
                    yield key, cut(self.pipe.decode(tokens), generation_kwargs(gen_kwargs, self.default_max)[1])
                if bar is not None:
                    bar.update(len(chunk))
        self.groups = {}
