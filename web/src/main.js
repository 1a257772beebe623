// gpupool's dashboard: the fleet (grouped by provider and site, each group summarised; a
// group's nodes and GPUs, coloured by live utilisation and health, when it is opened; a fleet
// of up to 64 nodes opens whole), the queue and jobs (state, GPUs, why a job waits), a job's
// page (attempts, log tail), the event feed, and what capacity costs: GPU-hours and dollars of
// the last 7 days by provider, offer and kind (job time, or acquired nodes' idle billed time),
// and the offers the pool may buy from. It reads the REST API with the session cookie
// the server set when the token was exchanged, and updates live: the event stream
// (GET /v1/events?wait=) says when something changed, and node load is re-read every 2 s.

const state = {
  groups: [], // the fleet by provider and site, summarised (GET /v1/node-groups)
  open: new Set(), // groups whose nodes are shown (read with GET /v1/nodes?provider=&site=)
  toggled: false, // the user opened or closed one: no more opening by default
  groupNodes: new Map(),
  nodes: [], jobs: [], events: [], lastSeq: 0, route: location.hash, job: null, logs: "",
  usage: null, offers: null, costReadAt: 0, // GET /v1/usage, GET /v1/offers (read every 10 s at most)
  who: null, // GET /v1/whoami: the admin, or a tenant's token (which sees its own tenant's jobs only)
  tenant: null, // a tenant's own record with what it holds now (GET /v1/tenants)
};
// A small fleet is shown whole; a big one by group, each opened on demand.
const OPEN_ALL_UP_TO = 64;
const groupKey = (g) => `${g.provider} / ${g.site}`;

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) {
    location.href = "/"; // the session ended: the server shows its login form
    throw new Error("unauthorised");
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  const type = r.headers.get("content-type") || "";
  return type.includes("json") && !type.includes("ndjson") ? r.json() : r.text();
}

const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function el(html) {
  const t = document.createElement("template");
  t.innerHTML = html.trim();
  return t.content;
}

// Utilisation 0..1 as a colour from cool (idle) to hot (busy).
function heat(u) {
  const hue = 210 - 200 * Math.min(1, Math.max(0, u));
  return `hsl(${hue} 70% ${45 + 10 * (1 - u)}%)`;
}

function age(ms) {
  if (!ms) return "-";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${s.toFixed(0)}s`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

function gpuCell(node, g) {
  const util = g.load ? g.load.utilisation / 1000 : 0;
  const quarantined = (g.health || "ok") !== "ok";
  const mem = g.load ? `${g.load.memory_used_mib} / ${g.load.memory_total_mib || g.memory_mib} MiB` : "";
  const title = `${node.name} GPU ${g.index} (${g.name || node.model})\n${(util * 100).toFixed(0)}% busy ${mem}\n${g.health}` +
    (g.check ? `\nself-test: ${g.check}` : "");
  return `<span class="gpu ${quarantined ? "bad" : ""}" data-gpu="${g.index}" title="${esc(title)}"
    style="background:${quarantined ? "" : heat(util)}">${g.index}</span>`;
}

function nodeCard(n) {
  const cpu = n.host ? (n.host.cpu_busy / 10).toFixed(0) : "?";
  return `<div class="node state-${esc(n.state)}" data-node="${esc(n.name)}">
    <div class="node-head"><b>${esc(n.name)}</b><span class="badge">${esc(n.state)}</span></div>
    <div class="node-sub">${n.gpus.length}x ${esc(n.model || "CPU")} · ${n.free_gpus} free · CPU ${cpu}% · $${n.price_per_gpu_hour.toFixed(2)}/GPU-h</div>
    <div class="gpus">${n.gpus.map((g) => gpuCell(n, g)).join("")}</div></div>`;
}

function renderFleet() {
  let html = "";
  for (const g of state.groups) {
    const key = groupKey(g);
    const open = state.open.has(key);
    const st = g.states;
    const models = Object.entries(g.models).map(([m, n]) => `${n}x ${m}`).join(", ") || "CPU only";
    const util = g.gpu_utilisation || 0;
    html += `<div class="group ${open ? "open" : "closed"}" data-group="${esc(key)}">
      <h3 class="group-head" data-toggle="${esc(key)}">${open ? "▾" : "▸"} ${esc(key)}</h3>
      <div class="group-sum">${g.nodes} nodes (${st.ready} ready${st.suspect ? `, ${st.suspect} suspect` : ""}${st.down ? `, ${st.down} down` : ""}${st.draining ? `, ${st.draining} draining` : ""})
        · ${g.free_gpus} of ${g.gpus} GPUs free · ${esc(models)}
        · <span class="util" style="background:${heat(util)}">${(util * 100).toFixed(0)}% busy</span></div>`;
    if (open) {
      const nodes = state.groupNodes.get(key) || [];
      html += `<div class="nodes">${nodes.map(nodeCard).join("")}</div>`;
      if (nodes.length < g.nodes) html += `<p class="note">${nodes.length} of ${g.nodes} nodes shown</p>`;
    }
    html += "</div>";
  }
  return html || `<p class="empty">No nodes yet: start an agent with <code>gpupool agent --server ...</code></p>`;
}

function jobGpus(j) {
  const per = j.gpus_per_task || 0;
  return j.tasks > 1 ? `${j.tasks}x${per}` : `${per}`;
}

function renderJobs() {
  const rows = state.jobs
    .map(
      (j) => `<tr class="job state-${esc(j.state)}" data-job="${esc(j.id)}">
        <td><a href="#/jobs/${esc(j.id)}">${esc(j.id)}</a></td><td>${esc(j.name)}</td><td>${esc(j.tenant)}</td>
        <td class="state">${esc(j.state)}</td><td>${jobGpus(j)}</td><td>${esc(j.node ?? "")}${j.gpus.length ? ` [${j.gpus.join(",")}]` : ""}</td>
        <td>${j.attempt}</td><td>${age(j.submit_ms)}</td><td class="why">${esc(j.message)}</td></tr>`,
    )
    .join("");
  const queued = state.jobs.filter((j) => j.state === "queued").length;
  return `<table class="jobs"><thead><tr><th>ID</th><th>NAME</th><th>TENANT</th><th>STATE</th><th>GPUS</th>
    <th>WHERE</th><th>ATTEMPT</th><th>AGE</th><th>WHY / MESSAGE</th></tr></thead><tbody>${rows}</tbody></table>
    ${state.jobs.length ? "" : `<p class="empty">No jobs yet: <code>gpupool submit --gpus 1 -- CMD</code></p>`}
    <p class="note">${queued} queued</p>`;
}

function renderEvents() {
  return `<ol class="events">${state.events
    .slice(-60)
    .reverse()
    .map((e) => `<li><span class="seq">${e.sequence}</span> <span class="etype">${esc(e.type.replace("io.gpupool.", ""))}</span>
      <span class="subj">${esc(e.subject)}</span> <span class="time">${esc(e.time.slice(11, 19))}</span></li>`)
    .join("")}</ol>`;
}

function renderTenant() {
  const t = state.tenant;
  if (!t) return "";
  const list = (o) => Object.entries(o || {}).map(([m, n]) => `${n} ${esc(m)}`).join(", ") || "none";
  const share = t.share || {};
  const num = (v) => (v === undefined || v === null ? "–" : esc(String(v)));
  // Per GPU model: its quota, what it uses, borrows from its cohort and lends to it.
  const rows = (share.models || []).map((m) => `<tr class="quota" data-model="${esc(m.model)}"><td>${esc(m.model)}</td>
      <td>${num(m.quota)}</td><td>${num(m.used)}</td><td>${num(m.borrowed)}</td><td>${num(m.lent)}</td>
      <td>${m.borrow_limit !== undefined ? `borrow ≤ ${num(m.borrow_limit)}` : ""}${m.lend_limit !== undefined ? ` lend ≤ ${num(m.lend_limit)}` : ""}</td></tr>`).join("");
  const table = rows ? `<table class="quota"><thead><tr><th>model</th><th>quota</th><th>used</th><th>borrowed</th><th>lent</th><th>limits</th></tr></thead>
      <tbody>${rows}</tbody></table>` : "";
  const standing = share.rank ? ` · decayed usage ${Number(share.decayed_gpu_hours || 0).toFixed(2)} GPU-h · fair-share rank ${share.rank}` : "";
  return `<section id="tenant"><h2>Tenant ${esc(t.name)}</h2><p class="note">weight ${t.weight}${t.cohort ? ` · cohort ${esc(t.cohort)}` : ""}
    · in use: <span id="tenant-in-use">${list(t.in_use)}</span> · ${t.running} running · ${t.queued} queued${standing}</p>${table}</section>`;
}

function renderCost() {
  const u = state.usage;
  if (!u) return "";
  const rows = u.rows
    .map((r) => `<tr class="usage-row" data-provider="${esc(r.provider)}" data-kind="${esc(r.kind)}"><td>${esc(r.provider)}</td>
      <td>${esc(r.offer || "(its own nodes)")}</td><td>${esc(r.kind)}</td><td>${r.gpu_hours.toFixed(3)}</td><td>$${r.usd.toFixed(2)}</td></tr>`)
    .join("");
  let html = `<table class="usage"><thead><tr><th>PROVIDER</th><th>OFFER</th><th>KIND</th><th>GPU-HOURS</th><th>DOLLARS</th></tr></thead>
    <tbody>${rows}</tbody><tfoot><tr><td colspan="3">total, last 7 days</td><td>${u.total.gpu_hours.toFixed(3)}</td>
    <td id="usage-total">$${u.total.usd.toFixed(2)}</td></tr></tfoot></table>`;
  const offers = state.offers && state.offers.offers ? state.offers.offers : [];
  if (offers.length) {
    html += `<table class="offers"><thead><tr><th>OFFER</th><th>TIER</th><th>$/GPU-H</th><th>RUNNING</th><th>BOOTING</th></tr></thead><tbody>
      ${offers.map((o) => `<tr class="offer" data-offer="${esc(o.name)}"><td>${esc(o.name)}</td><td>${esc(o.tier)}</td>
        <td>${o.price_per_gpu_hour.toFixed(2)}</td><td>${o.running}</td><td>${o.booting}</td></tr>`).join("")}</tbody></table>`;
    for (const b of state.offers.blocked || []) {
      html += `<p class="note blocked">blocked: ${esc(b.scope)} ${esc(b.what)} for ${b.seconds_left.toFixed(0)} s more</p>`;
    }
  }
  return html;
}

function renderJobPage() {
  const j = state.job;
  if (!j) return `<p>Loading...</p>`;
  const attempts = j.attempts
    .map((a) => `<tr><td>${a.attempt}</td><td>${esc(a.nodes.join(", "))}</td><td>${esc(a.outcome)}</td></tr>`)
    .join("");
  return `<p><a href="#/">&larr; fleet</a></p>
    <h2>Job ${esc(j.id)}: ${esc(j.name)} <span class="badge state-${esc(j.state)}" id="job-state">${esc(j.state)}</span></h2>
    <dl class="facts"><dt>command</dt><dd><code>${esc(j.command.join(" "))}</code></dd>
      <dt>tenant</dt><dd>${esc(j.tenant)}</dd><dt>GPUs</dt><dd>${jobGpus(j)}</dd>
      <dt>where</dt><dd>${esc(j.placement.map((t) => t.node).join(", ") || "-")}</dd>
      <dt>attempt</dt><dd>${j.attempt} (failures ${j.failures})</dd><dt>exit code</dt><dd>${j.exit_code ?? "-"}</dd>
      <dt>message</dt><dd>${esc(j.message || "-")}</dd></dl>
    <h3>Earlier attempts</h3>${attempts ? `<table><tr><th>#</th><th>nodes</th><th>outcome</th></tr>${attempts}</table>` : "<p>none</p>"}
    <h3>Log (task 0, stdout, last 4 KiB)</h3><pre class="log" id="log">${esc(state.logs)}</pre>`;
}

function render() {
  const main = document.getElementById("main");
  const nodes = state.groups.reduce((s, g) => s + g.nodes, 0);
  const gpus = state.groups.reduce((s, g) => s + g.gpus, 0);
  const running = state.jobs.filter((j) => j.state === "running").length;
  document.getElementById("summary").textContent =
    `${nodes} nodes · ${gpus} GPUs · ${running} running · ${state.jobs.filter((j) => j.state === "queued").length} queued`;
  if (state.route.startsWith("#/jobs/")) {
    main.replaceChildren(el(renderJobPage()));
    return;
  }
  main.replaceChildren(
    el(`${renderTenant()}<section id="fleet"><h2>Fleet</h2>${renderFleet()}</section>
      <div class="cols"><section id="jobs"><h2>Jobs</h2>${renderJobs()}</section>
      <section id="feed"><h2>Events</h2>${renderEvents()}</section></div>
      <section id="cost"><h2>Capacity and cost</h2>${renderCost()}</section>`),
  );
  for (const h of main.querySelectorAll("[data-toggle]")) {
    h.addEventListener("click", () => {
      const key = h.dataset.toggle;
      state.toggled = true;
      if (state.open.has(key)) state.open.delete(key);
      else state.open.add(key);
      refresh().catch(showError);
    });
  }
}

// The open groups' nodes: a page (at most 1,000) per group, filtered on the server.
async function readOpenGroups() {
  const reads = state.groups
    .filter((g) => state.open.has(groupKey(g)))
    .map(async (g) => {
      const q = `provider=${encodeURIComponent(g.provider)}&site=${encodeURIComponent(g.site)}&limit=1000`;
      state.groupNodes.set(groupKey(g), (await api(`/v1/nodes?${q}`)).nodes);
    });
  await Promise.all(reads);
}

async function refresh() {
  const [groups, jobs] = await Promise.all([api("/v1/node-groups"), api("/v1/jobs?limit=200")]);
  state.groups = groups.groups;
  if (!state.toggled && groups.nodes <= OPEN_ALL_UP_TO) for (const g of state.groups) state.open.add(groupKey(g));
  await readOpenGroups();
  state.jobs = jobs.jobs;
  if (state.who && state.who.kind === "tenant") state.tenant = ((await api("/v1/tenants")).tenants || [])[0] || null;
  if (Date.now() - state.costReadAt > 10000) {
    state.costReadAt = Date.now();
    [state.usage, state.offers] = await Promise.all([api("/v1/usage?by=provider,offer,kind&since=7d"), api("/v1/offers")]);
  }
  if (state.route.startsWith("#/jobs/")) {
    const id = state.route.slice(7);
    state.job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    const log = await api(`/v1/jobs/${encodeURIComponent(id)}/logs?task=0&stream=stdout`);
    state.logs = typeof log === "string" ? log.slice(-4096) : "";
  }
  render();
}

let pending = null;
function soon() {
  if (!pending) pending = setTimeout(() => { pending = null; refresh().catch(showError); }, 150);
}

function showError(e) {
  document.getElementById("live").textContent = `error: ${e.message}`;
  document.getElementById("live").className = "live down";
}

// Follows the event log (long poll); each batch of events triggers a refresh.
async function follow() {
  const live = document.getElementById("live");
  for (;;) {
    try {
      const text = await api(`/v1/events?since=${state.lastSeq}&limit=500&wait=20s`);
      const lines = typeof text === "string" ? text.split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [text];
      for (const e of lines) {
        state.events.push(e);
        state.lastSeq = Math.max(state.lastSeq, e.sequence);
      }
      if (state.events.length > 500) state.events = state.events.slice(-500);
      live.textContent = `live · event ${state.lastSeq}`;
      live.className = "live up";
      if (lines.length) soon();
    } catch (e) {
      showError(e);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

window.addEventListener("hashchange", () => {
  state.route = location.hash;
  state.job = null;
  refresh().catch(showError);
});

async function start() {
  state.who = await api("/v1/whoami");
  document.getElementById("whoami").textContent =
    state.who.kind === "tenant" ? `tenant ${state.who.tenant} (${state.who.role})` : "admin";
  // Begin the feed with the latest events only.
  const recent = await api("/v1/events?since=0&limit=10000");
  const lines = typeof recent === "string" ? recent.split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [recent];
  state.events = lines.slice(-60);
  state.lastSeq = lines.length ? lines[lines.length - 1].sequence : 0;
  await refresh();
  const live = document.getElementById("live");
  live.textContent = `live · event ${state.lastSeq}`;
  live.className = "live up";
  setInterval(() => refresh().catch(showError), 2000); // live load between events
  follow();
}

start().catch(showError);
