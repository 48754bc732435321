// The dashboard's script: charts (Chart.js, shipped with the package) and live updates
// from /api/live (a WebSocket fed by the pulse:updates channel). Pages are
// rendered on the server; this only redraws what changed.
const Pulse = (() => {
  const charts = {};
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const url = (s) => encodeURIComponent(s);
  const iso = (ms) => new Date(Number(ms)).toISOString().replace(".000Z", "Z");
  const json = (id) => { const el = $(id); return el ? JSON.parse(el.textContent) : null; };

  function chart(id, config) {
    const el = $(id);
    if (!el || !window.Chart) return null;
    if (charts[id]) { charts[id].data = config.data; charts[id].update("none"); return charts[id]; }
    charts[id] = new Chart(el, {...config, options: {animation: false, responsive: true, maintainAspectRatio: false, ...(config.options || {})}});
    return charts[id];
  }

  function bars(id, pairs) {
    return chart(id, {type: "bar", data: {labels: pairs.map((p) => p[0]), datasets: [{data: pairs.map((p) => p[1]), backgroundColor: palette[0]}]},
                      options: {indexAxis: "y", plugins: {legend: {display: false}}}});
  }

  function lines(id, labels, series) {
    return chart(id, {type: "line", data: {labels, datasets: Object.entries(series).map(([name, data], i) => (
      {label: name, data, borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length], pointRadius: 0, tension: 0}))},
      options: {scales: {x: {ticks: {maxTicksLimit: 6}}}}});
  }

  function live(handlers) {
    // A WebSocket, reopened a second after it drops (the server restarts, a proxy times out).
    const status = $("live");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const open = () => {
      const ws = new WebSocket(`${proto}//${location.host}/api/live`);
      ws.onopen = () => { status.textContent = "● live"; status.classList.add("on"); };
      ws.onclose = () => { status.textContent = "○ reconnecting"; status.classList.remove("on"); setTimeout(open, 1000); };
      ws.onmessage = (e) => {
        const msg = JSON.parse(e.data);
        const handle = handlers[msg.event];
        if (handle) handle(msg.data);
      };
    };
    open();
  }

  function historyCharts(history) {
    if (!history || history.length < 1) return;
    const labels = history.map((s) => new Date(s.t).toLocaleTimeString());
    const rate = history.map((s, i) => i === 0 ? 0 : Math.max(0, (s.events_in - history[i - 1].events_in) / Math.max(0.001, (s.t - history[i - 1].t) / 1000)));
    lines("chart-rate", labels, {"events/s": rate.map((v) => Math.round(v))});
    const reasons = [...new Set(history.flatMap((s) => Object.keys(s.dlq || {})))].sort();
    const dlq = {};
    for (const r of reasons) dlq[r] = history.map((s) => (s.dlq || {})[r] || 0);
    lines("chart-dlq", labels, reasons.length ? dlq : {"none": history.map(() => 0)});
    lines("chart-late", labels, {"late events": history.map((s) => s.late)});
  }

  function overview() {
    historyCharts(json("history"));
    live({
      stats(t) {
        if (!t || t.events_in === undefined) return;
        for (const k of ["events_per_s", "events_in", "events_ok", "events_dlq", "events_late"]) if ($(k)) $(k).textContent = t[k];
        $("run_state").textContent = `${t.mode} · ${t.running ? "running" : "ended"}`;
        if (t.consumer_lag !== undefined && $("consumer_lag")) $("consumer_lag").textContent = t.consumer_lag;
        if (t.freshness_p95_ms !== undefined && $("freshness")) $("freshness").textContent = `${t.freshness_p50_ms} / ${t.freshness_p95_ms}`;
        $("alerts").innerHTML = (t.alerts || []).map((a) => `<div class="alert" data-check="${esc(a.check)}">⚠ ${esc(a.message)}</div>`).join("");
        $("dlq-table").tBodies[0].innerHTML = Object.entries(t.dlq_by_reason || {}).map(([r, n]) => `<tr><td>${esc(r)}</td><td>${n}</td></tr>`).join("");
        historyCharts(t.history);
      },
      update(u) {
        const feed = $("updates");
        const li = document.createElement("li");
        li.innerHTML = `<a href="/users/${url(u.user_id)}">${esc(u.user_id)}</a> <span class="muted">${esc(u.generated_at)}</span>`;
        feed.prepend(li);
        while (feed.children.length > 15) feed.lastElementChild.remove();
      },
    });
  }

  function affinityCharts(profile) {
    if (!profile) return;
    bars("chart-categories", Object.entries(profile.categories || {}).slice(0, 10));
    bars("chart-items", Object.entries(profile.items || {}).slice(0, 10));
  }

  function renderRecs(recs) {
    $("recs").tBodies[0].innerHTML = (recs.items || []).map((r, i) =>
      `<tr><td>${i + 1}</td><td><a class="item" href="/items/${url(r.item_id)}">${esc(r.item_id)}</a></td><td>${r.score.toFixed(4)}</td><td>${esc(r.reason)}</td></tr>`).join("");
    $("recs-meta").innerHTML = `list <code id="recomm-id">${esc(recs.recomm_id)}</code> · generated ${esc(recs.generated_at)} (event time)`;
  }

  function renderEvents(events) {
    const table = $("events");
    if (!table || table.tagName !== "TABLE" || !events.length) return;
    table.tBodies[0].innerHTML = events.map((e) => {
      const details = ["dwell_ms", "scroll_pct", "price", "rating"].filter((k) => e[k] !== undefined).map((k) => `${k} ${esc(e[k])}`).join(" ");
      const item = e.item_id ? `<a href="/items/${url(e.item_id)}">${esc(e.item_id)}</a>` : "";
      return `<tr><td>${iso(e.ts)}</td><td>${esc(e.type)}</td><td>${item}</td><td>${esc((e.category || []).join(", "))}</td><td>${details}</td></tr>`;
    }).join("");
  }

  function user(id) {
    affinityCharts(json("profile"));
    document.querySelectorAll("td[data-ts]").forEach((td) => { td.textContent = iso(td.dataset.ts); });
    const base = `/api/users/${url(id)}`;
    live({
      async update(u) {
        if (u.user_id !== id) return;
        const [recs, profile, events] = await Promise.all([base + "/recs", base + "/profile", base + "/events"].map(
          (p) => fetch(p).then((r) => (r.ok ? r.json() : null))));
        if (recs) renderRecs(recs);
        if (profile) affinityCharts(profile);
        if (events) renderEvents(events);
        const badge = $("updated");
        badge.hidden = false;
        badge.textContent = `updated ${new Date().toLocaleTimeString()}`;
      },
    });
  }

  function segments() {
    const doc = json("segments-data");
    bars("chart-sizes", Object.entries(doc.segments).map(([name, s]) => [name, s.windows]));
    const history = json("history") || [];
    const names = Object.keys(doc.segments);
    const series = {};
    for (const n of names) series[n] = history.map((s) => (s.drift || {})[n] ?? null);
    lines("chart-drift", history.map((s) => new Date(s.t).toLocaleTimeString()), series);
    live({});
  }

  return {overview, user, segments, bars, live};
})();
document.addEventListener("DOMContentLoaded", () => {
  // Pages without a live view of their own still show the connection.
  if (!["overview", "user", "segments"].includes(document.body.dataset.page)) Pulse.live({});
});
