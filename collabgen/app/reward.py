"""The multiturn-aware reward (MR) as an online reward: a trainer's completions scored
the way an offline run scores a candidate.

`MultiturnReward` opens what `collabgen run` opens for a recipe (the roles with their
limits and retries, the request cache, the sandbox) and scores each completion through
`Collaboration.roll_out_and_score`: the recipe's `generation.futures` futures of
`window` messages, each scored by the `Scorer`. Nothing here rolls out or scores on its
own. A completion's sample seeds are a pure function of (conversation, completion, seed,
step): scoring it again asks the same requests, which the cache answers at no cost.

A future that fails (a model that keeps failing or never answers in the asked format, a
broken sandbox, a conversation that outgrew a model) leaves its completion no reward:
`score` is None with the reason, never 0, so a trainer can leave the sample out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from collabgen.app.context import RunContext, open_context, prepare, prove_sandboxes
from collabgen.app.score import seed_columns
from collabgen.config.errors import InfrastructureError, SeedError
from collabgen.config.recipe import Recipe
from collabgen.engine.collaboration import Collaboration
from collabgen.engine.records import Candidate
from collabgen.models.base import ChatBackend, Message
from collabgen.models.executor import CallFailed
from collabgen.models.token_usage import estimated_tokens
from collabgen.output.outdir import OutDir
from collabgen.tasks.base import UNDECIDED_FLAGS
from collabgen.tasks.recipe_check import load_recipe

CACHE_FILE = "reward-cache.sqlite"
"""The reward's request cache, in the recipe's `.collabgen/` state dir (apart from a run's)."""


@dataclass
class RewardItem:
    """One completion to score: the conversation it answers (ending with a user message),
    its text, the seed row (a dict in the task's seed fields or the recipe's source
    columns), its token count when the trainer knows it, and an optional step that, when
    given, makes the futures differ from one training step to the next."""

    conversation: list[Message]
    completion: str
    seed: dict[str, Any]
    completion_tokens: int | None = None
    step: int | None = None


@dataclass
class RewardResult:
    """A completion's MR (None when a future failed: `error` says why), the per-metric
    means over its futures, the number of futures and the flags its scoring raised."""

    score: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    futures: int = 0
    flags: list[str] = field(default_factory=list)
    error: str | None = None


def as_item(item: RewardItem | tuple[Any, ...]) -> RewardItem:
    """An item given as a `RewardItem` or a (conversation, completion, seed[, step]) tuple."""
    if isinstance(item, RewardItem):
        return item
    conversation, completion, seed, *rest = item
    return RewardItem(conversation=list(conversation), completion=completion, seed=dict(seed),
                      step=rest[0] if rest else None)


def sample_scope(item: RewardItem, seed_fields: dict[str, Any]) -> str:
    """The conversation id the futures' sample seeds derive from: a digest of everything
    that decides the futures, so the same completion in the same place asks the same."""
    key = json.dumps([item.conversation, item.completion, seed_fields, item.step], sort_keys=True,
                     ensure_ascii=False, default=str)
    return "reward-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def check_conversation(conversation: list[Message]) -> list[Message]:
    """The conversation as the futures' history: system messages left out (the policy's
    system prompt is the recipe's `generation.system_prompt`, as in a run); it must end
    with the user message the completion answers."""
    history = [{"role": m["role"], "content": m["content"]} for m in conversation if m.get("role") != "system"]
    if not history or history[-1]["role"] != "user":
        raise ValueError("the conversation must end with a user message (the one the completion answers)")
    if any(m["role"] not in ("user", "assistant") or not isinstance(m["content"], str) for m in history):
        raise ValueError("messages must be {role: user|assistant|system, content: string}")
    return history


class MultiturnReward:
    """The recipe's MR, open for scoring batches: `async with MultiturnReward.from_recipe(p) as r`
    (or `await r.open()` ... `await r.close()`), then `await r.score_batch(items)`."""

    def __init__(self, recipe: Recipe, *, backends: dict[str, ChatBackend] | None = None,
                 cache_path: Path | None = None) -> None:
        self.recipe = recipe
        self.backends = backends
        self.cache_path = cache_path or OutDir(Path(recipe.output.dir)).state_dir / CACHE_FILE
        self._stack: AsyncExitStack | None = None
        self._context: RunContext | None = None
        self._limit: asyncio.Semaphore | None = None  # made on open, in the loop that uses it

    @classmethod
    def from_recipe(cls, path: str | Path | Recipe, *, backends: dict[str, ChatBackend] | None = None,
                    cache_path: Path | None = None) -> MultiturnReward:
        return cls(load_recipe(path), backends=backends, cache_path=cache_path)

    async def open(self) -> MultiturnReward:
        """Check the recipe, open roles, cache and sandbox (proved, as before a run)."""
        if self._context is not None:
            return self
        setup = prepare(self.recipe, count_seeds=False)
        stack = AsyncExitStack()
        try:
            context = await stack.enter_async_context(
                open_context(setup, cache_path=self.cache_path, backends=self.backends))
            await prove_sandboxes(context)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._context = stack, context
        self._limit = asyncio.Semaphore(self.recipe.generation.conversations)
        return self

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._context = self._stack, None, None
            await stack.aclose()

    async def __aenter__(self) -> MultiturnReward:
        return await self.open()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    @property
    def context(self) -> RunContext:
        if self._context is None:
            raise RuntimeError("MultiturnReward is not open: use `async with` or `await reward.open()`")
        return self._context

    async def score_batch(self, items: list[RewardItem | tuple[Any, ...]]) -> list[RewardResult]:
        """Every item's MR, all in flight at once (within `generation.conversations` and
        each role's limits), in order."""
        context = self.context
        limit = self._limit
        assert limit is not None

        async def one(item: RewardItem | tuple[Any, ...]) -> RewardResult:
            async with limit:
                return await self.score_one(context, as_item(item))

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def score_one(self, context: RunContext, item: RewardItem) -> RewardResult:
        """One completion as a run's candidate: its futures rolled out and scored by
        `Collaboration.roll_out_and_score`; a failure is a reason, never a score."""
        setup = context.setup
        try:
            history = check_conversation(item.conversation)
            fields = seed_columns(setup.recipe.task.source.fields, item.seed)
            seed = setup.task.seed_from_row(item.seed, fields, "reward seed")
        except (SeedError, ValueError, KeyError, TypeError) as err:
            return RewardResult(score=None, error=f"bad item: {err}")
        tokens = item.completion_tokens
        candidate = Candidate(text=item.completion, tokens=tokens if tokens is not None else estimated_tokens(item.completion),
                              proactive=False, tokens_estimated=tokens is None)
        collaboration = Collaboration(
            task=setup.task, seed=seed, conv_id=sample_scope(item, seed.model_dump(mode="json")), index=0,
            generation=setup.recipe.generation, roles=context.team, prompts=setup.prompts, scorer=context.scorer(),
        )
        turn = sum(m["role"] == "assistant" for m in history)
        try:
            await collaboration.roll_out_and_score(history, turn, 0, candidate)
        except (CallFailed, InfrastructureError) as err:  # ContextExhausted is a CallFailed
            return RewardResult(score=None, futures=len(candidate.futures), error=str(err))
        if not candidate.choosable:  # a metric that could not decide, or only drifted users: no verdict
            undecided = sorted(UNDECIDED_FLAGS.intersection(candidate.flags))
            return RewardResult(score=None, metrics=dict(candidate.metrics), futures=len(candidate.futures),
                                flags=sorted(candidate.flags), error=f"no verdict: {', '.join(undecided)}")
        return RewardResult(score=candidate.score, metrics=dict(candidate.metrics), futures=len(candidate.futures),
                            flags=sorted(candidate.flags))
