// Tidepool dashboard: polls this worker's JSON routes and draws them. No library, no request to
// any other origin (the page's Content-Security-Policy forbids it). Every value from the worker
// is inserted as text (textContent), never as HTML.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
  const params = new URLSearchParams(window.location.search);
  const EVERY_MS = Math.min(60, Math.max(0.5, Number(params.get("every")) || 2)) * 1000;
  const TOTAL_RETRY_MS = 30000; // ask for an origin listing at most this often per dataset
  const totalAsked = new Map();
  let timer = null;

  class AuthNeeded extends Error {}

  // ---- helpers ----------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // the same form as tidepool.core.quantity.format_bytes
  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    let v = Number(n);
    for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
      if (Math.abs(v) < 1024 || unit === "TiB") {
        return unit === "B" ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${unit}`;
      }
      v /= 1024;
    }
    return `${v.toFixed(1)} TiB`;
  }
  const fmtRate = (n) => `${fmtBytes(n)}/s`;
  const fmtPct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);

  function fmtTime(t) {
    return new Date(t * 1000).toLocaleString(undefined, { hour12: false });
  }

  function fmtAgo(t) {
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 90) return `${s.toFixed(0)} s ago`;
    if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (r.status === 401) throw new AuthNeeded(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  function stat(label, field, value, text, sub) {
    return el(
      "div",
      { cls: "stat" },
      el("span", { cls: "label", text: label }),
      el("span", { cls: "value", "data-field": field, "data-value": value, text }),
      sub ? el("span", { cls: "sub", text: sub }) : null,
    );
  }

  function bar(fraction, attrs, marks) {
    const fill = el("span", { cls: "fill" });
    fill.style.width = `${Math.min(100, Math.max(0, 100 * fraction)).toFixed(2)}%`;
    const b = el("span", { cls: "bar", ...attrs }, fill);
    for (const [cls, at, title] of marks || []) {
      const m = el("span", { cls: `mark ${cls}`, title });
      m.style.left = `${Math.min(100, Math.max(0, 100 * at)).toFixed(2)}%`;
      b.append(m);
    }
    return b;
  }

  // ---- sections ---------------------------------------------------------------------------

  function renderNode(node, pool) {
    const name = node.node_name || node.host_id;
    const where = node.nodepool ? ` · pool ${node.nodepool}` : "";
    $("#node").textContent = `${name}${where} · pid ${node.pid}`;
    $("#pool-name").textContent = pool.nodepool ? `“${pool.nodepool}”` : "";
  }

  function renderOrigin(raw) {
    const origins = raw.origins || [];
    const down = origins.filter((o) => !o.reachable);
    const box = el("div", {
      cls: `origin ${down.length ? "down" : "up"}`,
      "data-field": "origin",
      "data-value": down.length ? "down" : "up",
    });
    for (const o of origins) {
      if (o.reachable) {
        box.append(el("p", { text: `Origin reachable: ${o.url}` }));
        continue;
      }
      const since = o.down_since ? `since ${fmtTime(o.down_since)} (${fmtAgo(o.down_since)})` : "";
      box.append(
        el("p", { cls: "strong", "data-field": "origin-down", text: `Origin DOWN ${since}: ${o.url}` }),
        el("p", {
          cls: "muted",
          "data-field": "origin-error",
          text: `Last error: ${o.last_error || "none recorded"}. Cached data is still served.`,
        }),
      );
    }
    return box;
  }

  function renderTiers(tiers) {
    const table = el(
      "table",
      { cls: "tiers" },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          ...["tier", "path", "used / quota", "", "watermarks", "pages"].map((h) =>
            el("th", { text: h, cls: h === "" ? "wide" : null }),
          ),
        ),
      ),
    );
    const body = el("tbody");
    for (const t of tiers) {
      const frac = t.capacity ? t.used / t.capacity : 0;
      const over = t.capacity && t.used > t.high_bytes;
      body.append(
        el(
          "tr",
          { "data-tier": t.path },
          el("td", { text: t.medium }),
          el("td", { cls: "path", text: t.path }),
          el("td", {
            "data-field": "tier-used",
            "data-value": t.used,
            text: `${fmtBytes(t.used)} / ${fmtBytes(t.capacity)}`,
          }),
          el(
            "td",
            { cls: "wide" },
            bar(frac, { cls: over ? "bar over" : "bar" }, [
              ["high", t.high, `high watermark ${fmtPct(t.high)}`],
              ["low", t.low, `low watermark ${fmtPct(t.low)}`],
            ]),
          ),
          el("td", { text: `high ${fmtPct(t.high)} · low ${fmtPct(t.low)}` }),
          el("td", { text: t.pages }),
        ),
      );
    }
    table.append(body);
    return table;
  }

  function renderPrefetch(p) {
    if (!p) return null;
    const usedFrac = p.bytes ? p.used_bytes / p.bytes : 0;
    return el(
      "div",
      { cls: "prefetch", "data-field": "prefetch" },
      el("h4", { text: `Prefetch (${p.policy})` }),
      el(
        "div",
        { cls: "stats" },
        stat("In flight", "prefetch-inflight", p.inflight, String(p.inflight)),
        stat("Queued", "prefetch-queued", p.queued, String(p.queued)),
        stat("Fetched", "prefetch-bytes", p.bytes, fmtBytes(p.bytes)),
        stat("Used by readers", "prefetch-used", p.used_bytes, fmtBytes(p.used_bytes), fmtPct(usedFrac)),
        stat("Wasted", "prefetch-wasted", p.wasted_bytes, fmtBytes(p.wasted_bytes)),
      ),
    );
  }

  function renderDataset(s) {
    const cs = s.cacheStates;
    const raw = s.raw;
    const files = raw.file_num === null ? s.fileNum : String(raw.file_num);
    return el(
      "article",
      { cls: "card", "data-ds": s.dataset },
      el(
        "header",
        null,
        el("h3", { text: s.dataset }),
        el("span", { cls: "badge", "data-field": "phase", text: s.phase }),
        el("span", { cls: "muted", text: s.mounts.join(", ") }),
      ),
      el(
        "div",
        { cls: "stats" },
        stat("Cached", "cached", raw.cached_bytes, cs.cached, `of ${s.ufsTotal}`),
        stat("Cached %", "cachedPercentage", raw.cached_fraction, cs.cachedPercentage),
        stat("Files cached", "cached_files", raw.cached_files, String(raw.cached_files), `of ${files}`),
        stat("Hit ratio", "cacheHitRatio", raw.hit_ratio, cs.cacheHitRatio),
        stat("Local hits", "localHitRatio", null, cs.localHitRatio, `${raw.page_hits} pages`),
        stat("Remote (pool) hits", "remoteHitRatio", null, cs.remoteHitRatio, `${raw.peer_hits} pages`),
        stat(
          "From origin",
          "origin_reads",
          raw.page_misses - raw.peer_hits,
          `${raw.page_misses - raw.peer_hits} pages`,
          fmtBytes(raw.origin_read_bytes),
        ),
        stat("WAN bytes saved", "wan_saved", raw.wan_saved_bytes, fmtBytes(raw.wan_saved_bytes)),
      ),
      bar(raw.cached_fraction, { cls: "bar", "data-field": "cached-bar" }),
      renderOrigin(raw),
      renderTiers(s.tiers),
      renderPrefetch(raw.prefetch),
    );
  }

  function renderLoads(loads) {
    const body = $("#loads tbody");
    body.replaceChildren(
      ...loads.map((j) =>
        el(
          "tr",
          { "data-load": j.id },
          el("td", { text: j.id }),
          el("td", { text: j.dataset }),
          el("td", null, el("span", { cls: `badge ${j.phase}`, "data-field": "phase", text: j.phase })),
          el("td", { "data-field": "files", text: `${j.files_done} / ${j.files_total}` }),
          el("td", { "data-field": "bytes", "data-value": j.bytes_done, text: `${fmtBytes(j.bytes_done)} / ${fmtBytes(j.bytes_total)}` }),
          el(
            "td",
            { cls: "wide" },
            bar(j.percent / 100, { cls: "bar" }),
            el("span", { cls: "pct", "data-field": "percent", "data-value": j.percent, text: `${j.percent.toFixed(1)}%` }),
          ),
          el("td", { text: fmtRate(j.rate_bytes_s) }),
          el("td", { text: j.error_count, title: (j.errors || []).join("\n") }),
        ),
      ),
    );
    $("#loads-empty").hidden = loads.length > 0;
  }

  function renderPool(pool) {
    $("#pool tbody").replaceChildren(
      ...pool.members.map((m) =>
        el(
          "tr",
          { "data-member": m.name },
          el("td", { text: m.self ? `${m.name} (this worker)` : m.name }),
          el("td", { cls: "path", text: m.address }),
          el("td", null, el("span", { cls: `badge ${m.state}`, "data-field": "state", title: m.error || null, text: m.state })),
          el("td", { "data-field": "cached_files", "data-value": m.cached_files, text: m.cached_files }),
          el("td", { "data-field": "cached_bytes", "data-value": m.cached_bytes, text: fmtBytes(m.cached_bytes) }),
          el("td", { text: m.checked_at ? fmtAgo(m.checked_at) : "not yet" }),
        ),
      ),
    );
  }

  // ---- charts -----------------------------------------------------------------------------

  function chart(id, points, value, { max, format, now, span }) {
    const fig = $(`#${id}`);
    const W = 360;
    const H = 100;
    const vals = points.map(value).filter((v) => v !== null);
    const top = max !== undefined ? max : Math.max(1, ...vals) * 1.1;
    const x = (t) => (W * (t - (now - span))) / span;
    const y = (v) => H - (H * v) / top;
    const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": id });
    for (const f of [0.25, 0.5, 0.75]) plot.append(svg("line", { x1: 0, x2: W, y1: H * f, y2: H * f, class: "grid" }));
    let d = "";
    let pen = false;
    for (const p of points) {
      const v = value(p);
      if (v === null) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    plot.append(svg("path", { d, class: "line" }));
    const label = svg("text", { x: 4, y: 12, class: "axis" });
    label.textContent = format(top);
    const left = svg("text", { x: 4, y: H - 4, class: "axis" });
    left.textContent = span < 120 ? `−${Math.round(span)} s` : `−${Math.round(span / 60)} min`;
    const right = svg("text", { x: W - 4, y: H - 4, class: "axis end" });
    right.textContent = "now";
    plot.append(label, left, right);
    fig.querySelector("svg")?.remove();
    fig.append(plot);
    const last = points.length ? value(points[points.length - 1]) : null;
    fig.querySelector("[data-now]").textContent = last === null ? "" : format(last);
  }

  function renderCharts(history) {
    const pts = history.points;
    // the worker's clock, so a browser on another machine draws the same picture
    const now = pts.length ? pts[pts.length - 1].t : Date.now() / 1000;
    // the window grows with the history, up to all of it (a few points are not a flat line)
    const first = pts.length ? pts[0].t : now;
    const span = Math.min(history.seconds, Math.max(10, now - first));
    chart("chart-read", pts, (p) => p.read_bytes_per_s, { format: fmtRate, now, span });
    chart("chart-hit", pts, (p) => p.hit_ratio, { max: 1, format: fmtPct, now, span });
    chart("chart-wan", pts, (p) => p.wan_bytes_per_s, { format: fmtRate, now, span });
  }

  // ---- polling and login ------------------------------------------------------------------

  function statusUrl(name, previous) {
    const q = encodeURIComponent(name);
    const unknown = !previous || previous.raw.ufs_total_bytes === null;
    const asked = totalAsked.get(name) || 0;
    if (unknown && Date.now() - asked > TOTAL_RETRY_MS) {
      totalAsked.set(name, Date.now());
      return `/v1/datasets/${q}/status?refresh=1`;
    }
    return `/v1/datasets/${q}/status?refresh=0`;
  }

  const previous = new Map();

  function setLive(state, text) {
    const live = $("#live");
    live.dataset.state = state;
    live.textContent = text;
  }

  async function tick() {
    clearTimeout(timer);
    try {
      const [node, list, loads, pool, history] = await Promise.all([
        getJSON("/v1/node"),
        getJSON("/v1/datasets"),
        getJSON("/v1/loads"),
        getJSON("/v1/pool"),
        getJSON("/v1/history"),
      ]);
      const statuses = await Promise.all(
        list.datasets.map((d) => getJSON(statusUrl(d.name, previous.get(d.name)))),
      );
      for (const s of statuses) previous.set(s.dataset, s);
      renderNode(node, pool);
      $("#datasets").replaceChildren(...statuses.map(renderDataset));
      renderLoads(loads.loads);
      renderPool(pool);
      renderCharts(history);
      setLive("ok", `live · ${new Date().toLocaleTimeString(undefined, { hour12: false })}`);
      document.body.dataset.ready = "1";
    } catch (err) {
      if (err instanceof AuthNeeded) {
        showLogin("");
        return;
      }
      setLive("error", "worker unreachable");
    }
    timer = setTimeout(tick, EVERY_MS);
  }

  function showLogin(message) {
    clearTimeout(timer);
    $("#main").hidden = true;
    $("#login").hidden = false;
    $("#logout").hidden = true;
    $("#login-error").textContent = message;
    setLive("login", "sign in");
    $("#token").focus();
  }

  async function start() {
    let s;
    try {
      s = await getJSON("/v1/dashboard/session");
    } catch (err) {
      setLive("error", "worker unreachable");
      timer = setTimeout(start, EVERY_MS);
      return;
    }
    if (s.required && !s.authenticated) {
      showLogin("");
      return;
    }
    $("#login").hidden = true;
    $("#main").hidden = false;
    $("#logout").hidden = !s.required;
    tick();
  }

  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#token");
    const token = input.value;
    input.value = ""; // the token leaves the page as soon as it is sent
    const r = await fetch("/v1/dashboard/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (r.ok) start();
    else showLogin(r.status === 401 ? "Wrong token." : `Login failed (HTTP ${r.status}).`);
  });

  $("#logout").addEventListener("click", async () => {
    await fetch("/v1/dashboard/logout", { method: "POST", credentials: "same-origin" });
    showLogin("Logged out.");
  });

  start();
})();
