"""`collabgen view`: the JSON API over a real out dir (counts equal the manifest's, paging,
filters, one conversation; its eval's report and per-seed conversations), read-only and
path-safe serving, and `--export`."""

from __future__ import annotations

import http.client
import inspect
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from collabgen import cli
from collabgen.cli import app
from collabgen.view.data import ListQuery, RunView, ViewError
from collabgen.view.export import export_html
from collabgen.view.server import ViewServer, serve_in_thread
from tests.view_run import ASKER_QUESTION, EVAL_POLICIES, HOSTILE, make_view_eval, make_view_run

STATIC = Path(cli.__file__).parent / "view" / "static"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("view")
    out = make_view_run(base)
    make_view_eval(out, base)
    return out


@pytest.fixture(scope="module")
def server(out):
    server, thread = serve_in_thread(RunView(out), port=0)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def request(server: ViewServer, method: str, path: str, headers: dict[str, str] | None = None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def api(server: ViewServer, path: str):
    status, body, _ = request(server, "GET", path)
    assert status == 200, body
    return json.loads(body)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def shards(out: Path, config: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / config).glob("*.parquet")))


def all_ids(server: ViewServer, query: str = "") -> list[str]:
    page = api(server, f"/api/conversations?limit=200{query}")
    assert page["total"] == len(page["items"])
    return [item["conv_id"] for item in page["items"]]


# --------------------------------------------------------------------------- overview


def test_overview_counts_failures_and_histograms_equal_the_manifest_and_shards(server, out):
    overview = api(server, "/api/overview")
    expected = manifest(out)
    assert overview["counts"] == expected["counts"]
    assert overview["in_shards"] == {c: expected["counts"][c] for c in ("pairs", "sft", "candidates")}
    assert overview["failures"] == expected["failures"] and len(overview["failures"]) == 1
    assert overview["failure_reasons"][0]["count"] == 1 and "no parsable JSON" in overview["failure_reasons"][0]["reason"]
    assert overview["flags"] == expected["flags"]
    candidates = shards(out, "candidates")
    assert overview["row_flags"]["candidates"]["truncated"] == candidates["truncated"].sum() > 0
    by_metric = {h["metric"]: h for h in overview["histograms"]}
    assert set(by_metric) == {"MR", "accuracy", "interactivity", "token_penalty"}
    assert sum(by_metric["MR"]["all"]["counts"]) == expected["counts"]["candidates"]
    assert sum(by_metric["MR"]["chosen"]["counts"]) == expected["counts"]["turns"]
    assert sum(overview["gaps"]["gap"]["counts"]) == expected["counts"]["pairs"]
    assert sum(overview["gaps"]["confidence"]["counts"]) == expected["confidence"]["pairs_with_estimate"]
    assert overview["usage"]["by_role"] == expected["usage"]["by_role"]
    assert [t["conversations"] for t in overview["by_turn"]] == [expected["counts"]["conversations_ok"]] * 3


# --------------------------------------------------------------------------- the list


def test_pages_cover_every_conversation_once_finished_and_failed(server, out):
    expected = manifest(out)["counts"]
    seen: list[str] = []
    offset = 0
    while True:
        page = api(server, f"/api/conversations?limit=2&offset={offset}")
        assert page["total"] == expected["conversations_ok"] + expected["conversations_failed"]
        assert len(page["items"]) <= 2
        if not page["items"]:
            break
        seen += [item["conv_id"] for item in page["items"]]
        offset += 2
    assert len(seen) == len(set(seen)) == expected["seeds"]
    assert set(seen) == set(shards(out, "candidates")["conv_id"]) | {f["conv_id"] for f in manifest(out)["failures"]}


def test_filters_narrow_the_list_as_the_shards_say(server, out):
    candidates = shards(out, "candidates")
    failed = {f["conv_id"] for f in manifest(out)["failures"]}
    everyone = set(all_ids(server))
    assert set(all_ids(server, "&failed=true")) == failed
    assert set(all_ids(server, "&failed=false")) == everyone - failed
    assert set(all_ids(server, "&task=math")) == everyone
    assert all_ids(server, "&task=code") == []
    truncated = set(candidates.filter(pl.col("truncated"))["conv_id"])
    assert truncated and set(all_ids(server, "&flag=truncated")) == truncated
    hostile = set(candidates.filter(pl.col("response").str.contains("__pwned", literal=True))["conv_id"])
    assert len(hostile) == 1 and set(all_ids(server, "&q=__PWNED")) == hostile  # any case
    # A turn's gap: its chosen candidate's MR minus its rejected one's.
    gaps = (
        candidates.group_by("conv_id", "turn")
        .agg((pl.col("score").filter(pl.col("chosen")).first() - pl.col("score").filter(pl.col("rejected")).first())
             .alias("gap"))
    )
    low, high = 0.5, 1.0
    wide = set(gaps.filter(pl.col("gap").is_between(low, high))["conv_id"])
    assert wide and wide != everyone - failed
    assert set(all_ids(server, f"&gap_min={low}&gap_max={high}")) == wide
    narrow = gaps["gap"].min()
    assert set(all_ids(server, f"&gap_max={narrow}")) == set(gaps.filter(pl.col("gap") <= narrow)["conv_id"])
    status, body, _ = request(server, "GET", "/api/conversations?gap_min=wide")
    assert status == 400 and b"bad query" in body


# --------------------------------------------------------------------------- one conversation


def test_a_conversation_has_every_turn_candidate_future_and_pair(server, out):
    candidates = shards(out, "candidates")
    pairs = shards(out, "pairs")
    conv_id = candidates.filter(pl.col("response").str.contains("__pwned", literal=True))["conv_id"][0]
    rows = candidates.filter(pl.col("conv_id") == conv_id).sort("turn", "candidate")
    shown = api(server, f"/api/conversation?id={conv_id}")
    assert shown["status"] == "finished" and shown["sft"]["turns"] == rows["turn"].n_unique()
    assert [t["turn"] for t in shown["turns"]] == sorted(rows["turn"].unique().to_list())
    for turn in shown["turns"]:
        expected = rows.filter(pl.col("turn") == turn["turn"]).to_dicts()
        assert [c["candidate"] for c in turn["candidates"]] == [c["candidate"] for c in expected]
        for got, want in zip(turn["candidates"], expected):
            assert got["response"] == want["response"] and got["score"] == want["score"]
            assert got["proactive"] == want["proactive"] and got["metrics"] == want["metrics"]
            assert [f["messages"] for f in got["futures"]] == [f["messages"] for f in want["futures"]]
            assert [f["score"] for f in got["futures"]] == [f["score"] for f in want["futures"]]
        assert turn["chosen"] == next(c["candidate"] for c in expected if c["chosen"])
        turn_pairs = pairs.filter((pl.col("conv_id") == conv_id) & (pl.col("turn") == turn["turn"]))
        assert len(turn["pairs"]) == turn_pairs.height
        if turn_pairs.height:
            assert turn["pairs"][0]["gap"] == turn_pairs["gap"][0]
            assert turn["pairs"][0]["chosen"] == turn["chosen"]
            assert "a pair in pairs/" in turn["verdict"]
        assert turn["new_messages"][-1]["role"] == "user"
    assert HOSTILE in shown["turns"][0]["candidates"][-1]["response"]


def test_a_failed_conversation_shows_its_reason_and_an_unknown_one_is_404(server, out):
    failure = manifest(out)["failures"][0]
    shown = api(server, f"/api/conversation?id={failure['conv_id']}")
    assert shown["status"] == "failed" and shown["reason"] == failure["reason"] and shown["turns"] == []
    status, body, _ = request(server, "GET", "/api/conversation?id=nobody")
    assert status == 404 and "nobody" in json.loads(body)["error"]


def test_a_turn_without_a_pair_says_why():
    from collabgen.view.data import _verdict

    same = [{"candidate": 0, "score": 0.5, "chosen": True, "rejected": False, "response": "a"},
            {"candidate": 1, "score": 0.49, "chosen": False, "rejected": True, "response": "b"}]
    assert _verdict(same, 0.02, False).endswith("no pair: gap below min_gap")
    assert "0.010 < min gap 0.02" in _verdict(same, 0.02, False)
    assert _verdict([{**same[0]}, {**same[1], "rejected": False}], 0.02, False).endswith("same MR, so no pair")


# --------------------------------------------------------------------------- read-only, path-safe


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_are_refused_and_change_nothing(server, out, method):
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for path in ("/api/overview", "/api/conversations", "/", "/static/app.js"):
        status, _, headers = request(server, method, path)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("path", [
    "/static/../manifest.json", "/static/../../pyproject.toml", "/../manifest.json", "/static/..%2fmanifest.json",
    "/static/%2e%2e/%2e%2e/etc/passwd", "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/%252e%252e%252fmanifest.json",
    "/static//etc/passwd", "/static/..\\manifest.json", "/static/..%5cmanifest.json", "/manifest.json",
    "/candidates/part-00000.parquet", "/.collabgen/journal.jsonl", "/static/", "/static/.", "/etc/passwd",
])
def test_no_path_outside_the_static_folder_is_served(server, path):
    status, body, _ = request(server, "GET", path)
    assert status == 404, (path, body[:200])
    assert b"counts" not in body and b"root:" not in body


def test_the_page_and_its_assets_are_served_with_a_strict_policy(server):
    status, body, headers = request(server, "GET", "/")
    assert status == 200 and b'src="static/app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    for name in ("app.js", "style.css"):
        status, body, headers = request(server, "GET", f"/static/{name}")
        assert status == 200 and body == (STATIC / name).read_bytes()


def test_binds_loopback_by_default_and_refuses_a_foreign_host_header(server, out):
    assert inspect.signature(cli.view).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(ViewServer).parameters["host"].default == "127.0.0.1"
    assert server.server_address[0] == "127.0.0.1"
    status, _, _ = request(server, "GET", "/api/overview", {"Host": "attacker.example:8765"})
    assert status == 421
    assert request(server, "GET", "/api/overview", {"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_the_script_never_puts_text_in_the_page_as_html():
    script = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "DOMParser", "createContextualFragment"):
        assert sink not in script, sink


# --------------------------------------------------------------------------- the eval report


def report_json(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def eval_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines()]


def test_the_eval_answer_is_report_json_as_written(server, out):
    shown = api(server, "/api/eval")
    report = report_json(out / "eval")
    assert shown["report"] == report  # means, intervals and paired differences: the report's own numbers
    assert list(shown["report"]["policies"]) == list(EVAL_POLICIES)
    assert shown["report"]["paired"]["asker - direct"]["metrics"]["interactivity"]["low"] > 0
    assert shown["dir"] == str(out / "eval") and shown["stale"] is False
    assert shown["in_log"] == {name: p["conversations"] for name, p in report["policies"].items()}
    assert api(server, "/api/overview")["eval"] is True
    log = eval_log(out / "eval")
    assert [s["index"] for s in shown["seeds"]] == sorted({r["index"] for r in log}) == list(range(6))
    for row in shown["seeds"]:
        assert list(row["policies"]) == list(EVAL_POLICIES)
    failed = [s for s in shown["seeds"] if any(p["status"] != "ok" for p in s["policies"].values())]
    assert len(failed) == 1 and all(p["status"] == "failed" for p in failed[0]["policies"].values())


def test_each_seed_shows_each_policys_own_conversation(server, out):
    log = eval_log(out / "eval")
    report = report_json(out / "eval")
    finished = dict.fromkeys(EVAL_POLICIES, 0)
    for index in range(6):
        seed = api(server, f"/api/eval/seed?index={index}")
        assert seed["index"] == index and seed["conv_id"] == f"math-eval-{index:06d}"
        assert [p["policy"] for p in seed["policies"]] == list(EVAL_POLICIES)
        for shown in seed["policies"]:
            own = [r for r in log if r["policy"] == shown["policy"] and r["index"] == index]
            assert len(own) == 1
            assert (shown["status"], shown["reason"], shown["metrics"], shown["messages"]) == (
                own[0]["status"], own[0]["reason"], own[0]["metrics"], own[0]["messages"])
            finished[shown["policy"]] += shown["status"] == "ok"
        direct, asker = seed["policies"]
        if asker["status"] == "ok":
            assert asker["messages"][1]["content"] == ASKER_QUESTION
            assert all(m["content"] != ASKER_QUESTION for m in direct["messages"])
            assert direct["messages"][0] == asker["messages"][0]  # the same opening: paired
        else:
            assert "JSON" in asker["reason"] and direct["messages"] == asker["messages"] == []
    assert finished == {name: report["policies"][name]["conversations"] for name in EVAL_POLICIES}
    hostile = [p for i in range(6) for p in api(server, f"/api/eval/seed?index={i}")["policies"]
               if any(HOSTILE in m["content"] for m in p["messages"])]
    assert [p["policy"] for p in hostile] == ["direct"]


@pytest.mark.parametrize(("query", "status"), [("?index=99", 404), ("", 400), ("?index=two", 400)])
def test_an_unknown_or_bad_seed_is_refused(server, query, status):
    code, body, _ = request(server, "GET", f"/api/eval/seed{query}")
    assert code == status and json.loads(body)["error"]


def test_a_conversation_the_report_did_not_count_is_not_shown(out, tmp_path):
    """The log also holds a conversation under another system prompt (an earlier eval):
    the seed shows the one the report counted, picked the way `collabgen eval` picks."""
    folder = tmp_path / "eval"
    shutil.copytree(out / "eval", folder)
    counted = next(r for r in eval_log(folder) if r["policy"] == "direct" and r["index"] == 0)
    other = {**counted, "system_prompt": "another prompt", "messages": [{"role": "user", "content": "other"}]}
    with (folder / "journal.jsonl").open("a") as handle:
        handle.write(json.dumps(other) + "\n")
    view = RunView(folder)
    assert view.eval_seed(0)["policies"][0]["messages"] == counted["messages"]
    assert view.eval_report()["stale"] is False
    # A finished conversation past the report (an eval stopped before its report): stale.
    with (folder / "journal.jsonl").open("a") as handle:
        handle.write(json.dumps({**counted, "index": 6, "conv_id": "math-eval-000006"}) + "\n")
    shown = RunView(folder).eval_report()
    assert shown["stale"] is True and shown["in_log"]["direct"] == report_json(folder)["policies"]["direct"][
        "conversations"] + 1


def test_an_eval_folder_alone_is_viewed_and_a_run_without_eval_has_none(out, tmp_path):
    alone = RunView(out / "eval")
    assert alone.overview() == {"out_dir": str(out / "eval"), "run": False, "eval": True}
    assert alone.eval_report()["report"] == report_json(out / "eval")
    with pytest.raises(ViewError, match="no run"):
        alone.conversations(ListQuery())
    data = embedded_data(export_html(alone))
    assert data["eval"]["report"] == report_json(out / "eval") and data["summary"] == []
    run_only = tmp_path / "run"
    shutil.copytree(out, run_only, ignore=shutil.ignore_patterns("eval"))
    server, thread = serve_in_thread(RunView(run_only), port=0)
    try:
        assert api(server, "/api/overview")["eval"] is False
        status, body, _ = request(server, "GET", "/api/eval")
        assert status == 404 and "no eval report" in json.loads(body)["error"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- export


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="collabgen-data">(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


def test_export_is_one_file_whose_data_no_reply_can_break_out_of(out):
    view = RunView(out)
    page = export_html(view)
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data block and the inlined script
    assert "<!--" not in page and "static/" not in page  # nothing to fetch: assets inlined
    assert "connect-src 'none'" in page
    data = embedded_data(page)
    assert data["overview"]["counts"] == manifest(out)["counts"]
    assert len(data["summary"]) == len(data["conversations"]) == manifest(out)["counts"]["seeds"]
    replies = [c["response"] for conv in data["conversations"].values() for t in conv["turns"] for c in t["candidates"]]
    assert any(HOSTILE in reply for reply in replies)
    assert data["eval"] == view.eval_report() and data["eval"]["report"] == report_json(out / "eval")
    assert data["eval_seeds"] == {str(i): view.eval_seed(i) for i in range(6)}


def test_cli_view_export_writes_the_file_and_refuses_a_folder_that_is_not_an_out_dir(out, tmp_path):
    target = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["view", str(out), "--export", str(target)])
    assert result.exit_code == 0, result.output
    assert embedded_data(target.read_text())["overview"]["counts"] == manifest(out)["counts"]
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--export", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and "not a collabgen output" in result.output
    assert "collabgen eval" in " ".join(result.output.split())  # an eval folder would do too
    assert not (tmp_path / "x.html").exists()
