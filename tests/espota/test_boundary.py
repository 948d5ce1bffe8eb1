"""The espota library stays free of Home Assistant, so it could be published on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LIBRARY_DIR = REPO_ROOT / "custom_components" / "esp_ota" / "espota"
LIBRARY_FILES = sorted(LIBRARY_DIR.rglob("*.py"))


def _imported_modules(path: Path) -> list[tuple[int, str, int]]:
    """Return (line, module, relative level) for every import statement in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def test_library_has_modules() -> None:
    """The scan below is not vacuous."""
    names = {path.name for path in LIBRARY_FILES}
    assert {"__init__.py", "errors.py", "image.py", "chips.py"} <= names


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda path: path.name)
def test_no_home_assistant_or_parent_imports(path: Path) -> None:
    """No module imports homeassistant, the integration, or anything above the library."""
    for line, module, level in _imported_modules(path):
        where = f"{path.relative_to(REPO_ROOT)}:{line}"
        assert level <= 1, f"{where} imports from above the library (level {level})"
        if level == 0:
            top = module.split(".")[0]
            assert top not in {"homeassistant", "custom_components", "simulator", "tests"}, (
                f"{where} imports {module}"
            )


def test_library_imports_standalone_without_home_assistant() -> None:
    """Loaded under its own top-level name with homeassistant made unimportable, every
    module of the library imports: nothing reaches into Home Assistant at run time."""
    modules = sorted(
        path.stem for path in LIBRARY_FILES if path.stem not in {"__init__", "__main__"}
    )
    program = textwrap.dedent(
        f"""
        import importlib, importlib.util, sys
        sys.modules["homeassistant"] = None  # any import of it now raises ImportError
        sys.modules["custom_components"] = None
        spec = importlib.util.spec_from_file_location(
            "espota", {str(LIBRARY_DIR / "__init__.py")!r},
            submodule_search_locations=[{str(LIBRARY_DIR)!r}],
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["espota"] = package
        spec.loader.exec_module(package)
        for name in {modules!r}:
            importlib.import_module("espota." + name)
        leaked = sorted(m for m in sys.modules if m.startswith("homeassistant."))
        assert not leaked, leaked
        print("imported", len({modules!r}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",  # the repository root is not on sys.path here
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {len(modules)}"
