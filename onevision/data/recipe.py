"""Data mixture recipes: which record files a stage trains on, how much of each, how often.

A recipe is the official LLaVA-NeXT mixture YAML, read as-is, plus a few optional keys::

    seed: 0                                  # ours: seeds random:N and fractional weights
    media_root: ${DATA_ROOT}/llava_data      # ours: default folder media paths are relative to
    datasets:
      - json_path: ${DATA_ROOT}/llava_instruct/ureader_tr_sft.json
        sampling_strategy: "first:10%"       # all | first:N | end:N | random:N, N a count or N%
        media_root: ${DATA_ROOT}/ureader     # ours, per dataset
        weight: 2.0                          # ours: resample factor (2.0 twice, 0.5 half)
        name: ureader_tr                     # ours: defaults to the file name without suffix

Semantics:

* A percentage selects ``ceil(len * pct / 100)`` records, exactly as the official loader
  (``math.ceil(int(pct) * len / 100)``); we also accept decimals (``2.5%``), computed exactly.
  A count larger than the file selects the whole file (with a logged warning).
* ``random:N`` is seeded: the same seed gives the same subset (in the same, shuffled order)
  on every rank and every run, independent of any global random state. The stream comes from
  ``(seed, crc32(name))``, so moving the data root or reordering datasets keeps the subset.
  The official loader shuffles unseeded.
* ``weight`` w turns the k selected records into ``ceil(w * k)`` samples: every record
  ``floor(w)`` times, then a seeded subset of the rest (in file order). ``0`` drops a dataset.
* The final sample list is the datasets in YAML order, each's selected records in order
  (first/end/all: file order; random: drawn order), then their repeats.
* ``json_path`` and ``media_root`` expand ``${VAR}`` and ``${VAR:-default}`` from the
  environment and ``~``; relative paths are relative to the YAML file's folder. Records'
  media paths are joined onto the dataset's ``media_root``, else the recipe's, else the
  record file's folder.

Bounds (each breach is a `RecipeError` naming the recipe file, the ``datasets[i]`` entry and the
value): ``weight`` is a finite number in [0, 1000] (`MAX_WEIGHT`); a count N is a whole number of
at most 10^9 (`MAX_COUNT`; no record file is larger); a percentage is in [0, 100]; ``seed`` is an
integer in [0, 2^64); the final sample list holds at most 10^8 samples (`MAX_SAMPLES`, about 30
times LLaVA-OneVision's largest stage), checked per dataset before any array is allocated.
Numbers are digits only (``first:1e3``, NaN or ``.inf`` are refused).

Reading the YAML never fails with a bare Python error: a file that is not UTF-8 (the line and
byte are named), not YAML, nests deeper than 64 levels (`MAX_YAML_DEPTH`, the line named; a
recipe needs three, and PyYAML would recurse past Python's limit and slow down) or holds an
unconvertible value (a 5000-digit integer, ``2020-13-45``) raises `RecipeError` naming the
file. Values echoed in messages are shortened.

Unknown keys are errors that name the file and the key. `load_recipe` reads only the YAML
(and, with ``check_files``, checks that the record files exist); `Recipe.samples` and
`Recipe.records` read the record files.
"""

from __future__ import annotations

import logging
import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from onevision.data.records import Record, count_records, load_records, short
from onevision.utils.progress import progress_bar

logger = logging.getLogger(__name__)

RENAMED_RECIPES = {
    "stage1.5.yaml": "stage1_5.yaml",
    "stage2_single_image.yaml": "stage2_si.yaml",
    "stage2_onevision.yaml": "stage2_ov.yaml",
    "stage_video.yaml": "video.yaml",
}
"""Former names of the shipped recipes (data_recipes/) -> their names now, equal to the stage names."""


def renamed_recipe(path: str | os.PathLike) -> Path | None:
    """The shipped recipe a former name now refers to (logged), or None when `path` is no former name."""
    path = Path(path)
    new_name = RENAMED_RECIPES.get(path.name)
    if new_name is None or not path.with_name(new_name).is_file():
        return None
    logger.warning("data recipe %s was renamed %s; reading that", path, path.with_name(new_name))
    return path.with_name(new_name)

RECIPE_KEYS = ("datasets", "seed", "media_root")
DATASET_KEYS = ("json_path", "sampling_strategy", "media_root", "weight", "name")
STRATEGIES = ("all", "first", "end", "random")
MAX_WEIGHT = 1000.0
MAX_COUNT = 10**9
MAX_SAMPLES = 10**8
MAX_SEED = 2**64 - 1
MAX_YAML_DEPTH = 64
_STRATEGY_RE = re.compile(r"^(" + "|".join(STRATEGIES) + r")(?::([0-9]+(?:\.[0-9]+)?)(%?))?$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Salts that give the random:N draw and the weight remainder separate random streams.
_SELECT_STREAM, _WEIGHT_STREAM = 0, 1


class RecipeError(ValueError):
    """A recipe that breaks the format; the message names the YAML file and the key."""


@dataclass(frozen=True)
class SamplingStrategy:
    """A parsed ``sampling_strategy``: which records of a file to keep."""

    kind: str = "all"
    """``all``, ``first``, ``end`` or ``random``."""
    count: int | None = None
    """N when N is a count; None for ``all`` or a percentage."""
    percent: Fraction | None = None
    """N when N is a percentage (0-100], exact; None otherwise."""

    @classmethod
    def parse(cls, text: str) -> SamplingStrategy:
        """Parse ``all``, ``first:N``, ``end:N``, ``random:N`` with N a count or ``N%``.

        Raises:
            ValueError: anything else, a fractional count, a count above `MAX_COUNT`, or a
                percentage above 100.
        """
        if not isinstance(text, str):
            raise ValueError(f"sampling_strategy must be a string such as 'first:1000', got {short(text)}")
        match = _STRATEGY_RE.match(text.strip())
        if match is None:
            raise ValueError(
                f"sampling_strategy {short(text)} is not one of all | first:N | end:N | random:N (N a count or N%)"
            )
        text = text.strip()
        kind, number, is_percent = match.groups()
        if kind == "all":
            if number is not None:
                raise ValueError(f"sampling_strategy {short(text)}: 'all' takes no number")
            return cls()
        if number is None:
            raise ValueError(f"sampling_strategy {short(text)}: {kind!r} needs a number, e.g. {kind}:1000 or {kind}:10%")
        if is_percent:
            if len(number) > 40:
                raise ValueError(f"sampling_strategy {short(text)}: a percentage has at most 40 characters")
            percent = Fraction(number)
            if percent > 100:
                raise ValueError(f"sampling_strategy {short(text)}: a percentage must be at most 100")
            return cls(kind, percent=percent)
        if "." in number:
            raise ValueError(f"sampling_strategy {short(text)}: a count must be a whole number")
        if len(number.lstrip("0")) > len(str(MAX_COUNT)) or int(number) > MAX_COUNT:
            raise ValueError(f"sampling_strategy {short(text)}: a count must be at most {MAX_COUNT:,}")
        return cls(kind, count=int(number))

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}:{self.count}" if self.count is not None else f"{self.kind}:{self.percent}%"

    def size(self, length: int) -> int:
        """How many of `length` records this strategy keeps."""
        if self.kind == "all":
            return length
        if self.percent is not None:
            return math.ceil(self.percent * length / 100)
        return min(self.count, length)

    def select(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """Indices (int64, shape [size(length)]) of the kept records; `rng` is used by ``random`` only."""
        size = self.size(length)
        if self.kind == "end":
            return np.arange(length - size, length, dtype=np.int64)
        if self.kind == "random":
            return rng.permutation(length)[:size].astype(np.int64)
        return np.arange(size, dtype=np.int64)


@dataclass
class DatasetSpec:
    """One entry of a recipe's ``datasets`` list."""

    json_path: Path
    """Record file (.json list or .jsonl), environment-expanded and absolute."""
    sampling: SamplingStrategy = field(default_factory=SamplingStrategy)
    """Parsed ``sampling_strategy`` (default ``all``)."""
    media_root: Path | None = None
    """Folder the records' media paths are relative to; None falls back to the recipe's."""
    weight: float = 1.0
    """Resample factor applied after sampling: 2.0 twice, 0.5 a seeded half, 0 none."""
    name: str = ""
    """Short unique name (default: file name without suffix); also keys the random streams."""


class SampleRef(NamedTuple):
    """One entry of the final sample list: a record of a recipe dataset (a tuple, cheap by the million)."""

    dataset: int
    """Index into `Recipe.datasets`."""
    row: int
    """0-based position of the record in its file (`Record.index`)."""


@dataclass
class Recipe:
    """A parsed mixture recipe. Build with `load_recipe` or `parse_recipe`."""

    datasets: list[DatasetSpec]
    """The datasets, in YAML order."""
    seed: int = 0
    """Seed of every random choice (random:N subsets, fractional weights)."""
    media_root: Path | None = None
    """Default media folder for datasets that name none."""
    source: str = "<recipe>"
    """YAML file the recipe came from, for messages."""

    def _rng(self, dataset: int, stream: int) -> np.random.Generator:
        name_key = zlib.crc32(self.datasets[dataset].name.encode("utf-8"))
        return np.random.default_rng([self.seed, name_key, stream])

    def dataset_size(self, dataset: int, length: int) -> int:
        """How many samples dataset `dataset` contributes, given its file holds `length` records.

        Raises:
            RecipeError: more than `MAX_SAMPLES` (checked before anything is allocated).
        """
        spec = self.datasets[dataset]
        size = spec.sampling.size(length)
        total = math.ceil(Fraction(repr(float(spec.weight))) * size)
        if total > MAX_SAMPLES:
            raise RecipeError(
                f"{self.source}: datasets[{dataset}] ({spec.name}): weight {spec.weight:g} x {size:,} selected "
                f"records = {total:,} samples; a recipe plans at most {MAX_SAMPLES:,}"
            )
        return total

    def check_total(self, total: int, dataset: int, size: int) -> int:
        """`total + size`, the sample count after dataset `dataset` adds `size`.

        Raises:
            RecipeError: the sum exceeds `MAX_SAMPLES` (names the dataset that crosses it).
        """
        if total + size > MAX_SAMPLES:
            raise RecipeError(
                f"{self.source}: datasets[{dataset}] ({self.datasets[dataset].name}) brings the sample list to "
                f"{total + size:,}; a recipe plans at most {MAX_SAMPLES:,}"
            )
        return total + size

    def dataset_rows(self, dataset: int, length: int) -> np.ndarray:
        """Rows (int64, [n]) that dataset `dataset` contributes, given its file holds `length` records.

        Sampling strategy first, then weight; deterministic given the recipe's seed.
        """
        spec = self.datasets[dataset]
        if spec.sampling.count is not None and spec.sampling.count > length:
            logger.warning(
                "%s: dataset %r asks for %s but %s holds %d records; taking all of them",
                self.source, spec.name, spec.sampling, spec.json_path, length,
            )
        total = self.dataset_size(dataset, length)
        chosen = spec.sampling.select(length, self._rng(dataset, _SELECT_STREAM))
        if len(chosen) == 0:
            return chosen
        whole, remainder = divmod(total, len(chosen))
        extra = np.sort(self._rng(dataset, _WEIGHT_STREAM).permutation(len(chosen))[:remainder])
        return np.concatenate([np.tile(chosen, whole), chosen[extra]])

    def plan(self, lengths: Sequence[int]) -> list[SampleRef]:
        """The final ordered sample list, given the number of records in each dataset's file.

        Raises:
            RecipeError: the list would exceed `MAX_SAMPLES` (names the dataset that crosses it).
        """
        if len(lengths) != len(self.datasets):
            raise ValueError(f"{self.source}: got {len(lengths)} lengths for {len(self.datasets)} datasets")
        total = 0
        for dataset, length in enumerate(lengths):
            total = self.check_total(total, dataset, self.dataset_size(dataset, length))
        return [
            SampleRef(dataset, row)
            for dataset, length in enumerate(lengths)
            for row in self.dataset_rows(dataset, length).tolist()
        ]

    def lengths(self) -> list[int]:
        """Number of records in each dataset's file (reads the files; JSONL lines are only counted)."""
        return [count_records(spec.json_path) for spec in self.datasets]

    def samples(self) -> list[SampleRef]:
        """The final ordered sample list; reads the record files to learn their lengths."""
        return self.plan(self.lengths())

    def dataset_media_root(self, dataset: int) -> Path:
        """Folder dataset `dataset`'s media paths are relative to (its own, the recipe's, or its file's)."""
        spec = self.datasets[dataset]
        return spec.media_root or self.media_root or spec.json_path.parent

    def load_dataset(self, dataset: int) -> list[Record]:
        """Every record of dataset `dataset`'s file, parsed and validated, indexed by `SampleRef.row`."""
        return load_records(self.datasets[dataset].json_path, self.dataset_media_root(dataset))

    def records(self, progress: bool = True) -> list[Record]:
        """The final ordered sample list as parsed, validated records (repeats share one object).

        Raises:
            FileNotFoundError: a record file is missing.
            RecordError: a record breaks the format.
        """
        out: list[Record] = []
        for dataset in progress_bar(range(len(self.datasets)), desc="loading records", disable=not progress):
            rows = self.load_dataset(dataset)
            self.check_total(len(out), dataset, self.dataset_size(dataset, len(rows)))
            out.extend(rows[row] for row in self.dataset_rows(dataset, len(rows)))
        return out


def expand_vars(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from `env` (default: the environment).

    Raises:
        KeyError: a variable without default is unset (the message names it).
    """
    env = os.environ if env is None else env

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise KeyError(f"environment variable {name} is not set (or empty); set it, or write ${{{name}:-default}}")

    return _ENV_RE.sub(substitute, text)


def _text(value: str, what: str, fail) -> None:
    """Refuse text a file system or an encoder cannot take: unpaired surrogates, NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        fail(f"{what} holds an unpaired surrogate at character {error.start}; it is not valid Unicode")
    if "\0" in value:
        fail(f"{what} holds a NUL character")


def _path(value: Any, key: str, base_dir: Path, env, fail) -> Path:
    if not isinstance(value, str) or not value.strip():
        fail(f"{key!r} must be a non-empty path string, got {short(value)}")
    try:
        expanded = expand_vars(value, env)
    except KeyError as error:
        fail(f"{key!r} {short(value)}: {error.args[0]}")
    _text(expanded, f"{key!r} {short(expanded)}", fail)
    try:
        path = Path(expanded).expanduser()
    except RuntimeError as error:  # ~user with no such user
        fail(f"{key!r} {short(expanded)}: cannot expand '~': {error}")
    return path if path.is_absolute() else base_dir / path


def _number(value: Any, key: str, low: float, high: float, fail, integer: bool = False) -> None:
    """Refuse anything but a number (an int when `integer`) in [low, high]; NaN and inf included."""
    kinds = (int,) if integer else (int, float)
    what = "an integer" if integer else "a finite number"
    bounds = f"[{low:,}, {high:,}]" if integer else f"[{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, kinds):
        fail(f"{key!r} must be {what} in {bounds}, got {type(value).__name__} {short(value)}")
    # Comparisons (not float()) so a 4000-digit YAML integer is refused, not an OverflowError.
    if not low <= value <= high:
        fail(f"{key!r} must be {what} in {bounds}, got {short(value)}")


def parse_recipe(
    data: Any,
    base_dir: str | os.PathLike = ".",
    source: str = "<recipe>",
    env: Mapping[str, str] | None = None,
) -> Recipe:
    """Build a `Recipe` from the YAML's parsed content; relative paths resolve against `base_dir`.

    Raises:
        RecipeError: wrong structure, an unknown key, a bad strategy/weight/seed, repeated names,
            or an unset environment variable (the message names `source` and the key).
    """
    base_dir = Path(base_dir).absolute()

    def fail(problem: str, entry: int | None = None):
        where = f"{source}: datasets[{entry}]" if entry is not None else source
        raise RecipeError(f"{where}: {problem}")

    if not isinstance(data, dict):
        fail(f"expected a mapping with a 'datasets' list, got {type(data).__name__}")
    for key in data:
        if key not in RECIPE_KEYS:
            fail(f"unknown key {short(key)}; allowed top-level keys: {', '.join(RECIPE_KEYS)}")
    entries = data.get("datasets")
    if not isinstance(entries, list) or not entries:
        fail("'datasets' must be a non-empty list")
    seed = data.get("seed", 0)
    _number(seed, "seed", 0, MAX_SEED, fail, integer=True)
    media_root = None
    if data.get("media_root") is not None:
        media_root = _path(data["media_root"], "media_root", base_dir, env, fail)

    datasets: list[DatasetSpec] = []
    for entry, raw in enumerate(entries):
        def fail_entry(problem: str, entry: int = entry):
            fail(problem, entry)

        if not isinstance(raw, dict):
            fail_entry(f"expected a mapping with 'json_path', got {type(raw).__name__}")
        for key in raw:
            if key not in DATASET_KEYS:
                fail_entry(f"unknown key {short(key)}; allowed dataset keys: {', '.join(DATASET_KEYS)}")
        if "json_path" not in raw:
            fail_entry("missing 'json_path'")
        json_path = _path(raw["json_path"], "json_path", base_dir, env, fail_entry)
        try:
            sampling = SamplingStrategy.parse(raw.get("sampling_strategy", "all"))
        except ValueError as error:
            fail_entry(str(error))
        weight = raw.get("weight", 1.0)
        _number(weight, "weight", 0, MAX_WEIGHT, fail_entry)
        name = raw.get("name", json_path.stem)
        if not isinstance(name, str) or not name:
            fail_entry(f"'name' must be a non-empty string, got {short(name)}")
        _text(name, f"'name' {short(name)}", fail_entry)
        spec_root = None
        if raw.get("media_root") is not None:
            spec_root = _path(raw["media_root"], "media_root", base_dir, env, fail_entry)
        datasets.append(DatasetSpec(json_path, sampling, spec_root, float(weight), name))

    seen: dict[str, int] = {}
    for entry, spec in enumerate(datasets):
        if spec.name in seen:
            fail(f"name {short(spec.name)} is also used by datasets[{seen[spec.name]}]; give one a distinct 'name'", entry)
        seen[spec.name] = entry
    return Recipe(datasets=datasets, seed=seed, media_root=media_root, source=source)


def _decode_yaml(data: bytes, path: Path) -> str:
    """`data` as UTF-8 text (a leading BOM dropped); RecipeError naming the line and byte when it is not."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start + bom
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise RecipeError(
            f"{path}: line {line}, byte {column}: not valid UTF-8 ({error.reason}: {data[start:start + 1]!r})"
        ) from None


def _too_deep(text: str) -> int | None:
    """1-based line where the YAML first nests deeper than `MAX_YAML_DEPTH`, or None.

    Reads yaml's event stream (not recursive) and stops there: PyYAML's scanner slows down
    with every open flow level, so a file of 50,000 '[' must not be read to its end.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return None  # safe_load reports the syntax error with its position
    return None


def _read_yaml(path: Path) -> Any:
    """The YAML file's content; every failure a RecipeError naming `path`."""
    text = _decode_yaml(path.read_bytes(), path)
    line = _too_deep(text)
    if line is not None:
        raise RecipeError(f"{path}: line {line}: YAML nested deeper than {MAX_YAML_DEPTH} levels; a recipe needs three")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML: {error}") from None
    except RecursionError:
        raise RecipeError(f"{path}: YAML nested too deep to read") from None
    except (ValueError, OverflowError) as error:
        # Values yaml resolves but Python cannot build: a 5000-digit integer, a date like 2020-13-45.
        line = _bad_scalar_line(text)
        place = f"{path}: line {line}" if line is not None else str(path)
        raise RecipeError(f"{place}: unreadable YAML value: {error}") from None


def _bad_scalar_line(text: str) -> int | None:
    """1-based line of the first scalar that yaml resolves but cannot build, or None."""
    constructor = yaml.SafeLoader("")
    pending, seen = [yaml.compose(text, Loader=yaml.SafeLoader)], set()
    while pending:
        node = pending.pop(0)
        if id(node) in seen:  # aliases share nodes, and may point at their own ancestors
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node, deep=True)
            except (ValueError, OverflowError):
                return node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            pending.extend(item for pair in node.value for item in pair)
    return None


def load_recipe(
    path: str | os.PathLike,
    check_files: bool = True,
    env: Mapping[str, str] | None = None,
) -> Recipe:
    """Read a recipe YAML. With `check_files`, every record file must exist.

    `env` replaces the environment for ``${VAR}`` expansion (default: `os.environ`).

    Raises:
        FileNotFoundError: the YAML, or (with `check_files`) a record file, is missing.
        RecipeError: the YAML breaks the format (see `parse_recipe`).
    """
    path = Path(path)
    if not path.is_file():
        path = renamed_recipe(path) or path
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    data = _read_yaml(path)
    recipe = parse_recipe(data, base_dir=path.parent, source=str(path), env=env)
    if check_files:
        for entry, spec in enumerate(recipe.datasets):
            if not spec.json_path.is_file():
                raise FileNotFoundError(f"{path}: datasets[{entry}] ({spec.name}): json_path not found: {spec.json_path}")
    return recipe
