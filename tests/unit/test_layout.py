"""The package's layout rules: imports flow one way between layers, no cycles, no module over 400 lines, no
``sys.path`` tricks, and docs/http-api.md's error table is the one the error classes make."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gen3d.errors import ERROR_TYPES, error_table
from tests.conftest import REPO

PACKAGE = REPO / "gen3d"
BASE = ("gen3d.errors", "gen3d.models", "gen3d.files", "gen3d.checks", "gen3d.archives")
# What each part of the package may import of gen3d (besides itself); everything may import BASE.
ALLOWED = {
    "gen3d.serving": (),
    "gen3d.torchserve": ("gen3d.serving",),
    "gen3d.sam3": ("gen3d.serving",),
    "gen3d.sam3d": ("gen3d.serving",),
    "gen3d.sam3d_body": ("gen3d.serving",),
    "gen3d.sagemaker": ("gen3d.torchserve", "gen3d.serving"),
    "gen3d.web": (),
    "gen3d.cli": (
        "gen3d.serving",
        "gen3d.torchserve",
        "gen3d.sam3",
        "gen3d.sam3d",
        "gen3d.sam3d_body",
        "gen3d.sagemaker",
        "gen3d.bench",
        "gen3d.web",
    ),
    "gen3d.bench": ("gen3d.serving", "gen3d.torchserve", "gen3d.sam3", "gen3d.sam3d", "gen3d.web"),
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def gen3d_imports(path: Path) -> set[str]:
    """Every gen3d module ``path`` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "hub" not in p.parts}


def part_of(module: str) -> str:
    return next((part for part in ALLOWED if module == part or module.startswith(part + ".")), module)


def test_imports_flow_one_way():
    wrong = []
    for module, path in sources().items():
        part = part_of(module)
        for imported in gen3d_imports(path):
            target = part_of(imported)
            if target == part or imported in BASE or imported == "gen3d" or target in ALLOWED.get(part, ()):
                continue
            if part in BASE and target in BASE:
                continue
            wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_handlers_import_only_their_model_and_the_torchserve_glue():
    for model in ("sam3", "sam3d", "sam3d_body"):
        tree = ast.parse((REPO / "handlers" / f"{model}_handler.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported == {f"gen3d.{model}.service", "gen3d.torchserve.handler"}


def test_no_import_cycle():
    graph = {module: gen3d_imports(path) - {module} for module, path in sources().items()}
    # a package's __init__ is imported by its modules' imports; only explicit edges count
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend([*trail, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*trail, node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(m, []) for m in sorted(graph) if state.get(m) is None), " -> ".join(cycle)


def test_modules_stay_small():
    files = [p for folder in ("gen3d", "handlers", "scripts") for p in (REPO / folder).rglob("*.py")]
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_sys_path_tricks():
    patterns = ("gen3d/**/*.py", "scripts/*", "tests/**/*.py", "handlers/*")
    files = [p for pattern in patterns for p in REPO.glob(pattern)]
    offenders = [
        str(p.relative_to(REPO))
        for p in files
        if p.is_file() and re.search(r"sys\.path\.(insert|append)", p.read_text()) and p.name != "test_layout.py"
    ]
    assert offenders == []


def test_http_api_page_error_table_is_generated_from_the_error_classes():
    assert error_table() in (REPO / "docs" / "http-api.md").read_text()
    statuses = [cls.status for cls in ERROR_TYPES]
    assert len(set(statuses)) == len(statuses)
    types = [cls.error_type for cls in ERROR_TYPES]
    assert len(set(types)) == len(types) and all(re.fullmatch(r"[a-z]+(_[a-z]+)*", t) for t in types)
    assert ERROR_TYPES[0]("image", "bad").to_dict() == {
        "code": 400,
        "type": "invalid_field",
        "field": "image",
        "message": "bad",
    }
