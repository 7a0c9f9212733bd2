"""Uniform model soup: the fp32 mean of several fine-tunes' weights, streamed shard by shard.

Wortsman et al. 2022 (arXiv 2203.05482, Sec. 2, "uniform soup"): the soup of ingredients
theta_1..theta_k is (1/k) * sum_i theta_i, which holds when the ingredients are fine-tunes of
one pretrained start (`onevision.checkpoint.fingerprint`). Reference code: mlfoundations/model-soups.

An ingredient is a training export (``runs/<stage>/hf``: config.json, safetensors weights,
tokenizer and processor files), or a run folder holding one (``runs/<stage>``, or an
output_root with a single ``<stage>/hf``). Before a byte of weights is read, every ingredient
must have the first one's config (the differing field is named), tensor names, shapes and start
fingerprint; an ingredient without a fingerprint is refused unless `allow_unknown_start`.

The output follows the first ingredient's shard layout. For each of its shards, each tensor is
read from every ingredient in turn (``safetensors.safe_open``: one tensor at a time), summed in
fp32 in ingredient order and divided by k; so memory holds one output shard in fp32 plus one
tensor, never a whole model. Non-float tensors must be equal in all ingredients and are copied.
The weights keep the ingredients' dtype (they must agree) unless `dtype` is given. Config,
tokenizer and processor files are copied from the first ingredient; `onevision_soup.json`
records the recipe and `onevision_start.json` the shared start. The folder is written beside
`out` and renamed into place, so a failed soup leaves no half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from onevision.checkpoint.fingerprint import (
    START_FILE,
    describe_start,
    read_start,
    write_start,
)

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SOUP_FILE = "onevision_soup.json"
# Fields that say how a file was written, not which model it is.
_IGNORED_FIELDS = {"dtype", "torch_dtype", "transformers_version", "_name_or_path"}
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class SoupError(ValueError):
    """Ingredients that cannot be averaged, named with the reason."""


@dataclass
class Ingredient:
    """One fine-tune to average, its files indexed but no weight read."""

    path: Path
    """The export folder."""
    config: dict
    """Its config.json."""
    start: dict | None
    """Its start fingerprint; None when it records none."""
    shards: dict[str, list[str]]
    """Weight file name -> tensor names in it, in file order."""

    @property
    def file_of(self) -> dict[str, str]:
        return {name: file for file, names in self.shards.items() for name in names}


def find_export(path: str | Path) -> Path:
    """The export folder `path` is or holds: itself, path/hf, or the only path/*/hf.

    Raises:
        SoupError: no export there, or several (named) to choose from.
    """
    path = Path(path)
    if not path.is_dir():
        raise SoupError(f"{path}: no such folder")
    if (path / CONFIG).is_file():
        return path
    if (path / "hf" / CONFIG).is_file():
        return path / "hf"
    found = sorted(p.parent for p in path.glob(f"*/hf/{CONFIG}"))
    if len(found) == 1:
        return found[0]
    if found:
        raise SoupError(f"{path} holds several exports, give one: {[str(p) for p in found]}")
    raise SoupError(f"{path}: no export (config.json) in it, in {path / 'hf'} or in {path}/<stage>/hf")


def read_ingredient(path: str | Path) -> Ingredient:
    """Index an ingredient: config, start and which tensors each weight file holds.

    Raises:
        SoupError: no export, no weights, an index naming missing files, an unreadable config.
    """
    folder = find_export(path)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SoupError(f"{folder / CONFIG}: unreadable ({error})") from None
    if not isinstance(config, dict):
        raise SoupError(f"{folder / CONFIG}: not a JSON object")
    shards: dict[str, list[str]] = {}
    if (folder / INDEX).is_file():
        try:
            weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
            for name, file in weight_map.items():
                shards.setdefault(file, []).append(name)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise SoupError(f"{folder / INDEX}: not a safetensors index ({error})") from None
        missing = sorted(f for f in shards if not (folder / f).is_file())
        if missing:
            raise SoupError(f"{folder / INDEX} names shard files that are not there: {missing}")
        for file, names in shards.items():
            absent = sorted(set(names) - set(_tensor_names(folder / file)))
            if absent:
                raise SoupError(f"{folder / INDEX} puts {absent[:3]} in {file}, which does not hold them")
    else:
        shards = {file.name: _tensor_names(file) for file in sorted(folder.glob("*.safetensors"))}
    if not shards:
        raise SoupError(f"{folder}: no safetensors weights")
    return Ingredient(folder, config, read_start(folder), shards)


def _tensor_names(file: Path) -> list[str]:
    """The tensors a safetensors file holds (its header alone is read)."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as error:
        raise SoupError(f"{file}: not a readable safetensors file ({error})") from None


def config_differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted field, value in a, value in b) for every field that differs, nested dicts walked."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        if key in _IGNORED_FIELDS:
            continue
        left, right = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(left, dict) and isinstance(right, dict):
            out.extend(config_differences(left, right, f"{prefix}{key}."))
        elif left != right:
            out.append((f"{prefix}{key}", left, right))
    return out


def _short(value, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_ingredients(ingredients: list[Ingredient], allow_unknown_start: bool = False) -> dict | None:
    """Refuse ingredients that do not fine-tune one model from one start; return that start.

    Raises:
        SoupError: fewer than one ingredient, the same folder twice, a config field, tensor name
            or shape that differs, starts that differ, or an unknown start without the allowance.
    """
    if not ingredients:
        raise SoupError("a soup needs at least one ingredient")
    folders = [i.path.resolve() for i in ingredients]
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:
        raise SoupError(f"the same export is given twice: {twice} (it would weigh double)")
    # The start first: ingredients of two starts usually differ in config too, and the start says why.
    known = [i for i in ingredients if i.start is not None]
    unknown = [i for i in ingredients if i.start is None]
    for other in known[1:]:
        if other.start["sha256"] != known[0].start["sha256"]:
            raise SoupError(
                f"{other.path} started from {describe_start(other.start)} but {known[0].path} from "
                f"{describe_start(known[0].start)}; averaging needs fine-tunes of one start (Wortsman et al. 2022)"
            )
    first = ingredients[0]
    names = set(first.file_of)
    for other in ingredients[1:]:
        diff = config_differences(first.config, other.config)
        if diff:
            shown = "; ".join(f"{field} is {_short(b)} there but {_short(a)} in {first.path}" for field, a, b in diff[:3])
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            raise SoupError(f"{other.path}: config differs from the first ingredient's: {shown}{more}; a soup averages fine-tunes of one model")
        theirs = set(other.file_of)
        if theirs != names:
            odd = sorted(theirs ^ names)[:3]
            raise SoupError(f"{other.path}: tensor names differ from {first.path}'s, e.g. {odd}")
    if unknown and not allow_unknown_start:
        raise SoupError(
            f"{unknown[0].path} records no start (no {START_FILE}; exports of older runs or of other tools), so "
            "it cannot be checked to share the others' start; pass --allow-unknown-start to average it anyway"
        )
    return known[0].start if known else None


def average(ingredients: list[Ingredient], out: str | Path, dtype: torch.dtype | None = None, metadata: dict | None = None) -> Path:
    """Write the uniform soup of checked `ingredients` to `out` (see module doc); returns `out`.

    Raises:
        SoupError: a tensor's shape or dtype differs between ingredients (dtype: unless `dtype`
            is given), or a non-float tensor differs.
    """
    out = Path(out)
    first = ingredients[0]
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(first.path, tmp, ignore=_not_copied)
    try:
        total = _write_weights(ingredients, tmp, dtype)
        if (first.path / INDEX).is_file():
            weight_map = {name: file for file, names in first.shards.items() for name in names}
            (tmp / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
        if dtype is not None:
            _set_config_dtype(tmp / CONFIG, _DTYPE_NAMES[dtype])
        if metadata is not None:
            (tmp / SOUP_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
            if metadata.get("start") is not None:
                write_start(tmp, metadata["start"])
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _not_copied(folder: str, names: list[str]) -> list[str]:
    """Weights and the run records the soup writes itself are not copied from the first ingredient."""
    return [n for n in names if n.endswith(".safetensors") or n in (INDEX, START_FILE, SOUP_FILE)]


def _write_weights(ingredients: list[Ingredient], folder: Path, dtype: torch.dtype | None) -> int:
    """Average shard by shard into `folder`; returns the bytes of tensor data written."""
    files = [ing.file_of for ing in ingredients]
    total = 0
    for shard, names in ingredients[0].shards.items():
        handles: dict[tuple[int, str], object] = {}
        summed: dict[str, torch.Tensor] = {}
        for name in names:
            summed[name] = _mean_of(name, ingredients, files, handles, dtype)
            total += summed[name].numel() * summed[name].element_size()
        save_file(summed, str(folder / shard), metadata={"format": "pt"})
        # Dropping the handles closes this shard's files (memory-mapped) before the next one.
        del summed, handles
    return total


def _mean_of(name: str, ingredients: list[Ingredient], files: list[dict[str, str]], handles: dict, dtype: torch.dtype | None) -> torch.Tensor:
    """The mean of tensor `name` over the ingredients: summed in fp32 in order, divided by k."""
    acc = stored = None
    for k, ing in enumerate(ingredients):
        key = (k, files[k][name])
        if key not in handles:
            handles[key] = safe_open(str(ing.path / files[k][name]), framework="pt")
        tensor = handles[key].get_tensor(name)
        if acc is None:
            stored, first = tensor.dtype, tensor
            if not tensor.is_floating_point():
                continue
            acc = tensor.to(torch.float32, copy=True)
            continue
        if tensor.shape != first.shape:
            raise SoupError(f"{ing.path}: {name} has shape {list(tensor.shape)}, {ingredients[0].path} has {list(first.shape)}")
        if tensor.dtype != stored and dtype is None:
            raise SoupError(
                f"{ing.path}: {name} is stored as {tensor.dtype}, {ingredients[0].path} as {stored}; give --dtype for the soup"
            )
        if acc is None:
            if not torch.equal(tensor, first):
                raise SoupError(f"{ing.path}: non-float tensor {name} differs from {ingredients[0].path}'s; it cannot be averaged")
            continue
        acc.add_(tensor.to(torch.float32))
    if acc is None:
        return first.contiguous()
    acc.div_(len(ingredients))
    return acc.to(dtype or stored).contiguous()


def _set_config_dtype(path: Path, name: str) -> None:
    """Say the soup's dtype in config.json wherever the first ingredient said its own."""
    config = json.loads(path.read_text())
    for node in (config, config.get("text_config"), config.get("vision_config")):
        if isinstance(node, dict):
            for key in ("dtype", "torch_dtype"):
                if key in node:
                    node[key] = name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def soup_metadata(method: str, ingredients: list[Ingredient], start: dict | None, dtype: torch.dtype | None, **extra) -> dict:
    """What `onevision_soup.json` records: the method, the ingredients and their starts."""
    return {
        "method": method,
        "paper": "Wortsman et al. 2022, Model soups, arXiv 2203.05482",
        "ingredients": [str(i.path) for i in ingredients],
        "start": start,
        "unknown_start": [str(i.path) for i in ingredients if i.start is None],
        "dtype": None if dtype is None else _DTYPE_NAMES[dtype],
        **extra,
    }


def uniform_soup(paths: list[str | Path], out: str | Path, dtype: torch.dtype | None = None, allow_unknown_start: bool = False) -> Path:
    """Check and average `paths` (exports or run folders) into `out`; returns `out`."""
    ingredients = [read_ingredient(p) for p in paths]
    start = check_ingredients(ingredients, allow_unknown_start)
    check_out(out, ingredients)
    meta = soup_metadata("uniform", ingredients, start, dtype, allow_unknown_start=allow_unknown_start)
    return average(ingredients, out, dtype, meta)


def check_out(out: str | Path, ingredients: list[Ingredient]) -> None:
    """Refuse an output folder that is an ingredient or holds one.

    Raises:
        SoupError: `out` would replace an ingredient.
    """
    target = Path(out).resolve()
    for ing in ingredients:
        here = ing.path.resolve()
        if target == here or target in here.parents:
            raise SoupError(f"--out {out} would replace the ingredient {ing.path}")
