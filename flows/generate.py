"""A realistic synthetic clickstream with planted structure, deterministic for a seed.

* Items have Zipf popularity and one category each; a few *bundles* of 3 items are
  visited together, in order, within sessions.
* Every human user has a *persona* (how they engage) and one to three favourite
  categories. Personas: ``browser`` (many views, long dwell, rarely buys), ``buyer``
  (focused, carts and purchases), ``scanner`` (quick exits, shallow scroll),
  ``researcher`` (deep scroll, bookmarks and shares, long sessions).
* Sessions follow a funnel: view → scroll/dwell → click → add_to_cart → purchase.
* A share of users are bots: a few declare a crawler user agent, the others are stealth
  scrapers and click floods (hundreds of events a minute, no dwell).
* Optionally (``scraper_share``) a share of users are *scrapers* with a browser's user
  agent that a per-minute model finds hard: sessions of 80-300 page views of random items
  across the catalogue, 0.2-1.2 s apart, with near-zero dwell reports or none, and no
  scrolling.
* Optionally a share of malformed lines of varied kinds (``malformed``), for testing the
  dead-letter path.

``truth`` (a dict; written as JSON by ``pulse generate --truth``) says which user has
which persona, who is a bot, the bundles, and how many malformed lines of each kind went
in, so tests can check that the pipeline recovers the structure.

Example:

>>> lines, truth = generate(users=20, items=50, events=300, seed=1)
>>> len(lines), sorted(truth)[:3]
(300, ['bots', 'bundles', 'categories'])
"""

from __future__ import annotations

import bisect
import itertools
import random
import orjson

CATEGORIES = [
    "shoes", "books", "games", "garden", "kitchen", "music", "outdoor", "phones",
    "toys", "beauty", "sports", "fashion", "tools", "pets", "office", "travel",
]  # fmt: skip

PERSONAS = {
    #            views/session  p(click)  dwell s (mean)  scroll  p(cart|click) p(buy|cart) p(bookmark)
    "browser": dict(views=9, click=0.35, dwell=45.0, scroll=60, cart=0.05, buy=0.2, bookmark=0.02, focus=0.5),
    "buyer": dict(views=4, click=0.7, dwell=20.0, scroll=40, cart=0.55, buy=0.7, bookmark=0.02, focus=0.9),
    "scanner": dict(views=12, click=0.1, dwell=2.0, scroll=10, cart=0.02, buy=0.1, bookmark=0.0, focus=0.3),
    "researcher": dict(views=6, click=0.5, dwell=120.0, scroll=92, cart=0.1, buy=0.3, bookmark=0.3, focus=0.8),
}

BROWSER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
]
CRAWLER_AGENT = "Mozilla/5.0 (compatible; ExampleBot/2.1; +http://example.com/bot)"

START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z: fixed, so output never depends on today
DAY_MS = 86_400_000


class _Zipf:
    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (k + 1) ** s for k in range(n)]
        self.cum = list(itertools.accumulate(weights))
        self.rng = rng

    def sample(self) -> int:
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])


MALFORMED_KINDS = (
    "invalid_json", "not_an_object", "missing_field", "invalid_type", "unknown_event_type",
    "invalid_value", "ts_out_of_range", "payload_too_large", "duplicate_event",
)  # fmt: skip


def _malformed(kind: str, good: dict, rng: random.Random) -> bytes:
    ev = dict(good)
    ev["event_id"] = f"bad-{rng.getrandbits(48):x}"
    if kind == "invalid_json":
        return rng.choice([b'{"user_id": "u1", "type": "view", "ts": ', b"not json at all", b'{"user_id": "u1",,}', b"\xff\xfe garbage"])
    if kind == "not_an_object":
        return rng.choice([b"[1, 2, 3]", b'"a string"', b"42", b"null"])
    if kind == "missing_field":
        del ev[rng.choice(["user_id", "type", "ts"])]
    elif kind == "invalid_type":
        field, value = rng.choice([("user_id", 12.5), ("ts", True), ("dwell_ms", "long"), ("user_id", ["a"]), ("scroll_pct", {"x": 1})])
        ev[field] = value
    elif kind == "unknown_event_type":
        ev["type"] = rng.choice(["hover", "VIEW", "teleport", ""])
    elif kind == "invalid_value":
        field, value = rng.choice([("dwell_ms", -500), ("scroll_pct", 140), ("scroll_pct", -3), ("price", -9.99), ("user_id", "")])
        ev[field] = value
    elif kind == "ts_out_of_range":
        ev["ts"] = rng.choice([ev["ts"] // 1000, 315_532_800_000, 4_102_444_800_000])  # seconds, 1980, 2100
    elif kind == "payload_too_large":
        ev["note"] = "x" * (70 * 1024)
    return orjson.dumps(ev)


def generate(
    users: int = 1000,
    items: int = 500,
    events: int = 100_000,
    seed: int = 42,
    bot_share: float = 0.02,
    malformed: float = 0.0,
    days: float = 7.0,
    bundles: int = 10,
    scraper_share: float = 0.0,
) -> tuple[list[bytes], dict]:
    """Generate ``events`` JSON lines in event-time order, and the ground truth."""
    rng = random.Random(seed)
    # its own generator, so that a log without scrapers is what it was before they existed
    scraper_rng = random.Random(seed * 7_919 + 1)
    n_cat = min(len(CATEGORIES), max(4, items // 25))
    categories = CATEGORIES[:n_cat]
    item_ids = [f"i{k:05d}" for k in range(items)]
    rng.shuffle(item_ids)  # popularity rank is not the id order
    item_cat = {i: categories[k % n_cat] for k, i in enumerate(sorted(item_ids))}
    by_cat: dict[str, list[str]] = {c: [] for c in categories}
    for i in item_ids:  # popularity order within each category
        by_cat[item_cat[i]].append(i)
    cat_zipf = {c: _Zipf(len(v), 1.1, rng) for c, v in by_cat.items()}
    # Bundles: three items of one category that are visited together.
    bundle_list = []
    for b in range(bundles):
        c = categories[b % n_cat]
        pool = by_cat[c][5:]  # not the head: a bundle must be findable beyond popularity
        if len(pool) >= 3:
            bundle_list.append(rng.sample(pool, 3))
    price = {i: round(5 + rng.random() * 195, 2) for i in item_ids}

    persona_names = list(PERSONAS)
    user_ids = [f"u{k:06d}" for k in range(users)]
    n_bots = int(round(users * bot_share))
    bots = set(rng.sample(user_ids, n_bots)) if n_bots else set()
    bot_kind = {u: ("crawler" if k % 4 == 0 else "flood") for k, u in enumerate(sorted(bots))}
    n_scrapers = min(int(round(users * scraper_share)), users - len(bots))
    scraper_ids = sorted(scraper_rng.sample(sorted(set(user_ids) - bots), n_scrapers)) if n_scrapers > 0 else []
    bot_kind.update((u, "scraper") for u in scraper_ids)
    persona = {u: persona_names[k % len(persona_names)] for k, u in enumerate(u for u in user_ids if u not in bot_kind)}
    favourites = {u: rng.sample(categories, rng.randint(1, min(3, n_cat))) for u in user_ids}
    agent = {u: rng.choice(BROWSER_AGENTS) for u in user_ids}
    activity = {u: rng.paretovariate(1.5) for u in user_ids}  # a few users are far more active
    span = int(days * DAY_MS)

    out: list[tuple[int, bytes]] = []
    counter = itertools.count()
    human_ids = [u for u in user_ids if u not in bot_kind]
    human_weights = list(itertools.accumulate(activity[u] for u in human_ids))
    bot_ids = sorted(bots)
    target_bot = int(events * min(0.25, bot_share * 8)) if bots else 0
    target_scraper = int(events * min(0.25, scraper_share * 8)) if scraper_ids else 0

    def emit(u: str, kind: str, ts: int, **fields) -> None:
        ev = {"user_id": u, "type": kind, "ts": ts, "event_id": f"{u}-{next(counter)}", **fields}
        if kind in ("add_to_cart", "purchase") and "item_id" in fields:
            ev["price"] = price[fields["item_id"]]
        out.append((ts, orjson.dumps(ev)))

    def human_session(u: str, t: int) -> None:
        p = PERSONAS[persona[u]]
        sid = f"s-{u}-{next(counter)}"
        common = {"session_id": sid, "device": "mobile" if "iPhone" in agent[u] else "desktop", "user_agent": agent[u]}
        cat = rng.choice(favourites[u]) if rng.random() < p["focus"] else rng.choice(categories)
        n_views = max(1, int(rng.expovariate(1 / p["views"])))
        bundle = rng.choice(bundle_list) if bundle_list and rng.random() < 0.15 else None
        path = list(bundle) if bundle else []
        while len(path) < n_views:
            path.append(by_cat[cat][cat_zipf[cat].sample()])
        for item in path:
            c = item_cat[item]
            emit(u, "view", t, item_id=item, category=c, **common)
            dwell = max(200, int(rng.expovariate(1 / (p["dwell"] * 1000))))
            t += rng.randint(300, 2000)
            emit(u, "scroll", t, item_id=item, category=c, scroll_pct=round(min(100.0, max(0.0, rng.gauss(p["scroll"], 12))), 1), **common)
            t += dwell
            emit(u, "dwell", t, item_id=item, category=c, dwell_ms=dwell, **common)
            if rng.random() < p["click"]:
                t += rng.randint(500, 4000)
                emit(u, "click", t, item_id=item, category=c, **common)
                if rng.random() < p["bookmark"]:
                    t += rng.randint(500, 3000)
                    emit(u, rng.choice(["bookmark", "share"]), t, item_id=item, category=c, **common)
                if rng.random() < p["cart"]:
                    t += rng.randint(1000, 8000)
                    emit(u, "add_to_cart", t, item_id=item, category=c, **common)
                    if rng.random() < p["buy"]:
                        t += rng.randint(5000, 60000)
                        emit(u, "purchase", t, item_id=item, category=c, **common)
                    elif rng.random() < 0.3:
                        t += rng.randint(2000, 20000)
                        emit(u, "remove_from_cart", t, item_id=item, category=c, **common)
            t += rng.randint(1000, 15000)

    def bot_burst(u: str, t: int) -> None:
        crawler = bot_kind[u] == "crawler"
        ua = CRAWLER_AGENT if crawler else rng.choice(BROWSER_AGENTS)
        n = rng.randint(150, 400)
        for _ in range(n):
            item = rng.choice(item_ids)
            emit(u, rng.choice(["view", "click", "click"]), t, item_id=item, category=item_cat[item], user_agent=ua, session_id=f"b-{u}")
            t += rng.randint(50, 400)

    def scraper_session(u: str, t: int) -> None:
        r = scraper_rng
        sid = f"x-{u}-{next(counter)}"
        ua = agent[u]
        dwell_reports = r.random() < 0.5
        for _ in range(r.randint(80, 300)):
            item = r.choice(item_ids)
            emit(u, "view", t, item_id=item, category=item_cat[item], user_agent=ua, session_id=sid)
            if dwell_reports:
                emit(u, "dwell", t + 10, item_id=item, category=item_cat[item], dwell_ms=r.randint(0, 300), user_agent=ua, session_id=sid)
            t += r.randint(200, 1200)

    human_target = events - target_bot - target_scraper
    while len(out) < human_target:
        u = human_ids[bisect.bisect_left(human_weights, rng.random() * human_weights[-1])]
        human_session(u, START_MS + rng.randrange(span))
    while len(out) < events - target_scraper:
        bot_burst(rng.choice(bot_ids), START_MS + rng.randrange(span))
    while len(out) < events:
        scraper_session(scraper_rng.choice(scraper_ids), START_MS + scraper_rng.randrange(span))
    out.sort(key=lambda x: x[0])
    lines = [line for _, line in out[:events]]

    bad_counts: dict[str, int] = {}
    if malformed > 0:
        n_bad = int(round(len(lines) * malformed))
        # Corrupt only human lines: a crawler's line is dead-lettered for its agent first.
        human = [k for k, line in enumerate(lines) if CRAWLER_AGENT.encode() not in line]
        after = sorted(rng.sample(human, min(n_bad, len(human))))
        bad_after: dict[int, bytes] = {}
        for k, pos in enumerate(after):
            kind = MALFORMED_KINDS[k % len(MALFORMED_KINDS)]
            # a duplicate is the same event (same event_id) again, right after itself
            bad_after[pos] = lines[pos] if kind == "duplicate_event" else _malformed(kind, orjson.loads(lines[pos]), rng)
            bad_counts[kind] = bad_counts.get(kind, 0) + 1
        mixed = []
        for pos, line in enumerate(lines):
            mixed.append(line)
            if pos in bad_after:
                mixed.append(bad_after[pos])
        lines = mixed

    truth = {
        "seed": seed,
        "users": users,
        "items": items,
        "categories": categories,
        "personas": persona,
        "favourites": favourites,
        "bots": {u: bot_kind[u] for u in sorted(bot_kind)},
        "bundles": bundle_list,
        "malformed": bad_counts,
    }
    return lines, truth


def write_log(path: str, lines: list[bytes]) -> None:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:  # type: ignore[operator]
        f.write(b"\n".join(lines) + b"\n")
