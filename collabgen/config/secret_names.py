"""Which recipe fields hold a secret by their name, and how such fields are masked.

A key can reach a recipe other than through `api_key_env`: written inline in a role's
`extra_body` (`{"api_key": "sk-..."}`), set with `--set models.policy.extra_body.token=...`,
or interpolated from the environment (`${MY_PROVIDER_KEY}`). The recipe then masks those
values in everything it dumps (its fingerprint's input, the out dir's stamp, the manifest)
and hands them to the scrubber, which masks them in every other text.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4

_SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pass", "auth", "authorization",
    "credential", "credentials", "bearer", "cookie", "signature",
})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def names_a_secret(name: str) -> bool:
    """`api_key`, `X-Api-Key`, `accessToken`, `OPENAI_API_KEY`: yes; `max_tokens`, `api_key_env`
    (the *name* of a variable), `keywords`: no."""
    words = [word.lower() for word in _WORD.findall(name)]
    if words and words[-1] == "env":
        return False
    return any(word in _SECRET_WORDS for word in words)


def secret_field_values(value: Any) -> list[str]:
    """Every string under a secret-named key, at any depth (and every string in a list under one)."""
    found: list[str] = []

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, secret or names_a_secret(str(key)))
        elif isinstance(node, list):
            for child in node:
                walk(child, secret)
        elif secret and isinstance(node, str) and len(node) >= MIN_SECRET_LENGTH:
            found.append(node)

    walk(value, False)
    return found


def mask_secret_fields(value: Any) -> Any:
    """`value` with every string `secret_field_values` finds replaced by the mask."""

    def walk(node: Any, secret: bool) -> Any:
        if isinstance(node, dict):
            return {key: walk(child, secret or names_a_secret(str(key))) for key, child in node.items()}
        if isinstance(node, list):
            return [walk(child, secret) for child in node]
        if secret and isinstance(node, str) and len(node) >= MIN_SECRET_LENGTH:
            return MASK
        return node

    return walk(value, False)
