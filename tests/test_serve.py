"""``pulse serve``: a read-only JSON API and dashboard over what a real replay wrote,
404s that say what was looked for, OpenAPI docs from the package, live updates over
Server-Sent Events, a token guard, and never a write to Redis."""

import html
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest
import redis

from conftest import Serve
from pulse.flows.config import Settings
from pulse.flows.generate import START_MS, generate, write_log
from pulse.flows.replay import replay
from pulse.state.keys import KeySchema


def get(url: str, headers: dict | None = None):
    """(status, headers, body) of a GET, errors included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, redis_server):
    lines, _ = generate(users=150, items=120, events=4_000, seed=9, malformed=0.02, days=1)
    path = tmp_path_factory.mktemp("serve") / "events.jsonl"
    write_log(str(path), lines)
    url = redis_server.url(42)
    client = redis.Redis.from_url(url)
    client.flushdb()
    replay(path, "native", Settings(recent_events=5, replay_stats=True), url)
    user = sorted(k.decode() for k in client.scan_iter(match="pulse:user:*:recs"))[0].split("{")[1].split("}")[0]
    item = orjson.loads(client.get(f"pulse:user:{{{user}}}:recs"))["items"][0]["item_id"]
    return url, client, user, item


@pytest.fixture(scope="module")
def server(replayed):
    s = Serve(replayed[0])
    yield s
    s.stop()


def test_a_users_list_is_served_exactly_as_redis_holds_it(replayed, server):
    _, client, user, _ = replayed
    status, headers, body = get(f"{server.base}/api/users/{user}/recs")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == client.get(f"pulse:user:{{{user}}}:recs")


@pytest.mark.parametrize("path, says", [
    ("/api/users/nobody/recs", "no recommendations for user 'nobody'"),
    ("/api/users/nobody/profile", "no profile for user 'nobody'"),
    ("/api/users/nobody/events", "no events for user 'nobody'"),
    ("/api/items/no-such-item/similar", "no similar items for item 'no-such-item'"),
    ("/api/trending?category=no-such-category", "no trending list for category 'no-such-category'"),
])
def test_an_unknown_id_answers_404_saying_what_was_looked_for(server, path, says):
    status, _, body = get(server.base + path)
    assert status == 404
    assert says in orjson.loads(body)["detail"]


def test_every_api_route_answers_with_the_values_of_its_keys(replayed, server):
    _, client, user, item = replayed
    api = lambda p: orjson.loads(get(server.base + p)[2])  # noqa: E731
    assert api(f"/api/users/{user}/profile") == orjson.loads(client.get(f"pulse:user:{{{user}}}:profile"))
    assert api(f"/api/users/{user}/segment") == orjson.loads(client.get(f"pulse:user:{{{user}}}:segment"))
    assert len(api(f"/api/users/{user}/events")) == 5
    assert api(f"/api/items/{item}/similar") == orjson.loads(client.get(f"pulse:item:{{{item}}}:similar"))
    assert [t["item_id"] for t in api("/api/trending?k=5")] == [m.decode() for m in client.zrevrange("pulse:trending", 0, 4)]
    assert api("/api/segments") == orjson.loads(client.get("pulse:segments"))
    assert [a["id"] for a in api("/api/anomalies")] == [i.decode() for i, _ in client.xrevrange("pulse:anomalies", count=50)]
    assert api("/api/meta")["events_processed"] == client.hget("pulse:meta", "events_processed").decode()
    assert api("/api/stats")["total"]["events_in"] == int(client.hget("pulse:stats:{0}", "events_in")) > 4_000
    assert api("/api/updates?count=3")[0]["id"] == client.xrevrange("pulse:updates", count=1)[0][0].decode()


@pytest.mark.parametrize("page", ["/", "/users/{user}", "/items/{item}", "/segments", "/anomalies", "/trending", "/trending?category={category}"])
def test_every_page_is_html_with_its_data(replayed, server, page):
    _, client, user, item = replayed
    category = sorted(k.decode() for k in client.scan_iter(match="pulse:trending:category:*"))[0].split("{")[1][:-1]
    status, headers, body = get(server.base + page.format(user=user, item=item, category=category))
    assert status == 200 and headers["content-type"].startswith("text/html")
    text = body.decode()
    assert "<html" in text
    expected = {"/users/{user}": item, "/items/{item}": item, "/": "events in", "/segments": "drift", "/anomalies": "window end",
                "/trending": client.zrevrange("pulse:trending", 0, 0)[0].decode()}.get(page, category)
    assert expected in text


def test_a_users_page_shows_the_traits_of_the_users_segment_from_the_segments_summary(replayed, server):
    _, client, _, _ = replayed
    summary = orjson.loads(client.get("pulse:segments"))["segments"]
    verdicts = {k.decode(): orjson.loads(client.get(k)) for k in client.scan_iter(match="pulse:user:*:segment")}
    key, verdict = next((k, v) for k, v in sorted(verdicts.items()) if v["segment"] and summary.get(v["segment"], {}).get("traits"))
    status, _, body = get(f"{server.base}/users/{KeySchema().user_of(key)}")
    assert status == 200
    assert f'<span id="segment-traits">{html.escape(", ".join(summary[verdict["segment"]]["traits"]))}</span>' in body.decode()


def test_an_unknown_users_page_says_so_with_404(server):
    status, _, body = get(f"{server.base}/users/nobody")
    assert status == 404 and "No user 'nobody' here" in html.unescape(body.decode())


def test_the_api_docs_and_charts_come_from_the_package_not_a_cdn(server):
    status, _, docs = get(f"{server.base}/docs")
    assert status == 200
    assert "/static/vendor/swagger-ui-bundle.js" in docs.decode() and "cdn" not in docs.decode().lower()
    spec = orjson.loads(get(f"{server.base}/openapi.json")[2])
    assert {"/api/users/{user_id}/recs", "/api/items/{item_id}/similar", "/api/trending", "/api/segments", "/api/anomalies",
            "/api/meta"} <= set(spec["paths"])
    _, _, page = get(f"{server.base}/")
    assert "https://" not in page.decode().split("<main>")[0]  # no script or style from elsewhere
    status, _, chart = get(f"{server.base}/static/vendor/chart.umd.min.js")
    assert status == 200 and b"Chart.js v4.6.1" in chart[:200]


def test_metrics_count_requests_and_show_the_pipelines_counters(replayed, server):
    records = int(replayed[1].hget("pulse:stats:{0}", "events_in"))
    get(f"{server.base}/api/meta")
    status, _, body = get(f"{server.base}/metrics")
    text = body.decode()
    assert status == 200
    assert 'pulse_serve_requests_total{route="/api/meta",status="200"}' in text
    assert f'pulse_pipeline{{counter="events_in"}} {records:.1f}' in text


def live_events(base: str, seconds: float, **headers):
    """The (event, data) pairs the WebSocket /api/live sends within ``seconds``."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    deadline = time.monotonic() + seconds
    with connect(base.replace("http://", "ws://") + "/api/live", additional_headers=headers, open_timeout=30) as ws:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                msg = json.loads(ws.recv(timeout=left))
            except (TimeoutError, ConnectionClosed):
                return
            yield msg["event"], msg["data"]


def test_live_events_carry_each_list_written_as_it_is_written(replayed, server, tmp_path):
    url, _, user, _ = replayed
    later = START_MS + 5 * 86_400_000
    log = tmp_path / "more.jsonl"
    write_log(str(log), [orjson.dumps({"user_id": user, "type": "view", "ts": later + k * 2_000, "item_id": f"new-{k}"}) for k in range(3)])
    stream = live_events(server.base, 60)
    first = next(stream)  # connected: the first stats event
    assert first[0] == "stats" and first[1]["events_in"] >= 4_000
    replay(log, "native", Settings(), url)
    for event, data in stream:
        if event == "update" and data["user_id"] == user:
            assert data["generated_at"].startswith("2026-")
            break
    else:
        pytest.fail("no update event for the user within 60 s")


def write_calls(client: redis.Redis) -> int:
    """How many commands flagged ``write`` the server has run (INFO commandstats)."""
    writes = {name for name, doc in client.command().items() if "write" in doc["flags"]}
    return sum(stat["calls"] for name, stat in client.info("commandstats").items()
               if name.removeprefix("cmdstat_").split("|")[0] in writes)


def test_serving_every_route_never_writes_to_redis(replayed, tmp_path):
    url, client, user, item = replayed
    serve = Serve(url)
    try:
        before = write_calls(client)
        for path in ["/", f"/users/{user}", f"/items/{item}", "/segments", "/anomalies", "/trending", "/docs", "/openapi.json",
                     "/metrics", f"/api/users/{user}/recs", f"/api/users/{user}/profile", f"/api/users/{user}/segment",
                     f"/api/users/{user}/events", f"/api/items/{item}/similar", "/api/trending", "/api/trending/categories",
                     "/api/segments", "/api/anomalies", "/api/meta", "/api/stats", "/api/updates", "/users/nobody"]:
            assert get(serve.base + path)[0] in (200, 404), path
        assert [e for e, _ in live_events(serve.base, 3)][:1] == ["stats"]
        assert write_calls(client) == before
    finally:
        serve.stop()


def test_it_serves_as_a_redis_user_that_may_only_read(replayed, redis_server):
    url, client, user, _ = replayed
    client.execute_command("ACL", "SETUSER", "dashboard", "reset", "on", ">read-only-pw", "~*", "&*", "+@read", "+@connection",
                           "+subscribe", "+unsubscribe", "+info", "+ping", "-@write")
    reader_url = url.replace("redis://", "redis://dashboard:read-only-pw@")
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(reader_url).set("probe", "x")  # the user really cannot write
    serve = Serve(reader_url)
    try:
        status, _, body = get(f"{serve.base}/api/users/{user}/recs")
        assert status == 200 and body == client.get(f"pulse:user:{{{user}}}:recs")
        assert get(f"{serve.base}/users/{user}")[0] == 200
        assert [e for e, _ in live_events(serve.base, 3)][:1] == ["stats"]
    finally:
        err = serve.stop()
    assert "read-only-pw" not in err


def test_a_token_guards_every_route_and_never_shows_in_an_answer(replayed):
    url, _, user, _ = replayed
    serve = Serve(url, env={"PULSE_SERVE_TOKEN": "s3cret-t0ken"})
    try:
        for path in ("/", f"/api/users/{user}/recs", "/metrics", "/docs"):
            status, _, body = get(serve.base + path)
            assert status == 401, path
            assert b"s3cret-t0ken" not in body and b"Authorization: Bearer" in body
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as refused:  # the live feed refuses a page without the token
            list(live_events(serve.base, 10))
        assert refused.value.response.status_code == 403
        assert [e for e, _ in live_events(serve.base, 3, Cookie="pulse_token=s3cret-t0ken")][:1] == ["stats"]
        assert get(f"{serve.base}/api/users/{user}/recs", {"Authorization": "Bearer s3cret-t0ken"})[0] == 200
        assert get(f"{serve.base}/api/users/{user}/recs", {"Authorization": "Bearer wrong"})[0] == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(f"{serve.base}/users/{user}?token=s3cret-t0ken", timeout=30) as r:  # a browser: kept in a cookie
            assert r.status == 200 and r.url.endswith(f"/users/{user}")
        with opener.open(f"{serve.base}/api/meta", timeout=30) as r:
            assert r.status == 200
    finally:
        serve.stop()


def test_binding_beyond_loopback_without_a_token_is_refused(replayed):
    out = subprocess.run([sys.executable, "-m", "pulse", "serve", "--redis", replayed[0], "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "give --token (or PULSE_SERVE_TOKEN)" in orjson.loads(out.stdout.strip().splitlines()[-1])["error"]


def test_an_unreachable_redis_is_a_clear_error_without_the_password():
    from conftest import free_port

    out = subprocess.run([sys.executable, "-m", "pulse", "serve", "--redis", f"redis://u:hunter2@127.0.0.1:{free_port()}/0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "cannot reach Redis at 127.0.0.1" in orjson.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert "hunter2" not in out.stderr + out.stdout
