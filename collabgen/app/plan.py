"""`collabgen plan`: how many calls and tokens a run will take, without calling anything.

The counts are not a hand-kept copy of the call plan: `plan` runs the real conversation
loop (the `Collaboration`, scorer and task metrics of a run) for one seed against the
counting backend (`collabgen.models.counting`), whose replies make it the upper bound:
every conversation runs `max_turns` turns, no future ends early, every extraction needs
the judge, no two prompts coincide and, with `generation.adaptive`, no race stops before
every candidate has `max_futures` futures (a real run usually makes far fewer calls). Tokens are an estimate: prompts at four
characters per token, replies at assumed lengths (assistant `max_tokens` or 300, user
80, judge 60).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from collabgen.app.context import RunSetup, open_context
from collabgen.config.recipe import Recipe
from collabgen.engine.records import TurnRecord
from collabgen.engine.seeds import iter_seeds, placeholder_seed
from collabgen.models.counting import CountingBackend, largest_bounded_instance
from collabgen.models.usage import UsageBook

USER_MESSAGE = 80
JUDGE_OUTPUT = 60
ASSISTANT_MESSAGE = 300
CHARS_PER_TOKEN_LOW = 3
"""A conservative characters-per-token figure for the budget check (English prose runs
about 4 with GPT and Llama tokenizers; JSON punctuation, other languages and odd text fewer)."""


@dataclass
class RoleEstimate:
    calls: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0


@dataclass
class Plan:
    seeds: int
    per_conversation: dict[str, RoleEstimate] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # With adaptive futures: the calls per conversation if every race stopped after its first round.
    least_calls_per_conversation: float | None = None

    @property
    def calls_per_conversation(self) -> float:
        return sum(r.calls for r in self.per_conversation.values())

    def total(self, role: str) -> RoleEstimate:
        one = self.per_conversation.get(role, RoleEstimate())
        return RoleEstimate(one.calls * self.seeds, one.prompt_tokens * self.seeds, one.completion_tokens * self.seeds)

    def cost(self, recipe: Recipe) -> dict[str, float]:
        out = {}
        for role, config in recipe.models.roles().items():
            if config.prices is not None:
                t = self.total(role)
                out[role] = (t.prompt_tokens * config.prices.input + t.completion_tokens * config.prices.output) / 1e6
        return out


def counting_backends(recipe: Recipe) -> dict[str, CountingBackend]:
    lengths = {"policy": recipe.models.policy.max_tokens or ASSISTANT_MESSAGE, "user": USER_MESSAGE,
               "judge": JUDGE_OUTPUT}
    return {
        role: CountingBackend(lengths[role], supports_n=config.supports_n and config.backend != "anthropic")
        for role, config in recipe.models.roles().items()
    }


async def plan_run(setup: RunSetup) -> Plan:
    """Calls and tokens per conversation, counted on one real conversation loop (on the
    first seed, or a stand-in when the seeds are on the Hub: plan opens no network); with
    adaptive futures every race runs to `max_futures`, and a second loop whose races all
    stop after their first round gives the least calls."""
    if setup.recipe.task.source.hub is not None:
        first: tuple[int, Any] | None = (0, placeholder_seed(setup.task))
    else:
        first = next(iter(iter_seeds(setup.task, setup.recipe.task)), None)
    if first is None:
        return Plan(seeds=0)
    backends = counting_backends(setup.recipe)
    usage = await _count_conversation(setup, first, backends, race="max")
    per_role = {
        role: RoleEstimate(tally.calls + tally.cached_calls, tally.prompt_tokens, tally.completion_tokens)
        for role, tally in usage.by_role().items()
    }
    least = None
    if setup.recipe.generation.adaptive is not None:
        fewest = await _count_conversation(setup, first, counting_backends(setup.recipe), race="min")
        least = float(sum(t.calls + t.cached_calls for t in fewest.by_role().values()))
    return Plan(seeds=setup.seeds, per_conversation=per_role, warnings=budget_warnings(setup.recipe, backends),
                least_calls_per_conversation=least)


async def _count_conversation(
    setup: RunSetup, first: tuple[int, Any], backends: dict[str, CountingBackend], race: str,
) -> UsageBook:
    async with open_context(setup, cache_path=None, backends=backends) as context:

        async def on_turn(record: TurnRecord) -> None:
            return None

        collaboration = context.collaboration(first[0], first[1])
        collaboration.race_bounds = race
        await collaboration.run(None, 0, on_turn)
        return context.usage


def futures_note(recipe: Recipe) -> str:
    """What the upper bound assumed of adaptive futures ("" with a fixed S)."""
    a = recipe.generation.adaptive
    if a is None:
        return ""
    return (f", adaptive futures counted at max_futures {a.max_futures} per candidate: a race stops once the best "
            f"candidate is separated at confidence {a.confidence}, after {a.min_futures} futures at least")


def budget_warnings(recipe: Recipe, backends: dict[str, CountingBackend]) -> list[str]:
    """One line per role whose `max_tokens` cannot hold the bounded fields (`maxLength`) of a
    schema it must answer, the tokens estimated at `CHARS_PER_TOKEN_LOW` characters each."""
    warnings = []
    for role, config in recipe.models.roles().items():
        if config.max_tokens is None or role not in backends:
            continue
        by_schema: dict[str, list[str]] = {}
        for stage, schema in backends[role].schemas.items():
            by_schema.setdefault(json.dumps(schema, sort_keys=True), []).append(stage)
        for text, stages in by_schema.items():
            chars = len(json.dumps(largest_bounded_instance(json.loads(text))))
            tokens = math.ceil(chars / CHARS_PER_TOKEN_LOW)
            if tokens <= config.max_tokens:
                continue
            cap = max(config.truncation_cap() or 0, config.max_tokens)
            then = (f"a reply that long is cut and asked again with larger budgets up to max_tokens_cap {cap} "
                    "(extra calls)" if cap >= tokens else
                    f"max_tokens_cap {cap} cannot hold it either: such a reply fails its conversation as truncated")
            warnings.append(
                f"models.{role}.max_tokens {config.max_tokens} may not hold its JSON reply at stage "
                f"{', '.join(repr(s) for s in stages)}: the schema's bounded fields allow {chars:,} characters, "
                f"about {tokens:,} tokens at {CHARS_PER_TOKEN_LOW} characters per token (a conservative "
                f"estimate); {then}")
    return warnings
