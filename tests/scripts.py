"""Scripted, deterministic model roles for tests: a policy, a user simulator and a judge.

They read the real prompts collabgen sends, so they exercise the prompt plumbing too:
the user simulator finds its hidden problem in its system prompt, the policy tells a
proactive system prompt from none, the judge finds the evaluated part in its prompt.
"""

from __future__ import annotations

import json
import re

from tests.fakeserver import Reply, ScriptCall

POLICY = "policy-model"
USER = "user-sim"
JUDGE = "judge-model"
TERMINATE = "[[TERMINATE CHAT]]"


def _hidden_answer(call: ScriptCall) -> str:
    system = call.messages[0]["content"]
    found = re.findall(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", system)
    return found[-1] if found else "0"


def _problem(call: ScriptCall) -> str:
    system = call.messages[0]["content"]
    match = re.search(r"The problem:\n(.*?)\n", system)
    return match.group(1) if match else "a problem"


def math_user(call: ScriptCall) -> str:
    """Opens with the problem; ends the chat once the assistant boxes the right answer."""
    last = call.messages[-1]["content"]
    answer = _hidden_answer(call)
    if last.startswith("[The chat has not started yet"):
        return f"hey, can you help me with this: {_problem(call)}"
    if f"\\boxed{{{answer}}}" in last:
        return f"great, thanks! {TERMINATE}"
    if "?" in last:
        return "I want the exact value please. Just give me the final answer."
    variant = (call.seed or 0) % 3 + call.choice_index
    return ["that doesn't look right, try again", "hmm, can you double check?", "not sure that's it"][variant % 3]


def math_policy(call: ScriptCall) -> str:
    """Proactive prompt -> a clarifying question; else an answer, right or wrong by seed."""
    system = call.messages[0]["content"] if call.messages[0]["role"] == "system" else ""
    if "collaborative assistant" in system:
        return "Before I solve it: do you want an exact value or a decimal approximation?"
    user_text = " ".join(m["content"] for m in call.messages if m["role"] == "user")
    numbers = [int(n) for n in re.findall(r"\d+", user_text)]
    right = ((call.seed or 0) + call.choice_index) % 2 == 0
    guess = sum(numbers[:2]) if numbers else 0
    return f"Let me work it out step by step. The answer is $\\boxed{{{guess if right else guess + 1}}}$."


def judge(call: ScriptCall) -> str:
    """Interactivity: high when the evaluated assistant part asks a question."""
    prompt = call.messages[-1]["content"]
    evaluated = prompt.split("<<<EVALUATE", 1)[-1].split("EVALUATE>>>", 1)[0]
    assistant_lines = [line for line in evaluated.splitlines() if line.startswith("ASSISTANT:")]
    asks = any("?" in line for line in assistant_lines)
    return json.dumps({"thought": "scripted", "interactivity": 0.9 if asks else 0.2})


def never_parsable_judge(call: ScriptCall) -> Reply:
    return Reply(text="I think the assistant was fine, maybe a 7 out of 10.")


def install_math(server) -> None:  # noqa: ANN001 - tests.fakeserver.FakeLLMServer
    server.set_script(POLICY, math_policy)
    server.set_script(USER, math_user)
    server.set_script(JUDGE, judge)
