// Hydra Compute dashboard: one page, no framework, no build step, nothing from a CDN.
// Data comes from the coordinator's JSON API; live updates from its Server-Sent Events.
"use strict";

const state = {
  session: null,
  csrf: sessionStorage.getItem("hydracompute-csrf"),
  kinds: [],
  jobs: new Map(),
  pool: null,
  stream: null,
  page: null, // the object rendering the current route
};

// --- helpers -----------------------------------------------------------------------------

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function el(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content.firstElementChild;
}

function si(value, digits = 3) {
  if (value === null || value === undefined || !isFinite(value)) return "–";
  const units = ["", "k", "M", "G", "T", "P"];
  let i = 0;
  while (Math.abs(value) >= 1000 && i < units.length - 1) { value /= 1000; i += 1; }
  return `${Number(value.toPrecision(digits))}${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function ago(epochSeconds) {
  return duration(Math.max(0, Date.now() / 1000 - epochSeconds)) + " ago";
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const error = new Error((data && data.detail) || response.statusText);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

// --- live updates --------------------------------------------------------------------------

function openStream(jobId) {
  if (state.stream) state.stream.close();
  const url = "/api/v1/events" + (jobId ? `?job=${encodeURIComponent(jobId)}` : "");
  const stream = new EventSource(url);
  stream.addEventListener("open", () => setStatus("live"));
  stream.addEventListener("error", () => setStatus("reconnecting…"));
  stream.addEventListener("pool", (event) => {
    state.pool = JSON.parse(event.data);
    if (state.page && state.page.onPool) state.page.onPool(state.pool);
  });
  stream.addEventListener("jobs", (event) => {
    for (const job of JSON.parse(event.data)) {
      state.jobs.set(job.job_id, job);
      if (state.page && state.page.onJob) state.page.onJob(job);
    }
  });
  stream.addEventListener("chunks", (event) => {
    if (state.page && state.page.onChunks) state.page.onChunks(JSON.parse(event.data));
  });
  stream.addEventListener("signed-out", () => {
    stream.close();
    state.session = null;
    showWho();
    signInPage("Your key is no longer valid; sign in again.");
  });
  stream.addEventListener("reload", () => {
    if (state.page && state.page.onReload) state.page.onReload();
  });
  state.stream = stream;
}

// --- charts (SVG, drawn here: two small charts do not need a library) ----------------------

const COLOURS = ["#1f6feb", "#e16f24", "#1a7f37", "#8250df", "#bf3989"];
// How often the overview reads the volunteers' leaderboard again.
const LEADERBOARD_EVERY_MS = 10000;

function scale(domain, range) {
  const [d0, d1] = domain[0] === domain[1] ? [domain[0] - 1, domain[1] + 1] : domain;
  return (v) => range[0] + ((v - d0) / (d1 - d0)) * (range[1] - range[0]);
}

function chart(svg, { series, band, hline, xLabel, yFormat, xFormat, yDomain }) {
  const width = svg.clientWidth || 600;
  const height = svg.clientHeight || 220;
  const pad = { left: 64, right: 12, top: 10, bottom: 28 };
  const xs = [], ys = [];
  for (const s of series) for (const [x, y] of s.points) { xs.push(x); ys.push(y); }
  if (band) for (const [x, lo, hi] of band) { xs.push(x); ys.push(lo, hi); }
  if (hline !== undefined) ys.push(hline);
  if (!xs.length) { svg.innerHTML = ""; return; }
  const [y0, y1] = yDomain || [Math.min(...ys), Math.max(...ys)];
  const x = scale([Math.min(...xs), Math.max(...xs)], [pad.left, width - pad.right]);
  const y = scale([y0, y1], [height - pad.bottom, pad.top]);
  const clip = `chart-${Math.random().toString(36).slice(2)}`;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg">`];
  const ticks = 4;
  for (let i = 0; i <= ticks; i += 1) {
    const v = y0 + ((y1 - y0) * i) / ticks;
    parts.push(`<line x1="${pad.left}" x2="${width - pad.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e7ebf0"/>`);
    parts.push(`<text x="${pad.left - 6}" y="${y(v) + 4}" text-anchor="end">${escapeHtml(yFormat(v))}</text>`);
  }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  for (let i = 0; i <= ticks; i += 1) {
    const v = x0 + ((x1 - x0) * i) / ticks;
    parts.push(`<text x="${x(v)}" y="${height - 10}" text-anchor="middle">${escapeHtml(xFormat(v))}</text>`);
  }
  if (xLabel) parts.push(`<text x="${width - pad.right}" y="${height - 1}" text-anchor="end">${escapeHtml(xLabel)}</text>`);
  // Data is drawn clipped to the plot area (a band may reach beyond the frame).
  parts.push(`<defs><clipPath id="${clip}"><rect x="${pad.left}" y="${pad.top}" width="${width - pad.left - pad.right}" height="${height - pad.top - pad.bottom}"/></clipPath></defs><g clip-path="url(#${clip})">`);
  if (band && band.length) {
    const upper = band.map(([bx, , hi]) => `${x(bx)},${y(hi)}`);
    const lower = band.slice().reverse().map(([bx, lo]) => `${x(bx)},${y(lo)}`);
    parts.push(`<polygon class="band" points="${upper.concat(lower).join(" ")}" fill="#1f6feb" fill-opacity="0.15"/>`);
  }
  if (hline !== undefined) {
    parts.push(`<line class="truth" x1="${pad.left}" x2="${width - pad.right}" y1="${y(hline)}" y2="${y(hline)}" stroke="#cf222e" stroke-dasharray="4 3"/>`);
  }
  series.forEach((s, i) => {
    const points = s.points.map(([px, py]) => `${x(px)},${y(py)}`).join(" ");
    parts.push(`<polyline class="series" points="${points}" fill="none" stroke="${s.colour || COLOURS[i % COLOURS.length]}" stroke-width="2"/>`);
  });
  parts.push("</g>");
  svg.innerHTML = parts.join("");
}

// --- sign-in -------------------------------------------------------------------------------

function signInPage(message) {
  const main = document.getElementById("main");
  main.replaceChildren(el(`
    <section class="panel" style="max-width: 28rem; margin: 2rem auto;">
      <h1>Sign in</h1>
      <p class="muted">Use an API key of this pool (ask its admin; viewers can watch, submitters can also submit).</p>
      <form id="sign-in">
        <label>API key <input name="api_key" type="password" autocomplete="off" required></label>
        <div class="error" id="sign-in-error">${escapeHtml(message || "")}</div>
        <div class="actions"><button type="submit">Sign in</button></div>
      </form>
    </section>`));
  document.getElementById("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = new FormData(event.target).get("api_key");
    try {
      const session = await api("POST", "/api/v1/session", { api_key: key });
      state.csrf = session.csrf_token;
      sessionStorage.setItem("hydracompute-csrf", state.csrf);
      await start();
    } catch (error) {
      document.getElementById("sign-in-error").textContent = error.message;
    }
  });
}

function showWho() {
  const who = document.getElementById("who");
  if (!state.session) { who.textContent = ""; return; }
  const name = state.session.key_id || "anonymous";
  who.replaceChildren(el(`<span>${escapeHtml(name)} (${escapeHtml(state.session.role)})
    ${state.session.key_id ? '<a href="#" id="sign-out">sign out</a>' : ""}</span>`));
  const out = document.getElementById("sign-out");
  if (out) out.addEventListener("click", async (event) => {
    event.preventDefault();
    await api("DELETE", "/api/v1/session");
    sessionStorage.removeItem("hydracompute-csrf");
    state.session = null; state.csrf = null;
    if (state.stream) state.stream.close();
    signInPage();
    showWho();
  });
}

// --- overview ------------------------------------------------------------------------------

function jobRow(job) {
  const running = job.state === "running";
  return `<tr data-job="${escapeHtml(job.job_id)}">
    <td><a href="#/jobs/${encodeURIComponent(job.job_id)}">${escapeHtml(job.name || job.job_id)}</a></td>
    <td>${escapeHtml(job.kind)}</td>
    <td class="state-${escapeHtml(job.state)}">${escapeHtml(job.state)}${waitingNote(job, "div")}</td>
    <td><div class="bar" title="${(job.progress * 100).toFixed(1)}%"><span style="width:${(job.progress * 100).toFixed(2)}%"></span></div></td>
    <td class="num">${(job.progress * 100).toFixed(1)}%</td>
    <td class="num">${si(job.throughput)} ${escapeHtml(job.work_name)}/s</td>
    <td class="num">${duration(job.elapsed_s)}</td>
    <td class="num">${running ? (job.waiting_reason ? "waiting" : duration(job.eta_s)) : "–"}</td>
  </tr>`;
}

// Why a running job makes no progress (no online worker can run its kind), or nothing.
function waitingNote(job, tag) {
  if (job.state !== "running" || !job.waiting_reason) return "";
  return `<${tag} class="warning" data-waiting>Waiting: ${escapeHtml(job.waiting_reason)}</${tag}>`;
}

function workerRow(worker) {
  const speeds = Object.entries(worker.speeds).map(([name, unitsPerSecond]) => {
    const kind = state.kinds.find((k) => k.name === name);
    const work = kind ? unitsPerSecond * kind.work_per_unit : unitsPerSecond;
    return `${escapeHtml(name)} ${si(work)} ${escapeHtml(kind ? kind.work_name : "units")}/s`;
  }).join(", ");
  const status = worker.barred ? `barred: ${worker.barred}`
    : worker.online ? (worker.state === "paused" ? `paused: ${worker.state_reason}` : "running")
    : (worker.revoked ? "revoked" : "offline");
  const css = worker.barred ? "state-barred" : worker.online ? `state-${worker.state}` : "muted";
  return `<tr><td>${escapeHtml(worker.name)}</td><td class="num">${worker.cores}</td>
    <td class="${css}">${escapeHtml(status)}</td><td>${escapeHtml(worker.grid_zone || "–")}${worker.grid_gco2_per_kwh == null ? "" : ` <span class="muted">${worker.grid_gco2_per_kwh.toFixed(0)} g/kWh</span>`}</td><td>${speeds || "–"}</td>
    <td class="num">${worker.leases}</td><td class="num">${worker.chunks_done}</td>
    <td>${ago(worker.last_seen_s)}</td></tr>`;
}

function overviewPage() {
  const main = document.getElementById("main");
  main.replaceChildren(el(`<div>
    <h1>Pool</h1>
    <div class="cards" id="totals"></div>
    <section class="panel"><h2>Throughput</h2><div class="legend" id="legend"></div>
      <svg class="chart" id="throughput-chart" role="img" aria-label="throughput over time"></svg></section>
    <section class="panel"><h2>Jobs</h2><div class="scroll"><table id="jobs">
      <thead><tr><th>job</th><th>kind</th><th>state</th><th>progress</th><th class="num"></th>
      <th class="num">throughput</th><th class="num">elapsed</th><th class="num">ETA</th></tr></thead>
      <tbody></tbody></table></div></section>
    <section class="panel"><h2>Submitters</h2><div class="scroll"><table id="shares">
      <thead><tr><th>submitter</th><th class="num">weight</th><th class="num">share</th>
      <th class="num">recent usage</th><th class="num">of usage</th><th class="num">running jobs</th></tr></thead>
      <tbody></tbody></table></div>
      <p class="muted">Each submitter with running jobs is entitled to a share of the pool in
      proportion to its weight; usage is core-seconds granted to its jobs, decaying with a
      half-life of <span id="half-life"></span>.</p></section>
    <section class="panel"><h2>Workers</h2><div class="scroll"><table id="workers">
      <thead><tr><th>name</th><th class="num">cores</th><th>state</th><th>grid</th><th>speed per core</th>
      <th class="num">chunks in hand</th><th class="num">chunks done</th><th>last seen</th></tr></thead>
      <tbody></tbody></table></div><p class="muted" id="more-workers"></p></section>
    <section class="panel"><h2>Volunteers</h2><div class="scroll"><table id="leaderboard">
      <thead><tr><th>volunteer</th><th class="num">verified chunks</th><th class="num">credit</th>
      <th class="num">energy</th><th class="num">share</th></tr></thead>
      <tbody></tbody></table></div>
      <p class="muted">Credit is the work of accepted chunks, once per agreeing copy; energy is
      estimated from compute time.</p></section>
    <section class="panel"><h2>Grids</h2><div class="legend" id="grid-legend"></div>
      <svg class="chart" id="grid-chart" role="img" aria-label="carbon intensity of the zones, next 24 hours"></svg>
      <div class="scroll"><table id="grids">
      <thead><tr><th>zone</th><th class="num">gCO2/kWh now</th><th>source</th>
      <th class="num">workers online</th><th class="num">chunks</th><th>share of chunks</th>
      <th class="num">CO2</th></tr></thead>
      <tbody></tbody></table></div><p class="muted" id="grid-total"></p></section>
  </div>`));
  // The grids' panel sums the ledger by zone: read it now and then, like the leaderboard.
  const renderGrids = async () => {
    const grids = await api("GET", "/api/v1/carbon");
    const body = document.querySelector("#grids tbody");
    if (!body) return;
    const chunks = grids.zones.reduce((sum, z) => sum + Math.max(z.chunks, 0), 0);
    body.innerHTML = grids.zones.map((z) => {
      const share = chunks > 0 ? Math.max(z.chunks, 0) / chunks : 0;
      return `<tr><td>${escapeHtml(z.zone)}</td><td class="num">${z.gco2_per_kwh.toFixed(0)}</td>
        <td class="muted">${escapeHtml(z.origin)}</td><td class="num">${z.workers_online}</td>
        <td class="num">${z.chunks}</td>
        <td><span class="bar" style="width:${(share * 100).toFixed(1)}%"></span> ${(share * 100).toFixed(0)}%</td>
        <td class="num">${si(z.gco2)} g</td></tr>`;
    }).join("") || '<tr><td colspan="7" class="muted">No worker has given its grid zone (hydracompute worker --grid-zone).</td></tr>';
    const saved = grids.gco2_blind > 0 ? 1 - grids.gco2 / grids.gco2_blind : 0;
    document.getElementById("grid-total").textContent = grids.gco2 > 0
      ? `${si(grids.gco2)} g CO2 so far; ${si(grids.gco2_blind)} g had dispatch been carbon-blind (${(saved * 100).toFixed(0)}% saved). Source: ${grids.source}.`
      : `Source: ${grids.source}.`;
    const series = grids.zones.map((z, i) => ({ name: z.zone, colour: COLOURS[i % COLOURS.length],
      points: z.forecast.flatMap(([t, g], j) => {
        const next = j + 1 < z.forecast.length ? z.forecast[j + 1][0] : t + 900;
        return [[t, g], [next, g]]; // steps: each value holds until the next
      }) }));
    document.getElementById("grid-legend").innerHTML = series.map((s) =>
      `<span><span class="swatch" style="background:${s.colour}"></span>${escapeHtml(s.name)}</span>`).join("");
    chart(document.getElementById("grid-chart"), {
      series, xLabel: "time", yFormat: (v) => `${v.toFixed(0)} g/kWh`,
      xFormat: (v) => new Date(v * 1000).toLocaleTimeString(),
    });
  };
  // The leaderboard sums the whole ledger: read it now and then, not on every pool event.
  let leaderboardRead = 0;
  const renderLeaderboard = async () => {
    leaderboardRead = Date.now();
    const board = await api("GET", "/api/v1/leaderboard");
    const body = document.querySelector("#leaderboard tbody");
    if (!body) return;
    body.innerHTML = board.volunteers.map((v) => `<tr><td><a href="#/volunteers/${encodeURIComponent(v.key || "-")}">${escapeHtml(v.name)}</a></td>
      <td class="num">${v.chunks}</td><td class="num">${si(v.credit)}</td>
      <td class="num">${si(v.energy_kwh * 1000)} Wh</td>
      <td class="num">${(v.share * 100).toFixed(1)}%</td></tr>`).join("") ||
      '<tr><td colspan="5" class="muted">No credit yet: it is granted as chunks are accepted.</td></tr>';
  };
  const renderShares = async () => {
    const shares = await api("GET", "/api/v1/shares");
    const body = document.querySelector("#shares tbody");
    if (!body) return;
    document.getElementById("half-life").textContent = duration(shares.half_life_s);
    body.innerHTML = shares.owners.map((s) => `<tr><td>${escapeHtml(s.owner || "(no key)")}</td>
      <td class="num">${s.weight}</td><td class="num">${(s.share * 100).toFixed(1)}%</td>
      <td class="num">${si(s.usage_s)} core-s</td>
      <td class="num">${(s.usage_fraction * 100).toFixed(1)}%</td>
      <td class="num">${s.running_jobs}</td></tr>`).join("") ||
      '<tr><td colspan="6" class="muted">No submitter has running jobs.</td></tr>';
  };
  const renderJobs = () => {
    if (!document.getElementById("jobs")) return; // replaced by another page meanwhile
    const jobs = [...state.jobs.values()].sort((a, b) => b.created_s - a.created_s);
    document.querySelector("#jobs tbody").innerHTML = jobs.map(jobRow).join("") ||
      '<tr><td colspan="8" class="muted">No jobs yet: <a href="#/submit">submit one</a>.</td></tr>';
  };
  const renderPool = (pool) => {
    if (!document.getElementById("totals")) return;
    const throughput = Object.entries(pool.throughput)
      .map(([k, v]) => `<div class="card"><div class="value">${si(v)}</div><div class="label">${escapeHtml(pool.work_names[k] || k)}/s (${escapeHtml(k)})</div></div>`).join("");
    document.getElementById("totals").innerHTML = `
      <div class="card"><div class="value" id="workers-online">${pool.workers_online}</div><div class="label">workers online${pool.workers_paused ? `, ${pool.workers_paused} paused` : ""}</div></div>
      <div class="card"><div class="value">${pool.cores_online}</div><div class="label">cores</div></div>
      <div class="card"><div class="value">${pool.jobs_running}</div><div class="label">jobs running</div></div>${throughput}`;
    const kinds = [...new Set(pool.history.flatMap((p) => Object.keys(p.throughput)))];
    const series = kinds.map((kind, i) => {
      const peak = Math.max(1e-12, ...pool.history.map((p) => p.throughput[kind] || 0));
      return { name: kind, colour: COLOURS[i % COLOURS.length],
        points: pool.history.map((p) => [p.t, (p.throughput[kind] || 0) / peak * 100]), peak };
    });
    document.getElementById("legend").innerHTML = series.map((s) =>
      `<span><span class="swatch" style="background:${s.colour}"></span>${escapeHtml(s.name)} (100% = ${si(s.peak)} ${escapeHtml(pool.work_names[s.name] || "")}/s)</span>`).join("");
    chart(document.getElementById("throughput-chart"), {
      series, xLabel: "time", yFormat: (v) => `${v.toFixed(0)}%`,
      xFormat: (v) => new Date(v * 1000).toLocaleTimeString(),
    });
    document.querySelector("#workers tbody").innerHTML = pool.workers.map(workerRow).join("") ||
      '<tr><td colspan="8" class="muted">No workers yet: start one with "hydracompute worker".</td></tr>';
    const more = pool.workers_total - pool.workers.length;
    document.getElementById("more-workers").textContent = more > 0 ? `and ${more} more` : "";
    if (Date.now() - leaderboardRead > LEADERBOARD_EVERY_MS) {
      renderLeaderboard().catch(() => {});
      renderShares().catch(() => {});
      renderGrids().catch(() => {});
    }
  };
  let pending = false;
  const self = {
    async load() {
      const listed = await api("GET", "/api/v1/jobs?limit=200");
      for (const job of listed.jobs) state.jobs.set(job.job_id, job);
      renderJobs();
      const pool = await api("GET", "/api/v1/pool");
      if (state.page !== self) return; // superseded while loading: leave the stream alone
      renderPool(pool);
      openStream(null);
    },
    onPool: renderPool,
    onJob() {
      if (pending) return; // many updates in one flush: render once
      pending = true;
      requestAnimationFrame(() => { pending = false; renderJobs(); });
    },
  };
  return self;
}

// --- submit --------------------------------------------------------------------------------

function fieldInput(field) {
  const attrs = [`name="${escapeHtml(field.name)}"`];
  if (field.required) attrs.push("required");
  if (field.default !== null && field.default !== undefined) attrs.push(`value="${escapeHtml(field.default)}"`);
  let input;
  if (field.type === "blob") { // a file uploaded by its SHA-256 as the form is sent
    input = `<input type="file" name="${escapeHtml(field.name)}" ${field.required ? "required" : ""}>`;
  } else if (field.type === "json") {
    input = `<textarea name="${escapeHtml(field.name)}" rows="3">${escapeHtml(JSON.stringify(field.default ?? {}))}</textarea>`;
  } else if (field.type === "choice") {
    input = `<select ${attrs.join(" ")}>${field.choices.map((c) =>
      `<option ${c === field.default ? "selected" : ""}>${escapeHtml(c)}</option>`).join("")}</select>`;
  } else {
    const kind = field.type === "string" ? "text" : "number";
    const step = field.type === "integer" ? "1" : "any";
    if (field.minimum !== null) attrs.push(`min="${field.minimum}"`);
    if (field.maximum !== null) attrs.push(`max="${field.maximum}"`);
    input = `<input type="${kind}" step="${step}" ${attrs.join(" ")}>`;
  }
  return `<label>${escapeHtml(field.label)}${field.required ? " *" : ""} ${input}
    <span class="muted">${escapeHtml(field.help)}</span>
    <span class="error" data-error-for="${escapeHtml(field.name)}"></span></label>`;
}

async function uploadBlob(file) {
  // Content-addressed: the pool stores it under its SHA-256, and only if the bytes match.
  if (!crypto.subtle) throw new Error("uploading needs the dashboard over HTTPS (or localhost)");
  const bytes = await file.arrayBuffer();
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  const headers = { "Content-Type": "application/octet-stream" };
  if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(`/api/v1/blobs/${hex}`, {
    method: "PUT", headers, credentials: "same-origin", body: bytes,
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(`${file.name}: ${problem.detail || response.statusText}`);
  }
  return hex;
}

function submitPage() {
  const main = document.getElementById("main");
  const options = state.kinds.map((k) => `<option>${escapeHtml(k.name)}</option>`).join("");
  main.replaceChildren(el(`<div><h1>Submit a job</h1><section class="panel">
    <label style="max-width: 20rem">Kind <select id="kind">${options}</select></label>
    <form id="submit-form" novalidate>
      <div class="grid" id="fields" style="display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.8rem;margin-top:.8rem"></div>
      <label style="margin-top:.8rem">Name <input name="__name" placeholder="optional"></label>
      <label style="margin-top:.8rem;max-width:20rem">Required labels <input name="__labels" placeholder="e.g. trusted">
        <span class="muted">Only workers the admin gave all these labels (comma-separated) get its chunks.</span>
        <span class="error" data-error-for="required_labels"></span></label>
      <label style="margin-top:.8rem;max-width:20rem">Verification <select name="__verify">
        <option value="">the pool's default</option><option value="none">none</option>
        <option value="adaptive">adaptive (trusted workers checked now and then)</option>
        <option value="2">2 copies, both agree</option><option value="3">3 copies, 2 agree</option>
        <option value="5">5 copies, 3 agree</option></select>
        <span class="muted">Copies of each chunk come from different volunteers.</span></label>
      <label style="margin-top:.8rem;max-width:20rem">Priority <input name="__priority" type="number" min="-100" max="100" step="1" placeholder="0">
        <span class="muted">Among your own running jobs, higher runs first.</span>
        <span class="error" data-error-for="priority"></span></label>
      <div class="error" id="form-error"></div>
      <div class="actions"><button type="submit">Submit</button></div>
    </form></section></div>`));
  const kindSelect = document.getElementById("kind");
  const renderFields = () => {
    const kind = state.kinds.find((k) => k.name === kindSelect.value);
    document.getElementById("fields").innerHTML = kind.fields.length
      ? kind.fields.map(fieldInput).join("")
      : `<label>Parameters (JSON) <textarea name="__json" rows="6">{}</textarea>
         <span class="error" data-error-for="__json"></span></label>`;
  };
  kindSelect.addEventListener("change", renderFields);
  renderFields();
  document.getElementById("submit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    for (const span of form.querySelectorAll("[data-error-for]")) span.textContent = "";
    document.getElementById("form-error").textContent = "";
    const kind = state.kinds.find((k) => k.name === kindSelect.value);
    let params = {};
    try {
      if (kind.fields.length) {
        for (const field of kind.fields) {
          if (field.type === "blob") continue; // uploaded below
          const raw = form.elements[field.name].value.trim();
          if (raw === "") continue;
          if (field.type === "json") params[field.name] = JSON.parse(raw);
          else params[field.name] = field.type === "integer" || field.type === "number" ? Number(raw) : raw;
        }
      } else {
        params = JSON.parse(form.elements.__json.value || "{}");
      }
    } catch (error) {
      form.querySelector('[data-error-for="__json"]').textContent = error.message;
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      for (const field of kind.fields.filter((f) => f.type === "blob")) {
        const file = form.elements[field.name].files[0];
        if (file) params[field.name] = await uploadBlob(file);
      }
      const body = { kind: kind.name, params, name: form.elements.__name.value };
      const labels = form.elements.__labels.value.split(",").map((l) => l.trim()).filter(Boolean);
      if (labels.length) body.required_labels = labels;
      const verify = form.elements.__verify.value;
      if (verify === "none" || verify === "adaptive") body.adaptive = verify === "adaptive";
      else if (verify) body.replication = Number(verify);
      const priority = form.elements.__priority.value.trim();
      if (priority !== "") body.priority = Number(priority);
      const job = await api("POST", "/api/v1/jobs", body);
      state.jobs.set(job.job_id, job);
      location.hash = `#/jobs/${job.job_id}`;
    } catch (error) {
      const errors = (error.problem && error.problem.errors) || {};
      let placed = false;
      for (const [name, message] of Object.entries(errors)) {
        const key = name.replace(/^body\.params\./, "").replace(/^body\./, "");
        const span = form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
        if (span) { span.textContent = message; placed = true; }
      }
      if (!placed) document.getElementById("form-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
  return { async load() { openStream(null); } };
}

// --- a job ---------------------------------------------------------------------------------

function certainDigits(estimate, stderr) {
  const text = estimate.toFixed(12);
  const low = (estimate - 3 * stderr).toFixed(12);
  const high = (estimate + 3 * stderr).toFixed(12);
  let n = 0;
  while (n < text.length && low[n] === high[n]) n += 1;
  return `<span class="certain">${text.slice(0, n)}</span><span class="uncertain">${text.slice(n)}</span>`;
}

function piPanel(job) {
  const points = [];
  const panel = el(`<section class="panel"><h2>Estimate of π</h2>
    <div class="digits" id="digits">–</div>
    <p class="muted" id="pi-summary"></p>
    <div class="legend"><span><span class="swatch" style="background:#1f6feb"></span>estimate</span>
      <span><span class="swatch" style="background:#1f6feb;opacity:.25"></span>±3σ</span>
      <span><span class="swatch" style="background:#cf222e"></span>π</span></div>
    <svg class="chart" id="pi-chart" role="img" aria-label="estimate of pi against samples"></svg></section>`);
  const draw = () => {
    if (!points.length) return;
    const last = points[points.length - 1];
    panel.querySelector("#digits").innerHTML = certainDigits(last.estimate, last.stderr);
    panel.querySelector("#pi-summary").textContent =
      `${si(last.samples)} samples: ${last.estimate.toFixed(10)} ± ${last.stderr.toExponential(2)} (σ); ` +
      `bold digits lie within ±3σ. True error ${(last.estimate - Math.PI).toExponential(2)}.`;
    const shown = points.filter((p) => p.stderr > 0);
    // Frame the later part of the run: the first chunks' bands would flatten everything.
    const settled = shown.filter((p) => p.samples >= last.samples / 20);
    const reach = Math.max(1e-9, ...settled.map((p) => Math.abs(p.estimate - Math.PI) + 3 * p.stderr));
    chart(panel.querySelector("#pi-chart"), {
      yDomain: [Math.PI - 1.1 * reach, Math.PI + 1.1 * reach],
      series: [{ points: shown.map((p) => [p.samples, p.estimate]) }],
      band: shown.map((p) => [p.samples, p.estimate - 3 * p.stderr, p.estimate + 3 * p.stderr]),
      hline: Math.PI, xLabel: "samples", xFormat: (v) => si(v), yFormat: (v) => v.toFixed(6),
    });
  };
  const add = (live) => {
    if (!live || !live.samples) return;
    if (points.length && points[points.length - 1].samples >= live.samples) return;
    points.push(live);
    draw();
  };
  return {
    element: panel,
    async load(jobId) {
      const history = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}/history`);
      history.points.forEach(add);
    },
    onJob(updated) { add(updated.live); },
  };
}

function mandelbrotPanel(job) {
  const p = job.params;
  const panel = el(`<section class="panel"><h2>Picture</h2>
    <p class="muted">Drag a rectangle to render that region (click to zoom in ×2 there).</p>
    <div class="canvas-box"><canvas id="picture" width="${p.width}" height="${p.height}"></canvas><div id="selection"></div></div>
    <div class="error" id="zoom-error"></div></section>`);
  const canvas = panel.querySelector("canvas");
  const context = canvas.getContext("2d");
  const drawn = new Set();
  const queue = [];
  let active = 0;
  const pump = () => {
    while (active < 6 && queue.length) {
      const index = queue.shift();
      active += 1;
      fetch(`/api/v1/jobs/${encodeURIComponent(job.job_id)}/chunks/${index}/preview`, { credentials: "same-origin" })
        .then(async (response) => {
          if (!response.ok) throw new Error(`preview ${index}: ${response.status}`);
          const picture = await response.json();
          const png = Uint8Array.from(atob(picture.png), (c) => c.charCodeAt(0));
          const bitmap = await createImageBitmap(new Blob([png], { type: "image/png" }));
          // The chunk's tiles lie side by side in the PNG; each piece goes to its place.
          for (const [x, y, width, height, atX, atY] of picture.pieces) {
            context.drawImage(bitmap, x, y, width, height, atX, atY, width, height);
          }
          bitmap.close();
        })
        .catch(() => drawn.delete(index))
        .finally(() => { active -= 1; pump(); markComplete(); });
    }
  };
  const want = (indices) => {
    for (const index of indices) {
      if (drawn.has(index)) continue;
      drawn.add(index);
      queue.push(index);
    }
    pump();
  };
  let finishedChunks = null;
  const markComplete = () => {
    const current = state.jobs.get(job.job_id) || job;
    if (current.state === "done" && active === 0 && queue.length === 0 && finishedChunks !== null &&
        finishedChunks.every((i) => drawn.has(i))) {
      canvas.dataset.complete = "true";
    }
  };
  const reload = async () => {
    finishedChunks = (await api("GET", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/chunks`)).finished;
    want(finishedChunks);
    markComplete();
  };
  // Drag to zoom: pixel boundaries map to the plane as in the kind's pixel convention.
  const selection = panel.querySelector("#selection");
  let origin = null;
  const toPixels = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
      (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("mousedown", (event) => { origin = toPixels(event); event.preventDefault(); });
  canvas.addEventListener("mousemove", (event) => {
    if (!origin) return;
    const [x, y] = toPixels(event);
    const box = canvas.getBoundingClientRect();
    const sx = box.width / canvas.width, sy = box.height / canvas.height;
    Object.assign(selection.style, {
      display: "block", left: `${Math.min(x, origin[0]) * sx}px`, top: `${Math.min(y, origin[1]) * sy}px`,
      width: `${Math.abs(x - origin[0]) * sx}px`, height: `${Math.abs(y - origin[1]) * sy}px`,
    });
  });
  window.addEventListener("mouseup", async (event) => {
    if (!origin) return;
    const start = origin;
    origin = null;
    selection.style.display = "none";
    const end = toPixels(event);
    const dx = (p.x_max - p.x_min) / p.width, dy = (p.y_max - p.y_min) / p.height;
    let [left, right] = [Math.min(start[0], end[0]), Math.max(start[0], end[0])];
    let [top, bottom] = [Math.min(start[1], end[1]), Math.max(start[1], end[1])];
    if (right - left < 3 && bottom - top < 3) { // a click: half the span, centred there
      [left, right] = [end[0] - p.width / 4, end[0] + p.width / 4];
      [top, bottom] = [end[1] - p.height / 4, end[1] + p.height / 4];
    } else { // keep the picture's aspect ratio: grow the shorter side about the centre
      const grow = (bottom - top) * p.width / p.height - (right - left);
      if (grow > 0) { left -= grow / 2; right += grow / 2; }
      else { top += grow * p.height / p.width / 2; bottom -= grow * p.height / p.width / 2; }
    }
    const params = {
      width: p.width, height: p.height, max_iter: p.max_iter, colour_map: p.colour_map,
      x_min: p.x_min + left * dx, x_max: p.x_min + right * dx,
      y_min: p.y_max - bottom * dy, y_max: p.y_max - top * dy,
    };
    try {
      const created = await api("POST", "/api/v1/jobs", { kind: "mandelbrot", params, name: `zoom of ${job.name || job.job_id}` });
      state.jobs.set(created.job_id, created);
      location.hash = `#/jobs/${created.job_id}`;
    } catch (error) {
      panel.querySelector("#zoom-error").textContent = error.message;
    }
  });
  return {
    element: panel,
    async load() {
      if (job.state === "done" && job.artefacts.length) {
        // A finished job: the whole picture at once.
        const image = await createImageBitmap(await api("GET", `/api/v1/jobs/${encodeURIComponent(job.job_id)}/artefacts/image.png`));
        context.drawImage(image, 0, 0);
        finishedChunks = [];
        canvas.dataset.source = "final";
        canvas.dataset.complete = "true";
        return;
      }
      canvas.dataset.source = "chunks";
      await reload();
    },
    onChunks(chunks) { want(chunks.filter((c) => c.job_id === job.job_id).map((c) => c.index)); },
    onReload: reload,
    onJob(updated) {
      if (updated.state === "done") reload();
    },
  };
}

function jobPage(jobId) {
  const main = document.getElementById("main");
  let job = null;
  let panel = null;
  let headerDrawn = false; // by load(): job updates before that have nowhere to go
  const renderHeader = () => {
    const running = job.state === "running";
    document.getElementById("job-header").innerHTML = `
      <div class="cards">
        <div class="card"><div class="value state-${escapeHtml(job.state)}" id="job-state">${escapeHtml(job.state)}</div><div class="label">${escapeHtml(job.kind)}</div></div>
        <div class="card"><div class="value" id="job-progress">${(job.progress * 100).toFixed(1)}%</div><div class="label">${job.units_done} of ${job.total_units} ${escapeHtml(job.unit_name)}s</div></div>
        <div class="card"><div class="value">${si(job.throughput)}</div><div class="label">${escapeHtml(job.work_name)}/s</div></div>
        <div class="card"><div class="value">${duration(job.elapsed_s)}</div><div class="label">elapsed${running && !job.waiting_reason ? `, ETA ${duration(job.eta_s)}` : ""}</div></div>
      </div>
      <div class="bar big" style="margin-top:.7rem"><span style="width:${(job.progress * 100).toFixed(2)}%"></span></div>
      ${waitingNote(job, "p")}
      ${job.error ? `<p class="error">${escapeHtml(job.error)}</p>` : ""}
      ${job.state === "done" && job.answer ? `<p class="muted">Answer: <code>${escapeHtml(JSON.stringify(job.answer))}</code></p>` : ""}
      <div class="actions">${running && state.session.role !== "viewer" ? '<button class="secondary" id="cancel">Cancel</button>' : ""}
        ${job.artefacts.map((a) => `<a href="${escapeHtml(a)}">${escapeHtml(a.split("/").pop())}</a>`).join(" ")}</div>`;
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.addEventListener("click", async () => {
      await api("POST", `/api/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
    });
  };
  const self = {
    async load() {
      job = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
      state.jobs.set(job.job_id, job);
      if (state.page !== self) return;
      main.replaceChildren(el(`<div><h1>${escapeHtml(job.name || job.job_id)}</h1><div id="job-header"></div></div>`));
      renderHeader();
      headerDrawn = true;
      panel = job.kind === "pi" ? piPanel(job) : job.kind === "mandelbrot" ? mandelbrotPanel(job) : null;
      if (panel) main.firstElementChild.appendChild(panel.element);
      openStream(jobId); // first, so no chunk finishing during the load is missed
      if (panel) await panel.load(jobId);
    },
    onJob(updated) {
      // Before load() has drawn the page (the previous page's stream may still be open),
      // there is nothing to update: load() reads the job, and this page's own stream then
      // starts with its current view.
      if (updated.job_id !== jobId || !headerDrawn) return;
      job = updated;
      renderHeader();
      if (panel && panel.onJob) panel.onJob(updated);
    },
    onChunks(chunks) { if (panel && panel.onChunks) panel.onChunks(chunks); },
    onReload() { if (panel && panel.onReload) panel.onReload(); },
  };
  return self;
}

// --- a volunteer -----------------------------------------------------------------------------

// One volunteer (join token): its credit, energy and share of the pool, its workers and its
// latest ledger entries. The figures sum the whole ledger: read when the page opens, and
// again at most every LEADERBOARD_EVERY_MS as the pool changes.
function volunteerPage(key) {
  let read = 0;
  const render = async () => {
    read = Date.now();
    const v = await api("GET", `/api/v1/volunteers/${encodeURIComponent(key)}?entries=50`);
    if (state.page !== self) return;
    const workers = v.workers.map((w) => `<tr><td>${escapeHtml(w.name)}</td>
      <td class="num">${w.cores}</td>
      <td class="${w.barred ? "state-barred" : w.online ? "" : "muted"}">${escapeHtml(w.barred ? `barred: ${w.barred}` : w.online ? "online" : "offline")}</td>
      <td class="num">${w.chunks}</td><td class="num">${si(w.credit)}</td>
      <td class="num">${si(w.energy_kwh * 1000)} Wh</td>
      <td class="num">${w.watts_per_core === null ? "pool's" : `${si(w.watts_per_core)} W`}</td></tr>`).join("") ||
      '<tr><td colspan="7" class="muted">No workers enrolled with this join token.</td></tr>';
    const entries = v.entries.map((e) => `<tr class="entry-${escapeHtml(e.kind)}">
      <td>${new Date(e.time_s * 1000).toLocaleString()}</td><td>${escapeHtml(e.kind)}</td>
      <td>${escapeHtml(e.worker_name || e.worker_id)}</td>
      <td><a href="#/jobs/${encodeURIComponent(e.job_id)}">${escapeHtml(e.job_id)}</a></td>
      <td class="num">${e.chunk_index}</td><td class="num">${si(e.credit)}</td>
      <td class="num">${si(e.energy_j / 3600)} Wh</td></tr>`).join("") ||
      '<tr><td colspan="7" class="muted">No credit yet: it is granted as chunks are accepted.</td></tr>';
    document.getElementById("main").replaceChildren(el(`<div>
      <p><a href="#/">← pool</a></p>
      <h1 id="volunteer-name">${escapeHtml(v.name)}</h1>
      <div class="cards" id="volunteer-totals">
        <div class="card"><div class="value" id="volunteer-chunks">${v.chunks}</div><div class="label">verified chunks</div></div>
        <div class="card"><div class="value" id="volunteer-credit">${si(v.credit)}</div><div class="label">credit</div></div>
        <div class="card"><div class="value" id="volunteer-energy">${si(v.energy_kwh * 1000)} Wh</div><div class="label">energy (estimated)</div></div>
        <div class="card"><div class="value" id="volunteer-share">${(v.share * 100).toFixed(1)}%</div><div class="label">share of the pool's credit</div></div>
      </div>
      <section class="panel"><h2>Workers</h2><div class="scroll"><table id="volunteer-workers">
        <thead><tr><th>name</th><th class="num">cores</th><th>state</th><th class="num">verified chunks</th>
        <th class="num">credit</th><th class="num">energy</th><th class="num">power per core</th></tr></thead>
        <tbody>${workers}</tbody></table></div></section>
      <section class="panel"><h2>Latest ledger entries</h2><div class="scroll"><table id="volunteer-entries">
        <thead><tr><th>time</th><th>entry</th><th>worker</th><th>job</th><th class="num">chunk</th>
        <th class="num">credit</th><th class="num">energy</th></tr></thead>
        <tbody>${entries}</tbody></table></div>
        <p class="muted">A correction withdraws the credit of outputs accepted unverified from a
        worker later found lying; entries are never edited.</p></section>
    </div>`));
  };
  const self = {
    async load() {
      await render();
      openStream(null);
    },
    onPool() {
      if (Date.now() - read > LEADERBOARD_EVERY_MS) render().catch(() => {});
    },
  };
  return self;
}

// --- routing -------------------------------------------------------------------------------

async function route() {
  if (!state.session) return;
  const hash = location.hash || "#/";
  const match = hash.match(/^#\/jobs\/([^/]+)$/);
  const volunteer = hash.match(/^#\/volunteers\/([^/]+)$/);
  const page = match ? jobPage(decodeURIComponent(match[1]))
    : volunteer ? volunteerPage(decodeURIComponent(volunteer[1]))
    : hash === "#/submit" ? submitPage() : overviewPage();
  state.page = page;
  try {
    await page.load();
  } catch (error) {
    if (state.page !== page) return; // the user has moved on: this page's DOM is gone
    if (error.status === 401) { signInPage("Your session ended; sign in again."); return; }
    document.getElementById("main").replaceChildren(el(`<p class="error">${escapeHtml(error.message)}</p>`));
  }
}

async function start() {
  try {
    state.session = await api("GET", "/api/v1/session");
  } catch (error) {
    state.session = null;
    showWho();
    signInPage(error.message);
    return;
  }
  if (!state.session.signed_in) {
    state.session = null;
    showWho();
    signInPage("");
    return;
  }
  if (state.session.csrf_token) { // e.g. a new tab of a signed-in browser
    state.csrf = state.session.csrf_token;
    sessionStorage.setItem("hydracompute-csrf", state.csrf);
  }
  showWho();
  state.kinds = (await api("GET", "/api/v1/kinds")).kinds;
  await route();
}

window.addEventListener("hashchange", route);
start();
