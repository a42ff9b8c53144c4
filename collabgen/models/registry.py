"""Building each role's model from its config: backend choice, key lookup, the chain of layers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig, Recipe, recipe_lines, where
from collabgen.config.secrets import remember, url_credentials
from collabgen.models.base import ChatBackend
from collabgen.models.cache import RequestCache, RequestKey
from collabgen.models.cached import CachedBackend
from collabgen.models.executor import RoleModel
from collabgen.models.inflight import InflightMerge
from collabgen.models.limited import LimitedBackend
from collabgen.models.limits import RateLimiter
from collabgen.models.metered import PrefixMetered
from collabgen.models.prefix import PrefixMeter
from collabgen.models.reply_policy import ReplyPolicy
from collabgen.models.retrying import RetryingBackend
from collabgen.models.usage import UsageSink


def resolve_api_key(role: str, config: ModelConfig) -> str | None:
    """The key from the variable the recipe names; an unset variable is an error by name."""
    remember(*url_credentials(config.base_url))  # `http://user:pass@host`: pass is a key too
    if config.backend == "vllm":
        return None
    if config.api_key_env is None:
        if config.backend == "anthropic" and config.base_url is None:
            raise RecipeError(f"models.{role}.api_key_env: the Anthropic API needs a key; name its variable, e.g. ANTHROPIC_API_KEY")
        if config.backend == "openai" and config.base_url is None:
            raise RecipeError(
                f"models.{role}: no base_url means api.openai.com, which needs a key; "
                "set api_key_env (e.g. OPENAI_API_KEY) or base_url for a local server"
            )
        return None
    value = os.environ.get(config.api_key_env)
    if not value:
        raise RecipeError(f"models.{role}.api_key_env: environment variable {config.api_key_env} is not set")
    remember(value)  # from now on scrubbed from every error text and log record
    return value


def check_models(recipe: Recipe) -> None:
    """Keys present and optional backends installed, before any call; errors name the
    recipe's file and line."""
    path, lines = recipe.source_file, recipe_lines(recipe)
    for role, config in recipe.models.roles().items():
        try:
            resolve_api_key(role, config)
        except RecipeError as err:
            field = ("models", role, "api_key_env") if config.api_key_env else ("models", role)
            raise RecipeError(where(path, lines, field) + str(err)) from None
        if config.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            from collabgen.models.vllm_backend import INSTALL_HINT

            raise RecipeError(where(path, lines, ("models", role, "backend")) + f"models.{role}.backend: {INSTALL_HINT}")


def engine_readiness(recipe: Recipe) -> str | None:
    """One line saying why the in-process engine cannot run here, or None.

    A Hub model in-process needs a GPU; without one, the roles go to servers instead, by
    environment, without editing the recipe. (A model in a local folder may run on vLLM's
    CPU build: the tests' tiny Llama does.)
    """
    from pathlib import Path

    needing = {role: c for role, c in recipe.models.roles().items()
               if c.backend == "vllm" and not Path(c.model).expanduser().is_dir()}
    if not needing or _gpu_available():
        return None
    return no_gpu_hint(needing)


def no_gpu_hint(needing: Mapping[str, ModelConfig]) -> str:
    """Every variable each role needs, spelled out: the backend too (a model and a key alone
    leave the role on the in-process engine)."""
    served = sorted({c.model for c in needing.values()})

    def assignments(**fields: str) -> str:
        return " ".join(f"COLLABGEN_{role.upper()}_{name}={value}" for role in needing for name, value in fields.items())

    return (f"no GPU here for the in-process vLLM engine of {', '.join(needing)}: point them at servers by environment, "
            f"{assignments(BACKEND='openai', BASE_URL='http://gpu-host:8000/v1')} "
            f"(an OpenAI-compatible server there serving {', '.join(served)}), or at a provider, "
            f"{assignments(BACKEND='openai', MODEL='gpt-4o-mini', API_KEY_ENV='OPENAI_API_KEY')} "
            "(with OPENAI_API_KEY set)")


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def build_backend(role: str, config: ModelConfig, engines: dict[str, ChatBackend] | None = None) -> ChatBackend:
    if config.backend == "vllm":
        # Roles served by the same local model share one engine (and its prefix cache).
        from collabgen.models.vllm_backend import VLLMBackend, engine_kwargs

        engines = {} if engines is None else engines
        key = repr(sorted(engine_kwargs(config).items()))
        shared = engines.get(key)
        backend = VLLMBackend(config, engine=shared.engine if isinstance(shared, VLLMBackend) else None)
        engines.setdefault(key, backend)
        return backend
    api_key = resolve_api_key(role, config)
    if config.backend == "openai":
        from collabgen.models.openai_backend import OpenAIBackend

        return OpenAIBackend(config, api_key)
    if config.backend == "anthropic":
        from collabgen.models.anthropic_backend import AnthropicBackend

        return AnthropicBackend(config, api_key)
    raise RecipeError(f"models.{role}.backend: unknown backend {config.backend!r}")


def build_chain(
    role: str, config: ModelConfig, backend: ChatBackend, cache: RequestCache | None, prefix: PrefixMeter,
    limiter: RateLimiter | None = None,
) -> ChatBackend:
    """A role's layers around its backend, outermost first:

    CachedBackend (replay finished calls) -> InflightMerge (one identical request on the
    wire) -> PrefixMetered (prompts that reach the wire) -> RetryingBackend (backoff,
    Retry-After, `CallFailed`) -> ReplyPolicy (empty replies are transient) ->
    LimitedBackend (admits each attempt: concurrency, RPM, TPM, rate hints) -> backend.
    `limiter` replaces the one the config describes (tests shorten its minute).
    """
    key = RequestKey(config.backend, config.model)
    limited = LimitedBackend(backend, limiter or RateLimiter(
        concurrency=config.concurrency,
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute,
    ))
    chain: ChatBackend = RetryingBackend(
        ReplyPolicy(limited, max_tokens_cap=config.truncation_cap()), label=f"{role} ({config.model})", max_retries=config.max_retries,
        wait=config.retry_wait, max_wait=config.retry_max_wait, hold=limited.pause,
    )
    chain = InflightMerge(PrefixMetered(chain, prefix), key)
    return chain if cache is None else CachedBackend(chain, cache, key)


def build_role(
    role: str, config: ModelConfig, backend: ChatBackend, cache: RequestCache | None, usage: UsageSink,
    limiter: RateLimiter | None = None,
) -> RoleModel:
    """The facade of one role: its chain around `backend`, recording into `usage`."""
    prefix = PrefixMeter()
    return RoleModel(role, config, build_chain(role, config, backend, cache, prefix, limiter), usage, prefix)


def build_roles(
    recipe: Recipe, cache: RequestCache | None, usage: UsageSink, backends: Mapping[str, ChatBackend] | None = None,
) -> dict[str, RoleModel]:
    """One RoleModel per role; roles on the same vLLM model share one in-process engine.

    `backends` gives a role's innermost backend instead of the one its config names (the
    counting backend of `collabgen plan`, a scripted one in tests); its chain is the same.
    """
    engines: dict[str, ChatBackend] = {}
    given = backends or {}
    return {
        role: build_role(role, config, given.get(role) or build_backend(role, config, engines), cache, usage)
        for role, config in recipe.models.roles().items()
    }
