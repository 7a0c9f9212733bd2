"""Range and type checks of every stage setting, with errors that name the field.

`check_values(get)` runs the table `RULES` (dotted field -> what it must be) over a config,
read through `get(path)`: on the raw mapping before the dataclasses are built (so
`data.sampler.max_tokens=0` or `optim.lr=abc` is reported by its full name, not by the
nested dataclass's own message), and again on the built `StageConfig` (for configs made in
Python). `check_types(config)` then checks every field against its annotation: a `bool` must be
a bool (``checkpoint.resume=maybe`` is refused, not read as true), a `str` a string, and so on.

Errors are `ConfigError("optim.lr: must be a finite number > 0, got nan")`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from onevision.utils.dataclass_io import ConfigError


class _Missing:
    """Not set: the default applies. One object, also after pickling or copying (compared by `is`)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one numeric field must be."""

    kind: type
    """int or float."""
    low: float = -math.inf
    """Smallest allowed value."""
    high: float = math.inf
    """Largest allowed value."""
    low_open: bool = False
    """`low` itself is not allowed."""
    high_open: bool = False
    """`high` itself is not allowed."""
    optional: bool = False
    """None (YAML null) is allowed."""

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        show = (lambda x: str(int(x))) if self.kind is int else (lambda x: f"{x:g}")
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.low_open else '>='} {show(self.low)}")
        if self.high < math.inf:
            parts.append(f"{'<' if self.high_open else '<='} {show(self.high)}")
        text = f"{what} {' and '.join(parts)}".strip()
        return text + (" or null" if self.optional else "")

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        number = _number(value, self.kind)
        ok = number is not None and math.isfinite(number)
        if ok:
            ok = (number > self.low if self.low_open else number >= self.low) and (
                number < self.high if self.high_open else number <= self.high
            )
        if not ok:
            raise ConfigError(f"{name}: must be {self.describe()}, got {value!r}")


def _number(value: Any, kind: type) -> float | None:
    """`value` as a number of `kind`, accepting YAML strings like '1e-3'; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            return None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) else None


POSITIVE_INT = Rule(int, low=1)
NON_NEGATIVE_INT = Rule(int, low=0)
OPTIONAL_POSITIVE_INT = Rule(int, low=1, optional=True)
POSITIVE = Rule(float, low=0, low_open=True)
NON_NEGATIVE = Rule(float, low=0)
UNIT_OPEN = Rule(float, low=0, high=1, high_open=True)

RULES: dict[str, Rule] = {
    "model.head_chunk_rows": POSITIVE_INT,
    "data.pad_to_multiple_of": POSITIVE_INT,
    "data.video_fps": Rule(float, low=0, low_open=True, optional=True),
    "data.max_skipped_share": Rule(float, low=0, high=1),
    "data.skipped_share_after": POSITIVE_INT,
    "data.max_num_tiles": OPTIONAL_POSITIVE_INT,
    "data.template.max_length": POSITIVE_INT,
    "data.sampler.batch_size": POSITIVE_INT,
    "data.sampler.max_tokens": OPTIONAL_POSITIVE_INT,
    "data.sampler.rows_per_step": POSITIVE_INT,
    "data.sampler.window": POSITIVE_INT,
    "data.sampler.seed": NON_NEGATIVE_INT,
    "data.loader.num_workers": NON_NEGATIVE_INT,
    "data.loader.prefetch_factor": POSITIVE_INT,
    "data.loader.timeout": NON_NEGATIVE,
    "optim.lr": POSITIVE,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.eps": POSITIVE,
    "optim.warmup_ratio": UNIT_OPEN,
    "optim.max_grad_norm": NON_NEGATIVE,
    "loop.steps": OPTIONAL_POSITIVE_INT,
    # Fractions of an epoch are a documented use (a quick slice of a big mixture); a value that
    # rounds to no optimizer step is refused when the data size is known (runner.total_steps).
    "loop.epochs": POSITIVE,
    "loop.stop_at": OPTIONAL_POSITIVE_INT,
    "loop.grad_accum": POSITIVE_INT,
    "loop.seed": Rule(int, low=0, high=2**32 - 1),
    "loop.log_every": POSITIVE_INT,
    "loop.eval_every": NON_NEGATIVE_INT,
    "checkpoint.every": NON_NEGATIVE_INT,
    "checkpoint.keep_last": POSITIVE_INT,
    "distributed.zero_stage": Rule(int, low=2, high=3),
    "distributed.timeout_s": POSITIVE_INT,
    "lora.r": POSITIVE_INT,
    "lora.alpha": POSITIVE,
    "lora.dropout": UNIT_OPEN,
    "eval.batches": POSITIVE_INT,
}
GROUP_RULES: dict[str, Rule] = {"lr": POSITIVE, "weight_decay": NON_NEGATIVE}
"""Rules of each entry of optim.groups."""


def check_values(get: Callable[[str], Any]) -> None:
    """Run `RULES` over a config read through `get(dotted_path)` (MISSING: not set, default applies).

    Raises:
        ConfigError: the first field out of range, by name.
    """
    for name, rule in RULES.items():
        value = get(name)
        if value is not MISSING:
            rule.check(name, value)
    betas = get("optim.betas")
    if betas is not MISSING:
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ConfigError(f"optim.betas: must be two numbers in [0, 1), got {betas!r}")
        for i, beta in enumerate(betas):
            UNIT_OPEN.check(f"optim.betas[{i}]", beta)
    # The data order follows loop.seed (the loader replaces the sampler's seed with it), so a
    # sampler seed of its own would be silently ignored: refuse it by name.
    sampler_seed, loop_seed = get("data.sampler.seed"), get("loop.seed")
    if sampler_seed not in (MISSING, 0) and sampler_seed != (0 if loop_seed is MISSING else loop_seed):
        raise ConfigError(
            f"data.sampler.seed: {sampler_seed!r} would be ignored: the data order follows loop.seed "
            f"({0 if loop_seed is MISSING else loop_seed!r}); set loop.seed instead"
        )
    groups = get("optim.groups")
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        label = f"optim.groups[{i}]"
        for key, rule in GROUP_RULES.items():
            value = group.get(key, MISSING) if isinstance(group, dict) else getattr(group, key, MISSING)
            if value is not MISSING:
                rule.check(f"{label}.{key}", value)


def mapping_getter(data: dict) -> Callable[[str], Any]:
    """`get` over nested plain data (a YAML mapping after overrides)."""

    def get(path: str) -> Any:
        node: Any = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
        return node

    return get


def object_getter(config: Any) -> Callable[[str], Any]:
    """`get` over a built dataclass config."""

    def get(path: str) -> Any:
        node = config
        for part in path.split("."):
            node = getattr(node, part, MISSING)
            if node is MISSING:
                return MISSING
        return node

    return get


def check_types(config: Any, where: str = "") -> None:
    """Every field of the (nested) dataclass `config` holds a value of its annotated type.

    Raises:
        ConfigError: naming the field, the expected type and the value.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        name = f"{where}.{f.name}" if where else f.name
        value = getattr(config, f.name)
        if value is MISSING:  # an optional section's field left out (`VisualOverrides`)
            continue
        if dataclasses.is_dataclass(value):
            check_types(value, name)
            continue
        if not _fits(hints[f.name], value):
            raise ConfigError(f"{name}: must be {_type_name(hints[f.name])}, got {value!r}")


def _fits(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    if origin in (list, tuple):
        return "a list"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted.path: leaf}; lists are leaves, empty mappings give nothing."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def check_field_names(names: list[str], data: dict, where: str, extra_sections: tuple[str, ...] = ()) -> None:
    """Each of `names` is a field (dotted) or a section of the plain config `data`.

    Raises:
        ConfigError: naming `where` and the first name that matches nothing.
    """
    known = set()
    for path in flatten(data):
        parts = path.split(".")
        known.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: entries must be field names, got {name!r}")
        if name not in known and not any(name == s or name.startswith(s + ".") for s in extra_sections):
            raise ConfigError(f"{where}: {name!r} names no config field or section")
