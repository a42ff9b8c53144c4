"""`collabgen eval`, the engine part: one policy holds one whole conversation with the simulator.

No candidates and no futures: per held-out seed and per policy, one conversation up to
`max_turns` or the termination marker (`Collaboration.hold`, the same dialogue loop the
futures use), scored on its final state through the same path as futures
(`Scorer.score_conversation`): the task's extrinsic metric, the interactivity judge over
the whole conversation, and the assistant's token count. Policies share the simulator's
opening message per seed (same request, answered once by the cache), so comparisons are
paired. The run around it (setup, journal, resume) is `collabgen.app.evaluate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import GenerationConfig, ModelConfig, Recipe, TaskConfig, recipe_lines, where
from collabgen.engine.collaboration import Collaboration, Roles
from collabgen.engine.multiturn_reward import Scorer
from collabgen.models.base import Message
from collabgen.models.executor import CallFailed, RoleModel
from collabgen.prompting import Prompts
from collabgen.tasks.base import SeedModel, Task
from collabgen.tasks.reference_metrics import cl100k_tokens


@dataclass
class PolicySpec:
    """One policy of an evaluation: its model and, when the spec sets one
    (`sets_system_prompt`), its own system prompt (None: no system message); otherwise
    the recipe's `generation.system_prompt`."""

    name: str
    config: ModelConfig
    system_prompt: str | None = None
    sets_system_prompt: bool = False

    def sampling_prompt(self, default: str | None) -> str | None:
        """The system prompt this policy is sampled with."""
        return self.system_prompt if self.sets_system_prompt else default


PROACTIVE = "@proactive"
"""`system_prompt=@proactive`: the packaged proactive prompt (`prompts/proactive_system.j2`),
the "proactive prompting" baseline of the paper."""

_SPEC_KEY = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_policy_spec(text: str, base: ModelConfig, prompts: Prompts | None = None) -> PolicySpec:
    """`MODEL` or `name=NAME,model=MODEL,base_url=URL,...`; unset fields come from the recipe's
    policy. `system_prompt=TEXT` (a comma inside TEXT is fine unless `word=` follows it;
    empty: none; `@proactive`: the packaged proactive prompt) or `system_prompt_file=PATH`
    gives the policy its own system prompt."""
    if "=" not in text:
        updates: dict[str, Any] = {"model": text.strip()}
    else:
        updates = {}
        for part in _SPEC_KEY.split(text):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise RecipeError(f"--policy {text!r}: expected key=value pairs separated by commas")
            updates[key.strip()] = value.strip()
    name = str(updates.pop("name", updates.get("model", base.model)))
    prompt = _system_prompt(text, updates, prompts or Prompts())
    try:
        config = ModelConfig.model_validate({**base.model_dump(), **updates})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise RecipeError(f"--policy {text!r}: {problems}") from None
    if prompt is None:
        return PolicySpec(name=name, config=config)
    return PolicySpec(name=name, config=config, system_prompt=prompt[0], sets_system_prompt=True)


def _system_prompt(text: str, updates: dict[str, Any], prompts: Prompts) -> tuple[str | None] | None:
    """The spec's own system prompt as a 1-tuple (its text, or None for none), popped from
    `updates`; None when the spec sets none."""
    inline, path = updates.pop("system_prompt", None), updates.pop("system_prompt_file", None)
    if inline is not None and path is not None:
        raise RecipeError(f"--policy {text!r}: give system_prompt or system_prompt_file, not both")
    if path is not None:
        try:
            return (Path(path).read_text(encoding="utf-8").strip() or None,)
        except (OSError, UnicodeDecodeError) as err:
            raise RecipeError(f"--policy {text!r}: system_prompt_file {path}: {err}") from None
    if inline is None:
        return None
    if inline == PROACTIVE:
        return (prompts.render("proactive_system"),)
    return (inline or None,)


@dataclass
class EvalResult:
    policy: str
    index: int
    conv_id: str
    status: str
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    system_prompt: str | None = None  # the policy's sampling system prompt in this conversation


def eval_task_config(recipe: Recipe) -> TaskConfig:
    """The held-out seeds: `eval.source`, or the task's source with the Hub split swapped for
    `eval.split` and, when the task's source splits its rows (`select.split`), the
    `eval.part` of that split (the test part by default). A local task source with neither
    is refused (`refuse_training_seeds`)."""
    refuse_training_seeds(recipe)
    source = recipe.eval.source or recipe.task.source
    if recipe.eval.source is None and source.hub is not None and recipe.eval.split:
        source = source.model_copy(update={"hub": source.hub.model_copy(update={"split": recipe.eval.split})})
    select = source.select
    if recipe.eval.source is None and select is not None and select.split is not None:
        held_out = select.split.model_copy(update={"part": recipe.eval.part})
        source = source.model_copy(update={"select": select.model_copy(update={"split": held_out})})
    return recipe.task.model_copy(update={"source": source, "limit": recipe.eval.limit, "offset": recipe.eval.offset})


def refuse_training_seeds(recipe: Recipe) -> None:
    """Refuse to evaluate on the seeds the run trains on, unless `eval.on_training_seeds`.

    With no `eval.source`, a local task source without `select.split` has no held-out part
    (a Hub source has: `eval.split`), so the scores would be on training seeds and look
    better than the policy is: an error before any call, not a silent default."""
    source, evaluation = recipe.task.source, recipe.eval
    if evaluation.source is not None or evaluation.on_training_seeds or source.hub is not None:
        return
    if source.select is not None and source.select.split is not None:
        return
    task = recipe.task
    if task.limit is not None and evaluation.offset >= task.offset + task.limit:
        return  # eval reads the rows past the ones the run trains on (`eval.offset`)
    lines = recipe_lines(recipe)
    # The line of eval.source (or of `eval:`) when the file has one, else of the task's seed file.
    field = ("eval", "source") if ("eval",) in lines else ("task", "source", "path")
    raise RecipeError(
        where(recipe.source_file, lines, field)
        + f"eval.source: not set, and task.source.path ({source.path}) is a local file with no "
        "select.split, so `collabgen eval` would score the seeds the run trains on. Give held-out "
        "seeds in eval.source (e.g. {path: held_out.jsonl}), split the task's rows with "
        "task.source.select.split (eval takes its eval.part, the test part by default), skip the "
        "training rows with eval.offset >= task.offset + task.limit, or set "
        "eval.on_training_seeds: true to evaluate on the training seeds on purpose"
    )


def eval_dir(recipe: Recipe) -> Path:
    return recipe.eval.dir or recipe.output.dir / "eval"


def eval_generation(recipe: Recipe) -> GenerationConfig:
    """The generation settings of an evaluation: the eval seed and turn budget."""
    return recipe.generation.model_copy(
        update={"seed": recipe.eval.seed, "max_turns": recipe.eval.max_turns or recipe.generation.max_turns}
    )


class Evaluator:
    """Holds and scores one conversation per (policy, seed)."""

    def __init__(self, *, task: Task, prompts: Prompts, generation: GenerationConfig, user: RoleModel,
                 judge: RoleModel, scorer: Scorer, policies: dict[str, RoleModel],
                 system_prompts: dict[str, str | None] | None = None) -> None:
        self.task = task
        self.prompts = prompts
        self.generation = generation
        self.user = user
        self.judge = judge
        self.scorer = scorer
        self.policies = policies
        self.system_prompts = system_prompts or {}
        """Each policy's sampling system prompt (absent: `generation.system_prompt`)."""

    def generation_of(self, policy_name: str) -> GenerationConfig:
        """The generation settings a policy converses under: its own system prompt, if any."""
        if policy_name not in self.system_prompts:
            return self.generation
        return self.generation.model_copy(update={"system_prompt": self.system_prompts[policy_name]})

    async def converse(self, policy_name: str, index: int, seed: SeedModel) -> EvalResult:
        conv_id = f"{self.task.name}-eval-{index:06d}"
        collaboration = Collaboration(
            task=self.task, seed=seed, conv_id=conv_id, index=index, generation=self.generation_of(policy_name),
            roles=Roles(policy=self.policies[policy_name], user=self.user, judge=self.judge), prompts=self.prompts,
            scorer=self.scorer,
        )
        try:
            conversation, tokens = await collaboration.hold(self.generation.max_turns)
            scored = await self.scorer.score_conversation(
                seed, conversation[:1], conversation[1:], tokens, (self.generation.seed, conv_id), every_metric=True,
            )
        except CallFailed as err:
            return EvalResult(policy=policy_name, index=index, conv_id=conv_id, status="failed", reason=str(err))
        metrics = scored.metrics
        metrics.pop("token_penalty")  # eval reports the tokens themselves
        metrics.update(conversation_counts(conversation, tokens))
        return EvalResult(policy=policy_name, index=index, conv_id=conv_id, status="ok", metrics=metrics,
                          messages=conversation, system_prompt=collaboration.gen.system_prompt)


def conversation_counts(conversation: list[Message], tokens: int) -> dict[str, float]:
    """What eval counts of a whole conversation: `tokens_k`, the assistant's tokens in
    thousands as the policy's server counted them (usage); `tokens_k_cl100k`, the
    reference's `token_amount` (its assistant messages joined by spaces, in thousands of
    cl100k_base tokens, whatever the policy's tokenizer); `turns`, the assistant's replies."""
    replies = [m["content"] for m in conversation if m["role"] == "assistant"]
    return {"tokens_k": tokens / 1000, "tokens_k_cl100k": cl100k_tokens(" ".join(replies)) / 1000,
            "turns": float(len(replies))}
