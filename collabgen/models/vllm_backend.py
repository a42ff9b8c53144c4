"""vLLM in-process (`pip install 'collabgen[vllm]'`): the async engine, so requests from
every conversation stream into vLLM's continuous batching; prefix caching on; `n=C` in
one request; the model's own chat template applied by vLLM's tokenizer.

Nothing here imports vllm at module load: collabgen works without it, and choosing
this backend without it installed is a clear error with the install line.
"""

from __future__ import annotations

import uuid
from typing import Any

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig
from collabgen.models.base import ChatRequest, ChatResult, Message, PermanentError

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'collabgen[vllm]' (on a machine with a GPU)"


def sampling_kwargs(request: ChatRequest, config: ModelConfig) -> dict[str, Any]:
    """vllm.SamplingParams arguments for a request."""
    kwargs: dict[str, Any] = {
        "n": request.n,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens or config.max_tokens or 1024,
    }
    if request.top_p is not None:
        kwargs["top_p"] = request.top_p
    if request.seed is not None:
        kwargs["seed"] = request.seed
    return kwargs


def engine_kwargs(config: ModelConfig) -> dict[str, Any]:
    """vllm.AsyncEngineArgs arguments: prefix caching on unless the recipe says otherwise."""
    return {"model": config.model, "enable_prefix_caching": True, **config.engine_args}


def render_prompt(tokenizer: Any, messages: list[Message]) -> str:
    """The model's chat template over the messages, ready for generation."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class VLLMBackend:
    supports_n = True

    def __init__(self, config: ModelConfig, engine: Any | None = None, sampling_params: Any | None = None) -> None:
        self.config = config
        self.engine = engine if engine is not None else self._start_engine(config)
        self._sampling_params = sampling_params
        self._tokenizer: Any | None = None

    @staticmethod
    def _start_engine(config: ModelConfig) -> Any:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise RecipeError(f"models: backend 'vllm' for {config.model!r}: {INSTALL_HINT}") from None
        return AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_kwargs(config)))

    async def complete(self, request: ChatRequest) -> ChatResult:
        if self._sampling_params is None:
            from vllm import SamplingParams

            self._sampling_params = SamplingParams
        if self._tokenizer is None:
            self._tokenizer = await self.engine.get_tokenizer()
        params = sampling_kwargs(request, self.config)
        if request.json_mode:
            params.update(_json_decoding())
        final = None
        async for output in self.engine.generate(
            render_prompt(self._tokenizer, request.messages),
            self._sampling_params(**params),
            request_id=uuid.uuid4().hex,
        ):
            final = output
        if final is None:
            raise PermanentError("vLLM returned no output")
        outputs = sorted(final.outputs, key=lambda o: o.index)
        return ChatResult(
            texts=[o.text for o in outputs],
            prompt_tokens=len(final.prompt_token_ids or []),
            completion_tokens=[len(o.token_ids) for o in outputs],
            finish_reasons=[o.finish_reason or "stop" for o in outputs],
        )

    async def aclose(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            shutdown()


def _json_decoding() -> dict[str, Any]:
    """Guided JSON decoding where this vLLM version has it; else the tolerant parser copes."""
    try:
        from vllm.sampling_params import GuidedDecodingParams
    except ImportError:
        return {}
    return {"guided_decoding": GuidedDecodingParams(json_object=True)}
