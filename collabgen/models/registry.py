"""Building each role's model from its config: backend choice, key lookup, executor."""

from __future__ import annotations

import os

from collabgen.config.errors import RecipeError
from collabgen.config.recipe import ModelConfig, Recipe
from collabgen.models.base import ChatBackend
from collabgen.models.cache import RequestCache
from collabgen.models.executor import RoleModel
from collabgen.models.usage import UsageBook


def resolve_api_key(role: str, config: ModelConfig) -> str | None:
    """The key from the variable the recipe names; an unset variable is an error by name."""
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
    return value


def check_keys(recipe: Recipe) -> None:
    for role, config in recipe.models.roles().items():
        resolve_api_key(role, config)


def secret_values(recipe: Recipe) -> list[str]:
    """Values that must never be written anywhere: the keys the recipe points at."""
    names = {c.api_key_env for c in recipe.models.roles().values() if c.api_key_env}
    names |= {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    return [v for v in (os.environ.get(n) for n in sorted(names)) if v and len(v) >= 4]


def build_backend(role: str, config: ModelConfig) -> ChatBackend:
    api_key = resolve_api_key(role, config)
    if config.backend == "openai":
        from collabgen.models.openai_backend import OpenAIBackend

        return OpenAIBackend(config, api_key)
    if config.backend == "anthropic":
        from collabgen.models.anthropic_backend import AnthropicBackend

        return AnthropicBackend(config, api_key)
    if config.backend == "vllm":
        from collabgen.models.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    raise RecipeError(f"models.{role}.backend: unknown backend {config.backend!r}")


def build_roles(recipe: Recipe, cache: RequestCache | None, usage: UsageBook) -> dict[str, RoleModel]:
    """One RoleModel per role; roles on the same vLLM model share one in-process engine."""
    return {
        role: RoleModel(role, config, build_backend(role, config), cache, usage)
        for role, config in recipe.models.roles().items()
    }
