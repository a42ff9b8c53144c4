"""A key never reaches stderr, a log or any file, even when a server echoes it back.

The fake server can answer every request with a 401 whose message quotes the key header
it got (as some servers do); every conversation then fails with that message as its
reason, which is printed in the run's summary, journaled, and written to the manifest.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.config.secrets import MASK, install_log_scrubber, remember
from collabgen.models.base import CallFailed, PermanentError
from tests.fakeserver import FakeLLMServer
from tests.helpers import math_recipe, write_recipe
from tests.scripts import install_math

KEY = "sk-test-LEAKED-0123456789abcdef"


def test_the_fake_server_can_echo_the_key_in_a_401():
    with FakeLLMServer(echo_auth_401=True) as server:
        request = urllib.request.Request(
            f"{server.base_url}/chat/completions", data=json.dumps({"model": "m", "messages": []}).encode(),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
    assert refused.value.code == 401 and KEY in json.loads(refused.value.read())["error"]["message"]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_key_echoed_in_a_401_never_reaches_stderr_journal_or_files(tmp_path, monkeypatch, protocol):
    monkeypatch.setenv("COLLABGEN_TEST_SECRET", KEY)
    with FakeLLMServer(echo_auth_401=True) as server:
        install_math(server)
        url = server.base_url if protocol == "openai" else server.anthropic_base_url
        recipe = math_recipe(url, tmp_path / "out")
        for role in recipe["models"].values():
            role.update({"backend": protocol, "api_key_env": "COLLABGEN_TEST_SECRET"})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
        assert server.calls and all(call.status == 401 for call in server.calls)
    assert result.exit_code == 1, result.output
    assert "HTTP 401" in result.output and "Incorrect API key provided:" in result.output and MASK in result.output
    assert KEY not in result.output
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "journal.jsonl" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    ends = [json.loads(line) for line in (tmp_path / "out/.collabgen/journal.jsonl").read_text().splitlines()]
    reasons = [r["reason"] for r in ends if r["kind"] == "end"]
    assert len(reasons) == 6 and all(MASK in reason for reason in reasons)


def test_model_errors_are_scrubbed_when_made(monkeypatch):
    remember("kx-remembered-secret-42")
    assert "kx-remembered-secret-42" not in str(PermanentError("HTTP 401: bad key kx-remembered-secret-42"))
    assert str(CallFailed("failed: kx-remembered-secret-42")) == f"failed: {MASK}"


def test_log_records_of_any_library_are_scrubbed(caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    install_log_scrubber()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("openai._base_client").warning("retrying with headers %s", {"Authorization": KEY})
        try:
            raise RuntimeError(f"server said: {KEY}")
        except RuntimeError:
            logging.getLogger("collabgen").exception("internal error")
    assert caplog.records and KEY not in caplog.text
    assert MASK in caplog.text
    formatted = logging.Formatter().format(caplog.records[-1])
    assert KEY not in formatted and "server said: ***" in formatted


def test_the_error_printer_scrubs_what_it_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / f"no-such-{KEY}")])
    assert result.exit_code == 2 and KEY not in result.output and MASK in result.output


URL_PASSWORD = "url-pass-LEAKED-42"


@pytest.mark.parametrize("reachable", [True, False])
def test_a_password_in_base_url_reaches_no_file_and_no_output(tmp_path, reachable):
    with FakeLLMServer(echo_auth_401=not reachable) as server:
        install_math(server)
        url = server.base_url.replace("http://", f"http://user:{URL_PASSWORD}@")
        recipe = math_recipe(url, tmp_path / "out", **{"task.limit": 2})
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == (0 if reachable else 1), result.output
    basic = base64.b64encode(f"user:{URL_PASSWORD}".encode()).decode()  # what a 401 may echo
    assert URL_PASSWORD not in result.output and basic not in result.output
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written)
    for path in written:
        assert URL_PASSWORD.encode() not in path.read_bytes() and basic.encode() not in path.read_bytes(), path
    assert "user:***@127.0.0.1" in (tmp_path / "out" / "manifest.json").read_text()


INLINE_KEY = "inline-LEAKED-key-9876543210"


def _quoting(script, secret):
    """A script whose every reply also quotes `secret`, as a server echoing a key would."""
    return lambda call: f"{script(call)} (sent with {secret})"


def test_a_key_quoted_in_a_normal_reply_reaches_no_cache_journal_or_shard(tmp_path, monkeypatch):
    from tests.scripts import POLICY, USER, math_policy, math_user

    monkeypatch.setenv("COLLABGEN_TEST_SECRET", KEY)
    with FakeLLMServer() as server:
        install_math(server)
        server.set_script(POLICY, _quoting(math_policy, KEY))
        server.set_script(USER, _quoting(math_user, KEY))
        recipe = math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 2})
        for role in recipe["models"].values():
            role["api_key_env"] = "COLLABGEN_TEST_SECRET"
        result = CliRunner().invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {"journal.jsonl", "manifest.json"} <= {p.name for p in written}
    assert any(p.suffix == ".parquet" for p in written) and any("cache" in p.name for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    journal = (tmp_path / "out/.collabgen/journal.jsonl").read_text()
    assert f"(sent with {MASK})" in journal  # the reply is kept, the key in it masked
    assert KEY not in result.output


@pytest.mark.parametrize("how", ["inline", "set", "env"])
def test_a_key_inside_extra_body_reaches_no_stamp_manifest_or_output(tmp_path, monkeypatch, how):
    monkeypatch.setenv("MY_PROVIDER_API_KEY", INLINE_KEY)
    with FakeLLMServer() as server:
        install_math(server)
        recipe = math_recipe(server.base_url, tmp_path / "out", **{"task.limit": 2})
        value = {"inline": INLINE_KEY, "env": "${MY_PROVIDER_API_KEY}", "set": "overridden-later"}[how]
        recipe["models"]["policy"]["extra_body"] = {"provider": {"api_key": value}, "max_tokens_hint": 7}
        args = ["run", str(write_recipe(tmp_path / "r.yaml", recipe))]
        if how == "set":
            args += ["--set", f"models.policy.extra_body.provider.api_key={INLINE_KEY}"]
        result = CliRunner().invoke(app, args)
        sent = [call.body for call in server.calls if call.body.get("model") == recipe["models"]["policy"]["model"]]
    assert result.exit_code == 0, result.output
    assert sent and all(body["provider"]["api_key"] == INLINE_KEY for body in sent)  # the server still gets it
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {"recipe.json", "manifest.json"} <= {p.name for p in written}
    for path in written:
        assert INLINE_KEY.encode() not in path.read_bytes(), path
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["recipe"]["models"]["policy"]["extra_body"] == {"provider": {"api_key": MASK}, "max_tokens_hint": 7}
    assert INLINE_KEY not in result.output


def test_a_rotated_inline_key_keeps_the_fingerprint():
    from collabgen.config.recipe import Recipe

    def fingerprint(key: str) -> str:
        data = math_recipe("http://127.0.0.1:9/v1", __import__("pathlib").Path("/tmp/unused"))
        data["models"]["policy"]["extra_body"] = {"api_key": key, "top_k": 5}
        return Recipe.from_dict(data).fingerprint()

    assert fingerprint("first-key-aaaa") == fingerprint("second-key-bbbb")


def test_secret_field_names():
    from collabgen.config.secret_names import names_a_secret

    assert all(map(names_a_secret, ["api_key", "X-Api-Key", "accessToken", "Authorization", "OPENAI_API_KEY"]))
    assert not any(map(names_a_secret, ["max_tokens", "api_key_env", "keywords", "top_k", "tokens_per_minute"]))
