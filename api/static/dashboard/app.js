// The reserves dashboard: polls the admin endpoints with the token kept in sessionStorage.
"use strict";
(function () {
  const POLL_MS = 1500;
  const KEY = "reserves.adminToken";
  const COLORS = { healthy: "#2e9d52", moderate: "#e0b81f", warning: "#f08a24", critical: "#d93636" };
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  function duration(s) {
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  // "warning in 5 min", "at warning now", or nothing while the reserve is not draining.
  function eta(what, value) {
    if (value === null || value === undefined) return null;
    const s = Number(value);
    return s === 0 ? what + " now" : what + " in " + duration(s);
  }

  function forecastText(f) {
    const rate = String(f.net_outflow_per_hour);
    const parts = [Number(rate) < 0 ? "inflow " + rate.replace(/^-/, "") + "/h"
                                    : "outflow " + rate + "/h",
                   eta("warning", f.seconds_to_warning), eta("empty", f.seconds_to_empty),
                   Number(f.suggested_top_up) > 0
                     ? "top up " + f.suggested_top_up + " for " + f.target_utilization_percentage + "%"
                     : null];
    return parts.filter((p) => p !== null).join(" · ");
  }

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
    if (res.status === 401 || res.status === 403) {
      logout("That token is not an admin token."); throw new Error("unauthorized");
    }
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return exactJson(await res.text());
  }

  // Amounts are shown as the API wrote them (10000.0, 0.00000001): a number keeps its source
  // text where the browser gives it (JSON.parse source text access), so no float rounding
  // reaches the screen. Arithmetic (bar width, chart) converts with Number().
  function exactJson(text) {
    return JSON.parse(text, (key, value, context) =>
      typeof value === "number" && context && typeof context.source === "string" ? context.source : value);
  }

  function drawChart(canvas, points, status) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, w, h);
    const y = (pct) => h - 4 - (pct / 100) * (h - 8);
    ctx.strokeStyle = "#e2e5eb"; ctx.lineWidth = 1; ctx.font = "10px sans-serif"; ctx.fillStyle = "#6b7385";
    for (const [pct, color] of [[75, COLORS.warning], [90, COLORS.critical]]) {
      ctx.strokeStyle = color; ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(0, y(pct)); ctx.lineTo(w, y(pct)); ctx.stroke();
      ctx.fillText(pct + "%", 2, y(pct) - 2);
    }
    ctx.setLineDash([]);
    if (points.length === 0) { ctx.fillText("no samples yet", w / 2 - 30, h / 2); return; }
    const t0 = Number(points[0][0]), t1 = Number(points[points.length - 1][0]);
    const x = (t) => (t1 === t0 ? w - 2 : 2 + ((t - t0) / (t1 - t0)) * (w - 4));
    ctx.strokeStyle = COLORS[status] || "#1d2433"; ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([t, pct], i) => (i ? ctx.lineTo(x(Number(t)), y(Number(pct))) : ctx.moveTo(x(Number(t)), y(Number(pct)))));
    ctx.stroke();
  }

  function card(r) {
    const f = r.forecast || {};
    const fill = el("div", { class: "fill status-" + r.status, style: "width:" + Math.min(100, Number(r.utilization_percentage)) + "%" });
    const canvas = el("canvas", { class: "chart", "aria-label": "utilization over time",
                                  "data-points": String((r.history || []).length) });
    const node = el("article", { class: "card", "data-label": r.label, "data-status": r.status }, [
      el("h3", {}, [el("span", { text: r.currency + " · " + r.account_type }),
                     el("span", { class: "badge status-" + r.status, text: r.status })]),
      el("div", { class: "figures" }, [
        el("div", {}, [el("span", { text: "total" }), el("b", { class: "total", text: String(r.total_balance) })]),
        el("div", {}, [el("span", { text: "available" }), el("b", { class: "available", text: String(r.available_balance) })]),
        el("div", {}, [el("span", { text: "locked" }), el("b", { class: "locked", text: String(r.locked_balance) })]),
      ]),
      el("div", { class: "bar", role: "progressbar", "aria-valuenow": String(r.utilization_percentage) }, [fill]),
      el("div", { class: "util", text: r.utilization_percentage + "% utilized" }),
      canvas,
      el("div", { class: "forecast", text: forecastText(f) }),
    ]);
    return [node, () => drawChart(canvas, r.history || [], r.status)];
  }

  function render(data, recent) {
    const grid = $("reserves");
    const draws = [];
    grid.replaceChildren(...data.reserves.map((r) => { const [node, draw] = card(r); draws.push(draw); return node; }));
    if (data.reserves.length === 0) grid.appendChild(el("p", { class: "muted", text: "No reserves yet." }));
    draws.forEach((d) => d());
    const alerts = data.alerts.map((a) => el("li", { class: "level-" + a.level }, [
      el("b", { text: a.level.toUpperCase() + " " }), el("span", { text: a.message })]));
    $("alerts").replaceChildren(...(alerts.length ? alerts : [el("li", { class: "muted", text: "none" })]));
    $("recent").querySelector("tbody").replaceChildren(...recent.transactions.map((t) => el("tr", {}, [
      el("td", { text: String(t.transaction_id) }), el("td", { text: t.operation }),
      el("td", { text: t.account }), el("td", { text: t.reference }),
      el("td", { class: "num", text: t.amount === null ? "" : String(t.amount) }),
      el("td", { text: new Date(Number(t.ts_ms)).toLocaleTimeString() }),
    ])));
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function poll() {
    try {
      const [data, recent] = await Promise.all([api("/wallet/reserves/dashboard"), api("/wallet/reserves/recent?limit=15")]);
      render(data, recent);
    } catch (err) {
      $("updated").textContent = String(err.message || err);
    }
  }

  function start() {
    $("login-error").textContent = "";
    $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
    poll();
    timer = setInterval(poll, POLL_MS);
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    if (timer) clearInterval(timer);
    $("main").hidden = true; $("logout").hidden = true; $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    start();
  });
  $("logout").addEventListener("click", () => logout(""));
  if (sessionStorage.getItem(KEY)) start(); else logout("");
})();
