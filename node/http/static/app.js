// The dashboard's pages, drawn from the node's JSON routes and redrawn when /events says the facts changed.
// Plain DOM and SVG: nothing is loaded from anywhere but this node.
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const ETH = 10n ** 18n;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "'": "&#39;" })[c]);
}
function eth(wei) {
  const v = BigInt(wei || "0");
  const frac = (v % ETH).toString().padStart(18, "0").slice(0, 6);
  return `${v / ETH}.${frac}`;
}
function short(addr) { return addr ? `<span class="mono" title="${esc(addr)}">${esc(addr.slice(0, 10))}…</span>` : "—"; }
function cid(c) { return c ? `<code>${esc(c)}</code>` : "—"; }
function status(s) { return `<span class="status ${esc(s)}" data-status="${esc(s)}">${esc(s)}</span>`; }
function when(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "—"; }
function metricText(m) {
  if (!m) return "—";
  return m.metric_name === "accuracy" ? `${(m.metric * 100).toFixed(2)}%` : `${m.metric_name} ${m.metric.toPrecision(4)}`;
}
async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${(await response.json()).error || ""}`);
  return response.json();
}
function table(id, head, rows) {
  const th = head.map((h) => `<th${h.endsWith("#") ? ' class="num"' : ""}>${esc(h.replace(/#$/, ""))}</th>`).join("");
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>${rows.join("") ||
    `<tr><td colspan="${head.length}" class="muted">none yet</td></tr>`}</tbody></table>`;
}

async function jobsPage() {
  const { data } = await api("/api/jobs");
  const rows = data.map((j) => `<tr data-job="${j.job_id}"><td><a href="/jobs/${j.job_id}">job ${j.job_id}</a></td>
    <td>${status(j.status)}</td><td>${short(j.customer)}</td><td class="num">${eth(j.deposit_wei)}</td>
    <td class="num">${eth(j.spent_wei)}</td><td class="num">${eth(j.refunded_wei)}</td>
    <td class="num rounds">${j.rounds_done}/${j.rounds_total}</td><td>${short(j.leader)}</td></tr>`);
  return `<h1>Jobs</h1>${table("jobs", ["job", "state", "customer", "deposit ETH#", "spent ETH#", "refund ETH#",
    "rounds#", "leader"], rows)}`;
}

function curve(rounds) {
  const pts = rounds.filter((r) => r.measurement);
  const W = 640, H = 260, L = 56, R = 56, T = 16, B = 32;
  const n = Math.max(rounds.length, 1);
  const x = (r) => L + (n === 1 ? (W - L - R) / 2 : (r * (W - L - R)) / (n - 1));
  const span = (vals) => { const lo = Math.min(...vals), hi = Math.max(...vals); return hi > lo ? [lo, hi] : [lo - 1, hi + 1]; };
  if (!pts.length) {
    return `<svg id="curve" width="${W}" height="${H}" data-points="0"><text x="${W / 2 - 90}" y="${H / 2}">` +
      `no round measured yet</text></svg>`;
  }
  const name = pts[0].measurement.metric_name;
  const m = span(pts.map((p) => p.measurement.metric)), l = span(pts.map((p) => p.measurement.loss));
  const y = (v, [lo, hi]) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const line = (key, s) => pts.map((p) => `${x(p.round).toFixed(1)},${y(p.measurement[key], s).toFixed(1)}`).join(" ");
  const dots = (key, s, cls) => pts.map((p) => `<circle class="${cls}" r="3.5" cx="${x(p.round).toFixed(1)}" ` +
    `cy="${y(p.measurement[key], s).toFixed(1)}"><title>round ${p.round + 1}: ${key === "metric" ? name : "loss"} ` +
    `${p.measurement[key].toPrecision(4)}</title></circle>`).join("");
  const fmt = (v) => (name === "accuracy" ? `${(v * 100).toFixed(1)}%` : v.toPrecision(3));
  const ticks = [0, 0.5, 1].map((f) => {
    const yy = T + (H - T - B) * (1 - f);
    return `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
      `<text x="4" y="${yy + 4}">${fmt(m[0] + f * (m[1] - m[0]))}</text>` +
      `<text x="${W - R + 6}" y="${yy + 4}">${(l[0] + f * (l[1] - l[0])).toPrecision(3)}</text>`;
  }).join("");
  const xt = rounds.map((r) => `<text x="${x(r.round) - 3}" y="${H - B + 16}">${r.round + 1}</text>`).join("");
  return `<svg id="curve" width="${W}" height="${H}" data-points="${pts.length}" role="img" ` +
    `aria-label="${esc(name)} and loss per round">${ticks}${xt}` +
    `<text x="${W / 2 - 20}" y="${H - 2}">round</text>` +
    `<polyline class="metric" points="${line("metric", m)}"/><polyline class="loss" points="${line("loss", l)}"/>` +
    `${dots("metric", m, "metric-pt")}${dots("loss", l, "loss-pt")}` +
    `<text x="${L}" y="12" class="legend">— ${esc(name)} (left)   - - loss (right)</text></svg>`;
}

function votes(u) {
  if (!u.votes.length) return u.panel.length ? `panel ${u.panel.map(short).join(" ")}` : "—";
  return u.votes.map((v) => `<span class="vote ${v.valid ? "yes" : "no"}">${short(v.validator)} ${v.valid ? "✓" : "✗"}` +
    `${v.phase > 1 ? " (escalation)" : ""}</span>`).join("<br>");
}

function ownReason(u) {
  // The chain records only valid/invalid: a reason is known only where this node's validator replayed the update.
  return u.own_reason ? `<div class="own-reason" title="from this node's own replay, not the chain">` +
    `this node's reason: ${esc(u.own_reason)}</div>` : "";
}

async function jobPage(jobId) {
  const { data: d } = await api(`/api/jobs/${jobId}`);
  const s = d.summary;
  const leaseLeft = s.status === "ACTIVE" && s.lease_expiry ? `until ${when(s.lease_expiry)}` : "—";
  const rounds = d.rounds.map((r) => `<tr data-round="${r.round}"><td class="num">${r.round + 1}</td>
    <td>${short(r.leader)}</td><td class="num">${metricText(r.measurement)}</td>
    <td class="num">${r.measurement ? r.measurement.loss.toFixed(4) : "—"}</td><td>${r.accepted_slots.join(", ") || "none"}</td>
    <td>${status(r.audit)}</td><td>${cid(r.checkpoint_cid)}</td></tr>`);
  const updates = d.updates.map((u) => `<tr class="${esc(u.status)}" data-round="${u.round}" data-slot="${u.slot}">
    <td class="num">${u.round + 1}</td><td class="num">${u.slot}</td><td>${short(u.trainer)}</td><td>${status(u.status)}${ownReason(u)}</td>
    <td>${votes(u)}</td><td class="num">${u.status === "ACCEPTED" ? eth(u.pay_wei) + (u.paid ? "" : " (owed)") : "—"}</td>
    <td>${cid(u.update_cid)}</td></tr>`);
  const terms = d.terms.map((t) => `<tr><td class="num">${t.term}</td><td>${short(t.leader)}</td><td>${when(t.lease_expiry)}</td></tr>`);
  const penalties = d.penalties.map((p) => `<tr><td>${esc(p.kind)}</td><td>${short(p.account)}</td>
    <td class="num">${p.kind === "RoundDisputed" ? "round " + (p.round + 1) : eth(p.amount_wei)}</td><td class="num">${p.block}</td></tr>`);
  const final = s.final_cid && s.status === "FINISHED"
    ? `<h2>Final weights</h2><p>${cid(s.final_cid)}</p><pre id="fetch">${esc(d.fetch_command)}</pre>` : "";
  return `<h1>Job ${s.job_id} ${status(s.status)}</h1>
    <dl><dt>rounds</dt><dd id="rounds-done">${s.rounds_done}/${s.rounds_total}</dd>
    <dt>customer</dt><dd>${short(s.customer)}</dd><dt>leader (term ${s.term})</dt><dd>${short(s.leader)} lease ${leaseLeft}</dd>
    <dt>deposit / spent / refund</dt><dd>${eth(s.deposit_wei)} / ${eth(s.spent_wei)} / ${eth(s.refunded_wei)} ETH</dd>
    <dt>spec</dt><dd>${cid(s.spec_cid)}</dd></dl>
    <h2>Metric and loss per round</h2>${curve(d.rounds)}
    <h2>Rounds</h2>${table("rounds", ["round#", "leader", "metric#", "loss#", "accepted slots", "audit", "checkpoint"], rounds)}
    <h2>Updates</h2>${table("updates", ["round#", "slot#", "trainer", "verdict", "votes", "pay ETH#", "update"], updates)}
    <h2>Leaders</h2>${table("terms", ["term#", "leader", "lease until"], terms)}
    <h2>Disputes and slashes</h2>${table("penalties", ["what", "who", "amount ETH#", "block#"], penalties)}${final}`;
}

async function nodesPage() {
  const { data } = await api("/api/nodes");
  const rows = data.map((n) => `<tr><td>${short(n.address)}</td><td>${esc(n.roles.join(", "))}</td><td>${esc(n.node_class) || "—"}</td>
    <td class="num">${eth(n.stake_wei)}</td><td class="num">${n.accepted}</td><td class="num">${n.rejected}</td>
    <td class="num">${eth(n.earned_wei)}</td><td class="num">${n.last_seen_s == null ? "—" : n.last_seen_s + " s ago"}</td></tr>`);
  return `<h1>Nodes</h1>${table("nodes", ["address", "roles", "class", "stake ETH#", "accepted#", "rejected#",
    "earned ETH#", "last seen#"], rows)}`;
}

async function nodePage() {
  const { data: n } = await api("/api/node");
  const peers = n.peers.map((p) => `<tr><td>${short(p.address)}</td><td>${esc(p.roles.join(", "))}</td><td>${esc(p.node_class)}</td>
    <td class="num">${p.last_seen_s} s ago</td><td class="mono">${esc(p.peer_id)}</td></tr>`);
  const secs = Object.entries(n.seconds_by_activity).map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${v}</td></tr>`);
  const mib = (b) => (b / 2 ** 20).toFixed(1);
  return `<h1>This node</h1><dl><dt>address</dt><dd class="mono">${esc(n.address)}</dd>
    <dt>peer id</dt><dd class="mono">${esc(n.peer_id)}</dd><dt>roles</dt><dd>${esc(n.roles.join(", "))}</dd>
    <dt>listening</dt><dd class="mono">${n.listen.map(esc).join("<br>")}</dd>
    <dt>connected peers</dt><dd>${n.connected_peers}</dd>
    <dt>exchanged</dt><dd id="bytes">${mib(n.bytes_in)} MiB in, ${mib(n.bytes_out)} MiB out</dd>
    <dt>store</dt><dd>${mib(n.store_used_bytes)} of ${mib(n.store_max_bytes)} MiB</dd>
    <dt>gossip</dt><dd>${n.gossip_delivered} delivered, ${n.gossip_rejected} rejected; ${n.requests_served} requests served</dd>
    <dt>doing</dt><dd>${n.activity.map(esc).join("<br>") || "idle"}</dd></dl>
    <h2>Peers</h2>${table("peers", ["address", "roles", "class", "last seen#", "peer id"], peers)}
    <h2>Seconds per activity</h2>${table("seconds", ["activity", "seconds#"], secs)}`;
}

function page() {
  const path = location.pathname.replace(/\/+$/, "") || "/jobs";
  const job = path.match(/^\/jobs\/(\d+)$/);
  if (job) return jobPage(job[1]);
  return { "/jobs": jobsPage, "/nodes": nodesPage, "/node": nodePage }[path]?.() ?? Promise.resolve("<h1>Not found</h1>");
}

// A change event comes with every new block, mostly with nothing new for this page: at most one draw waits behind
// the one in flight (it reads the newest facts anyway), and the page is rebuilt only when what it shows changed.
let drawing = Promise.resolve();
let waiting = false;
let shown = "";
function draw() {
  if (waiting) return;
  waiting = true;
  drawing = drawing.then(async () => {
    waiting = false;
    try {
      const html = await page();
      if (html === shown) return;
      const scroll = window.scrollY;
      main.innerHTML = html;
      shown = html;
      window.scrollTo(0, scroll);
      document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
    } catch (err) {
      main.innerHTML = `<p class="status REJECTED">${esc(err.message)}</p>`;
      shown = "";
    }
  });
}

const stream = new EventSource("/events");
stream.addEventListener("change", (e) => {
  const { block } = JSON.parse(e.data);
  live.className = "on";
  live.textContent = `live · block ${block}`;
  draw();
});
stream.onerror = () => { live.className = "off"; live.textContent = "reconnecting…"; };
draw();
