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
from tqdm import tqdm

from onevision.data.records import Record, count_records, load_records

logger = logging.getLogger(__name__)

RECIPE_KEYS = ("datasets", "seed", "media_root")
DATASET_KEYS = ("json_path", "sampling_strategy", "media_root", "weight", "name")
STRATEGIES = ("all", "first", "end", "random")
_STRATEGY_RE = re.compile(r"^(" + "|".join(STRATEGIES) + r")(?::(\d+(?:\.\d+)?)(%?))?$")
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
            ValueError: anything else, a fractional count, or a percentage above 100.
        """
        match = _STRATEGY_RE.match(str(text).strip())
        if match is None:
            raise ValueError(
                f"sampling_strategy {text!r} is not one of all | first:N | end:N | random:N (N a count or N%)"
            )
        kind, number, is_percent = match.groups()
        if kind == "all":
            if number is not None:
                raise ValueError(f"sampling_strategy {text!r}: 'all' takes no number")
            return cls()
        if number is None:
            raise ValueError(f"sampling_strategy {text!r}: {kind!r} needs a number, e.g. {kind}:1000 or {kind}:10%")
        if is_percent:
            percent = Fraction(number)
            if percent > 100:
                raise ValueError(f"sampling_strategy {text!r}: a percentage must be at most 100")
            return cls(kind, percent=percent)
        if "." in number:
            raise ValueError(f"sampling_strategy {text!r}: a count must be a whole number")
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
        chosen = spec.sampling.select(length, self._rng(dataset, _SELECT_STREAM))
        if len(chosen) == 0:
            return chosen
        total = math.ceil(Fraction(repr(float(spec.weight))) * len(chosen))
        whole, remainder = divmod(total, len(chosen))
        extra = np.sort(self._rng(dataset, _WEIGHT_STREAM).permutation(len(chosen))[:remainder])
        return np.concatenate([np.tile(chosen, whole), chosen[extra]])

    def plan(self, lengths: Sequence[int]) -> list[SampleRef]:
        """The final ordered sample list, given the number of records in each dataset's file."""
        if len(lengths) != len(self.datasets):
            raise ValueError(f"{self.source}: got {len(lengths)} lengths for {len(self.datasets)} datasets")
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
        for dataset in tqdm(range(len(self.datasets)), desc="loading records", disable=not progress):
            rows = self.load_dataset(dataset)
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


def _path(value: Any, key: str, base_dir: Path, env, fail) -> Path:
    if not isinstance(value, str) or not value.strip():
        fail(f"{key!r} must be a non-empty path string, got {value!r}")
    try:
        expanded = expand_vars(value, env)
    except KeyError as error:
        fail(f"{key!r} {value!r}: {error.args[0]}")
    path = Path(expanded).expanduser()
    return path if path.is_absolute() else base_dir / path


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
            fail(f"unknown key {key!r}; allowed top-level keys: {', '.join(RECIPE_KEYS)}")
    entries = data.get("datasets")
    if not isinstance(entries, list) or not entries:
        fail("'datasets' must be a non-empty list")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        fail(f"'seed' must be a non-negative integer, got {seed!r}")
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
                fail_entry(f"unknown key {key!r}; allowed dataset keys: {', '.join(DATASET_KEYS)}")
        if "json_path" not in raw:
            fail_entry("missing 'json_path'")
        json_path = _path(raw["json_path"], "json_path", base_dir, env, fail_entry)
        try:
            sampling = SamplingStrategy.parse(raw.get("sampling_strategy", "all"))
        except ValueError as error:
            fail_entry(str(error))
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            fail_entry(f"'weight' must be a finite number >= 0, got {weight!r}")
        name = raw.get("name", json_path.stem)
        if not isinstance(name, str) or not name:
            fail_entry(f"'name' must be a non-empty string, got {name!r}")
        spec_root = None
        if raw.get("media_root") is not None:
            spec_root = _path(raw["media_root"], "media_root", base_dir, env, fail_entry)
        datasets.append(DatasetSpec(json_path, sampling, spec_root, float(weight), name))

    seen: dict[str, int] = {}
    for entry, spec in enumerate(datasets):
        if spec.name in seen:
            fail(f"name {spec.name!r} is also used by datasets[{seen[spec.name]}]; give one a distinct 'name'", entry)
        seen[spec.name] = entry
    return Recipe(datasets=datasets, seed=seed, media_root=media_root, source=source)


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
        raise FileNotFoundError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML: {error}") from error
    recipe = parse_recipe(data, base_dir=path.parent, source=str(path), env=env)
    if check_files:
        for entry, spec in enumerate(recipe.datasets):
            if not spec.json_path.is_file():
                raise FileNotFoundError(f"{path}: datasets[{entry}] ({spec.name}): json_path not found: {spec.json_path}")
    return recipe
