"""Errors raised for bad input, each naming what is wrong and where."""

from __future__ import annotations


class CollabgenError(Exception):
    """Base of errors a user can fix; the CLI prints them without a traceback."""

    exit_code = 2


class RecipeError(CollabgenError):
    """The recipe is invalid: unknown key, wrong type, missing value, unset variable."""


class SeedError(CollabgenError):
    """A seed source is missing or a seed row is malformed.

    `loc` is the recipe field at fault relative to the seed source (e.g. `("path",)`),
    so the run's setup can add the recipe's file and line; empty when the fault is in a
    seed row (the message then names the seed file and line).
    """

    def __init__(self, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class OutputConflictError(CollabgenError):
    """The output directory holds a run of a different recipe."""


class InfrastructureError(CollabgenError):
    """Something collabgen depends on broke (the sandbox cannot start, its harness
    crashed): never a score. The conversation fails with this reason and counts as failed."""

    exit_code = 1
class OutputError(CollabgenError):
    """The out dir cannot be used: a file where a folder should be, not writable, or damaged state."""


class OutDirBusyError(CollabgenError):
    """Another collabgen process holds the out dir (or the slice) this run would write."""


class NoSpaceError(CollabgenError):
    """The disk holding the out dir is full: not bad input, nothing lost; free space and rerun."""

    exit_code = 3
