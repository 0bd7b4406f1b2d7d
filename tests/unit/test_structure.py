"""The import rules DESIGN.md sets, read from the source: algorithms are siblings (no file
of `tunerl/algorithms/X` imports `tunerl/algorithms/Y`), and `tunerl/core` never imports
the package face (`tunerl/__init__.py`, which imports the core: a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tunerl"


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> list[str]:
    """Every module a file of the package at `package_dir` imports, absolute (`from . import
    x` resolved), at any depth (imports inside functions count too)."""
    package = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def algorithm_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["tunerl", "algorithms"]:
        return parts[2]
    return None


ALGORITHM_FILES = sorted((PACKAGE / "algorithms").rglob("*.py"))
CORE_FILES = sorted((PACKAGE / "core").rglob("*.py"))


@pytest.mark.parametrize("path", ALGORITHM_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_an_algorithm_imports_no_other_algorithm(path):
    own = path.relative_to(PACKAGE / "algorithms").parts[0]
    if own.endswith(".py"):  # tunerl/algorithms/__init__.py
        return
    others = sorted(
        {name for name in imported_modules(path) if algorithm_of(name) not in (None, own)}
    )
    assert not others, (
        f"{path.relative_to(PACKAGE)} imports {others}: algorithms are siblings; what two "
        "share belongs in a named piece of tunerl/core"
    )


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_never_imports_the_package_face_or_an_algorithm(path):
    bad = sorted(
        name
        for name in imported_modules(path)
        if name == "tunerl"
        or name.startswith("tunerl.algorithms")
        or name.startswith("tunerl.tuning")
        or name == "tunerl.cli"
    )
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_the_scan_sees_relative_and_nested_imports(tmp_path):
    # The scan itself: a sibling import written relatively, inside a function, is caught.
    root = tmp_path / "tunerl"
    (root / "algorithms" / "ppo").mkdir(parents=True)
    path = root / "algorithms" / "ppo" / "ppo.py"
    path.write_text("def f():\n    from ..dqn.dqn import DQNConfig\n    import tunerl\n")
    names = imported_modules(path, root)
    assert "tunerl.algorithms.dqn.dqn" in names
    assert algorithm_of("tunerl.algorithms.dqn.dqn") == "dqn"
    assert "tunerl" in names
