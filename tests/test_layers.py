"""The package's layers: every import between subpackages points down (lazy imports count).

The layers, lowest first, are listed in the docs' architecture page; this test is their
definition. A module may import from its own package or from a lower layer only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mgtoolkit

LAYERS = {
    "grids": 0,
    "cycles": 0,
    "runtime": 0,
    "cluster": 0,
    "fields": 1,
    "fem": 2,
    "data": 3,
    "nn": 3,
    "pretrained": 3,
    "rundir": 4,
    "comm": 4,
    "infer": 5,
    "spatial": 5,
    "plan": 6,
    "train": 7,
    "launch": 8,
    "widgets": 9,
    "cli": 9,
}
ROOT = Path(mgtoolkit.__file__).parent


def _unit(module: str) -> str | None:
    """The top-level unit (subpackage or module) of ``mgtoolkit.<unit>...``; None for the root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "mgtoolkit" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every mgtoolkit module imported anywhere in ``path`` (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("mgtoolkit")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mgtoolkit":  # from mgtoolkit import comm, grids, ...
                found += [(node.lineno, f"mgtoolkit.{a.name}") for a in node.names]
            elif node.module.startswith("mgtoolkit."):
                found.append((node.lineno, node.module))
    return found


def test_every_unit_has_a_layer():
    units = {p.stem for p in ROOT.glob("*.py")} | {
        p.parent.name for p in ROOT.glob("*/__init__.py")
    }
    units -= {"__init__", "__main__"}
    assert units == set(LAYERS), f"give each new module or package a layer: {units ^ set(LAYERS)}"


def _upward_imports(root: Path) -> list[str]:
    """Every import in the package at ``root`` that does not point down, as ``file:line``."""
    wrong = []
    for path in sorted(root.rglob("*.py")):
        importer = _unit("mgtoolkit." + ".".join(path.relative_to(root).with_suffix("").parts))
        if importer in (None, "__init__", "__main__"):  # the root package may re-export anything
            continue
        for line, module in _imports(path):
            target = _unit(module)
            if target is None or target == importer or target == "__version__":
                continue
            if target not in LAYERS or LAYERS[target] >= LAYERS[importer]:
                wrong.append(
                    f"{path.relative_to(root.parent)}:{line} ({importer}) imports {module}"
                )
    return wrong


def test_imports_point_down():
    wrong = _upward_imports(ROOT)
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_the_rule_catches_upward_and_sideways_imports(tmp_path):
    package = tmp_path / "mgtoolkit"
    (package / "fem").mkdir(parents=True)
    (package / "fem" / "ok.py").write_text("from mgtoolkit.grids import Grid\n")
    (package / "fem" / "lazy.py").write_text("def f():\n    from mgtoolkit.train import train\n")
    (package / "cli.py").write_text("import mgtoolkit.widgets\n")  # same layer: not down
    assert _upward_imports(package) == [
        "mgtoolkit/cli.py:1 (cli) imports mgtoolkit.widgets",
        "mgtoolkit/fem/lazy.py:2 (fem) imports mgtoolkit.train",
    ]
