"""Conversation records: parse LLaVA-format JSON / JSONL into validated, typed `Record`s.

Input, as the official LLaVA / LLaVA-NeXT data writes it (a JSON list, or one object per line
in a ``.jsonl`` file)::

    {"id": "000000000009",
     "image": "coco/train2017/000000000009.jpg",        # or a list of paths, or absent
     "video": "academic_source/NextQA/1164/3238737531.mp4",  # instead of "image"
     "conversations": [{"from": "human", "value": "<image>\\nWhat is on the tray?"},
                       {"from": "gpt", "value": "A meal in a blue tray."}]}

Turns may also be written ``{"role": "user", "content": ...}``. Roles map to
system / user / assistant: ``human``/``user`` -> user, ``gpt``/``assistant`` -> assistant,
``system`` -> system (case-insensitive).

Validation is cheap (no file is opened beyond the record file) and every error names the
file, the line or list index, the record id and the problem. Rules:

* ``id``, when present, is a string or an integer.
* ``conversations`` is a non-empty list; every turn has a known role and string text.
* Text and media paths are valid Unicode (no unpaired surrogate such as a JSON ``"\\ud800"``,
  which no tokenizer can encode); paths hold no NUL character.
* Turn order: optional ``system`` turns first, then user and assistant strictly alternating,
  starting with user and ending with assistant (a trailing question has nothing to supervise).
* Placeholders: one ``<image>`` per image; a video record has exactly one placeholder, written
  ``<image>`` (as the official video data does) or ``<video>``; text-only records have none;
  no placeholder in an assistant turn.

Reading never fails with a bare Python error: a file that is not UTF-8 (a leading BOM is
accepted), is not JSON, nests deeper than the parser can follow (``RecursionError``) or holds
a number too long to convert raises `RecordError` naming the file and the line (plus the byte
or column). JSONL lines are split on ``\\n`` only and a line is blank when it holds only ASCII
whitespace, the same rule `count_records` counts by. Values echoed in messages are shortened
(`reprlib`), so a huge or deeply nested value never makes a huge or failing message.

Text that contains the tokenizer's control tokens (``<|im_end|>``, ``<|im_start|>`` ...) is kept
as written; `onevision.data.template` tokenises it as plain text, so it cannot forge a turn.

Two normalisations, both following the official code's conventions:

* A single-image or video record with no placeholder gets ``"<image>\\n"`` (``"<video>\\n"``
  for video) prepended to its first user turn, as LLaVA-NeXT does for such data.
* A video record's placeholder is rewritten to ``<video>``, the token the model splices video
  features at (transformers' ``video_token_index``).
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
MODALITIES = ("text", "image", "multi_image", "video")
_UTF8_BOM = b"\xef\xbb\xbf"
# A JSON string or a bracket: enough to find where a file nests deepest, once parsing failed.
_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_LONG_DIGITS = re.compile(r"[0-9]{4300,}")
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 3


class RecordError(ValueError):
    """A record (or record file) that breaks the format; the message names file, position and id."""


class Turn(NamedTuple):
    """One message of a conversation."""

    role: str
    text: str


@dataclass
class Record:
    """One validated conversation sample. Media paths are resolved, never opened."""

    id: str
    """The record's ``id`` as a string, or ``"#<index>"`` when it has none."""
    turns: list[Turn]
    """Messages in order; roles are ``system`` / ``user`` / ``assistant``."""
    images: list[str] = field(default_factory=list)
    """Image paths joined onto the media root, in placeholder order."""
    video: str | None = None
    """Video path (a file, or a folder of frames) joined onto the media root."""
    modality: str = "text"
    """``text``, ``image`` (one image), ``multi_image`` (two or more) or ``video``."""
    source: str = ""
    """File the record came from."""
    index: int = 0
    """0-based position of the record in its file (list index, or count of non-blank lines before it)."""
    line: int | None = None
    """1-based line number in a JSONL file; None for a JSON list."""

    @property
    def where(self) -> str:
        """``file:line (id=...)`` or ``file[index] (id=...)``, for messages about this record."""
        return _where(self.source, self.index, self.line, self.id)


def short(value: Any) -> str:
    """`repr` of `value` cut to a few levels and at most 100 characters, for error messages."""
    text = _SHORT.repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def display(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, unpaired surrogates escaped (always printable as UTF-8)."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def raw_record_id(raw: Any) -> str | None:
    """A raw record's ``id`` as a string when it is a string or an integer; None otherwise."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return None


def _where(source: str, index: int, line: int | None, record_id: str | None) -> str:
    place = f"{source}:{line}" if line is not None else f"{source}[{index}]"
    return f"{place} (id={display(record_id)})" if record_id is not None else place


def _check_unicode(text: str, what: str, fail) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        fail(f"{what} holds an unpaired surrogate {text[error.start]!r} at character {error.start}; it is not valid Unicode")


def _text_of(turn: Any, number: int, fail) -> Turn:
    if not isinstance(turn, dict):
        fail(f"turn {number} is a {type(turn).__name__}, expected an object with from/value or role/content")
    if "from" in turn or "value" in turn:
        raw_role, text = turn.get("from"), turn.get("value")
    else:
        raw_role, text = turn.get("role"), turn.get("content")
    if raw_role is None:
        fail(f"turn {number} has no role (expected 'from' or 'role'); keys: {short(sorted(turn))}")
    role = ROLE_ALIASES.get(raw_role.lower()) if isinstance(raw_role, str) else None
    if role is None:
        fail(f"turn {number} has unknown role {short(raw_role)}; known roles: {sorted(ROLE_ALIASES)}")
    if not isinstance(text, str):
        fail(f"turn {number} ({display(raw_role)}) text is {type(text).__name__}, expected a string")
    _check_unicode(text, f"turn {number} ({role}) text", fail)
    return Turn(role, text)


def _check_order(turns: list[Turn], fail) -> None:
    first = 0
    while first < len(turns) and turns[first].role == "system":
        first += 1
    body = turns[first:]
    if not body:
        fail("conversation has only system turns")
    for offset, turn in enumerate(body):
        expected = "user" if offset % 2 == 0 else "assistant"
        if turn.role != expected:
            fail(
                f"turn {first + offset} is {turn.role!r} but {expected!r} was expected: after optional system "
                "turns, user and assistant must alternate, starting with user"
            )
    if body[-1].role != "assistant":
        fail(f"conversation ends with a user turn (turn {len(turns) - 1}); it must end with an assistant turn")


def _media_list(raw: dict, key: str, fail) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item:
            fail(f"{key!r} must be a non-empty path or a list of them, got {short(value)}")
        _check_unicode(item, f"{key!r} path {short(item)}", fail)
        if "\0" in item:
            fail(f"{key!r} path {short(item)} holds a NUL character")
    return items


def parse_record(
    raw: Any,
    *,
    source: str | os.PathLike = "<memory>",
    index: int = 0,
    line: int | None = None,
    media_root: str | os.PathLike | None = None,
) -> Record:
    """Validate one raw record (a dict from JSON) and return it as a `Record`.

    Media paths are joined onto `media_root` (absolute paths stay as they are; with no root
    they stay as written). `source`, `index` and `line` only serve error messages.

    Raises:
        RecordError: the record breaks a rule in the module docstring.
    """
    source = str(source)
    record_id = raw_record_id(raw)

    def fail(problem: str):
        raise RecordError(f"{_where(source, index, line, record_id)}: {problem}")

    if not isinstance(raw, dict):
        fail(f"record is a {type(raw).__name__}, expected a JSON object")
    if raw.get("id") is not None and record_id is None:
        fail(f"'id' is a {type(raw['id']).__name__} ({short(raw['id'])}), expected a string or an integer")
    conversations = raw.get("conversations")
    if conversations is None:
        fail(f"no 'conversations'; keys: {short(sorted(raw))}")
    if not isinstance(conversations, list):
        fail(f"'conversations' is a {type(conversations).__name__}, expected a list")
    if not conversations:
        fail("'conversations' is empty")
    turns = [_text_of(turn, number, fail) for number, turn in enumerate(conversations)]
    _check_order(turns, fail)

    images = _media_list(raw, "image", fail)
    videos = _media_list(raw, "video", fail)
    if len(videos) > 1:
        fail(f"'video' must be one path, got {len(videos)}")
    if images and videos:
        fail(f"has both 'image' ({len(images)}) and 'video'; a record holds one kind of media")

    for number, turn in enumerate(turns):
        if turn.role == "assistant" and (IMAGE_TOKEN in turn.text or VIDEO_TOKEN in turn.text):
            fail(f"turn {number} (assistant) contains a media placeholder; placeholders belong in user turns")
    n_image = sum(turn.text.count(IMAGE_TOKEN) for turn in turns)
    n_video = sum(turn.text.count(VIDEO_TOKEN) for turn in turns)

    first_user = next(number for number, turn in enumerate(turns) if turn.role == "user")
    if videos:
        modality = "video"
        if n_image + n_video > 1:
            fail(f"video record has {n_image} {IMAGE_TOKEN} and {n_video} {VIDEO_TOKEN} placeholders; expected 1")
        if n_image + n_video == 0:
            turns[first_user] = Turn("user", VIDEO_TOKEN + "\n" + turns[first_user].text)
        else:
            turns = [Turn(t.role, t.text.replace(IMAGE_TOKEN, VIDEO_TOKEN)) for t in turns]
    else:
        modality = {0: "text", 1: "image"}.get(len(images), "multi_image")
        if n_video:
            fail(f"has {n_video} {VIDEO_TOKEN} placeholder(s) but no 'video'")
        if modality == "image" and n_image == 0:
            turns[first_user] = Turn("user", IMAGE_TOKEN + "\n" + turns[first_user].text)
        elif n_image != len(images):
            fail(f"has {n_image} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)")

    def resolve(path: str) -> str:
        return os.path.join(media_root, path) if media_root is not None else path

    return Record(
        id=record_id if record_id is not None else f"#{index}",
        turns=turns,
        images=[resolve(p) for p in images],
        video=resolve(videos[0]) if videos else None,
        modality=modality,
        source=source,
        index=index,
        line=line,
    )


def _record_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise RecordError(f"{path}: unsupported record file type {suffix!r}; expected .json (a list) or .jsonl")
    return suffix[1:]


def _decode(data: bytes, path: Path, line: int | None) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); RecordError naming the line and byte when it is not."""
    if line is None and data.startswith(_UTF8_BOM):
        data = b" " * len(_UTF8_BOM) + data[len(_UTF8_BOM):]  # keeps byte offsets; JSON skips spaces
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if line is None:
            line_number = data.count(b"\n", 0, error.start) + 1
            column = error.start - (data.rfind(b"\n", 0, error.start) + 1)
            place = f"{path}: line {line_number}, byte {column + 1} (file byte {error.start})"
        else:
            place = f"{path}:{line}: byte {error.start + 1}"
        raise RecordError(f"{place}: not valid UTF-8 ({error.reason}: {data[error.start:error.end]!r})") from None


def _deepest(text: str) -> tuple[int, int]:
    """(deepest bracket nesting, 1-based line where it is first reached) of JSON `text`."""
    depth = deepest = 0
    at = 0
    for match in _JSON_NESTING.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, match.start()
        elif bracket in "]}":
            depth -= 1
    return deepest, text.count("\n", 0, at) + 1


def _parse_json(text: str, path: Path, line: int | None) -> Any:
    """`json.loads(text)`, with every failure a RecordError naming `path` and the line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if line is None:
            raise RecordError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
        raise RecordError(f"{path}:{line}: invalid JSON at column {error.colno}: {error.msg}") from None
    except RecursionError:
        depth, deep_line = _deepest(text)
        place = f"{path}: line {deep_line}" if line is None else f"{path}:{line}"
        raise RecordError(f"{place}: JSON nested {depth} levels deep, too deep to parse") from None
    except ValueError as error:
        # json turns long digit strings into int and Python refuses beyond 4300 digits.
        if line is None:
            digits = _LONG_DIGITS.search(text)
            place = f"{path}: line {text.count(chr(10), 0, digits.start()) + 1}" if digits else f"{path}"
        else:
            place = f"{path}:{line}"
        raise RecordError(f"{place}: unreadable JSON value: {error}") from None


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of every non-blank line; split on \\n only, blank = ASCII whitespace only."""
    with path.open("rb") as handle:
        for number, data in enumerate(handle, start=1):
            if number == 1 and data.startswith(_UTF8_BOM):
                data = b" " * len(_UTF8_BOM) + data[len(_UTF8_BOM):]  # keeps byte offsets
            if data.strip():
                yield number, data


def iter_raw_records(path: str | os.PathLike) -> Iterator[tuple[int, int | None, Any]]:
    """Yield ``(index, line, raw)`` for every record of a ``.json`` list or ``.jsonl`` file.

    ``line`` is the 1-based line of a JSONL record and None for a JSON list. Blank JSONL lines
    are skipped (they do not count towards ``index``).

    Raises:
        FileNotFoundError: `path` does not exist (the message names it).
        RecordError: a file that is not UTF-8 or not JSON, or nests too deep (with the line),
            or a ``.json`` file that is not a list.
    """
    path = Path(path)
    kind = _record_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file not found: {path}")
    if kind == "json":
        data = _parse_json(_decode(path.read_bytes(), path, None), path, None)
        if not isinstance(data, list):
            raise RecordError(f"{path}: expected a JSON list of records, got a {type(data).__name__}")
        for index, raw in enumerate(data):
            yield index, None, raw
        return
    for index, (number, data) in enumerate(_jsonl_lines(path)):
        yield index, number, _parse_json(_decode(data, path, number), path, number)


def count_records(path: str | os.PathLike) -> int:
    """Number of records in a ``.json`` list or ``.jsonl`` file (JSONL: non-blank lines, not parsed)."""
    path = Path(path)
    if _record_format(path) == "json":
        return sum(1 for _ in iter_raw_records(path))
    if not path.is_file():
        raise FileNotFoundError(f"record file not found: {path}")
    return sum(1 for _ in _jsonl_lines(path))


def load_records(path: str | os.PathLike, media_root: str | os.PathLike | None = None) -> list[Record]:
    """Parse and validate every record of a ``.json`` or ``.jsonl`` file.

    Media paths are joined onto `media_root`, or onto the file's folder when it is None.

    Raises:
        FileNotFoundError: `path` does not exist.
        RecordError: the first bad record (file, line/index, id and problem in the message).
    """
    root = media_root if media_root is not None else Path(path).parent
    return [
        parse_record(raw, source=path, index=index, line=line, media_root=root)
        for index, line, raw in iter_raw_records(path)
    ]
