"""docs/ARCHITECTURE.md stays true: every module of nag_core/ and nodes/ is named in it, and the
one rule it states (nag_core never imports the ComfyUI host) holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution",
                "node_helpers", "nodes"}


def _modules(package: str) -> list[Path]:
    found = sorted(p for p in (REPO / package).rglob("*.py") if p.name != "__init__.py")
    assert found, f"no modules under {package}/"
    return found


def test_every_module_is_named_in_the_architecture_page():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    missing = [str(p.relative_to(REPO)) for pkg in ("nag_core", "nodes") for p in _modules(pkg)
               if not re.search(rf"\b{re.escape(p.stem)}\b", text)]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}: say what they hold"


def test_nag_core_never_imports_the_host():
    offenders = []
    for path in _modules("nag_core"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in HOST_MODULES]
    assert not offenders, f"nag_core imports the ComfyUI host: {offenders}"
