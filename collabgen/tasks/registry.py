"""Task plugins by name. Built-ins import lazily; others register or use `module:Class`."""

from __future__ import annotations

import importlib

from collabgen.tasks.base import Task

_BUILTIN = {
    "math": "collabgen.tasks.math:MathTask",
    "document": "collabgen.tasks.document:DocumentTask",
    "code": "collabgen.tasks.code:CodeTask",
    "clarify": "collabgen.tasks.clarify:ClarifyTask",
}


def resolve_task(name: str) -> type[Task]:
    """The task class for a recipe's `task.type`."""
    target = _BUILTIN.get(name, name if ":" in name else None)
    if target is None:
        raise KeyError(f"task.type: unknown task {name!r}; built-in: {', '.join(sorted(_BUILTIN))}, or give module:Class")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        task_cls = getattr(module, class_name)
    except (ImportError, AttributeError) as err:
        raise KeyError(f"task.type: cannot load task {name!r} ({err})") from None
    if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
        raise KeyError(f"task.type: {name!r} is not a collabgen Task subclass")
    return task_cls


def builtin_tasks() -> list[str]:
    return sorted(_BUILTIN)
