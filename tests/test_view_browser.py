"""`collabgen view` in a real browser (headless Chromium through Selenium): what a user sees.

Both ways of viewing a run are driven the same way: the page of the local server and the
single exported HTML file opened from disk (`collabgen view OUT --export FILE`, file://).
Each test compares what is shown with the server's JSON API, so the page must render the
numbers, list, filters and conversations the API answers, show model text as text (the
hostile conversation of tests/view_run.py tries to set `window.__pwned`), and leave the
browser console free of CSP violations and JS errors.

Needs `chromium`, `chromedriver` (Debian: apt-get install chromium chromium-driver) and the
`selenium` package; skipped without them. CI (.ci/run) installs them, so these run there.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from collabgen.cli import app
from collabgen.view.data import RunView
from collabgen.view.server import ViewServer, serve_in_thread
from tests.view_run import EVAL_POLICIES, HOSTILE, make_view_eval, make_view_run

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need the selenium package")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if CHROMEDRIVER is None or CHROMIUM is None:
    pytest.skip("the browser tests need chromium and chromedriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)

WAIT = 10.0  # seconds for the page to render what the API answered
T = TypeVar("T")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """The run, with an eval of two policies next to it (OUT/eval)."""
    base = tmp_path_factory.mktemp("view")
    out = make_view_run(base)
    make_view_eval(out, base)
    return out


@pytest.fixture(scope="module")
def server(out) -> Iterator[ViewServer]:
    server, thread = serve_in_thread(RunView(out), port=0)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def exported(out, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("export") / "report.html"
    result = CliRunner().invoke(app, ["view", str(out), "--export", str(target)])
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def console() -> list[dict[str, Any]]:
    """Every browser console entry of the module (`get_log` hands each entry out once)."""
    return []


@pytest.fixture(autouse=True)
def _keep_console(browser, console) -> Iterator[None]:
    yield
    console.extend(browser.get_log("browser"))


@pytest.fixture(scope="module", params=["server", "export"])
def site(request, server, exported) -> str:
    """The page's address: the local server's, or the exported file's on disk."""
    return server.url if request.param == "server" else exported.as_uri()


# --------------------------------------------------------------------------- helpers


def api(server: ViewServer, path: str) -> Any:
    with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=10) as response:
        return json.loads(response.read())


def api_ids(server: ViewServer, query: str = "") -> list[str]:
    page = api(server, f"/api/conversations?limit=200{query}")
    assert page["total"] == len(page["items"])
    return [item["conv_id"] for item in page["items"]]


def eventually(read: Callable[[], T], expected: T, timeout: float = WAIT) -> T:
    """What `read` shows once it equals `expected`, or what it shows at the timeout
    (the page renders after its data arrives; a re-render may swap elements under us)."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while True:
        try:
            seen = read()
        except (StaleElementReferenceException, WebDriverException):
            seen = None
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def wait_for(driver: WebDriver, css: str, timeout: float = WAIT):
    found = eventually(lambda: bool(driver.find_elements(By.CSS_SELECTOR, css)), True, timeout)
    assert found, f"{css} never appeared; the page shows: {driver.find_element(By.TAG_NAME, 'body').text[:500]}"
    return driver.find_element(By.CSS_SELECTOR, css)


def open_page(driver: WebDriver, site: str) -> None:
    driver.get(site)
    wait_for(driver, "#list-total")


def shown_total(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "list-total").text


def page_rows(driver: WebDriver) -> list[list[str]]:
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "table.conv-list tbody tr")]


def turn_page(driver: WebDriver, button: str) -> bool:
    """Click "next" or "prev" if it is enabled; False when there is no such page."""
    if not driver.find_element(By.ID, button).is_enabled():
        return False
    before = shown_total(driver)
    driver.find_element(By.ID, button).click()
    assert eventually(lambda: shown_total(driver) != before, True), f"{button} did not turn the page"
    return True


def listed_rows(driver: WebDriver) -> list[list[str]]:
    """Every row the list shows, from its first page to its last."""
    while turn_page(driver, "prev"):
        pass
    rows = page_rows(driver)
    while turn_page(driver, "next"):
        rows += page_rows(driver)
    return rows


def listed_ids(driver: WebDriver) -> list[str]:
    return [row[0] for row in listed_rows(driver)]


def list_once_it_counts(driver: WebDriver, total: int) -> list[str]:
    """The whole list, once its count says `total` (a filter re-renders it after its data
    arrives). A filter that keeps every row (the one task) shows the same count before and
    after, so the re-render may swap the rows while they are read: read again then."""
    assert eventually(lambda: shown_total(driver).endswith(f" of {total}"), True), shown_total(driver)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return listed_ids(driver)
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def apply_filter(driver: WebDriver, name: str, value: str) -> None:
    field = driver.find_element(By.NAME, name)
    if field.tag_name == "select":
        Select(field).select_by_value(value)
    else:
        field.clear()
        field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()


def open_conversation(driver: WebDriver, conv_id: str) -> None:
    """Click the conversation's link in the list, as a user would."""
    while turn_page(driver, "prev"):
        pass
    while not (links := [a for a in driver.find_elements(By.CSS_SELECTOR, "a.conv-link") if a.text == conv_id]):
        assert turn_page(driver, "next"), f"{conv_id} is on no page of the list"
    assert len(links) == 1
    links[0].click()
    heading = wait_for(driver, "#conversation h2")
    assert heading.text == f"Conversation {conv_id}"


def hostile_id(server: ViewServer) -> str:
    ids = api_ids(server, "&q=__pwned")
    assert len(ids) == 1
    return ids[0]


def pwned(driver: WebDriver) -> str:
    return driver.execute_script("return typeof window.__pwned")


# --------------------------------------------------------------------------- overview


def test_the_overview_shows_the_apis_counts_and_failures(browser, site, server):
    overview = api(server, "/api/overview")
    open_page(browser, site)
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "table.counts tbody tr")]
    shown = {what: (in_shards, manifest) for what, in_shards, manifest in rows}
    for config in ("pairs", "sft", "candidates"):
        assert shown[config] == (str(overview["in_shards"][config]), str(overview["counts"][config]))
    for key in ("seeds", "conversations_ok", "conversations_failed", "turns"):
        assert shown[key.replace("_", " ")] == (str(overview["counts"][key]),) * 2
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section.card h2")]
    assert f"Failures ({len(overview['failures'])})" in headings and overview["failures"]
    failure_cells = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in
                     browser.find_elements(By.XPATH, "//section[h2[starts-with(., 'Failures')]]//tbody/tr")]
    assert failure_cells == [[r["reason"], str(r["count"]),
                              ", ".join(f["conv_id"] for f in overview["failures"] if f["reason"] == r["reason"])]
                             for r in overview["failure_reasons"]]
    total = overview["counts"]["conversations_ok"] + overview["counts"]["conversations_failed"]
    assert shown_total(browser).endswith(f" of {total}")


# --------------------------------------------------------------------------- the list


def test_the_list_shows_every_conversation(browser, site, server):
    open_page(browser, site)
    items = api(server, "/api/conversations?limit=200")["items"]
    shown = listed_rows(browser)
    assert [row[0] for row in shown] == [item["conv_id"] for item in items]
    rows = {row[0]: row for row in shown}
    for item in items:
        cells = rows[item["conv_id"]]
        assert cells[1:6] == [item["task"], item["status"], str(item["turns"]), str(item["candidates"]),
                              str(item["pairs"])]
        assert cells[8] == ", ".join(item["flags"]) and cells[9] == (item["reason"] or "")


@pytest.mark.parametrize(("name", "value", "query"), [
    ("failed", "true", "&failed=true"),
    ("failed", "false", "&failed=false"),
    ("task", "math", "&task=math"),
    ("flag", "truncated", "&flag=truncated"),
    ("q", "__PWNED", "&q=__PWNED"),
    ("gap_min", "0.5", "&gap_min=0.5"),
    ("gap_max", "0.35", "&gap_max=0.35"),
])
def test_a_filter_narrows_the_list_as_the_api_does(browser, site, server, name, value, query):
    expected = api_ids(server, query)
    assert expected != api_ids(server) or name == "task"  # each filter (but the one task) drops someone
    open_page(browser, site)
    apply_filter(browser, name, value)
    assert list_once_it_counts(browser, len(expected)) == expected


def test_two_filters_together_narrow_as_the_api_does(browser, site, server):
    expected = api_ids(server, "&failed=false&gap_min=0.5&gap_max=1")
    assert expected and expected != api_ids(server, "&failed=false")
    open_page(browser, site)
    apply_filter(browser, "failed", "false")
    browser.find_element(By.NAME, "gap_min").send_keys("0.5")
    apply_filter(browser, "gap_max", "1")
    assert list_once_it_counts(browser, len(expected)) == expected


# --------------------------------------------------------------------------- one conversation


def test_a_conversation_shows_its_turns_candidates_scores_and_pair(browser, site, server):
    conv_id = api_ids(server, "&failed=false")[0]
    conversation = api(server, f"/api/conversation?id={conv_id}")
    open_page(browser, site)
    open_conversation(browser, conv_id)
    turns = browser.find_elements(By.CSS_SELECTOR, "section.turn")
    assert [t.find_element(By.TAG_NAME, "h3").text for t in turns] == [f"turn {t['turn']}" for t in conversation["turns"]]
    assert conversation["turns"] and any(t["pairs"] for t in conversation["turns"])
    for shown, turn in zip(turns, conversation["turns"]):
        user_lines = [m.find_element(By.CSS_SELECTOR, ".content").text for m in shown.find_elements(By.CSS_SELECTOR, ".msg.user")
                      if m.find_element(By.XPATH, "..") == shown]
        assert user_lines == [m["content"].strip() for m in turn["new_messages"] if m["role"] == "user"]
        candidates = shown.find_elements(By.CSS_SELECTOR, ".candidates > .candidate")
        assert [c.get_attribute("data-candidate") for c in candidates] == [str(c["candidate"]) for c in turn["candidates"]]
        for box, candidate in zip(candidates, turn["candidates"]):
            head = box.find_element(By.CSS_SELECTOR, ".cand-head")
            assert head.find_element(By.CSS_SELECTOR, ".mr").text.startswith(f"MR {candidate['score']:.3f}")
            assert box.find_element(By.CSS_SELECTOR, ".response").text == candidate["response"].strip()
            tags = [t.text for t in head.find_elements(By.CSS_SELECTOR, ".tag")]
            assert ("chosen" in tags) == candidate["chosen"] and ("rejected" in tags) == candidate["rejected"]
        assert shown.find_element(By.CSS_SELECTOR, ".verdict").text == turn["verdict"]
        pairs = [li.text for li in shown.find_elements(By.CSS_SELECTOR, "ul.pairs li")]
        assert len(pairs) == len(turn["pairs"])
        for line, pair in zip(pairs, turn["pairs"]):
            assert line.startswith(f"pair: #{pair['chosen']} (MR {pair['score_chosen']:.3f}")
            assert f"over #{pair['rejected']} (MR {pair['score_rejected']:.3f}" in line
            assert f"gap {pair['gap']:.3f}" in line
    browser.find_element(By.ID, "back").click()
    wait_for(browser, "#list-total")


def test_the_failed_conversation_shows_its_reason(browser, site, server):
    failure = api(server, "/api/overview")["failures"][0]
    open_page(browser, site)
    open_conversation(browser, failure["conv_id"])
    status = browser.find_element(By.CSS_SELECTOR, "#conversation p.status")
    assert status.text.endswith(f"failed: {failure['reason']}")
    assert "bad" in status.get_attribute("class").split()
    assert browser.find_elements(By.CSS_SELECTOR, "section.turn") == []


# --------------------------------------------------------------------------- hostile text


def test_hostile_markup_shows_as_text_and_runs_nothing(browser, site, server):
    conv_id = hostile_id(server)
    open_page(browser, site)
    open_conversation(browser, conv_id)
    replies = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#conversation .response")]
    assert sum(HOSTILE.strip() in reply for reply in replies) > 0, replies[:4]
    assert any("<script>window.__pwned=1</script>" in reply for reply in replies)
    assert any("[click me](javascript:window.__pwned=3)" in reply for reply in replies)
    # Nothing of it became an element: no script, image or link inside the page's content.
    assert browser.find_elements(By.CSS_SELECTOR, "#app script, #app img, #app iframe") == []
    hrefs = [a.get_attribute("href") or "" for a in browser.find_elements(By.TAG_NAME, "a")]
    assert hrefs and not [h for h in hrefs if h.strip().lower().startswith("javascript:")]
    for reply in browser.find_elements(By.CSS_SELECTOR, "#conversation .response"):
        if "click me" in reply.text:
            reply.click()
            break
    time.sleep(0.2)  # an onerror or a late script would have run by now
    assert pwned(browser) == "undefined"
    # Back to the list and search for it: the markup in a filter is a filter, not HTML.
    browser.find_element(By.ID, "back").click()
    wait_for(browser, "#list-total")
    apply_filter(browser, "q", HOSTILE[:40])
    assert list_once_it_counts(browser, 1) == [conv_id]
    assert pwned(browser) == "undefined"


# --------------------------------------------------------------------------- the eval report


def interval(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def table_rows(driver: WebDriver, css: str) -> dict[str, list[str]]:
    """A table's rows by their data-row key: each row's cell texts."""
    return {row.get_attribute("data-row"): [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")}


def open_seed(driver: WebDriver, index: int) -> list[Any]:
    """Click the seed in the Evaluation section; its policies' columns."""
    links = [a for a in driver.find_elements(By.CSS_SELECTOR, "#evaluation a.seed-link") if a.text == f"seed {index}"]
    assert len(links) == 1
    links[0].click()
    wait_for(driver, "#eval-seed .policy-col")
    return driver.find_elements(By.CSS_SELECTOR, "#eval-seed .policy-col")


def test_the_evaluation_section_shows_the_reports_numbers(browser, site, out):
    report = json.loads((out / "eval" / "report.json").read_text())
    open_page(browser, site)
    wait_for(browser, "#evaluation table.eval-policies")
    metrics = report["metrics"]
    assert [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.eval-policies th")] == [
        "policy", "model", "n", "failed", *metrics]
    assert table_rows(browser, "table.eval-policies") == {
        name: [name, p["model"], str(p["conversations"]), str(p["failed"]), *(interval(p["metrics"][m]) for m in metrics)]
        for name, p in report["policies"].items()}
    assert list(table_rows(browser, "table.eval-policies")) == list(EVAL_POLICIES)
    assert table_rows(browser, "table.eval-paired") == {
        label: [label, str(d["seeds"]), *(interval(d["metrics"][m]) for m in metrics)]
        for label, d in report["paired"].items()} and report["paired"]
    seeds = table_rows(browser, "table.eval-seeds")
    assert [cells[0] for cells in seeds.values()] == [f"seed {i}" for i in range(6)]
    assert sorted(cells[2:].count("failed") for cells in seeds.values()) == [0] * 5 + [2]


def test_a_seed_shows_each_policys_conversation_side_by_side(browser, site, server):
    open_page(browser, site)
    for index in range(6):
        seed = api(server, f"/api/eval/seed?index={index}")
        wait_for(browser, "#evaluation")
        columns = open_seed(browser, index)
        assert [c.get_attribute("data-policy") for c in columns] == list(EVAL_POLICIES)
        for column, policy in zip(columns, seed["policies"]):
            assert column.find_element(By.TAG_NAME, "h3").text == policy["policy"]
            shown = [m.text for m in column.find_elements(By.CSS_SELECTOR, ".msg .content")]
            assert shown == [m["content"].strip() for m in policy["messages"]]
            assert column.find_element(By.CSS_SELECTOR, ".status").text.startswith(policy["status"])
        if seed["policies"][0]["messages"]:
            # Next to each other: the same row, the baseline on the left.
            assert columns[0].location["y"] == columns[1].location["y"]
            assert columns[0].location["x"] + columns[0].size["width"] <= columns[1].location["x"]
        browser.find_element(By.ID, "back").click()


def test_hostile_text_in_an_eval_conversation_shows_as_text(browser, site, server):
    index = next(i for i in range(6) if any(HOSTILE in m["content"] for p in api(
        server, f"/api/eval/seed?index={i}")["policies"] for m in p["messages"]))
    open_page(browser, site)
    wait_for(browser, "#evaluation")
    columns = open_seed(browser, index)
    direct = [m.text for m in columns[0].find_elements(By.CSS_SELECTOR, ".content")]
    assert any(text.startswith(HOSTILE.strip()[:60]) for text in direct), direct
    assert any("<script>window.__pwned=1</script>" in text for text in direct)
    assert browser.find_elements(By.CSS_SELECTOR, "#app script, #app img, #app iframe") == []
    time.sleep(0.2)
    assert pwned(browser) == "undefined"


def test_an_eval_folder_alone_shows_its_report(browser, out, tmp_path):
    """`collabgen view OUT/eval`: no run, so the page is the Evaluation section alone."""
    folder = out / "eval"
    report = json.loads((folder / "report.json").read_text())
    target = tmp_path / "eval.html"
    assert CliRunner().invoke(app, ["view", str(folder), "--export", str(target)]).exit_code == 0
    alone, thread = serve_in_thread(RunView(folder), port=0)
    try:
        for site in (alone.url, target.as_uri()):
            browser.get(site)
            wait_for(browser, "#evaluation table.eval-policies")
            assert browser.find_elements(By.ID, "list-total") == []
            rows = table_rows(browser, "table.eval-policies")
            assert [cells[4] for cells in rows.values()] == [
                interval(p["metrics"][report["metrics"][0]]) for p in report["policies"].values()]
            assert len(open_seed(browser, 0)) == len(EVAL_POLICIES)
    finally:
        alone.shutdown()
        alone.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- the console


def test_the_console_has_no_csp_violation_or_js_error(browser, site, server, console):
    """Every view of the page, then the console: an inline script or handler that the page
    built (or a hostile reply turned into HTML) is a CSP violation here; a bug is a JS error."""
    open_page(browser, site)
    for conv_id in api_ids(server):
        open_conversation(browser, conv_id)
        for details in browser.find_elements(By.CSS_SELECTOR, "details.future")[:3]:
            details.click()  # open a few futures: their messages render too
        browser.find_element(By.ID, "back").click()
        wait_for(browser, "#list-total")
    failed = api_ids(server, "&failed=true")
    apply_filter(browser, "failed", "true")
    assert list_once_it_counts(browser, len(failed)) == failed
    console.extend(browser.get_log("browser"))
    problems = [entry for entry in console if entry["level"] in ("SEVERE", "WARNING")
                or "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]]
    assert problems == []


def test_a_screenshot_of_the_overview_and_of_a_conversation_is_not_blank(browser, site, tmp_path):
    """What a user sees, as pixels: both pages draw text and shapes, not an empty canvas."""
    from matplotlib import image

    open_page(browser, site)
    browser.set_window_size(1280, 1600)
    shots = [tmp_path / "overview.png"]
    browser.save_screenshot(str(shots[0]))
    first = listed_ids(browser)[0]
    open_conversation(browser, first)
    shots.append(tmp_path / "conversation.png")
    browser.save_screenshot(str(shots[1]))
    for shot in shots:
        pixels = image.imread(shot)[..., :3]
        assert pixels.std() > 0.02, f"{shot.name} is blank"
        assert (pixels < 0.5).mean() > 0.002, f"{shot.name} has no dark text on it"
