"""Prompt templates live as files in `collabgen/prompts/`; this renders them by name.

A judge template `name.j2` declares the JSON its reply must be in a sibling
`name.schema.json` (JSON Schema). The schema travels with the request, so a backend can
constrain decoding to it and a counting backend (`collabgen plan`) can answer it.
Task plugins outside the package can pass their own folder with `extra_dirs`.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

PROMPTS_DIR = Path(__file__).parent / "prompts"

TERMINATION_MARKER = "[[TERMINATE CHAT]]"


class StrictSandbox(SandboxedEnvironment):
    """Jinja's sandbox that raises `SecurityError` where an unsafe attribute is read, so the
    error names it (the stock one returns an undefined whose next use fails obscurely)."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")


class Prompts:
    """A jinja2 environment over the packaged templates (strict: a missing variable fails).

    Sandboxed: the templates render seed text and model replies as variables, and a
    plugin's folder is not ours; none of it may reach Python internals."""

    def __init__(self, extra_dirs: list[Path] | None = None) -> None:
        self._dirs = [*(extra_dirs or []), PROMPTS_DIR]

    @cached_property
    def _env(self) -> jinja2.Environment:
        return StrictSandbox(
            loader=jinja2.FileSystemLoader([str(d) for d in self._dirs]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )

    def render(self, name: str, **variables: Any) -> str:
        template = self._env.get_template(name if name.endswith(".j2") else f"{name}.j2")
        return template.render(termination_marker=TERMINATION_MARKER, **variables).strip()

    def check(self, names: list[str]) -> None:
        """Load (parse) each template so a broken or missing one fails before any call."""
        for name in names:
            self._env.get_template(name if name.endswith(".j2") else f"{name}.j2")

    def schema(self, name: str) -> dict[str, Any] | None:
        """The JSON Schema a judge template's reply follows, or None if it declares none."""
        stem = name.removesuffix(".j2")
        for folder in self._dirs:
            path = folder / f"{stem}.schema.json"
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return None
