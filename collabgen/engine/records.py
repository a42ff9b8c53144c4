"""Plain records the engine produces and the journal stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from collabgen.models.base import Message
from collabgen.tasks.base import ONLY_DRIFTED, UNDECIDED_FLAGS, USER_DRIFT


@dataclass
class Future:
    """A simulated continuation after a candidate: user, assistant, user, ..."""

    messages: list[Message]
    tokens: list[int]
    terminated: bool
    metrics: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    cut: list[int] = field(default_factory=list)  # indexes of messages cut at their token budget
    flags: list[str] = field(default_factory=list)  # what its metrics reported, e.g. "tampered"
    estimated: list[int] = field(default_factory=list)  # indexes of messages whose tokens were estimated

    @property
    def truncated(self) -> bool:
        return bool(self.cut)

    @property
    def drifted(self) -> bool:
        """Its simulated user acted as the assistant (`Task.user_drift`)."""
        return USER_DRIFT in self.flags


def lead_future(futures: list[Future]) -> int:
    """The future the next real user message comes from: the longest (the first on ties).

    As in the reference, the longest rollout is the one where the simulated user kept
    going; taking it keeps a conversation from ending just because one future's user
    happened to stop early. The conversation ends only when even that future ended at
    its first (user) message. A future whose user drifted into the assistant's part is
    taken only when every one did (its candidate is then never chosen anyway).
    """
    return max(range(len(futures)), key=lambda i: (not futures[i].drifted, len(futures[i].messages), -i))


@dataclass
class Candidate:
    text: str
    tokens: int
    proactive: bool
    futures: list[Future] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    reused: bool = False  # taken from the previous turn's chosen future (see Collaboration)
    truncated: bool = False  # cut at its token budget even after a larger one: never chosen
    tokens_estimated: bool = False  # the backend reported no usable count (`models.token_usage`)

    @property
    def scored_futures(self) -> list[Future]:
        """The futures its MR averages: those whose simulated user stayed a user (all of
        them when none did: the MR is then shown, but `ONLY_DRIFTED` bars the candidate)."""
        return [f for f in self.futures if not f.drifted] or self.futures

    @property
    def choosable(self) -> bool:
        """Neither cut at its budget nor scored with an undecided metric (`UNDECIDED_FLAGS`)."""
        return not self.truncated and not UNDECIDED_FLAGS.intersection(self.flags)

    @property
    def flags(self) -> list[str]:
        """Every flag of the candidate and its futures, once each, sorted."""
        own = ["truncated"] if self.truncated else []
        if self.futures and all(f.drifted for f in self.futures):
            own.append(ONLY_DRIFTED)
        return sorted({*own, *(flag for f in self.futures for flag in f.flags),
                       *(["truncated_future"] if any(f.truncated for f in self.futures) else [])})


@dataclass
class TurnRecord:
    """One finished assistant turn: what the journal keeps and the shards are built from."""

    conv_id: str
    index: int
    turn: int
    prompt: list[Message]
    candidates: list[Candidate]
    best: int
    worst: int
    next_user: str | None
    usage: dict[str, Any]
    lead: int = 0  # the chosen candidate's future `next_user` came from (journals before it: 0)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "turn", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        candidates = [
            Candidate(**{**c, "futures": [Future(**f) for f in c["futures"]]}) for c in data["candidates"]
        ]
        fields = {k: v for k, v in data.items() if k not in ("kind", "candidates")}
        return cls(candidates=candidates, **fields)

    def carry(self) -> tuple[str, int, Future | None, bool] | None:
        """What the next turn can reuse from the chosen candidate's lead future (`lead`).

        That future's user message becomes the next user turn, so its assistant reply
        was sampled from the plain policy on exactly the next turn's history: it is a
        candidate of the next turn for free, and the rest of the future is a partial
        rollout of it. Returns (text, tokens, partial future or None, tokens estimated).
        """
        if self.next_user is None:
            return None
        future = self.candidates[self.best].futures[self.lead]
        if len(future.messages) < 2 or future.messages[1]["role"] != "assistant" or 1 in future.cut:
            return None  # no reply to reuse, or one cut at its budget (never a candidate)
        rest = future.messages[2:]
        partial = None
        if rest:
            partial = Future(
                messages=[dict(m) for m in rest], tokens=list(future.tokens[2:]),
                terminated=future.terminated, cut=[i - 2 for i in future.cut if i >= 2],
                estimated=[i - 2 for i in future.estimated if i >= 2],
            )
        return future.messages[1]["content"], future.tokens[1], partial, 1 in future.estimated

    def history_after(self) -> list[Message] | None:
        """The conversation the next turn continues from, or None when it has ended."""
        if self.next_user is None:
            return None
        chosen = self.candidates[self.best].text
        return [*self.prompt, {"role": "assistant", "content": chosen}, {"role": "user", "content": self.next_user}]


FINISHED = ("ok", "context_exhausted")


@dataclass
class EndRecord:
    conv_id: str
    index: int
    status: str  # "ok", "context_exhausted" (ended cleanly: its turns are kept) or "failed"
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """Ended without failing: the conversation's data is complete and it is not resumed."""
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        return {"kind": "end", **asdict(self)}
