"""The whole capture path, for real: Debian's headless Chromium (driven by Playwright)
opens the demo shop, scrolls and clicks; the tracker's events go through the collector
into a Kafka topic; `pulse run` consumes them; the user's list in Redis, and the shop's
"recommended for you" strip, come to show the clicked item's neighbours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import redis

from collect_server import CollectorServer, post, read_topic
from conftest import free_port
from pulse.state.keys import KeySchema

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
KEYS = KeySchema()
#: Other shoppers viewed these together: sku-24 (bottom row of the shop) with sku-10 and
#: sku-11 (a middle row, never on screen in this test).
BUNDLE = ("sku-24", "sku-10", "sku-11")
#: A short window: on load no product row is on screen; scrolled to the bottom, only the
#: last row (sku-21 .. sku-24) is, so the user views few items and those are known.
VIEWPORT = {"width": 800, "height": 240}


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def shop(kafka_broker, redis_server, tmp_path_factory):
    """One shopping session, recorded: what the browser showed, what reached the topic,
    what the user's list was before and after the click."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test does)", pytrace=False)
    workdir = tmp_path_factory.mktemp("capture")
    topic = kafka_broker.create_topic(f"shop-{uuid.uuid4().hex[:8]}", partitions=3)
    url = redis_server.url(44)
    r = redis.Redis.from_url(url)
    r.flushdb()
    now = int(time.time() * 1000)
    with CollectorServer(kafka_broker.bootstrap, topic, demo_shop=True, redis_url=url) as server:
        seeded = [{"user_id": f"other{u}", "type": "view", "ts": now - 600_000 + u * 1000 + i, "item_id": item}
                  for u in range(30) for i, item in enumerate(BUNDLE)]  # fmt: skip
        assert post(server, seeded).json() == {"accepted": 90, "rejected": []}
        log = open(workdir / "run.log", "wb")
        run = subprocess.Popen([sys.executable, "-m", "pulse", "run", "--brokers", kafka_broker.bootstrap, "--topic", topic,
                                "--redis", url, "--idle-exit", "600"], stdout=log, stderr=subprocess.STDOUT)
        processed = lambda: int(r.hget(KEYS.meta, "events_processed") or 0)  # noqa: E731
        try:
            wait_for("pulse run to process the other shoppers' events", lambda: processed() >= 90, timeout=90)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(f"{server.url}/shop")
                user = page.evaluate("window.pulse.userId()")
                anonymous = page.evaluate("window.pulse.anonymousId()")
                wait_for("the page view", lambda: server.collector.accepted >= 91)
                wait_for("pulse run to process them", lambda: processed() >= server.collector.accepted, timeout=30)
                time.sleep(1.5)  # past the list's refresh debounce
                before = r.get(KEYS.recs(user))

                page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
                page.click('#products [data-pulse-item="sku-24"] h3')
                strip = '#recs [data-pulse-item="sku-10"] .reason'
                page.wait_for_function(f"document.querySelector('{strip}')?.textContent === 'co_visit:sku-24'", timeout=60_000)
                after = r.get(KEYS.recs(user))
                shown = page.eval_on_selector_all("#recs [data-pulse-item]", "els => els.map(e => e.dataset.pulseItem)")
                shown_recomm_id = page.get_attribute("#recs", "data-pulse-recomm-id")
                page.click('#recs [data-pulse-item="sku-10"]')
                page.wait_for_timeout(800)  # the click's batch goes out (flushMs 300)

                page.goto("about:blank")  # pagehide: dwell and the rest by sendBeacon
                page.goto(f"{server.url}/shop")
                page.evaluate("window.pulse.identify('shopper-1')")
                page.click('#products [data-pulse-item="sku-1"] button:first-of-type')
                page.wait_for_timeout(800)
                sent_before_opt_out = server.collector.accepted
                page.uncheck("#consent")
                wait_for("the opt-out", lambda: server.collector.accepted > sent_before_opt_out)
                page.click('#products [data-pulse-item="sku-2"] h3')
                page.wait_for_timeout(1500)
                browser.close()
            accepted = server.collector.accepted
            msgs = read_topic(kafka_broker.bootstrap, topic, accepted)
        finally:
            run.terminate()
            run.wait(60)
            log.close()
        yield dict(user=user, anonymous=anonymous, before=orjson.loads(before) if before else None, after=orjson.loads(after),
                   shown=shown, shown_recomm_id=shown_recomm_id, rejected=dict(server.collector.rejected), accepted=accepted,
                   after_opt_out=server.collector.accepted - sent_before_opt_out,
                   events=[orjson.loads(m.value()) for m in msgs], on_topic=len(msgs))  # fmt: skip


def browser_events(shop, **match) -> list:
    """The browser's events (in their order: one user's events share a partition)."""
    return [e for e in shop["events"] if not e["user_id"].startswith("other") and all(e.get(k) == v for k, v in match.items())]


def test_everything_accepted_is_on_the_topic(shop):
    assert shop["on_topic"] == shop["accepted"]


def test_the_trackers_events_all_pass_validation(shop):
    assert shop["rejected"] == {}
    assert len(browser_events(shop)) > 10


def test_a_click_makes_the_users_list_show_the_clicked_items_neighbours(shop):
    reason = {i["item_id"]: i["reason"] for i in shop["after"]["items"]}
    assert reason.get("sku-10") == reason.get("sku-11") == "co_visit:sku-24"
    if shop["before"] is not None:
        assert "co_visit:sku-24" not in {i["reason"] for i in shop["before"]["items"]}


def test_the_recommended_strip_shows_the_users_fresh_list(shop):
    assert shop["shown"] == [i["item_id"] for i in shop["after"]["items"]]
    assert shop["shown_recomm_id"] == shop["after"]["recomm_id"]


def test_a_click_on_a_recommended_tile_carries_the_lists_recomm_id(shop):
    [click] = browser_events(shop, type="click", item_id="sku-10")
    assert click["recomm_id"] == shop["shown_recomm_id"]
    [plain] = browser_events(shop, type="click", item_id="sku-24")
    assert "recomm_id" not in plain and plain["category"] == "coats"


def test_a_page_view_is_sent_on_load(shop):
    pages = browser_events(shop, type="view", page="/shop", user_id=shop["user"])
    assert any("item_id" not in e for e in pages)


def test_item_views_are_sent_for_tiles_on_screen_once_and_not_for_the_strip(shop):
    views = [e["item_id"] for e in browser_events(shop, type="view", user_id=shop["user"]) if "item_id" in e]
    assert views[:4] == ["sku-21", "sku-22", "sku-23", "sku-24"]  # the last row, once each
    assert not {"sku-10", "sku-11"} & set(views)  # shown only in the strip: impressions, not views


def test_scroll_depth_is_sent(shop):
    depths = [e["scroll_pct"] for e in browser_events(shop, type="scroll", user_id=shop["user"])]
    assert depths and max(depths) == 100 and depths == sorted(depths)


def test_leaving_the_page_sends_its_active_time_as_dwell(shop):
    [dwell] = browser_events(shop, type="dwell", user_id=shop["user"])
    assert 500 < dwell["dwell_ms"] < 120_000


def test_identify_sends_both_ids(shop):
    [cart] = browser_events(shop, type="add_to_cart")
    assert cart["user_id"] == "shopper-1" and cart["anonymous_id"] == shop["anonymous"] == shop["user"]
    assert cart["item_id"] == "sku-1" and cart["price"] > 0


def test_consent_false_sends_one_opt_out_and_then_nothing(shop):
    [opt_out] = [e for e in shop["events"] if e.get("consent") is False]
    assert opt_out["user_id"] == "shopper-1" and opt_out["anonymous_id"] == shop["anonymous"]
    assert shop["after_opt_out"] == 1
    assert not browser_events(shop, type="click", item_id="sku-2")


def test_the_tracker_retries_while_the_collector_is_down_and_sends_each_event_once(kafka_broker, redis_url):
    from playwright.sync_api import sync_playwright

    topic = kafka_broker.create_topic(f"retry-{uuid.uuid4().hex[:8]}", partitions=1)
    port = free_port()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        with CollectorServer(kafka_broker.bootstrap, topic, demo_shop=True, redis_url=redis_url, port=port) as first:
            page.goto(f"{first.url}/shop")
            wait_for("the page view", lambda: first.collector.accepted >= 1)
        page.evaluate("[1, 2, 3].forEach((n) => window.pulse.track('search', { query: `boots ${n}` }))")
        page.wait_for_timeout(2000)  # the tracker's first tries fail: nothing listens
        assert first.collector.accepted == 1 and page.evaluate("window.pulse.pending()") == 3
        with CollectorServer(kafka_broker.bootstrap, topic, demo_shop=True, redis_url=redis_url, port=port) as second:
            wait_for("the tracker's retry", lambda: second.collector.accepted >= 3, timeout=45)
            page.wait_for_timeout(1000)
            assert second.collector.accepted == 3
        browser.close()
    searches = [orjson.loads(m.value()) for m in read_topic(kafka_broker.bootstrap, topic, 4)]
    assert sorted(e["query"] for e in searches if e["type"] == "search") == ["boots 1", "boots 2", "boots 3"]
