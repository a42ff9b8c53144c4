"""The multiturn-aware reward (MR): scoring futures and ranking candidates by them.

A future is scored by the task's extrinsic metrics (on the whole conversation), the
interactivity judge and the token penalty; its score is `sum(weight * metric)`, and a
candidate's MR is the mean of its futures' scores. Metrics with no weight in the recipe
are not computed, so they cost nothing.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collabgen.config.recipe import RewardConfig
from collabgen.engine.records import Candidate, Future
from collabgen.models.base import Message
from collabgen.models.executor import RoleModel, request_seed
from collabgen.models.usage import UsageSink
from collabgen.prompting import Prompts
from collabgen.tasks.base import USER_DRIFT, SeedModel, Task, transcript
from collabgen.tasks.recipe_check import computed_metrics
from collabgen.tasks.reference_metrics import cl100k_tokens

if TYPE_CHECKING:
    from collabgen.sandbox import Sandbox


class FutureTools:
    """The judge and sandbox as one future's metrics see them (seeds pinned to the future).

    The judge records wherever it is bound: the caller binds it to its ledger beforehand.
    """

    def __init__(
        self, judge: RoleModel, prompts: Prompts, sandbox_factory: Callable[[], Sandbox],
        seed_scope: tuple[object, ...],
    ) -> None:
        self.judge = judge
        self.prompts = prompts
        self._sandbox_factory = sandbox_factory
        self._seed_scope = seed_scope
        self.flags: list[str] = []

    def flag(self, name: str) -> None:
        """A metric reports something about the future beside its value (e.g. "tampered")."""
        if name not in self.flags:
            self.flags.append(name)

    async def judge_json(
        self, template: str, *, stage: str, validate: Callable[[dict[str, Any]], Any] | None = None, **variables: Any
    ) -> Any:
        prompt = self.prompts.render(template, **variables)
        # The seed follows the prompt, not the future asking: identical judge prompts in
        # a conversation (e.g. the same first reply judged for every future) are one
        # request, answered once by the in-flight dedup or the cache.
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
        return await self.judge.complete_json(
            [{"role": "user", "content": prompt}], seed=request_seed(*self._seed_scope, template, digest),
            stage=stage, validate=validate, json_schema=self.prompts.schema(template),
        )

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox_factory()


@dataclass
class Scored:
    """A conversation's metrics and the flags its metrics raised."""

    metrics: dict[str, float]
    flags: list[str] = field(default_factory=list)


INTERACTIVITY_TEMPLATES = {
    ("window", "unit"): "interactivity_judge",
    ("conversation", "unit"): "interactivity_conversation_judge",
    ("window", "three_level"): "interactivity_three_level_judge",
}
"""The interactivity judge's template per (`reward.interactivity`, `reward.interactivity_scale`)."""

THREE_LEVELS = (1, 2, 3)
"""The paper-era judge's ratings (`collabllm/prompts/llm_judge/*.txt` on its review branch)."""


def token_penalty(tokens: int, reward: RewardConfig) -> float:
    """-min(lambda * tokens, cap): the cost of the words in the window (no cap when `cap`
    is null)."""
    cost = reward.token_penalty.lambda_ * tokens
    cap = reward.token_penalty.cap
    return -(cost if cap is None else min(cost, cap))


def window_tokens(candidate: Candidate, future: Future, over: str) -> int:
    """The tokens the penalty counts: the candidate's and the future's assistant replies
    (server usage); with `over: all` also the future's user messages, as cl100k tokens of
    their text, since the simulator's usage counts its private thought, which no chat holds
    (the paper-era code counts every message after the history)."""
    tokens = candidate.tokens + sum(t for m, t in zip(future.messages, future.tokens) if m["role"] == "assistant")
    if over == "all":
        tokens += sum(cl100k_tokens(m["content"]) for m in future.messages if m["role"] == "user")
    return tokens


def interactivity_score(reply: dict[str, Any]) -> float:
    value = float(reply["interactivity"])
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"interactivity {value} outside 0..1")
    return value


def three_level_score(reply: dict[str, Any]) -> float:
    """Rating / 3, so 1, 2, 3 score 1/3, 2/3, 1: the paper-era judge's rescale
    (`collabllm/metrics/llm_judge.py:8,50`, `lambda x: x/3.0`), whose lowest rating is not 0."""
    value = reply["interactivity"]
    if isinstance(value, bool) or value not in THREE_LEVELS:
        raise ValueError(f"interactivity {value!r} is not 1, 2 or 3")
    return value / 3.0


SCORE_OF_SCALE = {"unit": interactivity_score, "three_level": three_level_score}


class Scorer:
    def __init__(
        self, task: Task, reward: RewardConfig, judge: RoleModel, prompts: Prompts,
        sandbox_factory: Callable[[], Sandbox],
    ) -> None:
        self.task = task
        self.reward = reward
        self.judge = judge
        self.prompts = prompts
        self.sandbox_factory = sandbox_factory
        weights = reward.weights
        self.wants_task = any(weights.get(m, 0.0) != 0.0 for m in task.metric_names(task.options))
        self.wants_interactivity = weights.get("interactivity", 0.0) != 0.0

    def bound(self, sink: UsageSink) -> Scorer:
        """This scorer with its judge recording into `sink` as well (a turn's ledger)."""
        scorer = copy.copy(self)
        scorer.judge = self.judge.bound(sink)
        return scorer

    async def score_future(
        self, seed: SeedModel, history: list[Message], candidate: Candidate, future: Future,
        seed_scope: tuple[object, ...],
    ) -> None:
        """Metrics and MR of one future; `seed_scope` is (run seed, conversation)."""
        evaluated = [{"role": "assistant", "content": candidate.text}, *future.messages]
        tokens = window_tokens(candidate, future, self.reward.token_penalty.over)
        scored = await self.score_conversation(seed, history, evaluated, tokens, seed_scope)
        estimated = candidate.tokens_estimated or bool(future.estimated)  # the penalty read an estimate
        drifted = self.task.drifted_user(seed, future.messages) is not None  # the user did the assistant's work
        future.metrics = scored.metrics
        future.flags = sorted({*scored.flags, *(["tokens_estimated"] if estimated else []),
                               *([USER_DRIFT] if drifted else [])})
        future.score = self.weighted(future.metrics)

    async def score_conversation(
        self, seed: SeedModel, history: list[Message], evaluated: list[Message], assistant_tokens: int,
        seed_scope: tuple[object, ...], *, every_metric: bool = False,
    ) -> Scored:
        """The metrics of `history + evaluated`: the task's on the whole, interactivity on
        `evaluated` in the light of `history`, the token penalty of `assistant_tokens`.

        The one path every score takes: futures, `collabgen eval` (with `every_metric`,
        which also computes metrics the recipe gives no weight) and `collabgen score`.
        """
        tools = FutureTools(self.judge, self.prompts, self.sandbox_factory, seed_scope)
        jobs: dict[str, Any] = {}
        if self.wants_task or every_metric:
            jobs["task"] = self.task.score(seed, [*history, *evaluated], tools)
        if self.wants_interactivity or every_metric:
            jobs["interactivity"] = self.judge_interactivity(tools, history, evaluated)
        results = dict(zip(jobs, await asyncio.gather(*jobs.values())))
        metrics: dict[str, float] = {}
        if "task" in results:
            metrics.update({name: float(results["task"][name]) for name in self.task.metric_names(self.task.options)})
        if "interactivity" in results:
            metrics["interactivity"] = results["interactivity"]
        metrics["token_penalty"] = token_penalty(assistant_tokens, self.reward)
        return Scored(metrics=metrics, flags=sorted(tools.flags))

    def judge_interactivity(self, tools: FutureTools, history: list[Message], evaluated: list[Message]) -> Any:
        """The judge's 0..1 interactivity: of `evaluated` in the light of `history` (`window`),
        or of the two as one conversation (`conversation`, the reference's way); on the
        recipe's `interactivity_scale`."""
        mode, scale = self.reward.interactivity, self.reward.interactivity_scale
        template, validate = INTERACTIVITY_TEMPLATES[(mode, scale)], SCORE_OF_SCALE[scale]
        if mode == "conversation":
            return tools.judge_json(template, stage="interactivity", validate=validate,
                                    conversation=transcript([*history, *evaluated]))
        return tools.judge_json(template, stage="interactivity", validate=validate,
                                history=transcript(history), evaluated=transcript(evaluated))

    def weighted(self, metrics: dict[str, float]) -> float:
        """sum(weight * metric): a future's score (its candidate's MR is the mean over futures)."""
        return sum(self.reward.weights.get(name, 0.0) * value for name, value in metrics.items())

    @staticmethod
    def aggregate(candidate: Candidate) -> None:
        """A candidate's MR and per-metric means over its futures, leaving out those whose
        simulated user drifted (`Candidate.scored_futures`)."""
        futures = candidate.scored_futures
        names = sorted({name for f in futures for name in f.metrics})
        candidate.metrics = {n: sum(f.metrics.get(n, 0.0) for f in futures) / len(futures) for n in names}
        candidate.score = sum(f.score for f in futures) / len(futures)


def metric_names(task: Task, reward: RewardConfig) -> list[str]:
    """The metrics a run computes, in a fixed order: the task's, interactivity, token penalty."""
    return computed_metrics(task.metric_names(task.options), reward)
