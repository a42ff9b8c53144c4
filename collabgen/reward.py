"""The MR as a trainer's online reward: `MultiturnReward` (async), `trl_reward` (a TRL
`GRPOTrainer` reward function) and `verl_compute_score` (a verl custom reward function).

Trainers call reward functions synchronously, one batch at a time. The adapters here
keep one event loop in a background thread, open the recipe's roles and cache in it once,
and hand each batch to it whole, so every completion's futures are in flight together.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from collabgen.app.reward import CACHE_FILE, MultiturnReward, RewardItem, RewardResult
from collabgen.config.recipe import Recipe
from collabgen.models.base import ChatBackend, Message

__all__ = ["CACHE_FILE", "MultiturnReward", "RewardItem", "RewardResult", "SyncReward", "close_verl_rewards", "trl_reward",
           "verl_compute_score"]

log = logging.getLogger("collabgen")
T = TypeVar("T")

TRL_EXTRA_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "environments", "completion_ids"})
"""What TRL passes a reward function beside the dataset's columns."""


class BackgroundLoop:
    """One event loop in a daemon thread: the roles' HTTP clients live on it across batches."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="collabgen-reward", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncReward:
    """A `MultiturnReward` for synchronous callers: opened on first use, on its own loop."""

    def __init__(self, recipe: str | Path | Recipe, *, backends: dict[str, ChatBackend] | None = None,
                 cache_path: Path | None = None) -> None:
        self.reward = MultiturnReward.from_recipe(recipe, backends=backends, cache_path=cache_path)
        self._loop: BackgroundLoop | None = None
        self._lock = threading.Lock()

    def score_batch(self, items: list[RewardItem]) -> list[RewardResult]:
        with self._lock:
            if self._loop is None:
                loop = BackgroundLoop()
                try:
                    loop.run(self.reward.open())
                except BaseException:
                    loop.stop()
                    raise
                self._loop = loop
            return self._loop.run(self.reward.score_batch(list(items)))

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.run(self.reward.close())
                self._loop.stop()
                self._loop = None


def _as_conversation(prompt: Any) -> list[Message]:
    """A TRL prompt: a list of messages (conversational) or a string (standard)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _as_text(completion: Any) -> str:
    """A TRL completion: `[{"role": "assistant", "content": ...}]` or a string."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")


class TRLReward:
    """A `GRPOTrainer` reward function: `reward_funcs=[trl_reward("recipe.yaml")]`.

    The dataset's columns (the seed fields, e.g. `problem`, `solution`) arrive as keyword
    lists and make each completion's seed row. A failed completion gets None, which TRL
    turns into NaN and leaves out of its group baseline, advantage 0 (checked with TRL 1.16); failures are counted in
    the `collabgen/mr_failed` metric and logged. `last_results` holds the last batch's results.
    """

    __name__ = "multiturn_reward"

    def __init__(self, sync: SyncReward, *, vary_by_step: bool = False) -> None:
        self.sync = sync
        self.vary_by_step = vary_by_step
        self.last_results: list[RewardResult] = []

    def items(self, prompts: list[Any], completions: list[Any], completion_ids: list[Any] | None,
              kwargs: dict[str, Any]) -> list[RewardItem]:
        columns = {k: v for k, v in kwargs.items()
                   if k not in TRL_EXTRA_KWARGS and isinstance(v, list) and len(v) == len(prompts)}
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", None) if self.vary_by_step else None
        return [
            RewardItem(conversation=_as_conversation(p), completion=_as_text(c),
                       seed={k: v[i] for k, v in columns.items()},
                       completion_tokens=len(completion_ids[i]) if completion_ids is not None else None, step=step)
            for i, (p, c) in enumerate(zip(prompts, completions))
        ]

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[Any] | None = None,
                 **kwargs: Any) -> list[float | None]:
        results = self.sync.score_batch(self.items(prompts, completions, completion_ids, kwargs))
        self.last_results = results
        failed = [r for r in results if r.score is None]
        if failed:
            log.warning("multiturn reward: %d of %d completions have no reward (first: %s)",
                        len(failed), len(results), failed[0].error)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("collabgen/mr_failed", float(len(failed)))
        return [r.score for r in results]

    def close(self) -> None:
        self.sync.close()


def trl_reward(recipe: str | Path | Recipe, *, backends: dict[str, ChatBackend] | None = None,
               cache_path: Path | None = None, vary_by_step: bool = False) -> TRLReward:
    """The recipe's MR as a TRL reward function. With `vary_by_step`, the futures' seeds
    also follow `trainer_state.global_step` (a completion seen again at a later step is
    rolled out afresh instead of answered from the cache)."""
    return TRLReward(SyncReward(recipe, backends=backends, cache_path=cache_path), vary_by_step=vary_by_step)


_VERL_REWARDS: dict[str, SyncReward] = {}
_VERL_LOCK = threading.Lock()


def _verl_reward(recipe: str | None) -> SyncReward:
    path = recipe or os.environ.get("COLLABGEN_REWARD_RECIPE")
    if not path:
        raise ValueError("verl_compute_score needs the recipe: custom_reward_function.reward_kwargs.recipe=<path> "
                         "or COLLABGEN_REWARD_RECIPE")
    with _VERL_LOCK:
        if path not in _VERL_REWARDS:
            _VERL_REWARDS[path] = SyncReward(path)
        return _VERL_REWARDS[path]


def close_verl_rewards() -> None:
    """Close the rewards `verl_compute_score` opened (their roles, cache and loops)."""
    with _VERL_LOCK:
        rewards = list(_VERL_REWARDS.values())
        _VERL_REWARDS.clear()
    for reward in rewards:
        reward.close()


def _verl_item(solution_str: str, extra_info: dict[str, Any] | None) -> RewardItem:
    info = extra_info or {}
    if "conversation" not in info or "seed" not in info:
        raise ValueError("verl_compute_score reads extra_info['conversation'] (messages ending with a user "
                         "message) and extra_info['seed'] (the seed row)")
    return RewardItem(conversation=list(info["conversation"]), completion=solution_str, seed=dict(info["seed"]))


def _verl_record(result: RewardResult, names: list[str]) -> dict[str, float]:
    """verl's dict form: `score` and extra keys, the same keys for every sample (verl
    stacks them per key). verl has no "no reward": a failure is NaN, flagged `mr_failed`."""
    record = {"score": math.nan if result.score is None else result.score,
              "mr_failed": float(result.score is None), "mr_futures": float(result.futures)}
    record.update({name: result.metrics.get(name, math.nan) for name in names})
    return record


def verl_compute_score(
    data_source: Any = None, solution_str: str | None = None, ground_truth: Any = None,
    extra_info: dict[str, Any] | None = None, *, recipe: str | None = None,
    data_sources: list[Any] | None = None, solution_strs: list[str] | None = None,
    ground_truths: list[Any] | None = None, extra_infos: list[dict[str, Any] | None] | None = None,
    **_: Any,
) -> dict[str, float] | list[dict[str, float]]:
    """verl's custom reward function (`custom_reward_function.path=<collabgen/reward.py>`,
    `name=verl_compute_score`, `reward_kwargs.recipe=<recipe.yaml>`): per sample as the
    naive reward manager calls it, `(data_source, solution_str, ground_truth, extra_info)`,
    or a batch as the batch manager does (`solution_strs`, `extra_infos`, ...: all its
    completions' futures then run at once). `ground_truth` is unused: the seed row in
    `extra_info['seed']` carries what the task's metric needs."""
    reward = _verl_reward(recipe)
    batch = solution_strs is not None
    texts = solution_strs if batch else [solution_str or ""]
    infos = extra_infos if batch and extra_infos is not None else [extra_info] * len(texts)
    results = reward.score_batch([_verl_item(text, info) for text, info in zip(texts, infos)])
    names = reward.reward.context.setup.metric_names
    records = [_verl_record(result, names) for result in results]
    return records if batch else records[0]
