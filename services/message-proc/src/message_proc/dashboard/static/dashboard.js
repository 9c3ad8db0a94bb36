// billable-proc's dashboard: renders the snapshots that /dashboard/events sends (server-sent events), and
// says when they stop: no event stream, or no window for more than 3 window lengths. Plain JS, no library;
// every value from the data goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const HEARTBEAT_MS = 5000; // the server sends a snapshot at least this often
  const DEFAULT_WINDOW_SECONDS = 20; // until a window says its length
  const $ = (id) => document.getElementById(id);
  const chart = $("chart");
  const SVG = chart.namespaceURI; // the SVG namespace, as the parser gave the <svg> element

  let data = null;
  let offset = 0; // server clock minus this browser's, in seconds
  let connected = false;
  let lastEvent = 0; // Date.now() of the last snapshot
  let lostSince = null; // Date.now() when the stream was lost

  const pad = (n) => String(n).padStart(2, "0");
  const clock = (seconds) => {
    if (seconds === null || seconds === undefined) return "never";
    const d = new Date(seconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  const kwh = (n) => (Number.isInteger(n) ? String(n) : n.toFixed(2));
  const rate = (n) => (n === null || n === undefined ? "\u2013" : n.toFixed(2));
  const serverNow = () => Date.now() / 1000 + offset;

  function el(tag, attrs = {}, text = null) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  function row(cells, attrs = {}) {
    const tr = el("tr", attrs);
    for (const [text, cls] of cells) tr.appendChild(el("td", cls ? { class: cls } : {}, text));
    return tr;
  }

  function status(node, cls, text) {
    node.className = node.className.replace(/\b(ok|bad|unknown)\b/g, "").trim() + " " + cls;
    node.textContent = text;
  }

  // -- the chart: one line per charted customer, x = window end over the last hour of windows -------------
  function niceStep(max) {
    const rough = max / 4;
    const power = 10 ** Math.floor(Math.log10(rough));
    return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) || power * 10;
  }

  function drawChart(snapshot) {
    chart.replaceChildren();
    const { ends, series } = snapshot.chart;
    const customers = Object.keys(series);
    const [W, H, left, right, top, bottom] = [960, 300, 56, 32, 24, 28];
    if (!ends.length) {
      chart.appendChild(el("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no window billed yet"));
      $("legend").replaceChildren();
      return;
    }
    // the last hour of windows; less while there is less (from one window before the first), so that a
    // few windows are not squeezed against the right edge
    const length = snapshot.window_seconds || DEFAULT_WINDOW_SECONDS;
    const x1 = snapshot.newest_end;
    const x0 = Math.max(x1 - snapshot.horizon_seconds, Math.min(ends[0] - length, x1 - 60));
    const tick = [10, 20, 30, 60, 120, 300, 600, 900, 1800].find((s) => (x1 - x0) / s <= 8) || 3600;
    const highest = customers.reduce((m, c) => series[c].reduce((a, v) => Math.max(a, v), m), 1);
    const step = niceStep(highest);
    const yMax = step * Math.ceil(highest / step);
    const x = (t) => left + ((t - x0) / (x1 - x0)) * (W - left - right);
    const y = (v) => H - bottom - (v / yMax) * (H - top - bottom);
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      chart.appendChild(el("svg:line", { x1: left, x2: W - right, y1: y(v), y2: y(v), class: "axis" }));
      chart.appendChild(el("svg:text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, kwh(v)));
    }
    for (let t = Math.ceil(x0 / tick) * tick; t <= x1; t += tick) {
      chart.appendChild(el("svg:line", { x1: x(t), x2: x(t), y1: top, y2: H - bottom, class: "axis" }));
      const label = tick < 60 ? clock(t) : clock(t).slice(0, 5);
      chart.appendChild(el("svg:text", { x: x(t), y: H - 8, "text-anchor": "middle" }, label));
    }
    chart.appendChild(el("svg:text", { x: left - 6, y: 12, "text-anchor": "end" }, "kWh"));
    const legend = $("legend");
    legend.replaceChildren();
    customers.forEach((customer, i) => {
      const cls = `c${i % 8}`;
      const points = ends.map((t, k) => [t, series[customer][k]]).filter(([t]) => t >= x0);
      chart.appendChild(el("svg:polyline", { class: cls, points: points.map(([t, v]) => `${x(t)},${y(v)}`).join(" ") }));
      if (points.length <= 240) {
        for (const [t, v] of points) chart.appendChild(el("svg:circle", { class: cls, cx: x(t), cy: y(v), r: 3 }));
      }
      const item = el("span", { "data-customer": customer });
      item.appendChild(el("span", { class: `swatch ${cls}` }));
      item.appendChild(document.createTextNode(`customer ${customer}`));
      legend.appendChild(item);
    });
    if (snapshot.chart.more_customers) {
      legend.appendChild(el("span", { class: "muted" }, `+${snapshot.chart.more_customers} more customers (tables below)`));
    }
  }

  // -- the tables ----------------------------------------------------------------------------------------
  function drawTotals(snapshot) {
    const body = $("totals").tBodies[0];
    body.replaceChildren();
    for (const c of snapshot.customers) {
      body.appendChild(
        row(
          [[c.customer], [String(c.windows)], [String(c.tenants), "tenants"], [String(c.readings), "readings"], [kwh(c.kwh), "kwh"]],
          { "data-customer": c.customer, "data-kwh": c.kwh },
        ),
      );
    }
    if (!snapshot.customers.length) body.appendChild(row([["no billed rows in the last hour"]]));
  }

  function drawWindows(snapshot) {
    const body = $("windows").tBodies[0];
    body.replaceChildren();
    for (const w of snapshot.latest) {
      w.rows.forEach((r, i) => {
        const attrs = { "data-window-id": w.id ?? "", "data-window-end": w.end, "data-customer": r.customer, "data-kwh": r.kwh };
        if (i === 0) attrs.class = "first";
        body.appendChild(
          row([[i === 0 ? clock(w.end) : ""], [r.customer], [String(r.tenants), "tenants"], [String(r.readings), "readings"], [kwh(r.kwh), "kwh"]], attrs),
        );
      });
    }
    if (!snapshot.latest.length) body.appendChild(row([["no window yet"]]));
  }

  function drawHealth(snapshot) {
    const j = snapshot.joiner;
    const own = snapshot.billable_proc;
    if (j.status === "ok") {
      status($("joiner-status"), "ok", `joiner (${j.app_id}): answering, asked at ${clock(j.checked_at)}`);
    } else {
      status($("joiner-status"), "unknown", `joiner (${j.app_id}) health unknown since ${clock(j.unknown_since)}: ${j.error}`);
    }
    const count = (name) => (j.counts[name] ? String(j.counts[name].total) : "\u2013");
    const body = $("health").tBodies[0];
    body.replaceChildren(
      row([["events accepted (all streams)"], [rate(j.rates.accepted)], [count("accepted")]], { "data-figure": "accepted" }),
      row([["events filtered"], [rate(j.rates.filtered)], [count("filtered")]], { "data-figure": "filtered" }),
      row([["events dropped"], [rate(j.rates.dropped)], [count("dropped")]], { "data-figure": "dropped" }),
      row([["\u2026 of them dead-lettered"], [""], [count("dead_lettered")]], { "data-figure": "dead_lettered" }),
      row([["events late"], [rate(j.rates.late)], [count("late")]], { "data-figure": "late" }),
      row([["windows closed"], [""], [count("windows_closed")]], { "data-figure": "windows_closed" }),
      row([["deliveries failed"], [""], [count("deliveries_failed")]], { "data-figure": "deliveries_failed" }),
      row([["windows parked"], [""], [count("windows_parked")]], { "data-figure": "windows_parked" }),
      row([["duplicate events ignored (joiner)"], [""], [count("duplicates")]], { "data-figure": "joiner_duplicates" }),
      row([["duplicate calls ignored (billable-proc)"], [""], [String(own.duplicates)]], { "data-figure": "duplicates" }),
      row([["calls billed / rows"], [""], [`${own.calls} / ${own.rows}`]], { "data-figure": "calls" }),
      row([["last delivery"], [""], [clock(own.last_delivery)]], { "data-figure": "last_delivery" }),
    );
  }

  // -- freshness: the stream, and the windows -------------------------------------------------------------
  function checkFreshness() {
    const silent = Date.now() - lastEvent > 3 * HEARTBEAT_MS;
    if (lastEvent === 0 && lostSince === null) {
      // still connecting for the first time: "connecting..." stays
    } else if (!connected || silent) {
      const since = lostSince ?? (lastEvent || Date.now());
      lostSince = since;
      status($("connection"), "bad", `no connection to billable-proc since ${clock(since / 1000)}: the figures are not updated`);
    } else {
      status($("connection"), "ok", `live: updated ${clock(lastEvent / 1000)}`);
    }
    if (!data) return;
    const length = data.window_seconds || DEFAULT_WINDOW_SECONDS;
    const limit = (data.stale_after_windows || 3) * length;
    if (data.last_billed === null) {
      status($("freshness"), "unknown", "waiting for the first window: nothing billed since billable-proc started");
      return;
    }
    const age = serverNow() - data.last_billed;
    if (age > limit) {
      status(
        $("freshness"),
        "bad",
        `data stopped arriving: no window for ${Math.round(age)} s (more than 3 windows of ${length} s), last at ${clock(data.last_billed)}`,
      );
    } else {
      status($("freshness"), "ok", `last window billed ${Math.max(0, Math.round(age))} s ago (windows of ${length} s)`);
    }
  }

  function render(snapshot) {
    data = snapshot;
    offset = snapshot.generated_at - Date.now() / 1000;
    drawChart(snapshot);
    drawTotals(snapshot);
    drawWindows(snapshot);
    drawHealth(snapshot);
    checkFreshness();
  }

  const events = new EventSource("dashboard/events");
  events.onopen = () => {
    connected = true;
  };
  events.onerror = () => {
    connected = false;
    lostSince = lostSince ?? Date.now();
    checkFreshness();
  };
  events.addEventListener("snapshot", (event) => {
    connected = true;
    lastEvent = Date.now();
    lostSince = null;
    const snapshot = JSON.parse(event.data);
    if (snapshot.error) {
      status($("freshness"), "bad", `billable-proc could not make the figures: ${snapshot.error}`);
      return;
    }
    render(snapshot);
  });
  setInterval(checkFreshness, 1000);
})();
