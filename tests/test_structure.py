"""The house's shape holds: no import loop between the project's modules, no module over
600 lines in the integration, the library or the simulator."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("custom_components/esp_ota", "simulator")
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the checked packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, imported: str, level: int) -> str:
    if level == 0:
        return imported
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, imported] if imported else base)


def _imports(module: str, path: Path) -> Iterator[str]:
    """The project's modules that `module` imports (any import statement, at any depth:
    one under TYPE_CHECKING or in a function is a loop all the same)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.module or "", node.level)
            # `from . import x` names a submodule; `from .m import name` the module m.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target in MODULES and target != module:
                yield target


def _cycle() -> list[str] | None:
    """One import loop among the project's modules, or None."""
    graph = {module: sorted(set(_imports(module, path))) for module, path in MODULES.items()}
    # A package importing its own submodules is how packages are made, not a loop.
    for module, targets in graph.items():
        graph[module] = [t for t in targets if not t.startswith(f"{module}.")]
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in graph:
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_scan_sees_the_modules() -> None:
    """Not vacuous: the modules whose loop this guards against are found."""
    assert {
        "custom_components.esp_ota.coordinator",
        "custom_components.esp_ota.installer",
        "custom_components.esp_ota.espota.update_job",
        "simulator.https_ota",
    } <= MODULES.keys()
    installer = set(
        _imports(
            "custom_components.esp_ota.installer", MODULES["custom_components.esp_ota.installer"]
        )
    )
    assert "custom_components.esp_ota.coordinator" in installer


def test_no_import_loop() -> None:
    """No module imports a module that imports it, directly or through others."""
    assert _cycle() is None


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_no_module_over_600_lines(module: str) -> None:
    """A module past 600 lines holds more than one thing: split it where it seams."""
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"
