"""The fingerprint of a run's starting weights, written beside every training export.

Model soups (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time", arXiv 2203.05482, Sec. 2-3)
average fine-tunes of *one* pretrained start: they lie in one low-loss basin, so their mean
does too. Fine-tunes of different starts do not, and their mean is a broken model that loads
without complaint. The export of every training run therefore records where its weights
started (`onevision_start.json`), and `onevision soup` refuses ingredients whose starts differ.

What is hashed (sha256), by the start a stage config names (`onevision.train.model_init`):

- ``model.init_from``: the bytes of the folder's ``*.safetensors`` files (sorted by name; the
  safetensors header holds every tensor's name, dtype and shape, the rest its content). Reading
  the start once more is cheap beside training from it; a start that is rewritten later (a
  retrained previous stage) gets a new hash, as it should;
- ``model.llm_dir`` + ``model.vision_dir``: both folders' safetensors bytes (projector fresh);
- neither: the preset, the seed that draws its random weights (``loop.seed``) and the
  vocabulary rows the tokenizer gives it, which fix those weights.

    {"format": 1, "kind": "checkpoint", "source": "/abs/runs/stage1_5/hf", "sha256": "9f3c..."}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

START_FILE = "onevision_start.json"
FORMAT = 1
_CHUNK = 1 << 24


class StartError(ValueError):
    """A start cannot be fingerprinted, or a fingerprint file is unreadable."""


def hash_weights(folder: str | Path, digest=None):
    """sha256 (or update `digest`) over the names and bytes of `folder`'s safetensors files.

    Raises:
        StartError: the folder has no ``*.safetensors`` file.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StartError(f"cannot fingerprint the start {folder}: it has no *.safetensors files")
    digest = digest or hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest


def start_fingerprint(init_from: str | None, llm_dir: str | None, vision_dir: str | None, size: str, seed: int, vocab_rows: int) -> dict:
    """The fingerprint of the start a stage config's model section names (see module doc)."""
    if init_from:
        folder = Path(init_from).resolve()
        return _record("checkpoint", str(folder), hash_weights(folder).hexdigest())
    if llm_dir or vision_dir:
        digest = hashlib.sha256()
        for folder in (llm_dir, vision_dir):
            if folder:
                hash_weights(folder, digest)
        source = f"llm {Path(llm_dir).resolve() if llm_dir else None}, vision {Path(vision_dir).resolve() if vision_dir else None}"
        return _record("components", source, digest.hexdigest())
    spec = {"preset": size, "seed": int(seed), "vocab_rows": int(vocab_rows)}
    text = json.dumps(spec, sort_keys=True)
    return _record("random", f"random {size} weights, seed {seed}, {vocab_rows}-row vocabulary", hashlib.sha256(text.encode()).hexdigest())


def _record(kind: str, source: str, sha256: str) -> dict:
    return {"format": FORMAT, "kind": kind, "source": source, "sha256": sha256}


def write_start(folder: str | Path, fingerprint: dict) -> Path:
    """Write `fingerprint` as `folder`/onevision_start.json."""
    path = Path(folder) / START_FILE
    path.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return path


def read_start(folder: str | Path) -> dict | None:
    """The start recorded in `folder`, None when it records none.

    Raises:
        StartError: the file exists but is not a fingerprint.
    """
    path = Path(folder) / START_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StartError(f"{path}: unreadable start fingerprint ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str) or not isinstance(data.get("kind"), str):
        raise StartError(f"{path}: not a start fingerprint (needs 'kind' and 'sha256')")
    return data


def describe_start(start: dict | None) -> str:
    """One phrase for messages: 'checkpoint /runs/stage1_5/hf (sha256 9f3c1a2b...)'."""
    if start is None:
        return "an unknown start (no onevision_start.json)"
    kind = "" if start["kind"] == "random" else f"{start['kind']} "  # its source says 'random ...'
    return f"{kind}{start.get('source', '?')} (sha256 {start['sha256'][:12]}...)"
