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


def install_math(server) -> None:
    server.set_script(POLICY, math_policy)
    server.set_script(USER, math_user)
    server.set_script(JUDGE, judge)


# --------------------------------------------------------------------------- tasks: shared


def _between(text: str, start: str, end: str) -> str:
    """The text between two markers ("" when absent)."""
    head, found, rest = text.partition(start)
    return rest.partition(end)[0].strip() if found else ""


def _opening(call: ScriptCall) -> bool:
    return call.messages[-1]["content"].startswith("[The chat has not started yet")


def _proactive(call: ScriptCall) -> bool:
    system = call.messages[0]["content"] if call.messages[0]["role"] == "system" else ""
    return "collaborative assistant" in system


def _user_said(call: ScriptCall) -> list[str]:
    return [m["content"] for m in call.messages if m["role"] == "user"]


def task_judge(call: ScriptCall) -> str:
    """Interactivity as `judge`; extraction and clarification judges read their prompt."""
    prompt = call.messages[-1]["content"]
    if "<<<EVALUATE" in prompt:
        return judge(call)
    conversation = _between(prompt, "<<<CONVERSATION", "CONVERSATION>>>")
    if '{"document"' in prompt:
        drafts = re.findall(r"^ASSISTANT: DRAFT: (.*)$", conversation, re.MULTILINE)
        return json.dumps({"document": drafts[-1] if drafts else ""})
    if '{"code"' in prompt:
        blocks = re.findall(r"```python\n(.*?)```", conversation, re.DOTALL)
        return json.dumps({"code": blocks[-1] if blocks else ""})
    if '{"asked_clarification"' in prompt:
        response = _between(prompt, "<<<RESPONSE", "RESPONSE>>>")
        return json.dumps({"asked_clarification": "?" in response})
    return "no idea what you want"


# --------------------------------------------------------------------------- tasks: document
# The user reveals the article only when asked; a draft written without it is the title.


def document_user(call: ScriptCall) -> str:
    system = call.messages[0]["content"]
    title = _between(system, "The title of your article:", "\n\n")
    article = _between(system, "<<<ARTICLE", "ARTICLE>>>")
    last = call.messages[-1]["content"]
    if _opening(call):
        return f"hi, can you help me write an article called '{title}'"
    if last.startswith("DRAFT: "):
        if last == f"DRAFT: {article}":
            return f"perfect, that's it! {TERMINATE}"
        return "no, that's not what I have in mind."
    if "?" in last:
        return f"It should say: {article}"
    return "ok"


def document_policy(call: ScriptCall) -> str:
    said = _user_said(call)
    revealed = [s.split("It should say: ", 1)[1] for s in said if s.startswith("It should say: ")]
    if revealed:
        return f"DRAFT: {revealed[-1]}"
    if _proactive(call):
        return "Happy to help! What should the article say?"
    title = re.search(r"'(.*)'", said[0])
    return f"DRAFT: {title.group(1) if title else 'untitled'}"


def install_document(server) -> None:
    server.set_script(POLICY, document_policy)
    server.set_script(USER, document_user)
    server.set_script(JUDGE, task_judge)


# --------------------------------------------------------------------------- tasks: code
# Asked a question, the user says "exactly as I described"; told that, the policy writes
# the right code, else a buggy one. Right code ends the chat at once (its block is the
# last assistant message: no extraction call); buggy code leads to a closing remark
# without code, so the judge has to extract it.

CODE_RIGHT_MARK = "# handles every case"

CODE_VARIANTS: dict[str, tuple[str, str]] = {  # key phrase of the spec -> (right, buggy)
    "adds two numbers": (
        "def task_func(a, b):\n    return a + b\n",
        "def task_func(a, b):\n    return abs(a) + abs(b)\n",  # fails the negative test: 2 of 3 pass
    ),
    "counts the words": (
        "def task_func(text):\n    return len(text.split())\n",
        "def task_func(text):\n    return text.count(' ') + 1\n",  # fails '' and 'a  b': 2 of 4 pass
    ),
    "area of a circle": (
        "def task_func(r):\n    return math.pi * r ** 2\n",  # needs code_prompt's `import math`
        "def task_func(r):\n    return 3.14 * r ** 2\n",  # fails the unit circle: 1 of 2 pass
    ),
    "spins forever": ("def task_func():\n    while True:\n        pass\n",) * 2,
    "reads the environment": ("import os\n\ndef task_func():\n    return os.environ['OPENAI_API_KEY']\n",) * 2,
    "huge buffer": ("def task_func():\n    return bytearray(8 * 1024 ** 3)\n",) * 2,
}


def code_user(call: ScriptCall) -> str:
    spec = _between(call.messages[0]["content"], "<<<SPEC", "SPEC>>>")
    last = call.messages[-1]["content"]
    if _opening(call):
        return f"hey, I need a python function task_func. {spec}"
    if "```python" in last:
        return f"looks good, thanks! {TERMINATE}" if CODE_RIGHT_MARK in last else "thanks, I'll try it"
    if "?" in last:
        return "Plain and simple, exactly as I described."
    return f"ok, bye {TERMINATE}"


def code_policy(call: ScriptCall) -> str:
    said = _user_said(call)
    if "try it" in said[-1]:
        return "Glad to help! Let me know if anything breaks."
    right, buggy = next(v for k, v in CODE_VARIANTS.items() if k in said[0])
    if any("exactly as I described" in s for s in said):
        return f"Here it is:\n```python\n{CODE_RIGHT_MARK}\n{right}```"
    if _proactive(call):
        return "Before I write it: should it handle edge cases such as negative or empty input?"
    return f"Here you go:\n```python\n{buggy}```\nThis should do it."


def install_code(server) -> None:
    server.set_script(POLICY, code_policy)
    server.set_script(USER, code_user)
    server.set_script(JUDGE, task_judge)


# --------------------------------------------------------------------------- tasks: clarify
# The proactive policy asks which reading the user means; the plain one answers.


def clarify_user(call: ScriptCall) -> str:
    system = call.messages[0]["content"]
    if _opening(call):
        story = _between(system, "<<<STORY", "STORY>>>")
        question = re.search(r"Your question: (.*)", system)
        return f"{story}\n\n{question.group(1) if question else 'what?'}"
    if "?" in call.messages[-1]["content"]:
        return "I mean the first one."
    return f"thanks! {TERMINATE}"


def clarify_policy(call: ScriptCall) -> str:
    if any("I mean" in s for s in _user_said(call)):
        return "Then the answer is the one about Anna."
    if _proactive(call):
        return "Do you mean Anna's or Tom's?"
    return "The answer is blue."


def install_clarify(server) -> None:
    server.set_script(POLICY, clarify_policy)
    server.set_script(USER, clarify_user)
    server.set_script(JUDGE, task_judge)
