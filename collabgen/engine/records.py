"""Plain records the engine produces and the journal stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from collabgen.models.base import Message


@dataclass
class Future:
    """A simulated continuation after a candidate: user, assistant, user, ..."""

    messages: list[Message]
    tokens: list[int]
    terminated: bool
    metrics: dict[str, float] = field(default_factory=dict)
    score: float = 0.0


@dataclass
class Candidate:
    text: str
    tokens: int
    proactive: bool
    futures: list[Future] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    score: float = 0.0


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

    def to_json(self) -> dict[str, Any]:
        return {"kind": "turn", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        candidates = [
            Candidate(**{**c, "futures": [Future(**f) for f in c["futures"]]}) for c in data["candidates"]
        ]
        fields = {k: v for k, v in data.items() if k not in ("kind", "candidates")}
        return cls(candidates=candidates, **fields)

    def history_after(self) -> list[Message] | None:
        """The conversation the next turn continues from, or None when it has ended."""
        if self.next_user is None:
            return None
        chosen = self.candidates[self.best].text
        return [*self.prompt, {"role": "assistant", "content": chosen}, {"role": "user", "content": self.next_user}]


@dataclass
class EndRecord:
    conv_id: str
    index: int
    status: str  # "ok" or "failed"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": "end", **asdict(self)}
