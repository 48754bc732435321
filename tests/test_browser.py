"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): open the overview, look a user up, see the recommended items; replay more
events and watch the user's page change without a reload. Screenshots are kept in
tests/artifacts/."""

import shutil
import threading
from pathlib import Path

import orjson
import pytest
import redis

from conftest import Serve
from pulse.flows.config import Settings
from pulse.flows.generate import START_MS, generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, redis_server):
    lines, _ = generate(users=120, items=100, events=3_000, seed=12, days=1)
    path = tmp_path_factory.mktemp("browser") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(43)
    client = redis.Redis.from_url(url)
    client.flushdb()
    replay(path, "native", Settings(recent_events=5, replay_stats=True), url)
    serve = Serve(url)
    yield url, client, serve
    serve.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium (or `apt-get install chromium`)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert errors == [], f"the page logged errors: {errors}"


def a_user(client) -> tuple[str, list]:
    key = sorted(k.decode() for k in client.scan_iter(match="pulse:user:*:recs"))[0]
    doc = orjson.loads(client.get(key))
    return KeySchema().user_of(key), [r["item_id"] for r in doc["items"]]


def test_looking_a_user_up_from_the_overview_shows_the_recommended_items(dashboard, page):
    _, client, serve = dashboard
    user, items = a_user(client)
    page.goto(serve.base + "/")
    page.wait_for_selector("#live.on")  # the live feed is connected
    assert page.locator("#events_in").inner_text() != "0"
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    page.fill("#user-lookup", user)
    page.click("form.lookup button")
    page.wait_for_url(f"**/users/{user}")
    shown = page.locator("#recs a.item").all_inner_texts()
    assert shown == items
    assert page.locator("#chart-categories").is_visible()
    page.screenshot(path=str(ARTIFACTS / "user.png"), full_page=True)


def test_a_users_page_changes_without_a_reload_when_more_events_are_replayed(dashboard, page, tmp_path):
    url, client, serve = dashboard
    user, _ = a_user(client)
    old_id = orjson.loads(client.get(f"pulse:user:{{{user}}}:recs"))["recomm_id"]
    page.goto(f"{serve.base}/users/{user}")
    page.wait_for_selector("#live.on")
    page.evaluate("window.__notReloaded = true")
    assert page.locator("#recomm-id").inner_text() == old_id
    # The user comes back two days later and views the catalogue's most popular items.
    top = [m.decode() for m in client.zrevrange("pulse:trending", 0, 5)]
    later = START_MS + 3 * 86_400_000
    log = tmp_path / "more.jsonl"
    write_log(str(log), [orjson.dumps({"user_id": user, "type": "view", "ts": later + k * 5_000, "item_id": item})
                         for k, item in enumerate(top)])
    replaying = threading.Thread(target=replay, args=(log, "native", Settings(recent_events=5, replay_stats=True), url))
    replaying.start()
    page.wait_for_function(f"document.getElementById('recomm-id').textContent !== {orjson.dumps(old_id).decode()}", timeout=60_000)
    page.wait_for_selector("#updated:not([hidden])")
    replaying.join(120)
    new = orjson.loads(client.get(f"pulse:user:{{{user}}}:recs"))
    page.wait_for_function(f"document.getElementById('recomm-id').textContent === {orjson.dumps(new['recomm_id']).decode()}",
                           timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#recs a.item").all_inner_texts() == [r["item_id"] for r in new["items"]]
    assert page.locator("#events tbody tr").first.inner_text().split("\t")[2] == top[-1]  # the newest event first
    page.screenshot(path=str(ARTIFACTS / "user-updated.png"), full_page=True)
