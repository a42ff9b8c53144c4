"""`answers_match` in a forked process with a wall-clock bound: `verify_seconds`.

math-verify's own timeout (SIGALRM, 5 s) turned a hard but equal pair such as `10^{10^7}`
and `(10^{10^6})^{10}` into "no match", a silent 0, and ran on the event loop, stalling
every conversation while it computed. Here the comparison runs in a child process (fork:
nothing to import again), the loop waits on a thread, and a child still computing after
`verify_seconds` is killed: the outcome is None, which the math task flags
`math_verify_timeout` (its candidate is never chosen nor rejected) instead of scoring 0.
Outcomes are memoised: futures of one seed keep giving the same answers.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from multiprocessing.connection import Connection

from collabgen.tasks.math_answers import answer_text, answers_match_untimed


def _child(reference: str, predicted: str, send: Connection) -> None:
    send.send(answers_match_untimed(reference, predicted))
    send.close()


@functools.lru_cache(maxsize=65536)
def _bounded(reference: str, predicted: str, seconds: float) -> bool | None:
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child, args=(reference, predicted, send), daemon=True)
    child.start()
    send.close()
    try:
        if receive.poll(seconds):
            try:
                return bool(receive.recv())
            except EOFError:  # the child died without an answer (out of memory, a crash)
                return None
        return None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()


async def answers_match_bounded(reference: str, predicted: str, seconds: float) -> bool | None:
    """True or False as `answers_match` decides it, or None when it took over `seconds`."""
    if answer_text(reference) and answer_text(reference) == answer_text(predicted):
        return True  # equal text: no process needed
    return await asyncio.to_thread(_bounded, reference, predicted, seconds)
