"""The package's shape, checked: layers only import downward, functions stay short.

Layers, lowest first (a module may import its own layer and the ones below):
config/prompting -> models/sandbox -> tasks -> engine -> output -> app -> cli.
A function longer than about 50 lines says why in a `# long: <reason>` comment on the
line right above its `def` (or its first decorator).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "collabgen"
MAX_FUNCTION_LINES = 50

LAYERS = {
    "collabgen.config": 0,
    "collabgen.prompting": 0,
    "collabgen.files": 0,
    "collabgen.models": 1,
    "collabgen.sandbox": 1,
    "collabgen.tasks": 2,
    "collabgen.engine": 3,
    "collabgen.output": 4,
    "collabgen.app": 5,
    "collabgen.cli": 6,
    "collabgen.__main__": 6,
    "collabgen": 6,  # the package's __init__: the public Python API re-exports from every layer
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collabgen_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found.extend((node.lineno, n) for n in names if n.startswith("collabgen"))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("collabgen"))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    orphans = [module_name(p) for p in sources() if layer_of(module_name(p)) is None]
    assert orphans == []


def test_no_module_imports_a_layer_above_its_own():
    violations = []
    for path in sources():
        own = module_name(path)
        own_layer = layer_of(own)
        for line, imported in collabgen_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = layer_of(imported)
            if target is not None and own_layer is not None and target > own_layer:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {imported}")
    assert violations == []


def test_functions_longer_than_fifty_lines_say_why():
    unexplained = []
    for path in sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[first - 2].strip() if first >= 2 else ""
            if length > MAX_FUNCTION_LINES and not above.startswith("# long:"):
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.name} ({length} lines)")
    assert unexplained == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    tree = ast.parse("from collabgen.output.rows import pair_rows\n")
    (line, imported), *_ = collabgen_imports(tree)
    assert layer_of("collabgen.engine.collaboration") < layer_of(imported)


def test_every_subpackage_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert present - listed == set()


def test_no_file_holds_merge_conflict_markers():
    root = PACKAGE.parent
    files = [p for folder in ("collabgen", "data_cards", "recipes", "tests", "bench") for p in (root / folder).rglob("*")
             if p.is_file() and p.suffix in (".py", ".j2", ".yaml", ".md", ".json", ".toml")]
    files += [root / "README.md", root / "pyproject.toml"]
    marked = [str(p.relative_to(root)) for p in files
              if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in p.read_text(errors="ignore").splitlines())]
    assert marked == []
