"""Scripted, deterministic model roles for tests: a policy, a user simulator and a judge.

They read the real prompts collabgen sends, so they exercise the prompt plumbing too:
the user simulator finds its problem (never an answer) in its system prompt and the chat
in its one transcript message, and replies in the simulator's JSON format with a private
thought that must never reach the assistant or the rows; the policy tells the proactive
system prompt from any other; the judge finds the part to rate in its prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction

from collabgen.prompting import Prompts
from tests.fakeserver import Reply, ScriptCall

POLICY = "policy-model"
USER = "user-sim"
JUDGE = "judge-model"
TERMINATE = "[[TERMINATE CHAT]]"
THOUGHT = "PRIVATE-THOUGHT"
"""Every scripted user's thought starts with this: tests look for it where it must never be."""
PROACTIVE_SYSTEM = Prompts().render("proactive_system")


# --------------------------------------------------------------------------- the simulator's side


@dataclass
class SimView:
    """A user-simulator request as the script reads it: the brief and the chat so far."""

    system: str
    chat: list[tuple[str, str]]  # (role, content), in order

    @property
    def opening(self) -> bool:
        return not self.chat

    @property
    def last(self) -> str:
        return self.chat[-1][1] if self.chat else ""


def sim_view(call: ScriptCall) -> SimView:
    """The brief (system message) and the transcript (`USER: ...` / `ASSISTANT: ...`) of the turn message."""
    chat_text = _between(call.messages[-1]["content"], "<<<CHAT", "CHAT>>>")
    parts = re.split(r"(?m)^(USER|ASSISTANT): ", chat_text)
    chat = [(parts[i].lower(), parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    return SimView(system=call.messages[0]["content"], chat=chat)


def say(message: str, *, satisfied: bool = False, why: str = "") -> str:
    """The simulator's reply: a private thought, whether it is satisfied, and its message."""
    return json.dumps({"thought": f"{THOUGHT}: {why or 'deciding what to say'}", "satisfied": satisfied,
                       "message": message})


def schema_capped(script):
    """`script` as a constrained decoder would answer it (vLLM structured outputs): its
    message ends at the request's `maxLength`. The fake server does not decode, so without
    this no test sees what the cap cuts. Over the OpenAI protocol collabgen sends no
    `maxLength` (strict mode takes none, `schema_dialect`): nothing is cut, the cap is
    checked on the parsed reply instead."""

    def capped(call: ScriptCall) -> str:
        reply = json.loads(script(call))
        schema = call.body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        limit = schema.get("properties", {}).get("message", {}).get("maxLength")
        if limit is not None:
            reply["message"] = reply["message"][:limit]
        return json.dumps(reply)

    return capped


def is_proactive(call: ScriptCall) -> bool:
    """Whether a policy request was sampled with the proactive system prompt."""
    return bool(call.messages) and call.messages[0]["role"] == "system" and call.messages[0]["content"] == PROACTIVE_SYSTEM


# --------------------------------------------------------------------------- math


def _solve(problem: str) -> str | None:
    """What the user works out from its own problem (each toy seed is one operation): the
    simulator never sees the reference answer, so a scripted user checks a reply itself."""
    patterns = {
        r"What is (\d+) \+ (\d+)\?": lambda a, b: a + b,
        r"What is (\d+) - (\d+)\?": lambda a, b: a - b,
        r"What is (\d+) \\times (\d+)\?": lambda a, b: a * b,
        r"What is (\d+)\^(\d+)\?": lambda a, b: a**b,
        r"Solve for x: (\d+)x = (\d+)\.": lambda a, b: Fraction(b, a),
    }
    for pattern, compute in patterns.items():
        found = re.fullmatch(pattern, problem)
        if found:
            return str(compute(*map(int, found.groups())))
    found = re.fullmatch(r"What is \\frac\{(\d+)\}\{(\d+)\} \+ \\frac\{(\d+)\}\{(\d+)\}\?", problem)
    if found:
        a, b, c, d = map(int, found.groups())
        total = Fraction(a, b) + Fraction(c, d)
        return f"\\frac{{{total.numerator}}}{{{total.denominator}}}"
    return None


def math_user(call: ScriptCall) -> str:
    """Opens with the problem; satisfied once the assistant boxes the answer it works out itself."""
    view = sim_view(call)
    problem = _between(view.system, "<<<PROBLEM", "PROBLEM>>>")
    if view.opening:
        return say(f"hey, can you help me with this: {problem}")
    last = view.last
    mine = _solve(problem)
    if mine is not None and f"\\boxed{{{mine}}}" in last:
        return say("great, thanks!", satisfied=True, why="that matches what I get")
    if "?" in last:
        return say("I want the exact value please. Just give me the final answer.")
    variant = (call.seed or 0) % 3 + call.choice_index
    return say(["that doesn't look right, try again", "hmm, can you double check?", "not sure that's it"][variant % 3])


def math_policy(call: ScriptCall) -> str:
    """Proactive prompt -> a clarifying question; else an answer, right or wrong by seed."""
    if is_proactive(call):
        return "Before I solve it: do you want an exact value or a decimal approximation?"
    user_text = " ".join(m["content"] for m in call.messages if m["role"] == "user")
    numbers = [int(n) for n in re.findall(r"\d+", user_text)]
    right = ((call.seed or 0) + call.choice_index) % 2 == 0
    guess = sum(numbers[:2]) if numbers else 0
    return f"Let me work it out step by step. The answer is $\\boxed{{{guess if right else guess + 1}}}$."


THREE_LEVEL_PROMPT = "as 1, 2 or 3"
"""What the three-level interactivity prompt (`reward.interactivity_scale: three_level`) asks."""


def judge(call: ScriptCall) -> str:
    """Interactivity: high when the rated assistant part (the window, or the whole
    conversation under `reward.interactivity: conversation`) asks a question (0.9, or 3 on
    the three-level prompt), low otherwise (0.2, or 1); a math extraction gets the last
    boxed answer (`answer` is required by its schema)."""
    prompt = call.messages[-1]["content"]
    if '{"answer"' in prompt:  # math extraction (a reply cut short lost its box): the schema needs `answer`
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", prompt)
        return json.dumps({"answer": boxed[-1] if boxed else ""})
    evaluated = _between(prompt, "<<<EVALUATE", "EVALUATE>>>") or _between(prompt, "<<<CONVERSATION", "CONVERSATION>>>")
    assistant_lines = [line for line in evaluated.splitlines() if line.startswith("ASSISTANT:")]
    asks = any("?" in line for line in assistant_lines)
    if THREE_LEVEL_PROMPT in prompt:
        return json.dumps({"thought": "scripted", "interactivity": 3 if asks else 1})
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


def _user_said(call: ScriptCall) -> list[str]:
    return [m["content"] for m in call.messages if m["role"] == "user"]


def task_judge(call: ScriptCall) -> str:
    """Interactivity as `judge`; extraction and clarification judges read their prompt."""
    prompt = call.messages[-1]["content"]
    if '"interactivity"' in prompt:
        return judge(call)
    conversation = _between(prompt, "<<<CONVERSATION", "CONVERSATION>>>")
    if '{"document"' in prompt:
        return json.dumps({"document": extract_document(prompt, conversation)})
    if '{"code"' in prompt:
        blocks = re.findall(r"```python\n(.*?)```", conversation, re.DOTALL)
        return json.dumps({"code": blocks[-1] if blocks else ""})
    if '{"asked_clarification"' in prompt:
        response = _between(prompt, "<<<RESPONSE", "RESPONSE>>>")
        return json.dumps({"asked_clarification": "?" in response})
    return "no idea what you want"


# --------------------------------------------------------------------------- tasks: document
# The user reveals the article only when asked; a draft written without it is the title.

ASSEMBLE_SECTIONS = "assemble the latest version of every section"
"""What the extraction prompt must ask for the scripted judge to join a document written in sections."""


def extract_document(prompt: str, conversation: str) -> str:
    """The extraction judge as a literal reader: the assistant's `DRAFT: ...` messages are
    whole documents, its `SECTION <n>: ...` messages parts of one. Asked to assemble the
    latest version of every section, it joins them in order (a later draft starts over);
    asked for anything else (e.g. "the latest full draft"), it copies the last message
    that holds document text, which for a sectioned document is its last section."""
    found = re.findall(r"^ASSISTANT: (?:DRAFT: (.*)|SECTION (\d+): (.*))$", conversation, re.MULTILINE)
    if not found:
        return ""
    if ASSEMBLE_SECTIONS not in prompt:
        draft, _, section = found[-1]
        return draft or section
    sections: dict[int, str] = {}
    for draft, number, section in found:
        if number:
            sections[int(number)] = section
        else:
            sections = {0: draft}
    return "\n\n".join(text for _, text in sorted(sections.items()))


def document_user(call: ScriptCall) -> str:
    view = sim_view(call)
    title = _between(view.system, "The title of your article:", "\n\n")
    article = _between(view.system, "<<<ARTICLE", "ARTICLE>>>")
    last = view.last
    if view.opening:
        return say(f"hi, can you help me write an article called '{title}'")
    if last.startswith("DRAFT: "):
        if last == f"DRAFT: {article}":
            return say("perfect, that's it!", satisfied=True, why="the draft is my article")
        return say("no, that's not what I have in mind.")
    if "?" in last:
        return say(f"It should say: {article}")
    return say("ok")


def document_policy(call: ScriptCall) -> str:
    said = _user_said(call)
    revealed = [s.split("It should say: ", 1)[1] for s in said if s.startswith("It should say: ")]
    if revealed:
        return f"DRAFT: {revealed[-1]}"
    if is_proactive(call):
        return "Happy to help! What should the article say?"
    title = re.search(r"'(.*)'", said[0])
    return f"DRAFT: {title.group(1) if title else 'untitled'}"


def install_document(server) -> None:
    server.set_script(POLICY, document_policy)
    server.set_script(USER, document_user)
    server.set_script(JUDGE, task_judge)


# A document written in two sections: once the article is revealed, the policy writes its
# first half, then (told to go on) its second; the user is satisfied once both are there.


def article_sections(article: str) -> list[str]:
    words = article.split()
    return [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2:])]


def _written_sections(chat: list[tuple[str, str]]) -> dict[int, str]:
    sections: dict[int, str] = {}
    for role, content in chat:
        found = re.fullmatch(r"SECTION (\d+): (.*)", content) if role == "assistant" else None
        if found:
            sections[int(found.group(1))] = found.group(2)
    return sections


def sectioned_document_user(call: ScriptCall) -> str:
    view = sim_view(call)
    title = _between(view.system, "The title of your article:", "\n\n")
    article = _between(view.system, "<<<ARTICLE", "ARTICLE>>>")
    if view.opening:
        return say(f"hi, can you help me write an article called '{title}'")
    if view.last.startswith("SECTION "):
        written = " ".join(text for _, text in sorted(_written_sections(view.chat).items()))
        if written == article:
            return say("perfect, that's all of it!", satisfied=True, why="both sections are my article")
        return say("good, go on with the next section.")
    if "?" in view.last:
        return say(f"It should say: {article}")
    return say("ok")


def sectioned_document_policy(call: ScriptCall) -> str:
    said = _user_said(call)
    revealed = [s.split("It should say: ", 1)[1] for s in said if s.startswith("It should say: ")]
    if revealed:
        done = sum(1 for m in call.messages if m["role"] == "assistant" and m["content"].startswith("SECTION "))
        sections = article_sections(revealed[-1])
        if done < len(sections):
            return f"SECTION {done + 1}: {sections[done]}"
        return "That is the whole article, both sections."
    if is_proactive(call):
        return "Happy to help! What should the article say?"
    title = re.search(r"'(.*)'", said[0])
    return f"SECTION 1: {title.group(1) if title else 'untitled'}"


def install_sectioned_document(server) -> None:
    server.set_script(POLICY, sectioned_document_policy)
    server.set_script(USER, sectioned_document_user)
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
    """Reads the code against its notes (here: the mark the right variant carries); no tests.
    Thanked for nothing after trying the code, it gives up with the termination marker."""
    view = sim_view(call)
    spec = _between(view.system, "<<<SPEC", "SPEC>>>")
    last = view.last
    if view.opening:  # as the brief says: the purpose, then the signature word for word
        signature = _between(view.system, "<<<SIGNATURE", "SIGNATURE>>>")
        return say(f"hey, I need a python function task_func. {spec}\n```python\n{signature}\n```")
    if "```python" in last:
        if CODE_RIGHT_MARK in last:
            return say("looks good, thanks!", satisfied=True, why="it covers my notes")
        return say("thanks, I'll try it")
    if "?" in last:
        return say("Plain and simple, exactly as I described.")
    return say(f"ok, bye {TERMINATE}", why="nothing more to get here")


def code_policy(call: ScriptCall) -> str:
    said = _user_said(call)
    if "try it" in said[-1]:
        return "Glad to help! Let me know if anything breaks."
    right, buggy = next(v for k, v in CODE_VARIANTS.items() if k in said[0])
    if any("exactly as I described" in s for s in said):
        return f"Here it is:\n```python\n{CODE_RIGHT_MARK}\n{right}```"
    if is_proactive(call):
        return "Before I write it: should it handle edge cases such as negative or empty input?"
    return f"Here you go:\n```python\n{buggy}```\nThis should do it."


def install_code(server) -> None:
    server.set_script(POLICY, code_policy)
    server.set_script(USER, code_user)
    server.set_script(JUDGE, task_judge)


# --------------------------------------------------------------------------- tasks: clarify
# The proactive policy asks which reading the user means; the plain one answers.


def clarify_user(call: ScriptCall) -> str:
    """Pastes the story and asks; asked what it means, it states its intent; answered, it thanks."""
    view = sim_view(call)
    if view.opening:
        story = _between(view.system, "<<<STORY", "STORY>>>")
        question = re.search(r"Your question: (.*)", view.system)
        return say(f"{story}\n\n{question.group(1) if question else 'what?'}")
    if "?" in view.last:
        intent = re.search(r"What you have in mind when you ask it: (.*)", view.system)
        return say(f"I mean {intent.group(1) if intent else 'the first one'}")
    return say("thanks!", satisfied=True)


def clarify_policy(call: ScriptCall) -> str:
    if any("I mean" in s for s in _user_said(call)):
        return "Then the answer is the one about Anna."
    if is_proactive(call):
        return "Do you mean Anna's or Tom's?"
    return "The answer is blue."


def install_clarify(server) -> None:
    server.set_script(POLICY, clarify_policy)
    server.set_script(USER, clarify_user)
    server.set_script(JUDGE, task_judge)
