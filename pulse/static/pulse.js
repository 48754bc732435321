/**
 * Pulse browser tracker: a small dependency-free ES module, served by `pulse collect`
 * at /pulse.js. It sends events of Pulse's event contract to the collector.
 *
 *   <script type="module">
 *     import { init } from "/pulse.js";
 *     const pulse = init({ endpoint: "/events" });
 *     pulse.identify("u42");                       // later events carry user_id and anonymous_id
 *     pulse.addToCart("sku-1", { price: 59.9, category: "shoes" });
 *     pulse.purchase("sku-1", { price: 59.9 });
 *     pulse.consent(false);                        // stops sending; tells the pipeline once
 *   </script>
 *
 * What it sends by itself:
 * - a page view on init (type "view"; with item_id when <body data-pulse-page-item="...">);
 * - item views: an element marked data-pulse-item="<id>" (data-pulse-category="<c>")
 *   half visible (IntersectionObserver), once per item and page; tiles inside an element
 *   marked data-pulse-recomm-id="<recomm_id>" are impressions of a list, not views;
 * - clicks on such elements; inside a recommended list they carry the list's recomm_id;
 * - scroll depth at 25/50/75/100% of the page (IntersectionObserver on markers);
 * - dwell: time the page was visible (Page Visibility API), sent when it is hidden,
 *   as the active milliseconds since the previous dwell event.
 * Events are batched (batchSize, flushMs), sent with fetch as text/plain, retried with
 * exponential backoff (or the server's Retry-After) on network errors, 429 and 5xx, and
 * sent with navigator.sendBeacon when the page is hidden or left (pagehide).
 */

const DEFAULTS = {
  endpoint: "/events",
  batchSize: 20,
  flushMs: 1000,
  maxQueue: 1000,
  minBackoffMs: 500,
  maxBackoffMs: 30000,
  viewThreshold: 0.5,
  scrollMarks: [25, 50, 75, 100],
};

const KEYS = { anon: "pulse.anonymous_id", user: "pulse.user_id", consent: "pulse.consent", pending: "pulse.pending" };
// sendBeacon refuses bodies over 64 KiB; keep each beacon under that.
const BEACON_BYTES = 60000;

function storage() {
  try {
    const s = window.localStorage;
    s.getItem(KEYS.anon);
    return s;
  } catch (_) {
    const mem = new Map(); // private modes may refuse storage: keep ids for the page's life
    return { getItem: (k) => (mem.has(k) ? mem.get(k) : null), setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
  }
}

function uuid() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function categories(value) {
  if (!value) return undefined;
  const list = value.split(",").map((c) => c.trim()).filter(Boolean).slice(0, 16);
  return list.length === 1 ? list[0] : list;
}

/** Starts tracking this page; returns the tracker's API. */
export function init(options = {}) {
  const opt = { ...DEFAULTS, ...options };
  const store = storage();
  let anonymousId = store.getItem(KEYS.anon);
  if (!anonymousId) {
    anonymousId = uuid();
    store.setItem(KEYS.anon, anonymousId);
  }
  const sessionId = uuid();
  let queue = [];
  try {
    queue = JSON.parse(store.getItem(KEYS.pending) || "[]"); // what a failed beacon left
  } catch (_) {}
  store.removeItem(KEYS.pending);
  let timer = null;
  let inFlight = false;
  let failures = 0;
  const viewed = new Set();

  const allowed = () => store.getItem(KEYS.consent) !== "false";
  const userId = () => store.getItem(KEYS.user) || anonymousId;

  function event(type, fields) {
    return { user_id: userId(), anonymous_id: anonymousId, session_id: sessionId, event_id: uuid(), ts: Date.now(), type, page: location.pathname, ...fields };
  }

  function track(type, fields = {}) {
    if (!allowed()) return;
    queue.push(event(type, fields));
    if (queue.length > opt.maxQueue) {
      const dropped = queue.splice(0, queue.length - opt.maxQueue);
      console.warn(`pulse: ${dropped.length} events dropped: the collector has been unreachable and the queue is full`);
    }
    if (queue.length >= opt.batchSize) flush();
    else schedule(opt.flushMs);
  }

  function schedule(ms) {
    if (timer === null) timer = setTimeout(() => { timer = null; flush(); }, ms);
  }

  function backoff(retryAfterS) {
    failures += 1;
    const exp = Math.min(opt.maxBackoffMs, opt.minBackoffMs * 2 ** (failures - 1));
    const wait = retryAfterS ? retryAfterS * 1000 : exp * (0.5 + Math.random() / 2);
    schedule(wait);
  }

  /** Sends what is queued now (one request at a time). */
  async function flush() {
    if (inFlight || queue.length === 0) return;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    const batch = queue.splice(0, opt.batchSize);
    inFlight = true;
    try {
      const res = await fetch(opt.endpoint, { method: "POST", body: JSON.stringify(batch), headers: { "Content-Type": "text/plain;charset=UTF-8" }, keepalive: true, credentials: "omit" });
      if (res.status === 429 || res.status >= 500) {
        queue = batch.concat(queue);
        backoff(parseFloat(res.headers.get("Retry-After")) || 0);
        return;
      }
      failures = 0;
      const body = await res.json().catch(() => ({}));
      if (res.status !== 202) console.warn(`pulse: the collector refused ${batch.length} events (${res.status}): ${body.detail || ""}`);
      for (const r of body.rejected || []) console.warn(`pulse: event ${batch[r.index] && batch[r.index].type} rejected: ${r.reason} (${r.detail})`);
    } catch (_) {
      queue = batch.concat(queue);
      backoff(0);
      return;
    } finally {
      inFlight = false;
    }
    if (queue.length) schedule(0);
  }

  function beacon(events) {
    let chunk = [];
    let size = 2;
    const send = () => {
      if (chunk.length && !(navigator.sendBeacon && navigator.sendBeacon(opt.endpoint, JSON.stringify(chunk)))) {
        const kept = JSON.parse(store.getItem(KEYS.pending) || "[]").concat(chunk);
        store.setItem(KEYS.pending, JSON.stringify(kept.slice(-opt.maxQueue))); // sent by the next page
      }
      chunk = [];
      size = 2;
    };
    for (const ev of events) {
      const n = JSON.stringify(ev).length + 1;
      if (size + n > BEACON_BYTES) send();
      chunk.push(ev);
      size += n;
    }
    send();
  }

  // dwell: active (visible) time only
  let activeSince = document.visibilityState === "visible" ? performance.now() : null;
  let activeMs = 0;
  const pageItem = document.body && document.body.dataset.pulsePageItem;
  const pageFields = pageItem ? { item_id: pageItem, category: categories(document.body.dataset.pulseCategory) } : {};

  function leave() {
    if (activeSince !== null) {
      activeMs += performance.now() - activeSince;
      activeSince = null;
    }
    if (activeMs >= 1) {
      track("dwell", { ...pageFields, dwell_ms: Math.round(activeMs) });
      activeMs = 0;
    }
    if (timer !== null) { clearTimeout(timer); timer = null; }
    const events = queue;
    queue = [];
    beacon(events);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") activeSince = performance.now();
    else leave();
  });
  window.addEventListener("pagehide", leave);

  // item views (tiles of a recommended list are impressions: not sent as views)
  const io = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      const el = e.target;
      io.unobserve(el);
      const id = el.dataset.pulseItem;
      if (viewed.has(id) || el.closest("[data-pulse-recomm-id]")) continue;
      viewed.add(id);
      track("view", { item_id: id, category: categories(el.dataset.pulseCategory) });
    }
  }, { threshold: opt.viewThreshold }) : null;

  const watch = (root) => {
    if (!io || !root.querySelectorAll) return;
    if (root.matches && root.matches("[data-pulse-item]")) io.observe(root);
    root.querySelectorAll("[data-pulse-item]").forEach((el) => io.observe(el));
  };

  // clicks on items; in a recommended list they carry its recomm_id
  document.addEventListener("click", (e) => {
    const el = e.target.closest && e.target.closest("[data-pulse-item]");
    if (!el) return;
    const list = el.closest("[data-pulse-recomm-id]");
    track("click", { item_id: el.dataset.pulseItem, category: categories(el.dataset.pulseCategory), ...(list ? { recomm_id: list.dataset.pulseRecommId } : {}) });
  }, true);

  // scroll depth: markers at fractions of the page, whatever its height becomes
  let deepest = 0;
  function scrollMarkers() {
    if (!("IntersectionObserver" in window)) return;
    const rail = document.createElement("div");
    rail.setAttribute("aria-hidden", "true");
    rail.style.cssText = "position:absolute;top:0;left:0;width:1px;height:100%;pointer-events:none;visibility:hidden";
    const sio = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const pct = Number(e.target.dataset.mark);
        if (e.isIntersecting && pct > deepest) {
          deepest = pct;
          track("scroll", { scroll_pct: pct });
        }
      }
    });
    for (const pct of opt.scrollMarks) {
      const m = document.createElement("div");
      m.dataset.mark = String(pct);
      m.style.cssText = `position:absolute;left:0;width:1px;height:1px;top:calc(${pct}% - 1px)`;
      rail.appendChild(m);
    }
    if (getComputedStyle(document.body).position === "static") document.body.style.position = "relative";
    document.body.appendChild(rail);
    rail.childNodes.forEach((m) => sio.observe(m));
  }

  function start() {
    watch(document);
    new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach(watch))).observe(document.body, { childList: true, subtree: true });
    scrollMarkers();
  }

  track("view", { ...pageFields, referrer: document.referrer || undefined });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  if (queue.length) schedule(0);

  return {
    track,
    flush,
    /** How many events wait to be sent (queued or being retried). */
    pending: () => queue.length,
    /** The id events are sent under: the identified user's, else the anonymous one. */
    userId,
    anonymousId: () => anonymousId,
    /** Later events carry user_id = userId and anonymous_id (identity stitching). */
    identify(id) {
      if (typeof id !== "string" || id.length < 1 || id.length > 128) throw new Error("pulse.identify: the user id must be a string of 1-128 characters");
      store.setItem(KEYS.user, id);
    },
    addToCart(itemId, fields = {}) { track("add_to_cart", { item_id: itemId, ...fields }); },
    removeFromCart(itemId, fields = {}) { track("remove_from_cart", { item_id: itemId, ...fields }); },
    purchase(itemId, fields = {}) { track("purchase", { item_id: itemId, ...fields }); },
    /** consent(false): drop what is queued, send one consent: false event, send nothing more. */
    consent(given) {
      if (given) { store.setItem(KEYS.consent, "true"); return; }
      const wasAllowed = allowed();
      store.setItem(KEYS.consent, "false");
      queue = [];
      store.removeItem(KEYS.pending);
      if (wasAllowed) beacon([event("view", { consent: false })]);
    },
  };
}
