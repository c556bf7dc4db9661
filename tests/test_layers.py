"""The import graph flows one way: http <- sources <- stages/pipeline; observe imports none."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "customer_pipeline"
# What each layer may import from the rest of the package (besides itself).
ALLOWED = {
    "observe": set(),
    "http": {"_secret", "_version", "errors", "observe", "settings"},
    "sources": {"_limits", "_streams", "errors", "http", "observe", "settings"},
}


def internal_imports(path: Path) -> set[str]:
    """The top-level customer_pipeline modules or packages ``path`` imports."""
    module = path.relative_to(PACKAGE).with_suffix("")
    depth = len(module.parts) - 1  # a module inside a subpackage starts one level down
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "customer_pipeline" and len(parts) > 1:
                    found.add(parts[1])
                continue
            parts = [*module.parts[: depth + 1 - node.level], *(node.module or "").split(".")]
            parts = [p for p in parts if p]
            if parts:
                found.add(parts[0])
            else:  # "from .. import x": each name is a top-level module
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "customer_pipeline" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    for path in files:
        outside = internal_imports(path) - {layer} - ALLOWED[layer]
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_stages_reach_no_client() -> None:
    assert "client" not in internal_imports(PACKAGE / "stages.py")
    assert "client" not in internal_imports(PACKAGE / "checkpoint.py")
