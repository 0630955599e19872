// peer-ring web console. SPDX-License-Identifier: Apache-2.0
// Written for peer-ring: no third-party code, no build step.
//
// Reads the node's snapshot stream (server-sent events over fetch, so that an
// Authorization header can go with it) and redraws the panels. Every value
// from the server is put in the page with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "peer-ring-console-token";
const COLOURS = ["#3558d4", "#2e9e6b", "#c2408a", "#e08a00", "#7b52c7", "#159aa8",
  "#b5452f", "#6b8e23", "#d35fb7", "#4b6584", "#a17c00", "#2f6f4f"];

const state = { snap: null, history: [], ringKey: "", retry: 1000, pending: null };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

const svg = (tag, attrs) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
};

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function ms(v) {
  if (v === null || v === undefined) return "–";
  return num(v, v < 1 ? 3 : v < 10 ? 2 : 1);
}
function bytes(v) {
  if (!v) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${num(v, i ? 1 : 0)} ${units[i]}`;
}
function secs(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1) return "<1 s";
  if (v < 120) return `${num(v)} s`;
  return `${num(v / 60, 1)} min`;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function authHeaders(t = token()) { return t ? { Authorization: `Bearer ${t}` } : {}; }

function setConn(s, text) { const c = $("conn"); c.dataset.state = s; c.textContent = text; }
function notice(text) { const n = $("notice"); n.hidden = !text; n.textContent = text || ""; }

// -- the event stream -----------------------------------------------------------
async function stream() {
  for (;;) {
    try {
      const res = await fetch("/console/api/events", { headers: authHeaders(), cache: "no-store" });
      if (res.status === 401) {
        setConn("token", "needs token");
        notice("This node needs its admin token to show the cluster: enter it above.");
        await waitForToken();
        continue;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      notice("");
      state.retry = 1000;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          onEvent(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
        }
      }
      throw new Error("stream closed");
    } catch (err) {
      setConn("reconnecting", "reconnecting");
      if (state.snap) notice(`Lost the node (${err.message}); showing the last picture.`);
      await new Promise((r) => setTimeout(r, state.retry));
      state.retry = Math.min(state.retry * 2, 5000);
    }
  }
}

function waitForToken() { return new Promise((resolve) => { state.pending = resolve; }); }

function onEvent(block) {
  let type = "message"; const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (type !== "snapshot" || !data.length) return;
  const snap = JSON.parse(data.join("\n"));
  setConn("live", "live");
  render(snap);
}

// -- rendering -------------------------------------------------------------------
function colourOf(snap) {
  const ids = snap.ring.nodes.slice();
  for (const m of snap.members) if (!ids.includes(m.id)) ids.push(m.id);
  ids.sort();
  const map = {};
  ids.forEach((id, i) => { map[id] = COLOURS[i % COLOURS.length]; });
  return map;
}

function render(snap) {
  state.snap = snap;
  const colours = colourOf(snap);
  $("identity").textContent =
    `node ${snap.node} at ${snap.address} · ring epoch ${snap.epoch} · Q=${snap.partitions}, N=${snap.replicas}`;
  renderMembers(snap, colours);
  renderRing(snap, colours);
  renderTransfers(snap);
  renderLoad(snap);
  renderHints(snap);
  renderAntiEntropy(snap);
  renderApps(snap);
  renderActions(snap);
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function renderMembers(snap, colours) {
  $("member-count").textContent = `${snap.members.length} · down within ${num(snap.failure_bound, 2)} s`;
  $("member-count").dataset.count = snap.members.length;
  $("actions-why").textContent = snap.actions.why;
  const rows = snap.members.map((m) => {
    const load = (snap.nodes[m.id] || {}).load || {};
    const lat = load.latency || {};
    const button = el("button", { class: "danger", type: "button", "data-node": m.id }, "Decommission");
    button.disabled = !snap.actions.enabled || m.state !== "up";
    button.title = snap.actions.enabled ? `hand ${m.id}'s partitions over, then stop it` : snap.actions.why;
    button.addEventListener("click", () => openDialog(m.id));
    return el("tr", { "data-member": m.id, "data-state": m.state },
      el("td", {}, el("span", { class: "swatch" }), m.id),
      el("td", {}, m.address), el("td", {}, m.zone || "–"),
      el("td", {}, el("span", { class: `state state-${m.state}` }, m.state)),
      el("td", {}, m.incarnation),
      el("td", { class: "num" }, num(m.partitions)), el("td", { class: "num" }, num(m.primaries)),
      el("td", { class: "num" }, num(load.rounds_per_second, 0)),
      el("td", { class: "num" }, ms(lat.p50)), el("td", { class: "num" }, ms(lat.p99)),
      el("td", {}, button));
  });
  rows.forEach((r) => { r.querySelector(".swatch").style.background = colours[r.dataset.member]; });
  fill($("members").tBodies[0], rows);
}

function renderRing(snap, colours) {
  const ring = snap.ring;
  const down = new Set(snap.members.filter((m) => m.state !== "up").map((m) => m.id));
  const moving = new Set(ring.moving);
  $("ring-moving").textContent = `${ring.moving.length} of ${ring.owners.length} partitions moving`;
  $("ring-moving").dataset.moving = ring.moving.length;
  const key = JSON.stringify([ring.nodes, ring.owners, ring.moving, [...down], colours]);
  if (key !== state.ringKey) {
    state.ringKey = key;
    const box = $("ring");
    const q = ring.owners.length || 1;
    const cx = 110, cy = 110, r1 = 62, r2 = 92, r3 = 100;
    const at = (r, a) => `${(cx + r * Math.cos(a)).toFixed(2)} ${(cy + r * Math.sin(a)).toFixed(2)}`;
    const arc = (a0, a1, ri, ro) =>
      `M${at(ro, a0)} A${ro} ${ro} 0 0 1 ${at(ro, a1)} L${at(ri, a1)} A${ri} ${ri} 0 0 0 ${at(ri, a0)} Z`;
    const parts = [];
    ring.owners.forEach((owner, p) => {
      const a0 = (2 * Math.PI * p) / q - Math.PI / 2;
      const a1 = (2 * Math.PI * (p + 1)) / q - Math.PI / 2;
      const id = ring.nodes[owner];
      const path = svg("path", { d: arc(a0, a1, r1, r2), fill: colours[id] || "#ccc", "data-partition": p, "data-owner": id || "" });
      if (down.has(id)) path.setAttribute("class", "down");
      const title = svg("title", {});
      title.textContent = `partition ${p}: primary ${id}${moving.has(p) ? " (moving)" : ""}`;
      path.append(title);
      parts.push(path);
      if (moving.has(p)) parts.push(svg("path", { d: arc(a0, a1, r2 + 1, r3), class: "mark", "data-moving": p }));
    });
    const label = svg("text", { x: cx, y: cy + 3 });
    label.textContent = `${q} partitions`;
    box.replaceChildren(...parts, label);
    const legend = Object.keys(colours).map((id) => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = colours[id];
      return el("li", {}, sw, `${id}${down.has(id) ? " (down)" : ""}`);
    });
    $("legend").replaceChildren(...legend);
  }
}

function renderTransfers(snap) {
  const summary = snap.transfer_summary;
  $("transfer-summary").replaceChildren(...Object.keys(summary).map((to) => {
    const s = summary[to];
    return el("li", { "data-target": to, "data-running": s.running, "data-done": s.done, "data-failed": s.failed },
      `to ${to}: ${s.running} running, ${s.done} done${s.failed ? `, ${s.failed} failed` : ""}`);
  }));
  // every running transfer and the newest finished ones (the summary counts them all)
  const running = snap.transfers.filter((t) => t.state === "running");
  const finished = snap.transfers.filter((t) => t.state !== "running");
  const more = snap.transfers_finished - finished.length;
  $("transfers-more").textContent = more > 0 ? `and ${more} more finished in the last minute` : "";
  const rows = running.concat(finished).map((t) => {
    const frac = t.state === "done" ? 1 : t.total ? Math.min(t.records / t.total, 1) : 0;
    const bar = el("div", { class: "bar" }, el("span"), el("em", {},
      t.state === "running" ? `${num(t.records)} / ${num(t.total)}` : t.state));
    bar.firstChild.style.width = `${(frac * 100).toFixed(1)}%`;
    return el("tr", { "data-state": t.state, "data-to": t.to, "data-partition": t.partition },
      el("td", {}, `${t.namespace}/${t.partition}`), el("td", {}, `${t.from} → ${t.to}`),
      el("td", {}, t.reason || "–"), el("td", {}, bar),
      el("td", { class: "num" }, num(t.records_per_second)),
      el("td", { class: "num" }, t.state === "running" ? secs(t.seconds_left) : `${secs(t.ago)} ago`));
  });
  fill($("transfers").tBodies[0], rows);
  $("transfers-empty").hidden = rows.length > 0;
}

function renderLoad(snap) {
  let total = 0;
  const rows = Object.keys(snap.nodes).sort().map((id) => {
    const n = snap.nodes[id];
    if (!n.reachable) {
      return el("tr", { "data-node": id }, el("td", {}, id), el("td", { colSpan: 7, class: "hint" }, n.error));
    }
    const l = n.load || {}; const lat = l.latency || {};
    total += l.rounds_per_second || 0;
    return el("tr", { "data-node": id }, el("td", {}, id),
      el("td", { class: "num" }, num(l.rounds_per_second)),
      el("td", { class: "num" }, num(l.requests_in_per_second)),
      el("td", { class: "num" }, num(l.requests_out_per_second)),
      el("td", { class: "num" }, ms(lat.p50)), el("td", { class: "num" }, ms(lat.p90)),
      el("td", { class: "num" }, ms(lat.p99)), el("td", { class: "num" }, ms(lat.max)));
  });
  fill($("load").tBodies[0], rows);
  state.history.push(total);
  if (state.history.length > 120) state.history.shift();
  const h = state.history; const top = Math.max(1, ...h);
  const points = h.map((v, i) => `${((i / 119) * 300).toFixed(1)},${(48 - (v / top) * 46).toFixed(1)}`).join(" ");
  const title = svg("title", {});
  title.textContent = `cluster ops/s: ${num(total)} now, ${num(top)} peak`;
  $("spark").replaceChildren(svg("polyline", { points }), title);
}

function renderHints(snap) {
  const rows = [];
  for (const id of Object.keys(snap.nodes).sort()) {
    const hints = snap.nodes[id].hints || {};
    for (const [target, n] of Object.entries(hints)) {
      if (n > 0) rows.push(el("tr", {}, el("td", {}, id), el("td", {}, target), el("td", { class: "num" }, num(n))));
    }
  }
  fill($("hints").tBodies[0], rows);
  $("hints-empty").hidden = rows.length > 0;
}

function renderAntiEntropy(snap) {
  const rows = Object.keys(snap.nodes).sort().filter((id) => snap.nodes[id].reachable).map((id) => {
    const a = snap.nodes[id].antientropy || {};
    const bar = el("div", { class: "bar" }, el("span"), el("em", {}, a.enabled ? `${a.position} / ${a.owned}` : "off"));
    bar.firstChild.style.width = `${a.owned ? (100 * a.position) / a.owned : 0}%`;
    return el("tr", { "data-node": id }, el("td", {}, id), el("td", { class: "num" }, num(a.round)),
      el("td", {}, bar), el("td", { class: "num" }, num(a.ae_exchanges)),
      el("td", { class: "num" }, num((a.ae_keys_pushed || 0) + (a.ae_keys_pulled || 0))),
      el("td", { class: "num" }, num(a.ae_failures)), el("td", { class: "num" }, num(a.ae_skipped_moving)));
  });
  fill($("ae").tBodies[0], rows);
}

// One panel per registered service; known apps get their own columns.
const APP_VIEWS = {
  kv: { title: "Key-value store", cols: [["keys", "keys", num], ["memory", "memory_used_bytes", bytes],
    ["maxmemory", "maxmemory", (v) => (v ? bytes(v) : "none")], ["evicted", "evicted_keys", num]] },
  ratelimit: { title: "Rate limiter", cols: [["decisions", "decisions", num], ["over limit", "over_limit", num],
    ["keys", "keys", num], ["unreplicated", "unreplicated", num]] },
};

function renderApps(snap) {
  const panels = snap.services.map((ns) => {
    const view = APP_VIEWS[ns];
    const ids = Object.keys(snap.nodes).sort().filter((id) => snap.nodes[id].reachable);
    const panel = el("section", { class: "panel", "data-app": ns });
    if (view) {
      panel.append(el("h2", {}, `${view.title} `, el("span", { class: "hint" }, ns)));
      const head = el("tr", {}, el("th", {}, "node"), ...view.cols.map(([label]) => el("th", { class: "num" }, label)));
      const rows = ids.map((id) => {
        const st = (snap.nodes[id].apps || {})[ns] || {};
        return el("tr", { "data-node": id }, el("td", {}, id),
          ...view.cols.map(([, key, f]) => el("td", { class: "num" }, f(st[key] || 0))));
      });
      panel.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
    } else if (ns === "streams") {
      panel.append(el("h2", {}, "Streams ", el("span", { class: "hint" }, "led by each node: groups, pending, lag")));
      const rows = [];
      for (const id of ids) {
        for (const [key, length, groups] of ((snap.nodes[id].apps || {}).streams || {}).streams || []) {
          for (const [group, pending, lag] of groups.length ? groups : [["–", "–", "–"]]) {
            rows.push(el("tr", {}, el("td", {}, id), el("td", {}, key), el("td", { class: "num" }, num(length)),
              el("td", {}, group), el("td", { class: "num" }, pending), el("td", { class: "num" }, lag ?? "?")));
          }
        }
      }
      const head = el("tr", {}, ...["leader", "stream", "length", "group", "pending", "lag"].map((h) => el("th", {}, h)));
      panel.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
      if (!rows.length) panel.append(el("p", { class: "empty" }, "No stream yet."));
    } else if (ns === "pubsub") {
      panel.append(el("h2", {}, "Publish/subscribe ", el("span", { class: "hint" }, "local subscriptions")));
      const rows = [];
      for (const id of ids) {
        for (const [kind, name, n] of ((snap.nodes[id].apps || {}).pubsub || {}).subscriptions || []) {
          rows.push(el("tr", {}, el("td", {}, id), el("td", {}, kind), el("td", {}, name), el("td", { class: "num" }, n)));
        }
      }
      const head = el("tr", {}, ...["node", "kind", "name", "subscribers"].map((h) => el("th", {}, h)));
      panel.append(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
      if (!rows.length) panel.append(el("p", { class: "empty" }, "No subscriber on any node."));
    } else {
      panel.append(el("h2", {}, ns));
      for (const id of ids) {
        const st = (snap.nodes[id].apps || {})[ns];
        if (st) panel.append(el("p", {}, el("strong", {}, `${id}: `), JSON.stringify(st)));
      }
    }
    return panel;
  });
  $("apps").replaceChildren(...panels);
}

function renderActions(snap) {
  $("actions-log").replaceChildren(...snap.actions_log.slice().reverse().map((a) =>
    el("li", { "data-node": a.node, "data-state": a.state },
      `${a.action} ${a.node}: ${a.state} — ${a.detail} (${secs(a.ago)} ago)`)));
  $("actions-empty").hidden = snap.actions_log.length > 0;
}

// -- the decommission dialog ---------------------------------------------------------
function openDialog(id) {
  $("dialog-title").textContent = `Decommission ${id}?`;
  $("dialog-text").textContent =
    `${id} hands every partition it holds to the other owners, leaves the ring and exits. ` +
    "This cannot be undone from here: the node has to be started again to rejoin.";
  const snap = state.snap;
  const left = snap ? snap.members.filter((m) => m.id !== id).length : 0;
  if (snap && left < snap.replicas) {
    $("dialog-text").textContent += ` Only ${left} members would remain for N=${snap.replicas} ` +
      "replicas: every key would then have fewer copies than configured.";
  }
  $("dialog-token").value = token();
  $("dialog-form").dataset.node = id;
  $("action-result").textContent = "";
  delete $("action-result").dataset.status;
  $("dialog").hidden = false;
  $("dialog-token").focus();
}

async function confirmAction(ev) {
  ev.preventDefault();
  const id = $("dialog-form").dataset.node;
  const result = $("action-result");
  result.textContent = "asking…";
  try {
    const res = await fetch("/console/api/decommission", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders($("dialog-token").value) },
      body: JSON.stringify({ node: id }),
    });
    const body = await res.json().catch(() => ({}));
    if (res.status === 202) {
      result.dataset.status = "accepted";
      result.textContent = `Accepted: ${id} is handing its partitions over (see Actions).`;
    } else {
      result.dataset.status = res.status === 401 || res.status === 403 ? "refused" : "error";
      result.textContent = `Refused (${res.status}): ${body.error || res.statusText}`;
    }
  } catch (err) {
    result.dataset.status = "error";
    result.textContent = `Failed: ${err.message}`;
  }
}

function init() {
  $("token").value = token();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    if (state.pending) { const go = state.pending; state.pending = null; go(); }
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); $("token").value = ""; });
  $("dialog-form").addEventListener("submit", confirmAction);
  $("dialog-cancel").addEventListener("click", () => { $("dialog").hidden = true; });
  stream();
}

document.addEventListener("DOMContentLoaded", init);
