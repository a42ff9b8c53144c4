"""Cheap rules that tell a simulated user who acts as the assistant.

Small open models playing the user drift into solving the task ("solving problems as an
assistant instead of a user", the CollabLLM authors on Llama-3.1-8B and 70B). A future whose
user solved the task scores the user's work, not the candidate's, so it is flagged and left
out of the MR. Each rule looks at one user message and the seed (never at the reference
solution, which the user does not have): it has to catch the plain cases, and a rule that
fires on a real user's message would throw away honest futures, so each errs on the side of
not firing.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\s*\{")
_STATES_ANSWER = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+(?:is|=|:)\s*\S", re.IGNORECASE)
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", re.DOTALL)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")
_MIN_CODE_LINES = 2  # new code lines beyond the signature the user was given
_MIN_WORDS = 8  # a sentence long enough that a verbatim copy is no coincidence
_MIN_SENTENCES = 3


def states_final_answer(message: str) -> str | None:
    """Math: the user boxes an answer or states one ("the answer is 12")."""
    if _BOXED.search(message):
        return "the simulated user wrote a \\boxed{} answer"
    if _STATES_ANSWER.search(message):
        return "the simulated user stated the final answer"
    return None


def writes_code(message: str, given: str) -> str | None:
    """Code: a fenced block with code lines beyond those of `given` (the signature and
    imports the user's brief holds, which the user is meant to pass on)."""
    known = {line.strip() for line in given.splitlines()}
    for block in _FENCE.findall(message):
        lines = [line.strip() for line in block.splitlines()]
        new = [line for line in lines if line and not line.startswith("#") and line not in known]
        if len(new) >= _MIN_CODE_LINES:
            return f"the simulated user wrote {len(new)} lines of code"
    return None


def pastes_document(message: str, document: str) -> str | None:
    """Document: the user pastes sentences of the article it has in mind, verbatim (its
    brief says to share points, not text)."""
    said = _normal(message)
    copied = [s for s in _SENTENCE.findall(document) if len(s.split()) >= _MIN_WORDS and _normal(s) in said]
    if len(copied) >= _MIN_SENTENCES:
        return f"the simulated user pasted {len(copied)} sentences of the article"
    return None


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
