"""The package layout: the runtime imports no development code, and every command module
imports from gpu-worker/ as ``python -m scripts.<name>`` / ``python -m bench.<name>`` without
editing ``sys.path``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent.parent
RUNTIME = [WORKER / "main.py", WORKER / "local_run.py", *sorted((WORKER / "engine").rglob("*.py")),
           *sorted((WORKER / "adapters").rglob("*.py")), *sorted((WORKER / "presets").rglob("*.py"))]
DEV_PACKAGES = {"devtools", "tests", "bench", "scripts"}
COMMANDS = sorted(p for folder in ("scripts", "bench") for p in (WORKER / folder).glob("*.py") if p.name != "__init__.py")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: str(p.relative_to(WORKER)))
def test_runtime_imports_no_development_code(path):
    assert not imported_roots(path) & DEV_PACKAGES


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: str(p.relative_to(WORKER)))
def test_commands_import_as_modules_without_path_edits(path):
    assert "sys.path" not in path.read_text()
    module = importlib.import_module(".".join(path.relative_to(WORKER).with_suffix("").parts))
    if '__name__ == "__main__"' in path.read_text():  # a command, not a module the commands share
        assert callable(getattr(module, "main", None))
