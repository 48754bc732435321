"""``pulse serve``: the dashboard and a JSON API over what Pulse keeps in Redis.

One FastAPI application, read-only: every value comes from :class:`pulse.client.PulseClient`
(GET, ZREVRANGE, XREVRANGE, HGETALL, SCAN) and live pages are fed by the Pub/Sub channel
``pulse:updates`` (SUBSCRIBE); nothing here writes to Redis.

- JSON API under ``/api`` (OpenAPI at ``/openapi.json``, Swagger UI at ``/docs``, served
  from the package: no CDN): a user's list as Redis holds it, profile, verdicts and
  recent events, an item's similar items, trending, segments, anomalies, meta, the
  runs' stats; 404 with what was looked for when an id is unknown.
- Pages: overview (``/``), ``/users/{id}``, ``/items/{id}``, ``/segments``,
  ``/anomalies``, ``/trending``, rendered on the server and kept up to date by
  ``/api/live`` (a WebSocket: ``update`` for each list written, ``stats`` every two
  seconds). Charts are drawn by Chart.js, shipped in the package.
- ``/metrics``: Prometheus metrics of the server and gauges of the pipeline's stats.
- With a token (``--token``, ``PULSE_SERVE_TOKEN``) every request needs it: an
  ``Authorization: Bearer`` header, or ``?token=`` once in a browser (kept in a cookie).

Example::

    import uvicorn
    from pulse.web.app import create_app

    uvicorn.run(create_app("redis://127.0.0.1:6379/0"), host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from pulse import __version__
from pulse.client import PulseClient
from pulse.state.store import RedisLike, target

HERE = Path(__file__).resolve().parent
TOKEN_COOKIE = "pulse_token"

REQUESTS = Counter("pulse_serve_requests", "Requests answered by pulse serve", ["route", "status"])
LATENCY = Histogram("pulse_serve_request_seconds", "Time to answer a request", ["route"])
PIPELINE = Gauge("pulse_pipeline", "The newest run's counters as its stats hash holds them", ["counter"])
PIPELINE_ALERTS = Gauge("pulse_pipeline_alerts", "Data-quality alerts the newest run has raised now")


def _json(doc) -> Response:
    return Response(orjson.dumps(doc), media_type="application/json")


def _missing(what: str, hint: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what}: {hint}")


def overview(stats: list[dict]) -> dict:
    """The newest run's stats added up over its processes (the dashboard's overview)."""
    if not stats:
        return {}
    total = {name: sum(int(s.get(name) or 0) for s in stats) for name in ("events_in", "events_ok", "events_dlq", "events_late")}
    reasons: dict = {}
    for s in stats:
        for r, n in s["dlq_by_reason"].items():
            reasons[r] = reasons.get(r, 0) + n
    total.update(
        dlq_by_reason=dict(sorted(reasons.items())),
        events_per_s=round(sum(float(s.get("events_per_s") or 0) for s in stats), 1),
        alerts=[a for s in stats for a in s["alerts"]],
        running=any(s.get("running") == "1" for s in stats),
        mode=stats[0].get("mode"),
        processes=len(stats),
        updated_at=max(int(s.get("updated_at") or 0) for s in stats),
        history=stats[0]["history"] if len(stats) == 1 else [],
    )
    lags = [int(s["consumer_lag"]) for s in stats if s.get("consumer_lag")]
    if lags:
        total["consumer_lag"] = sum(lags)
    fresh = [float(s["freshness_p95_ms"]) for s in stats if s.get("freshness_p95_ms")]
    if fresh:
        total["freshness_p50_ms"] = max(float(s["freshness_p50_ms"]) for s in stats if s.get("freshness_p50_ms"))
        total["freshness_p95_ms"] = max(fresh)
    return total


def create_app(redis_url: RedisLike, prefix: str = "pulse", token: Optional[str] = None) -> FastAPI:
    """The dashboard and API over the Redis at ``redis_url`` (a URL, or a
    :class:`~pulse.state.store.RedisTarget` with an ACL user and TLS files; see the module
    docstring)."""
    client = PulseClient(redis_url, prefix)
    redis_at = target(redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        client.close()

    app = FastAPI(title="Pulse", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Read-only API over the recommendations, profiles and models Pulse keeps in Redis.")
    keys = client.keys
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["q"] = lambda s: quote(str(s), safe="")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """The token, when there is one; and the request metrics."""
        started = time.perf_counter()
        route = request.scope.get("path", "")
        if token is not None and not route.startswith("/static/"):
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), token.encode()):
                REQUESTS.labels(route="denied", status="401").inc()
                return JSONResponse({"detail": "this Pulse dashboard needs its token: send 'Authorization: Bearer <token>', "
                                               "or open /?token=<token> in a browser"}, status_code=401)
            if request.query_params.get("token"):
                # a browser keeps it in a cookie; the address bar loses it
                query = "&".join(f"{k}={quote(v)}" for k, v in request.query_params.items() if k != "token")
                response = RedirectResponse(route + ("?" + query if query else ""), status_code=303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
                return response
        response = await call_next(request)
        name = request.scope.get("route").path if request.scope.get("route") is not None else "unmatched"
        REQUESTS.labels(route=name, status=str(response.status_code)).inc()
        LATENCY.labels(route=name).observe(time.perf_counter() - started)
        return response

    # -- the JSON API -------------------------------------------------------------
    @app.get("/api/users/{user_id}/recs", tags=["users"], summary="The user's list, as Redis holds it")
    def api_recs(user_id: str):
        raw = client.redis.get(keys.recs(user_id))
        if raw is None:
            raise _missing(f"no recommendations for user {user_id!r}", "Pulse has not seen this user, or the user's keys expired")
        return Response(raw, media_type="application/json")

    @app.get("/api/users/{user_id}/profile", tags=["users"], summary="The user's profile")
    def api_profile(user_id: str):
        doc = client.profile(user_id)
        if doc is None:
            raise _missing(f"no profile for user {user_id!r}", "Pulse has not seen this user, or the user's keys expired")
        return _json(doc)

    @app.get("/api/users/{user_id}/segment", tags=["users"], summary="The models' verdicts on the user")
    def api_verdict(user_id: str):
        doc = client.verdict(user_id)
        if doc is None:
            raise _missing(f"no segment for user {user_id!r}", "the models have not judged this user yet")
        return _json(doc)

    @app.get("/api/users/{user_id}/events", tags=["users"], summary="The user's latest events, newest first")
    def api_events(user_id: str, count: int = Query(20, ge=1, le=100)):
        if client.profile(user_id) is None:
            raise _missing(f"no events for user {user_id!r}", "Pulse has not seen this user, or the user's keys expired")
        return _json(client.recent_events(user_id, count))

    @app.get("/api/items/{item_id}/similar", tags=["items"], summary="The item's co-visitation neighbours")
    def api_similar(item_id: str):
        doc = client.similar(item_id)
        if doc is None:
            raise _missing(f"no similar items for item {item_id!r}", "no user has viewed it together with another item yet")
        return _json(doc)

    @app.get("/api/trending", tags=["models"], summary="The most popular items, overall or in a category or segment")
    def api_trending(category: Optional[str] = None, segment: Optional[str] = None, k: int = Query(20, ge=1, le=200)):
        if category is not None and segment is not None:
            raise HTTPException(status_code=400, detail="trending: give ?category= or ?segment=, not both")
        top = client.trending(category=category, segment=segment, k=k)
        if not top and (category or segment):
            raise _missing(f"no trending list for {'category' if category else 'segment'} {category or segment!r}",
                           "see /api/trending/categories for the known categories")
        return _json([{"item_id": i, "score": s} for i, s in top])

    @app.get("/api/trending/categories", tags=["models"], summary="The categories that have a trending list")
    def api_categories():
        return _json(client.categories())

    @app.get("/api/segments", tags=["models"], summary="Segment sizes, traits, centroids and drift")
    def api_segments():
        doc = client.segments()
        if doc is None:
            raise _missing("no segments yet", "the segment model has not learned from a closed session yet")
        return _json(doc)

    @app.get("/api/anomalies", tags=["models"], summary="The newest flagged users, newest first")
    def api_anomalies(count: int = Query(50, ge=1, le=1000)):
        return _json(client.anomalies(count))

    @app.get("/api/meta", tags=["models"], summary="What the models have seen (pulse:meta)")
    def api_meta():
        return _json(client.meta())

    @app.get("/api/stats", tags=["runs"], summary="The newest run's stats, per process and added up")
    def api_stats():
        stats = client.stats()
        return _json({"total": overview(stats), "processes": stats})

    @app.get("/api/updates", tags=["runs"], summary="The newest entries of pulse:updates, newest first")
    def api_updates(count: int = Query(50, ge=1, le=1000)):
        return _json(client.recent_updates(count))

    @app.websocket("/api/live")
    async def api_live(ws: WebSocket):
        """Live updates: ``{"event": "update", "data": {"user_id", "recomm_id",
        "generated_at"}}`` for each list written (from the ``pulse:updates`` channel) and
        ``{"event": "stats", "data": {...}}`` every two seconds."""
        if token is not None:  # (the HTTP middleware does not see WebSockets)
            given = ws.query_params.get("token") or ws.cookies.get(TOKEN_COOKIE) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                await ws.close(code=1008, reason="this Pulse dashboard needs its token")
                return
        await ws.accept()
        sub = aioredis.Redis.from_url(redis_at.url, **redis_at.client_options())
        pubsub = sub.pubsub()
        await pubsub.subscribe(keys.updates)
        stats_due = 0.0
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None and message["type"] == "message":
                    await ws.send_text('{"event":"update","data":' + message["data"].decode() + "}")
                if time.monotonic() >= stats_due:
                    stats_due = time.monotonic() + 2.0
                    total = await asyncio.to_thread(lambda: overview(client.stats()))
                    await ws.send_text(orjson.dumps({"event": "stats", "data": total}).decode())
        except (WebSocketDisconnect, RuntimeError):
            pass  # the page went away
        finally:
            await pubsub.aclose()
            await sub.aclose()

    @app.get("/metrics", include_in_schema=False)
    def metrics():
        total = overview(client.stats())
        for name in ("events_in", "events_ok", "events_dlq", "events_late", "events_per_s", "consumer_lag"):
            if name in total:
                PIPELINE.labels(counter=name).set(total[name])
        PIPELINE_ALERTS.set(len(total.get("alerts", [])))
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Pulse API", swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css", swagger_favicon_url="/static/favicon.svg")

    # -- pages --------------------------------------------------------------------
    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"prefix": prefix, **context}, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page(request: Request, user: Optional[str] = None):
        if user:
            return RedirectResponse(f"/users/{quote(user.strip(), safe='')}", status_code=303)
        return page(request, "overview.html", total=overview(client.stats()), meta=client.meta(),
                    updates=client.recent_updates(15))

    @app.get("/users/{user_id}", response_class=HTMLResponse, include_in_schema=False)
    def user_page(request: Request, user_id: str):
        recs, profile = client.recs(user_id), client.profile(user_id)
        if recs is None and profile is None:
            return page(request, "missing.html", 404, what=f"user {user_id!r}",
                        hint="Pulse has not seen this user, or the user's keys expired.")
        verdict = client.verdict(user_id)
        traits = client.traits(verdict["segment"]) if verdict and verdict["segment"] else []
        return page(request, "user.html", user_id=user_id, recs=recs, profile=profile, verdict=verdict, traits=traits,
                    events=client.recent_events(user_id, 20))

    @app.get("/items/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    def item_page(request: Request, item_id: str):
        similar = client.similar(item_id)
        if similar is None:
            return page(request, "missing.html", 404, what=f"item {item_id!r}",
                        hint="no user has viewed it together with another item yet.")
        return page(request, "item.html", item_id=item_id, similar=similar)

    @app.get("/segments", response_class=HTMLResponse, include_in_schema=False)
    def segments_page(request: Request):
        stats = client.stats()
        return page(request, "segments.html", segments=client.segments(), history=stats[0]["history"] if stats else [])

    @app.get("/anomalies", response_class=HTMLResponse, include_in_schema=False)
    def anomalies_page(request: Request):
        return page(request, "anomalies.html", anomalies=client.anomalies(100))

    @app.get("/trending", response_class=HTMLResponse, include_in_schema=False)
    def trending_page(request: Request, category: Optional[str] = None):
        categories = client.categories()
        return page(request, "trending.html", top=client.trending(k=20), categories=categories, category=category,
                    in_category=client.trending(category=category, k=20) if category else [])

    return app
