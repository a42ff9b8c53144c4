"""Which environment values must never reach a written file, and how they are masked.

One list for every writer (manifest, card, export, merge, push, eval report): a key
scrubbed from the manifest but not from the card would still leak, and a push check
looser than the writers would let through what they masked. Values shorter than
`MIN_SECRET_LENGTH` are not masked: replacing a one- or two-letter value would mangle
ordinary text and such a value protects nothing anyway.

Error texts are scrubbed where they are made, not only where files are written: a server
that echoes the key in a 401 body put it on stderr and into the journal. Every key the
process reads is `remember`ed; `scrub_known` masks those (and the usual tokens) in any
text, model errors scrub their message with it, and `install_log_scrubber` masks every
log record of every logger before any handler formats it.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from collabgen.config.recipe import Recipe
from collabgen.config.secret_names import MASK, MIN_SECRET_LENGTH

ALWAYS_SECRET = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def key_env_names(recipe: Recipe | Mapping[str, Any] | None) -> set[str]:
    """The variables the recipe names as keys, from a Recipe or its dump (a manifest's `recipe`),
    since export and push only have the dump and must mask the same values the run masked."""
    if recipe is None:
        return set()
    if isinstance(recipe, Recipe):
        return {c.api_key_env for c in recipe.models.roles().values() if c.api_key_env}
    roles = recipe.get("models") or {}
    return {r["api_key_env"] for r in roles.values() if isinstance(r, Mapping) and r.get("api_key_env")}


def url_credentials(url: str | None) -> list[str]:
    """The secret part of a URL's userinfo: the password of `http://user:pass@host`, or the
    user of `http://token@host` (a user beside a password is a name, not a secret), as
    written, percent-decoded, and as the Basic credential the client sends (a server may
    echo it in an error)."""
    if not url:
        return []
    try:
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    secret = password if password is not None else user
    if not secret:
        return []
    raw = parts.netloc.rpartition("@")[0]
    written = raw.partition(":")[2] if password is not None else raw
    basic = base64.b64encode(f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}".encode())
    values = [written, urllib.parse.unquote(secret), basic.decode()]
    return [v for v in dict.fromkeys(values) if len(v) >= MIN_SECRET_LENGTH]


def base_urls(recipe: Recipe | Mapping[str, Any] | None) -> list[str]:
    if recipe is None:
        return []
    if isinstance(recipe, Recipe):
        return [c.base_url for c in recipe.models.roles().values() if c.base_url]
    roles = recipe.get("models") or {}
    return [r["base_url"] for r in roles.values() if isinstance(r, Mapping) and isinstance(r.get("base_url"), str)]


def secret_values(recipe: Recipe | Mapping[str, Any] | None = None) -> list[str]:
    """Values of the recipe's key variables and of the usual provider and Hub tokens, in the
    order of their variable names, then the credentials inside the roles' `base_url`s and
    the recipe's inline secrets (`Recipe.inline_secrets`), so two writers scrub the same
    text the same way."""
    names = key_env_names(recipe) | set(ALWAYS_SECRET)
    values = [os.environ.get(name) for name in sorted(names)]
    values += [secret for url in base_urls(recipe) for secret in url_credentials(url)]
    if isinstance(recipe, Recipe):
        values += recipe.inline_secrets()  # a dump (a manifest's recipe) holds them masked already
    return [value for value in dict.fromkeys(values) if value and len(value) >= MIN_SECRET_LENGTH]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by a mask (a written file keeps its shape)."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


_remembered: set[str] = set()
_lock = threading.Lock()


def remember(*values: str | None) -> None:
    """Add key values this process read (from whatever variable) to what `scrub_known` masks."""
    with _lock:
        _remembered.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def known_secrets() -> list[str]:
    """Every remembered key and the usual tokens' values, longest first (so a key that
    contains another is masked whole)."""
    with _lock:
        values = set(_remembered) | set(secret_values())
    return sorted(values, key=lambda v: (-len(v), v))


def scrub_known(text: str) -> str:
    """`text` with every known secret masked: for error messages, logs and printed text."""
    return scrub(text, known_secrets())


class _ScrubbingRecordFactory:
    """Wraps the logging record factory: a record's message, arguments and traceback are
    scrubbed when the record is made, so no handler, formatter or filter downstream (ours,
    an SDK's or the last-resort stderr one) ever sees a key."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        secrets = known_secrets()
        if not secrets:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report
            return record
        record.msg, record.args = scrub(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return record


def install_log_scrubber() -> None:
    """Scrub every log record of this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _ScrubbingRecordFactory):
        logging.setLogRecordFactory(_ScrubbingRecordFactory(factory))
