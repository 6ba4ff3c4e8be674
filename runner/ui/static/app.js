// lorarun ui: the jobs list and a job's page, refreshed every second from the server's JSON.
// Every value a job supplies (names, messages, events, file names) reaches the page through textContent or
// setAttribute on a fixed attribute name, never through innerHTML: a job named <script> shows as text.
"use strict";

const TOKEN = document.querySelector('meta[name="lorarun-token"]').getAttribute("content");
const POLL_MS = 1000;
const CHECKPOINTS_SHOWN = 12; // the newest ones with their samples; every file stays in "Files home"
const SVG = "http://www.w3.org/2000/svg";
let timer = null;
let rendered = { route: null, key: null };
// A redraw under the pointer would swallow a click (the button pressed is replaced before it is released), and one
// behind the confirmation dialog is pointless: both wait for the next round.
let pointerDown = false;
document.addEventListener("pointerdown", () => { pointerDown = true; }, true);
document.addEventListener("pointerup", () => setTimeout(() => { pointerDown = false; }, 0), true);
function mayRedraw() { return !pointerDown && !document.getElementById("confirm").open; }

// The token is in the address once (as Jupyter prints it); the cookie carries it from here on, so it is taken out of
// the address bar and the history.
if (location.search.includes("token=")) {
  history.replaceState(null, "", location.pathname + location.hash);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function money(x) { return typeof x === "number" ? "$" + x.toFixed(x < 1 ? 3 : 2) : "–"; }
function num(x, digits) { return typeof x === "number" ? x.toFixed(digits) : "–"; }
function clock(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : ""; }
function when(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : ""; }
function duration(s) {
  if (typeof s !== "number") return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}
function bytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function fileUrl(jobId, rel) {
  return "/files/" + encodeURIComponent(jobId) + "/" + rel.split("/").map(encodeURIComponent).join("/");
}
function steps(job) {
  if (typeof job.step !== "number") return "–";
  return job.total_steps ? `${job.step} / ${job.total_steps}` : String(job.step);
}
function phaseBadge(phase) { return el("span", { class: "phase " + phase }, phase); }

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {}));
  const data = await response.json().catch(() => ({}));
  if (!response.ok && !(options && options.method === "POST")) throw new Error(data.error || response.statusText);
  return data;
}

function toast(text) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function confirmThen(text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  const yes = document.getElementById("confirm-yes"), no = document.getElementById("confirm-no");
  const close = () => { yes.onclick = null; no.onclick = null; dialog.close(); };
  yes.onclick = () => { close(); action(); };
  no.onclick = close;
  dialog.showModal();
}

async function act(jobId, action, body) {
  const data = await api(`/api/jobs/${encodeURIComponent(jobId)}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Lorarun-Token": TOKEN },
    body: JSON.stringify(body || {}),
  });
  toast(data.message || (data.ok ? "started" : "refused"));
  refresh();
}

// ---- the jobs list ---------------------------------------------------------------------------------------------
function renderList(data) {
  const view = document.getElementById("view");
  const jobs = data.jobs;
  const attention = jobs.filter((j) => j.instance.attention).length;
  const parts = [el("h1", {}, "Jobs")];
  if (attention) {
    parts.push(el("p", { class: "bad", id: "attention" },
      `${attention} instance(s) not confirmed destroyed: they may still bill. Open the job to stop it.`));
  }
  if (!jobs.length) {
    parts.push(el("div", { class: "empty" }, "No jobs yet. `lorarun submit job.yaml` starts one; it shows here at once."));
  } else {
    const rows = jobs.map((j) => el("tr", { "data-job-id": j.id, class: j.instance.attention ? "attention" : "" },
      el("td", {}, el("a", { href: "#/job/" + encodeURIComponent(j.id), class: "job-name" }, j.name),
        el("div", { class: "muted mono" }, j.id)),
      el("td", {}, j.provider),
      el("td", {}, j.gpu || "–"),
      el("td", {}, phaseBadge(j.phase)),
      el("td", { class: "step mono" }, steps(j)),
      el("td", { class: "cost mono" }, `${money(j.cost.spent)} / ${money(j.cost.predicted)}`),
      el("td", { class: "instance" }, j.instance.text),
      el("td", { class: "muted" }, when(j.created_at))));
    parts.push(el("table", { id: "jobs" },
      el("thead", {}, el("tr", {}, ["job", "provider", "GPU", "phase", "step", "$ spent / predicted", "instance", "started"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
  }
  view.replaceChildren(...parts);
}

// ---- a job's page ----------------------------------------------------------------------------------------------
function lossChart(points) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 640 220");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("id", "loss-chart");
  if (points.length < 2) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", "20"); text.setAttribute("y", "110"); text.setAttribute("fill", "#6b7385");
    text.textContent = "the loss curve starts with the first steps";
    svg.append(text);
    return svg;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => 40 + ((x - x0) / (x1 - x0 || 1)) * 590, sy = (y) => 200 - ((y - y0) / (y1 - y0 || 1)) * 185;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#3b6fd8"); line.setAttribute("stroke-width", "1.5");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  for (const [y, label] of [[15, y1], [200, y0]]) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", "2"); text.setAttribute("y", String(y + 4)); text.setAttribute("font-size", "11");
    text.setAttribute("fill", "#6b7385");
    text.textContent = label.toFixed(3);
    svg.append(text);
  }
  return svg;
}

function progressBar(pct) {
  const inner = el("div", {});
  inner.style.width = `${pct}%`; // CSSOM, not a style attribute: the page's CSP allows no inline styles
  return el("div", { class: "bar" }, inner);
}

function estimateVsActual(job) {
  const c = job.cost;
  const rows = [
    ["predicted before renting", money(c.predicted)],
    [job.final ? "actual (billed time × price)" : "spent so far", money(c.actual ?? c.spent)],
  ];
  if (typeof c.difference_fraction === "number") {
    rows.push(["against the estimate", `${c.difference_fraction >= 0 ? "+" : ""}${Math.round(c.difference_fraction * 100)}%`]);
  } else if (typeof c.projected === "number") {
    rows.push(["projected at this pace", money(c.projected)]);
  }
  if (typeof c.seconds_per_step === "number") rows.push(["seconds per step (measured)", c.seconds_per_step.toFixed(3)]);
  for (const [name, seconds] of Object.entries(c.timings || {})) rows.push([name.replace(/_/g, " "), duration(seconds)]);
  return el("div", {}, el("h2", {}, "Estimate vs actual"),
    el("table", { id: "estimate" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "mono" }, v))))));
}

function card(label, value, id, extra) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value", id }, value), extra || null);
}

function image(jobId, entry, cls) {
  if (!entry.home) return el("div", { class: "muted" }, `${entry.path} (not home yet)`);
  return el("a", { href: fileUrl(jobId, entry.path), target: "_blank", rel: "noopener" },
    el("img", { src: fileUrl(jobId, entry.path), alt: entry.path, title: entry.path, class: cls, loading: "lazy" }));
}

function eventLine(e) {
  const details = Object.entries(e).filter(([k]) => k !== "t" && k !== "event")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  return `${clock(e.t)} ${String(e.event).padEnd(11)} ${details}`;
}

function renderJob(job) {
  const view = document.getElementById("view");
  const live = !job.final || job.instance.state === "unconfirmed" || job.instance.state === "kept";
  const running = (job.actions || []).some((a) => a.running);
  const pct = job.total_steps ? Math.min(100, (100 * (job.step || 0)) / job.total_steps) : 0;
  const stop = el("button", { id: "stop-button", class: "danger", disabled: !live || running, onclick: () =>
    confirmThen(`Stop ${job.name}? The engine saves a checkpoint, the outputs come home, then the instance is destroyed (as \`lorarun down\`).`,
      () => act(job.id, "stop")) }, "Stop");
  const pull = el("button", { id: "pull-button", disabled: !job.instance.id || job.instance.state === "destroyed" || running, onclick: () =>
    confirmThen(`Bring home what ${job.name}'s instance has made so far, without attaching (as \`lorarun pull\`)? The instance keeps running.`,
      () => act(job.id, "pull")) }, "Pull outputs now");
  const report = job.report
    ? el("a", { class: "button", id: "report-link", href: fileUrl(job.id, job.report), target: "_blank", rel: "noopener" }, "Open the report")
    : el("button", { disabled: true, title: "written when the job ends" }, "Report (when the job ends)");

  const latest = job.checkpoints.find((c) => c.samples.some((s) => s.home));
  const chosen = job.chosen && job.chosen.path;
  const shown = job.checkpoints.slice(0, CHECKPOINTS_SHOWN);
  const checkpoints = shown.map((c) => el("div", { class: "checkpoint" + (chosen && chosen === c.path ? " chosen" : ""), "data-step": c.step },
    el("div", { class: "head" },
      el("div", {}, el("strong", {}, c.epoch ? `epoch ${c.epoch}` : `step ${c.step}`), " ",
        el("span", { class: "muted mono" }, c.path || "(samples only)"), " ",
        c.path ? el("span", { class: c.home ? "good" : "muted" }, c.home ? "home" : "not home yet") : null,
        chosen && chosen === c.path ? el("span", { class: "good" }, " · your pick") : null),
      c.path && c.home && live ? el("button", { class: "keep-button", onclick: () =>
        confirmThen(`Stop ${job.name} now and keep ${c.path} as your LoRA? Training stops, the outputs come home, the instance is destroyed.`,
          () => act(job.id, "keep", { checkpoint: c.path })) }, "Stop here, keep this one") : null),
    el("div", { class: "samples" }, c.samples.map((s) => image(job.id, s, "sample")))));

  const parts = [
    el("p", {}, el("a", { href: "#/" }, "← all jobs")),
    el("h1", { id: "job-name" }, job.name),
    el("div", { class: "muted mono" }, `${job.id} · ${job.provider} · ${job.gpu || "no GPU yet"} · `, phaseBadge(job.phase)),
    el("p", { id: "instance-state", class: job.instance.attention ? "bad" : job.instance.state === "destroyed" ? "good" : "", "data-state": job.instance.state }, job.instance.text),
    job.message ? el("p", { id: "job-message" }, job.message) : null,
    job.controller ? el("p", { class: "muted" }, `driven by ${job.controller}`) : null,
    job.chosen ? el("p", { class: "good", id: "chosen" }, `your pick: ${job.chosen.path}, kept as ${job.chosen.copied_to} (sha256 ${String(job.chosen.sha256).slice(0, 12)}…)`) : null,
    el("div", { class: "actions" }, stop, pull, report),
    el("div", { class: "cards" },
      card("step", steps(job), "step", progressBar(pct)),
      card("loss", num(job.loss, 4), "loss"),
      card("speed · ETA", `${num(job.it_s, 2)} it/s · ${duration(job.eta_s)}`, "speed"),
      card("$ spent / predicted", `${money(job.cost.spent)} / ${money(job.cost.predicted)}`, "cost",
        el("div", { class: "muted" }, `${money(job.cost.price_per_hour)}/h` + (job.cost.projected ? ` · ${money(job.cost.projected)} at this pace` : "") +
          (typeof job.cost.actual === "number" ? ` · actual ${money(job.cost.actual)}` : "")))),
    Object.keys(job.phases).length ? el("p", { class: "muted" }, Object.entries(job.phases).map(([p, v]) => `${p} ${v[0]}${v[1] ? "/" + v[1] : ""} ${v[2]}`).join(" · ")) : null,
    job.outcome ? el("p", { class: job.outcome === "failed" ? "bad" : "" }, `engine: ${job.outcome}${job.reason ? " — " + job.reason : ""}`) : null,
    el("h2", {}, "Loss"),
    el("div", { class: "chart" }, lossChart(job.loss_curve)),
    el("div", { class: "two" },
      el("div", {}, el("h2", {}, "Latest samples"),
        latest ? el("div", { class: "samples", id: "latest-samples" }, latest.samples.map((s) => image(job.id, s, "sample")))
          : el("div", { class: "empty" }, "samples appear when a checkpoint's samples are home (sample.every_n_epochs)")),
      el("div", {}, el("h2", {}, "Strength × seed grid"),
        job.grid ? el("div", { class: "grid", id: "grid" }, image(job.id, job.grid, "grid-image"))
          : el("div", { class: "empty" }, "the grid is drawn when training ends"))),
    estimateVsActual(job),
    el("h2", {}, `Checkpoints (${job.checkpoints.length})`),
    job.checkpoints.length ? el("div", { id: "checkpoints" }, checkpoints) : el("div", { class: "empty" }, "none yet"),
    job.checkpoints.length > shown.length ? el("p", { class: "muted" }, `${job.checkpoints.length - shown.length} older checkpoint(s): see "Files home"`) : null,
    el("div", { class: "two" },
      el("div", {}, el("h2", {}, `Events (latest ${job.events.length} of ${job.events_total})`),
        el("pre", { id: "events" }, job.events.slice().reverse().map(eventLine).join("\n"))),
      el("div", {}, el("h2", {}, `Files home (${job.files.length})`),
        el("table", { id: "files" }, el("tbody", {}, job.files.map((f) => el("tr", {},
          el("td", { class: "mono" }, el("a", { href: fileUrl(job.id, f.path), target: "_blank", rel: "noopener" }, f.path)),
          el("td", { class: "muted" }, bytes(f.size)))))),
        el("p", { class: "muted mono" }, `output ${job.output_dir}`, el("br"), `job file ${job.job_file}`))),
    (job.actions || []).length || job.actions_log ? el("h2", {}, "Actions from this page") : null,
    (job.actions || []).length || job.actions_log ? el("pre", { id: "actions-log" }, job.actions_log || "") : null,
  ];
  const scroll = window.scrollY;
  view.replaceChildren(...parts.filter(Boolean));
  window.scrollTo(0, scroll);
}

// ---- routing and refresh ---------------------------------------------------------------------------------------
function route() {
  const m = location.hash.match(/^#\/job\/(.+)$/);
  return m ? { page: "job", id: decodeURIComponent(m[1]) } : { page: "list" };
}

async function refresh() {
  clearTimeout(timer);
  const r = route();
  const status = document.getElementById("connection");
  try {
    if (r.page === "job") {
      const job = await api(`/api/jobs/${encodeURIComponent(r.id)}`);
      const key = JSON.stringify(job);
      if (key !== rendered.key && mayRedraw()) { renderJob(job); rendered.key = key; }
    } else {
      const data = await api("/api/jobs");
      const key = JSON.stringify(data);
      if (key !== rendered.key && mayRedraw()) { renderList(data); rendered.key = key; }
    }
    status.textContent = "live · " + new Date().toLocaleTimeString();
    status.className = "muted";
  } catch (err) {
    status.textContent = "not reaching lorarun ui (" + err.message + ")";
    status.className = "bad";
  }
  timer = setTimeout(refresh, POLL_MS);
}

window.addEventListener("hashchange", () => { rendered.key = null; refresh(); });
refresh();
