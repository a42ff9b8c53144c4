"""`collabgen plan`: how many calls and tokens a run will take, without calling anything.

Counts follow the engine's call plan exactly (see `collaboration.py`) at the upper bound:
every conversation runs `max_turns` turns and no future ends early. Tokens are an
estimate: message lengths are assumed (assistant `max_tokens` or 300, user 80, judge
output 60) and prompts grow with the conversation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from collabgen.config.recipe import Recipe
from collabgen.tasks.base import Task

USER_MESSAGE = 80
JUDGE_OUTPUT = 60
SYSTEM_PROMPT = 250


@dataclass
class RoleEstimate:
    calls: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0


@dataclass
class Plan:
    seeds: int
    per_conversation: dict[str, RoleEstimate] = field(default_factory=dict)

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


def plan_run(recipe: Recipe, task: Task, seeds: int, brief_tokens: int = 300) -> Plan:
    gen = recipe.generation
    weights = recipe.reward.weights
    assistant = recipe.models.policy.max_tokens or 300
    roles: dict[str, RoleEstimate] = defaultdict(RoleEstimate)

    def call(role: str, prompt: float, completion: float) -> None:
        roles[role].calls += 1
        roles[role].prompt_tokens += prompt
        roles[role].completion_tokens += completion

    user_system = SYSTEM_PROMPT + brief_tokens
    call("user", user_system, USER_MESSAGE)
    history = USER_MESSAGE
    proactive = round(gen.candidates * gen.proactive_share)
    judge_calls = (1 if weights.get("interactivity", 0.0) else 0) + (
        task.judge_calls_per_future() if any(weights.get(m, 0.0) for m in task.metrics) else 0
    )
    plain = gen.candidates - proactive
    for turn in range(gen.max_turns):
        # From the second turn on, the chosen future's assistant reply is reused as a
        # plain candidate (and the rest of that future as its first, partial rollout).
        reuse = gen.reuse_futures and turn > 0 and plain >= 1 and gen.window >= 2
        for n in (proactive, plain - (1 if reuse else 0)):
            if n:
                call("policy", SYSTEM_PROMPT + history, assistant * n)
        for index in range(gen.candidates):
            partial = reuse and index == proactive and gen.window >= 3
            fresh = gen.futures - (1 if partial else 0)
            context = history + assistant
            if fresh:
                call("user", user_system + context, USER_MESSAGE * fresh)
            starts = [(1, context + USER_MESSAGE)] * fresh + ([(gen.window - 2, context + USER_MESSAGE + assistant)]
                                                              if partial else [])
            for first_step, length in starts:
                for step in range(first_step, gen.window):
                    if step % 2:
                        call("policy", length, assistant)
                        length += assistant
                    else:
                        call("user", user_system + length, USER_MESSAGE)
                        length += USER_MESSAGE
                for _ in range(judge_calls):
                    call("judge", SYSTEM_PROMPT + length, JUDGE_OUTPUT)
        history += assistant + USER_MESSAGE
    return Plan(seeds=seeds, per_conversation=dict(roles))
