"""Each layer of a role's model chain on its own, and the facade's usage books, against the
in-process scripted backend: events are counted (requests seen, calls in flight, waits
asked for), never timed."""

from __future__ import annotations

import asyncio

import pytest

from collabgen.config.recipe import ModelConfig
from collabgen.models.base import (
    CallFailed,
    ChatRequest,
    ChatResult,
    PermanentError,
    TransientError,
)
from collabgen.models.cache import RequestCache, RequestKey
from collabgen.models.cached import CachedBackend
from collabgen.models.executor import RoleModel, request_seed
from collabgen.models.inflight import InflightMerge
from collabgen.models.limited import LimitedBackend
from collabgen.models.limits import RateLimiter
from collabgen.models.prefix import PrefixMeter
from collabgen.models.rate_headers import RateHint
from collabgen.models.registry import build_role
from collabgen.models.reply_policy import ReplyPolicy
from collabgen.models.retrying import RetryingBackend
from collabgen.models.usage import UsageBook
from tests.scripted_backend import ScriptedBackend

HI = [{"role": "user", "content": "hello there"}]


def config(**overrides: object) -> ModelConfig:
    values: dict[str, object] = {"model": "m", "temperature": 0.5, "retry_wait": 0.001, "retry_max_wait": 0.002}
    return ModelConfig.model_validate({**values, **overrides})


def request(stage: str = "s", seed: int = 1, **fields: object) -> ChatRequest:
    return ChatRequest(messages=HI, seed=seed, stage=stage, **fields)


def key(req: ChatRequest) -> str:
    return RequestCache.key("openai", "m", req)


async def until(condition, turns: int = 200) -> None:
    """Let the loop run until `condition()` holds (a bounded number of turns, no clock)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def retrying(inner, *, sleeps: list[float] | None = None, holds: list[float] | None = None, max_retries: int = 3,
             max_wait: float = 0.002):
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    return RetryingBackend(inner, label="policy (m)", max_retries=max_retries, wait=0.001, max_wait=max_wait,
                           hold=None if holds is None else holds.append, sleep=sleep)


# -- the request: stage travels with it, the cache key does not see it --------------------


def test_stage_is_not_part_of_the_cache_key_which_is_unchanged():
    req = ChatRequest(messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
                      temperature=0.7, top_p=0.9, max_tokens=64, n=2, seed=11, json_mode=True)
    recorded_before_stage_existed = "7e74d72d243c1decaa2f08e34ae3c0927575e269b58cef12ee278e975f7a7ec7"
    assert RequestCache.key("openai", "m", req) == recorded_before_stage_existed
    staged = req.model_copy(update={"stage": "future_user"})
    assert staged.stage == "future_user"
    assert RequestCache.key("openai", "m", staged) == recorded_before_stage_existed
    keys = RequestKey("openai", "m")  # what the cache and merge layers use: the same key, remembered
    assert keys(staged) == keys(staged) == keys(req) == recorded_before_stage_existed
    assert "stage" not in staged.model_dump()


async def test_scripted_backend_answers_by_role_and_stage():
    policy = ScriptedBackend("policy").on("candidates", "plain answer")
    user = policy.for_role("user").on("future_user", "thanks!", TransientError("busy"))
    assert (await policy.complete(request("candidates"))).texts == ["plain answer"]
    assert (await user.complete(request("future_user"))).texts == ["thanks!"]
    with pytest.raises(TransientError):
        await user.complete(request("future_user"))
    with pytest.raises(TransientError):  # the last outcome repeats
        await user.complete(request("future_user"))
    assert (await user.complete(request("candidates"))).texts == ["user/candidates seed=1 #0"]  # unscripted
    assert [s.role for s in policy.log] == ["policy", "user", "user", "user", "user"]
    assert len(policy.requests(stage="future_user", role="user")) == 3


# -- CachedBackend ----------------------------------------------------------------------------


async def test_a_cache_hit_is_not_paid_twice(tmp_path):
    backend = ScriptedBackend()
    cache = RequestCache(tmp_path / "cache.sqlite")
    layer = CachedBackend(backend, cache, key)
    first = await layer.complete(request())
    again = await layer.complete(request(stage="another stage"))
    assert len(backend.log) == 1
    assert not first.report.cached and again.report.cached
    assert again.texts == first.texts and again.completion_tokens == first.completion_tokens
    cache.close()
    reopened = RequestCache(tmp_path / "cache.sqlite")  # a rerun after a kill
    assert (await CachedBackend(backend, reopened, key).complete(request())).report.cached
    assert len(backend.log) == 1
    reopened.close()


async def test_failed_calls_are_not_cached(tmp_path):
    backend = ScriptedBackend().on("s", PermanentError("bad request"), "fine")
    cache = RequestCache(tmp_path / "cache.sqlite")
    layer = CachedBackend(backend, cache, key)
    with pytest.raises(PermanentError):
        await layer.complete(request())
    assert (await layer.complete(request())).texts == ["fine"]
    assert len(cache) == 1
    cache.close()


# -- InflightMerge ----------------------------------------------------------------------------


async def test_identical_requests_in_flight_are_sent_once():
    backend = ScriptedBackend()
    gate = backend.hold()
    layer = InflightMerge(backend, key)
    first = asyncio.create_task(layer.complete(request("candidates")))
    second = asyncio.create_task(layer.complete(request("future_policy")))  # same content, other stage
    other = asyncio.create_task(layer.complete(request("candidates", seed=2)))
    await until(lambda: len(backend.log) == 2)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(backend.log) == 2 and backend.in_flight == 2
    gate.set()
    a, b, c = await asyncio.gather(first, second, other)
    assert a.texts == b.texts and a.texts != c.texts
    assert (a.report.cached, b.report.cached, c.report.cached) == (False, True, False)
    assert len(backend.log) == 2


async def test_a_merged_waiter_of_a_failed_call_fails_without_counting_it():
    backend = ScriptedBackend().on("s", TransientError("overloaded"))
    gate = backend.hold()
    layer = InflightMerge(retrying(backend, max_retries=1), key)
    first = asyncio.create_task(layer.complete(request()))
    second = asyncio.create_task(layer.complete(request()))
    await until(lambda: len(backend.log) == 1)
    gate.set()
    errors = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(e, CallFailed) for e in errors)
    assert str(errors[0]) == str(errors[1]) == "policy (m) failed at stage 's': overloaded"
    assert (errors[0].report.failed, errors[0].report.retries) == (True, 1)
    assert (errors[1].report.failed, errors[1].report.retries) == (False, 0)
    assert len(backend.log) == 2  # one call and its one retry, for both callers


# -- RetryingBackend ----------------------------------------------------------------------------


async def test_retry_honours_retry_after_and_tells_the_limiter():
    backend = ScriptedBackend().on("s", TransientError("429", retry_after=0.5), "ok")
    sleeps: list[float] = []
    holds: list[float] = []
    result = await retrying(backend, sleeps=sleeps, holds=holds, max_wait=1.0).complete(request())
    assert result.texts == ["ok"] and result.report.retries == 1
    assert sleeps == [0.5]  # the server's 0.5 s, above the 1-2 ms backoff (and under retry_max_wait)
    assert holds == [0.5]
    assert len(backend.log) == 2


async def test_retry_gives_up_after_max_retries_with_call_failed():
    backend = ScriptedBackend().on("s", TransientError("HTTP 500"))
    sleeps: list[float] = []
    with pytest.raises(CallFailed, match="policy \\(m\\) failed at stage 's': HTTP 500") as caught:
        await retrying(backend, sleeps=sleeps, max_retries=2).complete(request())
    assert len(backend.log) == 3 and len(sleeps) == 2
    assert (caught.value.report.retries, caught.value.report.failed) == (2, True)


async def test_permanent_errors_are_not_retried():
    backend = ScriptedBackend().on("s", PermanentError("HTTP 401"))
    with pytest.raises(CallFailed) as caught:
        await retrying(backend).complete(request())
    assert len(backend.log) == 1
    assert (caught.value.report.retries, caught.value.report.failed) == (0, True)


# -- ReplyPolicy ----------------------------------------------------------------------------


async def test_an_empty_reply_is_transient_and_retried():
    backend = ScriptedBackend().on("s", "   ", "a real answer")
    with pytest.raises(TransientError, match="empty reply"):
        await ReplyPolicy(ScriptedBackend().on("s", "")).complete(request())
    result = await retrying(ReplyPolicy(backend)).complete(request())
    assert result.texts == ["a real answer"] and result.report.retries == 1
    assert len(backend.log) == 2


async def test_a_truncated_reply_passes_unchanged_for_now():
    truncated = ChatResult(texts=["half an ans"], prompt_tokens=2, completion_tokens=[3], finish_reasons=["length"])
    result = await ReplyPolicy(ScriptedBackend().on("s", truncated)).complete(request())
    assert result.finish_reasons == ["length"] and result.texts == ["half an ans"]


async def test_reply_checks_are_the_policy():
    def no_length(result: ChatResult) -> str | None:
        return "truncated" if "length" in result.finish_reasons else None

    truncated = ChatResult(texts=["half"], completion_tokens=[1], finish_reasons=["length"])
    with pytest.raises(TransientError, match="truncated"):
        await ReplyPolicy(ScriptedBackend().on("s", truncated), checks=[no_length]).complete(request())


# -- LimitedBackend ----------------------------------------------------------------------------


async def test_the_limiter_never_exceeds_its_concurrency():
    backend = ScriptedBackend()
    gate = backend.hold()
    layer = LimitedBackend(backend, RateLimiter(concurrency=3))
    tasks = [asyncio.create_task(layer.complete(request(seed=i))) for i in range(10)]
    await until(lambda: backend.in_flight == 3)
    for _ in range(20):
        await asyncio.sleep(0)
    assert backend.in_flight == 3 and len(backend.log) == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert len(backend.log) == 10 and backend.max_in_flight == 3


async def test_an_exhausted_budget_in_a_rate_hint_pauses_the_role():
    hinted = ChatResult(texts=["ok"], completion_tokens=[1], finish_reasons=["stop"],
                        rate_hint=RateHint(remaining_requests=0, reset_requests=2.5))
    limiter = RateLimiter(concurrency=2)
    pauses: list[float] = []
    limiter.pause = pauses.append  # type: ignore[method-assign]
    await LimitedBackend(ScriptedBackend().on("s", hinted), limiter).complete(request())
    assert pauses == [2.5]


async def test_every_attempt_is_admitted_and_retry_after_pauses_the_limiter():
    limiter = RateLimiter(concurrency=1)
    pauses: list[float] = []
    pause = limiter.pause
    limiter.pause = lambda seconds: (pauses.append(seconds), pause(seconds))  # type: ignore[method-assign]
    backend = ScriptedBackend().on("s", TransientError("429", retry_after=0.01), "ok")
    role = build_role("policy", config(retry_max_wait=0.05), backend, None, UsageBook(), limiter)
    assert (await role.complete(HI, seed=1, stage="s")).texts == ["ok"]
    assert pauses == [0.01]  # the server's word, under retry_max_wait
    assert len(backend.log) == 2 and backend.max_in_flight == 1


# -- the facade: request building, n, JSON, prefix meter, usage ----------------------------------


async def test_the_facade_builds_the_request_from_the_role_config():
    backend = ScriptedBackend()
    role = build_role("policy", config(top_p=0.9, max_tokens=77, json_mode=False), backend, None, UsageBook())
    await role.complete(HI, seed=9, stage="candidates", n=2, json_mode=True)
    await role.complete(HI, seed=9, stage="candidates", temperature=0.0)
    sent = backend.requests()
    assert sent[0] == ChatRequest(messages=HI, temperature=0.5, top_p=0.9, max_tokens=77, n=2, seed=9,
                                  json_mode=False, stage="candidates")
    assert sent[1].temperature == 0.0 and sent[1].n == 1


async def test_n_is_emulated_with_derived_seeds_each_cached_on_its_own(tmp_path):
    backend = ScriptedBackend(supports_n=False)
    cache = RequestCache(tmp_path / "cache.sqlite")
    book = UsageBook()
    role = build_role("user", config(), backend, cache, book)
    result = await role.complete(HI, seed=5, stage="future_user", n=3)
    assert [r.seed for r in backend.requests()] == [request_seed(5, i) for i in range(3)]
    assert all(r.n == 1 for r in backend.requests()) and len(result.texts) == 3
    await role.complete(HI, seed=5, stage="future_user", n=3)
    assert len(backend.log) == 3
    tally = book.to_dict()["user"]["future_user"]
    assert (tally["calls"], tally["cached_calls"]) == (3, 3)
    cache.close()


async def test_complete_json_parse_retries_use_new_seeds():
    backend = ScriptedBackend("judge").on("interactivity", "not json at all", '```json\n{"interactivity": 0.7}\n```')
    book = UsageBook()
    role = build_role("judge", config(), backend, None, book)
    value = await role.complete_json(HI, seed=5, stage="interactivity", validate=lambda d: d["interactivity"])
    assert value == 0.7
    assert [r.seed for r in backend.requests()] == [5, request_seed(5, "parse", 1)]
    assert all(r.json_mode for r in backend.requests())
    assert book.to_dict()["judge"]["interactivity"]["retries"] == 1


async def test_complete_json_gives_up_after_its_parse_retries():
    backend = ScriptedBackend("judge").on("extract", '{"wrong": 1}')
    book = UsageBook()
    role = build_role("judge", config(parse_retries=2), backend, None, book)
    with pytest.raises(CallFailed, match="gave no parsable JSON in 3 attempts at stage 'extract'"):
        await role.complete_json(HI, seed=5, stage="extract", validate=lambda d: d["answer"])
    assert len({r.seed for r in backend.requests()}) == 3
    tally = book.to_dict()["judge"]["extract"]
    # 3 calls, asked again twice (a retry is a new request), then one failure.
    assert (tally["calls"], tally["retries"], tally["failures"]) == (3, 2, 1)


async def test_the_prefix_meter_sees_each_prompt_that_reaches_the_wire_once(tmp_path):
    backend = ScriptedBackend().on("s", TransientError("busy"), "ok")
    cache = RequestCache(tmp_path / "cache.sqlite")
    role = build_role("policy", config(), backend, cache, UsageBook())
    long = [{"role": "user", "content": "x" * 640}]
    await role.complete(long, seed=1, stage="s")  # one retry: still one prompt on the meter
    await role.complete(long, seed=1, stage="s")  # a cache hit: not on the wire
    assert role.prefix.total_chars == len("<user>" + "x" * 640 + "</user>")
    await role.complete(long, seed=2, stage="s")
    assert role.prefix.share() == pytest.approx(0.5, abs=0.05)
    cache.close()


async def test_bound_facades_share_the_chain():
    role = build_role("policy", config(), ScriptedBackend(), None, UsageBook())
    bound = role.bound(UsageBook())
    assert bound.backend is role.backend and bound.prefix is role.prefix and bound.role == role.role


async def test_usage_lands_in_the_run_book_and_the_bound_ledger_alike(tmp_path):
    """Paid, cached (hit and in-flight merge), tokens, retries and failures per (role, stage)."""
    backend = ScriptedBackend("judge", supports_n=False)
    backend.on("paid", TransientError("429", retry_after=0.001), "two words")
    backend.on("broken", TransientError("HTTP 500"))
    backend.on("judge", "no json", '{"ok": true}')
    cache = RequestCache(tmp_path / "cache.sqlite")
    run = UsageBook()
    role = build_role("judge", config(max_retries=1), backend, cache, run)
    ledger = UsageBook()
    turn = role.bound(ledger)

    await turn.complete(HI, seed=1, stage="paid")  # paid after one retry
    await turn.complete(HI, seed=1, stage="hit")  # the same request: a cache hit, under its own stage
    gate = backend.hold()
    merged = [asyncio.create_task(turn.complete(HI, seed=2, stage=s)) for s in ("first", "merged")]
    await until(lambda: len(backend.log) == 3)
    gate.set()
    await asyncio.gather(*merged)
    backend.gate = None
    with pytest.raises(CallFailed):
        await turn.complete(HI, seed=3, stage="broken")  # one retry, then a failure
    assert await turn.complete_json(HI, seed=4, stage="judge") == {"ok": True}  # one parse retry
    await role.complete(HI, seed=5, stage="unbound")  # the run's book only

    prompt = 2  # "hello there"
    expected = {
        "paid": {"calls": 1, "cached_calls": 0, "prompt_tokens": prompt, "completion_tokens": 2, "retries": 1,
                 "failures": 0},
        "hit": {"calls": 0, "cached_calls": 1, "prompt_tokens": prompt, "completion_tokens": 2, "retries": 0,
                "failures": 0},
        "first": {"calls": 1, "cached_calls": 0, "prompt_tokens": prompt, "completion_tokens": 3, "retries": 0,
                  "failures": 0},
        "merged": {"calls": 0, "cached_calls": 1, "prompt_tokens": prompt, "completion_tokens": 3, "retries": 0,
                   "failures": 0},
        "broken": {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 1,
                   "failures": 1},
        "judge": {"calls": 2, "cached_calls": 0, "prompt_tokens": 2 * prompt, "completion_tokens": 4, "retries": 1,
                  "failures": 0},
    }
    assert ledger.to_dict() == {"judge": dict(sorted(expected.items()))}
    unbound = {"calls": 1, "cached_calls": 0, "prompt_tokens": prompt, "completion_tokens": 3, "retries": 0,
               "failures": 0}
    assert run.to_dict() == {"judge": dict(sorted({**expected, "unbound": unbound}.items()))}
    cache.close()


async def test_closing_the_facade_closes_the_backend_under_every_layer(tmp_path):
    backend = ScriptedBackend()
    cache = RequestCache(tmp_path / "cache.sqlite")
    role = RoleModel("policy", config(), backend, UsageBook(), PrefixMeter())
    await role.aclose()
    assert backend.closed
    role = build_role("policy", config(), backend := ScriptedBackend(), cache, UsageBook())
    await role.aclose()
    assert backend.closed
    cache.close()
