"""One conversation: the user simulator, candidates, futures, scoring, and the chosen path.

Call plan per turn (C candidates, S futures, window w):
- candidates: one request with n=k for the proactive share, one with n=C-k for the rest;
- futures: the S first user replies to a candidate share one prompt, so one request with
  n=S; then S * (w - 1) sequential messages, alternating assistant and user;
- judges: per future, the interactivity judge plus whatever the task's metric needs.
The next real user message is the first user message of the best candidate's longest
future (the first on ties; `lead_future`): no extra call. With `reuse_futures`, that
future's assistant reply (sampled from the plain policy on exactly the next turn's
history) is one of the next turn's plain candidates, and the rest of that future is a
partial rollout of it: one sample fewer per turn and two simulated messages fewer.
With `generation.adaptive`, futures come in rounds (`collabgen.engine.racing`): the first
as above with `min_futures` in place of S, then one more future per still-contending
candidate per round, each its own request for the first user reply (seeded by the
future's index), up to `max_futures`.
The simulated user speaks through `UserSimulator.speak`: only its public message enters
a conversation (see `collabgen.engine.simulator`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from collabgen.config.recipe import GenerationConfig
from collabgen.engine.multiturn_reward import Scorer
from collabgen.engine.racing import candidate_options, race_round
from collabgen.engine.records import Candidate, Future, TurnRecord, lead_future
from collabgen.engine.selection import best_and_worst
from collabgen.engine.simulator import Said, UserSimulator, is_termination
from collabgen.models.base import TRUNCATED, Message
from collabgen.models.executor import RoleModel, request_seed
from collabgen.models.usage import UsageBook, UsageSink
from collabgen.prompting import Prompts
from collabgen.tasks.base import SeedModel, Task

__all__ = ["Collaboration", "Roles", "is_termination"]


def future_from(first: Said) -> Future:
    """A future begun with the simulated user's first reply to a candidate."""
    return Future(messages=[{"role": "user", "content": first.text}], tokens=[first.tokens], terminated=first.ends,
                  cut=[0] if first.truncated else [])


@dataclass
class Roles:
    policy: RoleModel
    user: RoleModel
    judge: RoleModel

    def bound(self, sink: UsageSink) -> Roles:
        """Every role also recording into `sink`, e.g. the ledger journaled with a turn."""
        return Roles(policy=self.policy.bound(sink), user=self.user.bound(sink), judge=self.judge.bound(sink))


class Collaboration:
    """Runs the turns of one conversation; every request's sample seed is a pure function
    of (run seed, conversation, turn, candidate, future, step), so a re-run asks exactly
    the same requests and the cache answers them."""

    def __init__(
        self, *, task: Task, seed: SeedModel, conv_id: str, index: int, generation: GenerationConfig,
        roles: Roles, prompts: Prompts, scorer: Scorer | None,
    ) -> None:
        self.task = task
        self.seed = seed
        self.conv_id = conv_id
        self.index = index
        self.gen = generation
        self.roles = roles
        self.prompts = prompts
        self.scorer = scorer
        self.simulator = UserSimulator(task, seed, prompts)
        # Adaptive futures: "rule" races; "max" never stops a race early and "min" stops every
        # one after its first round (`collabgen plan`'s upper and lower bounds).
        self.race_bounds: str = "rule"
        self._proactive_system = prompts.render("proactive_system")

    def _seed(self, *parts: object) -> int:
        return request_seed(self.gen.seed, self.conv_id, *parts)

    def bound(self, ledger: UsageSink) -> Collaboration:
        """This conversation with its roles and the scorer's judge also recording into `ledger`."""
        bound = copy.copy(self)
        bound.roles = self.roles.bound(ledger)
        bound.scorer = self.scorer.bound(ledger) if self.scorer is not None else None
        return bound

    # -- message views -------------------------------------------------------------

    def policy_view(self, conversation: list[Message], proactive: bool = False) -> list[Message]:
        system = self._proactive_system if proactive else self.gen.system_prompt
        head = [{"role": "system", "content": system}] if system else []
        return [*head, *conversation]

    # -- the loop ------------------------------------------------------------------

    async def open(self) -> list[Message]:
        [opening] = await self.simulator.speak(self.roles.user, [], seed=self._seed("open"), stage="user_open")
        return [{"role": "user", "content": opening.text}]

    async def run(
        self, history: list[Message] | None, first_turn: int, on_turn: Callable[[TurnRecord], Awaitable[None]],
        previous: TurnRecord | None = None,
    ) -> None:
        """Play turns from `first_turn` (resuming after `previous`), reporting each finished one."""
        carry = previous.carry() if previous is not None and self.gen.reuse_futures else None
        opening_usage = UsageBook()
        if history is None:
            history = await self.bound(opening_usage).open()
        for turn in range(first_turn, self.gen.max_turns):
            ledger = UsageBook()
            ledger.merge(opening_usage)
            opening_usage = UsageBook()
            record = await self.play_turn(history, turn, ledger, carry)
            if turn == self.gen.max_turns - 1:
                record.next_user = None
            await on_turn(record)
            next_history = record.history_after()
            if next_history is None:
                return
            history = next_history
            carry = record.carry() if self.gen.reuse_futures else None

    async def play_turn(
        self, history: list[Message], turn: int, ledger: UsageBook,
        carry: tuple[str, int, Future | None, bool] | None = None,
    ) -> TurnRecord:
        """One turn; every call it makes also lands in `ledger`, the usage journaled with it."""
        if carry is not None and self.gen.candidates - self.gen.proactive_count() < 1:
            carry = None  # every candidate is proactive: a plain reply cannot stand in for one
        this_turn = self.bound(ledger)
        candidates = await this_turn.sample_candidates(history, turn, carry)
        partial = carry[2] if carry is not None else None
        await asyncio.gather(
            *(
                this_turn.roll_out_and_score(history, turn, i, c, partial if c.reused else None)
                for i, c in enumerate(candidates)
            )
        )
        await this_turn.race(history, turn, candidates)
        best, worst = best_and_worst(candidate_options(candidates))
        lead = lead_future(candidates[best].futures)
        next_user = candidates[best].futures[lead].messages[0]["content"]
        return TurnRecord(
            conv_id=self.conv_id, index=self.index, turn=turn, prompt=list(history), candidates=candidates,
            best=best, worst=worst, next_user=None if is_termination(next_user) else next_user,
            usage=ledger.to_dict(), lead=lead,
        )

    async def sample_candidates(
        self, history: list[Message], turn: int, carry: tuple[str, int, Future | None, bool] | None = None,
    ) -> list[Candidate]:
        total = self.gen.candidates
        proactive = self.gen.proactive_count()
        plain = total - proactive - (1 if carry is not None else 0)
        groups = [(True, proactive), (False, plain)]
        results = await asyncio.gather(
            *(
                self.roles.policy.complete(
                    self.policy_view(history, proactive=is_proactive), n=count,
                    seed=self._seed(turn, "candidates", "proactive" if is_proactive else "plain"),
                    stage="candidates",
                )
                for is_proactive, count in groups
                if count
            )
        )
        candidates: list[Candidate] = []
        for (is_proactive, _), result in zip([g for g in groups if g[1]], results):
            if not is_proactive and carry is not None:
                candidates.append(Candidate(text=carry[0], tokens=carry[1], proactive=False, reused=True,
                                            tokens_estimated=carry[3]))
                carry = None
            for text, tokens, finish in zip(result.texts, result.completion_tokens, result.finish_reasons):
                candidates.append(Candidate(text=text, tokens=tokens, proactive=is_proactive,
                                            truncated=finish == TRUNCATED, tokens_estimated=result.tokens_estimated))
        if carry is not None:
            candidates.append(Candidate(text=carry[0], tokens=carry[1], proactive=False, reused=True,
                                            tokens_estimated=carry[3]))
        return candidates

    async def roll_out_and_score(
        self, history: list[Message], turn: int, index: int, candidate: Candidate, partial: Future | None = None,
    ) -> None:
        conversation = [*history, {"role": "assistant", "content": candidate.text}]
        reused = [partial] if partial is not None else []
        fresh = max(self.gen.first_futures() - len(reused), 0)

        async def fresh_futures() -> list[Future]:
            if fresh == 0:
                return []
            first = await self.simulator.speak(
                self.roles.user, conversation, n=fresh, seed=self._seed(turn, index, "future-user"),
                stage="future_user",
            )
            starts = [future_from(u) for u in first]
            return list(await asyncio.gather(
                *(self.continue_future(conversation, turn, index, len(reused) + s, f) for s, f in enumerate(starts))
            ))

        continued, fresh_ones = await asyncio.gather(
            asyncio.gather(*(self.continue_future(conversation, turn, index, 0, f) for f in reused)),
            fresh_futures(),
        )
        candidate.futures = [*continued, *fresh_ones]
        assert self.scorer is not None, "scoring futures needs a Scorer"
        await asyncio.gather(
            *(
                self.scorer.score_future(self.seed, history, candidate, future, (self.gen.seed, self.conv_id))
                for future in candidate.futures
            )
        )
        Scorer.aggregate(candidate)

    async def race(self, history: list[Message], turn: int, candidates: list[Candidate]) -> None:
        """With `generation.adaptive`, rounds of one more future for every candidate that can
        still win, until the best is separated from the rest or `max_futures` (no-op without)."""
        adaptive = self.gen.adaptive
        if adaptive is None:
            return
        while more := self.next_round(candidates, adaptive.confidence, adaptive.max_futures):
            await asyncio.gather(*(self.add_future(history, turn, i, candidates[i]) for i in more))

    def next_round(self, candidates: list[Candidate], confidence: float, max_futures: int) -> list[int]:
        """The rule's next round; for `collabgen plan`'s bounds (`race_bounds`), every candidate below
        `max_futures` ("max") or none ("min")."""
        if self.race_bounds == "max":
            return [i for i, c in enumerate(candidates) if len(c.futures) < max_futures]
        if self.race_bounds == "min":
            return []
        return race_round(candidates, confidence, max_futures)

    async def add_future(self, history: list[Message], turn: int, index: int, candidate: Candidate) -> None:
        """One more future of `candidate`, scored, and its MR again. Its first user reply is a
        request of its own, seeded by the future's index like every later message, so each
        future is a pure function of (conversation, turn, candidate, future index)."""
        conversation = [*history, {"role": "assistant", "content": candidate.text}]
        future_index = len(candidate.futures)
        [first] = await self.simulator.speak(
            self.roles.user, conversation, seed=self._seed(turn, index, "future-user", future_index),
            stage="future_user",
        )
        future = await self.continue_future(conversation, turn, index, future_index, future_from(first))
        assert self.scorer is not None, "scoring futures needs a Scorer"
        await self.scorer.score_future(self.seed, history, candidate, future, (self.gen.seed, self.conv_id))
        candidate.futures.append(future)
        Scorer.aggregate(candidate)

    async def continue_future(
        self, conversation: list[Message], turn: int, index: int, future_index: int, future: Future
    ) -> Future:
        """Extend a future (starting with a user message) to `window` messages or its end."""
        future.terminated = await self.alternate(
            conversation, future.messages, future.tokens, limit=self.gen.window,
            seed_for=lambda step, _role: self._seed(turn, index, future_index, step),
            stages={"assistant": "future_policy", "user": "future_user"}, cut=future.cut,
            estimated=future.estimated,
        ) or future.terminated
        return future

    async def alternate(
        self, head: list[Message], messages: list[Message], tokens: list[int], *, limit: int,
        seed_for: Callable[[int, str], int], stages: dict[str, str], cut: list[int] | None = None,
        estimated: list[int] | None = None,
    ) -> bool:
        """Let assistant and user take turns after `head + messages`, appending to
        `messages` (and each reply's tokens to `tokens`, the index of a reply cut at its
        budget to `cut`) until it holds `limit` messages or the user ends the chat. The one
        dialogue loop: futures and evaluation share it. Returns whether the user ended it."""
        ended = bool(messages) and messages[-1]["role"] == "user" and is_termination(messages[-1]["content"])
        while not ended and len(messages) < limit:
            so_far = [*head, *messages]
            step = len(messages)
            role = "user" if not so_far or so_far[-1]["role"] == "assistant" else "assistant"
            said = await self.say(role, so_far, seed=seed_for(step, role), stage=stages[role])
            if cut is not None and said.truncated:
                cut.append(len(messages))
            if estimated is not None and said.tokens_estimated and role == "assistant":
                estimated.append(len(messages))
            messages.append({"role": role, "content": said.text})
            tokens.append(said.tokens)
            ended = role == "user" and said.ends
        return ended

    async def say(self, role: str, conversation: list[Message], *, seed: int, stage: str) -> Said:
        """The next message of `role` after `conversation`: the simulator's public message or
        the plain policy's reply."""
        if role == "user":
            [turn] = await self.simulator.speak(self.roles.user, conversation, seed=seed, stage=stage)
            return turn
        result = await self.roles.policy.complete(self.policy_view(conversation), seed=seed, stage=stage)
        return Said(text=result.texts[0], tokens=result.completion_tokens[0],
                    truncated=result.finish_reasons[:1] == [TRUNCATED], tokens_estimated=result.tokens_estimated)

    async def hold(self, max_turns: int) -> tuple[list[Message], int]:
        """A whole conversation with no candidates or futures (`collabgen eval`): the
        simulator opens, then the policy and the simulator alternate until the user ends
        the chat or the policy has answered `max_turns` times. Returns the conversation
        and the assistant's tokens."""
        conversation = await self.open()
        tokens: list[int] = [0]
        base = (self.gen.seed, self.conv_id)
        await self.alternate(
            [], conversation, tokens, limit=2 * max_turns,
            seed_for=lambda step, role: request_seed(*base, (step - 1) // 2, "policy" if role == "assistant" else "user"),
            stages={"assistant": "eval_policy", "user": "eval_user"},
        )
        assistant_tokens = sum(t for m, t in zip(conversation, tokens) if m["role"] == "assistant")
        return conversation, assistant_tokens
