"""How much of each prompt a prefix cache could serve.

A prompt is cut into blocks of `block` characters (vLLM caches by blocks of tokens; 64
characters is about 16 tokens, its default block). A block counts as repeated when an
earlier request sent to the same role had the same prompt up to and including that
block. The share of repeated characters is what a prefix cache can reuse; the engine
builds prompts (system, then history, then what differs) and issues requests with a
shared head together to make it high. Memory is bounded: the least recently seen blocks
are forgotten first, as a real prefix cache forgets them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from collabgen.models.base import Message


class PrefixMeter:
    def __init__(self, block: int = 64, capacity: int = 500_000) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._block = block
        self._capacity = capacity
        self.total_chars = 0
        self.repeated_chars = 0

    def observe(self, messages: list[Message]) -> None:
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        digest = hashlib.blake2b(digest_size=16)
        extending = True
        for start in range(0, len(text), self._block):
            chunk = text[start : start + self._block]
            digest.update(chunk.encode())
            key = digest.copy().digest()
            self.total_chars += len(chunk)
            if extending and key in self._seen:
                self.repeated_chars += len(chunk)
                self._seen.move_to_end(key)
                continue
            extending = False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)

    def share(self) -> float:
        return self.repeated_chars / self.total_chars if self.total_chars else 0.0
