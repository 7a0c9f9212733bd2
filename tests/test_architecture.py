"""The dependency direction of docs/architecture.md, checked on the source.

Every module of `onevision/` and `scripts/` is parsed (not imported) and each import is
resolved to the top-level part of `onevision` it reaches: `import` and `from ... import`
statements anywhere in the file (inside functions too), plus whole-string module paths such as
the lazy-import tables of `onevision.model` and `onevision.infer`. The rules:

- the budget planner is pure geometry: no other part of onevision, no torch, no transformers;
- data (and processing, the pixel side of the plan) never reaches the model, its checkpoints,
  training or inference;
- the model uses the plan, never data, processing, training, inference or checkpoint loading;
- training and inference orchestrate model + data; neither imports the other, nor the
  experiments built on them (`demo`, `soup`);
- nothing imports the CLI (`onevision/__main__.py` is the CLI's own entry point).

`KNOWN_EXCEPTIONS` lists the edges that break a rule today, each with the follow-up that removes
it; a listed edge that no longer exists fails the test, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (importing part, imported part or third-party top-level module) -> the rule it breaks.
FORBIDDEN: dict[str, dict[str, str]] = {
    "budget": {
        **{part: "the budget planner imports no other part of onevision (pure geometry)"
           for part in ("model", "data", "processing", "checkpoint", "train", "infer", "demo", "world",
                        "tokenizer", "visual_batch", "utils", "cli")},
        "torch": "the budget planner is pure geometry: no torch",
        "transformers": "the budget planner is pure geometry: no transformers",
    },
    "data": {
        part: "data uses the planner, never the model's modules or what builds on them"
        for part in ("model", "checkpoint", "train", "infer", "demo")
    },
    "processing": {
        part: "processing (pixels from a plan) is data code: never the model or what builds on it"
        for part in ("model", "checkpoint", "data", "train", "infer", "demo")
    },
    "model": {
        part: "the model uses the planner's plan, never data, training, inference or checkpoint loading"
        for part in ("data", "processing", "checkpoint", "train", "infer", "demo", "world")
    },
    "train": {
        "infer": "training and inference orchestrate model + data; neither imports the other",
        **{part: "training does not import the experiments built on it" for part in ("demo", "soup")},
    },
    "infer": {
        "train": "training and inference orchestrate model + data; neither imports the other",
        **{part: "inference does not import the experiments built on it" for part in ("demo", "soup")},
    },
}
NOTHING_IMPORTS = {"cli": "nothing imports the CLI; it is a thin face over the packages"}
CLI_ENTRY_POINTS = {"cli", "__main__"}

# "importing module -> imported module": why it is allowed for now and which follow-up removes it.
KNOWN_EXCEPTIONS: dict[str, str] = {}

MODULE_PATH = re.compile(r"onevision(\.\w+)+")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The top-level part of onevision a module belongs to ('scripts' for the scripts)."""
    parts = module.split(".")
    if parts[0] == "scripts":
        return "scripts"
    if parts[0] != "onevision":
        return parts[0]
    return parts[1] if len(parts) > 1 else "onevision"


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, as an absolute dotted name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_PATH.fullmatch(node.value):
            yield node.value


def _sources() -> list[Path]:
    return sorted((ROOT / "onevision").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))


def _violations() -> dict[str, str]:
    found = {}
    for path in _sources():
        importer = _module_name(path)
        source = _part(importer)
        for imported in _imports(path):
            target = _part(imported)
            if target == source:
                continue
            rule = FORBIDDEN.get(source, {}).get(target)
            if rule is None and imported.startswith("onevision.") and source not in CLI_ENTRY_POINTS:
                rule = NOTHING_IMPORTS.get(target)
            if rule is not None:
                found[f"{importer} -> {imported}"] = rule
    return found


def test_the_scan_sees_the_imports_it_checks():
    # The rules are only as good as the parser: it must see a function-level import, a
    # lazy-import table entry and a plain one in files known to hold them.
    seen = set(_imports(ROOT / "onevision" / "model" / "__init__.py"))
    assert "onevision.model.onevision" in seen
    seen = set(_imports(ROOT / "onevision" / "cli" / "world.py"))
    assert "onevision.world.build" in seen  # imported inside run()
    seen = set(_imports(ROOT / "onevision" / "data" / "collate.py"))
    assert "onevision.visual_batch" in seen and "torch" in seen
    assert len(_sources()) > 100


def test_imports_follow_the_dependency_direction():
    found = _violations()
    new = {edge: rule for edge, rule in found.items() if edge not in KNOWN_EXCEPTIONS}
    assert not new, "imports against docs/architecture.md:\n" + "\n".join(f"  {e}: {r}" for e, r in sorted(new.items()))
    stale = sorted(set(KNOWN_EXCEPTIONS) - set(found))
    assert not stale, f"no longer against a rule, remove from KNOWN_EXCEPTIONS: {stale}"


def test_a_forbidden_import_is_reported(tmp_path, monkeypatch):
    # A data module importing the model, and a script importing the CLI, must be caught: the
    # rules are live, not vacuous.
    fake = tmp_path / "onevision" / "data" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from onevision.model.onevision import OneVisionModel\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.py").write_text("from onevision.cli.main import main\n")
    (tmp_path / "onevision" / "__main__.py").write_text("from onevision.cli.main import main\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert set(_violations()) == {"onevision.data.bad -> onevision.model.onevision", "scripts.run -> onevision.cli.main"}
