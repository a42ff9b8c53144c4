"""YAML loading that remembers the line of every key, so errors can point at it.

It also refuses what PyYAML accepts silently and a recipe never means: a key given twice
in one mapping (the last value would win without a word), aliases that expand to a huge
document (an "alias bomb": a few lines that ran out of memory after 46 s) or into
themselves, and bytes that are not UTF-8. The document is composed once, checked as a
node graph (aliases are shared nodes there, so checking is cheap), then constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from collabgen.config.errors import RecipeError
from collabgen.config.textfile import decode_utf8

Location = tuple[str | int, ...]

# A shipped recipe has about 150 values; this leaves room for long lists and anchors
# while stopping an alias bomb at once (its expansion is counted, never built).
MAX_YAML_VALUES = 100_000
MERGE_KEY = "<<"


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Location, int]]:
    """Parse `path` and return its data plus a map from key path to 1-based line."""
    text = _read(path)
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (a NUL) already here
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        raise RecipeError(f"{path}:{line}: not valid YAML: {err.reason} (character U+{_code(err.character):04X})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_expansion(node, path)
        lines: dict[Location, int] = {}
        _index(node, (), lines, path)
        return loader.construct_document(node), lines
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    except RecursionError:
        raise RecipeError(f"{path}: not a recipe: nested too deeply") from None
    finally:
        loader.dispose()


def _code(character: int | str) -> int:
    return character if isinstance(character, int) else ord(character)


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe: {err.strerror}") from None
    return decode_utf8(data, path, RecipeError)


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Count the values the document expands to (aliases counted at every use) without
    building it; refuse more than MAX_YAML_VALUES, and aliases that contain themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise RecipeError(f"{path}:{node.start_mark.line + 1}: a YAML alias refers to itself")
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise RecipeError(
                    f"{path}:{child.start_mark.line + 1}: YAML aliases expand this recipe to more than "
                    f"{MAX_YAML_VALUES:,} values; a recipe needs a few hundred (is it an alias bomb?)"
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def _index(node: yaml.Node, loc: Location, lines: dict[Location, int], path: Path) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a mapping or list as a key: no recipe field is one; validation names it
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key != MERGE_KEY:
                if key in seen:
                    dotted = ".".join(str(p) for p in (*loc, key))
                    raise RecipeError(
                        f"{path}:{line}: {dotted}: duplicate key (first given at line {seen[key]}); "
                        "YAML would silently keep the last value: keep one"
                    )
                seen[key] = line
            lines[loc + (key,)] = line
            _index(value_node, loc + (key,), lines, path)
            lines[loc + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, loc + (i,), lines, path)


def line_of(lines: dict[Location, int], loc: Location) -> int | None:
    """The line of `loc`, or of its nearest ancestor present in the file."""
    while True:
        if loc in lines:
            return lines[loc]
        if not loc:
            return None
        loc = loc[:-1]
