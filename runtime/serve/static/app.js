// The samplegraph page: plain JS over /api/v1 (no build step, no external files).
"use strict";

const API = "/api/v1";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const EVENT_TYPES = ["queued", "running", "requeued", "run_started", "node_started", "step_progress",
                     "step_preview", "node_finished", "succeeded", "failed", "cancelled"];
const progress = new Map();   // job id -> {total, done, step} from its event stream
const streams = new Map();    // job id -> EventSource
let selected = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const reply = await fetch(API + path, {credentials: "same-origin", ...options});
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) { const err = new Error(body.error ? body.error.message : reply.statusText); err.body = body; throw err; }
  return body;
}

function fraction(id, status) {
  if (status === "succeeded") return 1;
  const p = progress.get(id);
  if (!p || !p.total) return 0;
  return Math.min(1, (p.done + p.step) / p.total);
}

// A browser keeps ~6 HTTP/1.1 connections per host: stream a few jobs (the running and the selected ones),
// the 3 s poll of the list covers the rest.
const MAX_STREAMS = 3;

function watch(id) {
  if (streams.has(id) || streams.size >= MAX_STREAMS) return;
  const source = new EventSource(`${API}/jobs/${id}/events`);
  streams.set(id, source);
  const p = {total: 0, done: 0, step: 0};
  progress.set(id, p);
  const handle = (msg) => {
    const e = JSON.parse(msg.data);
    if (e.type === "run_started") { p.total = e.total; p.done = 0; p.step = 0; }
    else if (e.type === "node_finished") { p.done += 1; p.step = 0; }
    else if (e.type === "step_progress") { p.step = e.total ? e.step / e.total : 0; }
    else if (e.type === "requeued") { p.done = 0; p.step = 0; }
    else if (e.type === "step_preview" && selected === id) { showPreview(e); }
    if (TERMINAL.has(e.type)) { source.close(); streams.delete(id); refreshJobs(); if (selected === id) showDetail(id); }
    updateBar(id);
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, handle);
}

function showPreview(e) {  // latent.preview's picture of the sampler's current x0 estimate
  const img = document.getElementById("detail-preview");
  img.src = e.png;
  img.title = `${e.node}: step ${e.step} of ${e.total}`;
  img.hidden = false;
}

function updateBar(id) {
  const bar = document.querySelector(`progress[data-job="${id}"]`);
  if (!bar) return;
  const status = bar.dataset.status;
  const percent = Math.round(100 * fraction(id, status));
  bar.setAttribute("value", String(percent));
  bar.title = `${percent}%`;
}

async function refreshJobs() {
  let page;
  try { page = await api("/jobs?limit=50"); } catch (e) { return; }
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const job of page.jobs) {
    const bar = el("progress", {max: "100", value: "0", "data-job": job.id, "data-status": job.status});
    const actions = el("td");
    if (!TERMINAL.has(job.status)) {
      actions.append(el("button", {class: "cancel", onclick: () => cancel(job.id)}, "Cancel"));
      if (job.status === "running" || job.id === selected) watch(job.id);
    }
    const row = el("tr", {"data-job": job.id, class: job.id === selected ? "selected" : ""},
      el("td", {class: "id", onclick: () => showDetail(job.id)}, job.id.slice(0, 8)),
      el("td", {class: `status status-${job.status}`}, job.status),
      el("td", {}, bar),
      el("td", {}, new Date(job.created * 1000).toLocaleTimeString()),
      actions);
    body.append(row);
    updateBar(job.id);
  }
}

async function cancel(id) {
  try { await api(`/jobs/${id}/cancel`, {method: "POST"}); } catch (e) { alert(e.message); }
  refreshJobs();
}

async function showDetail(id) {
  selected = id;
  const job = await api(`/jobs/${id}`);
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-id").textContent = `${id} (${job.status})`;
  const images = document.getElementById("detail-images");
  const list = document.getElementById("detail-outputs");
  images.replaceChildren();
  list.replaceChildren();
  document.getElementById("detail-preview").hidden = job.status === "succeeded";
  for (const out of job.outputs) {
    const url = `${API}/jobs/${id}/outputs/${encodeURI(out.name)}`;
    if (out.media_type.startsWith("image/")) images.append(el("img", {src: url, alt: out.name, class: "output"}));
    list.append(el("li", {}, el("a", {href: url, download: out.name}, out.name), ` (${out.size} bytes)`));
  }
  const report = job.report || job.error;
  document.getElementById("detail-report").textContent = report ? JSON.stringify(report, null, 2) : "(not finished)";
  document.querySelectorAll("#jobs tr").forEach((r) => r.classList.toggle("selected", r.dataset.job === id));
}

async function readWorkflow() {
  const file = document.getElementById("workflow-file").files[0];
  if (file) return JSON.parse(await file.text());
  const name = document.getElementById("workflow-name").value;
  if (!name) throw new Error("choose a shipped workflow or a file");
  const reply = await fetch(`${API}/workflows/${encodeURIComponent(name)}`, {credentials: "same-origin"});
  if (!reply.ok) throw new Error(`cannot load workflow ${name}`);
  return reply.json();
}

async function submit(event) {
  event.preventDefault();
  const status = document.getElementById("submit-status");
  const problems = document.getElementById("problems");
  problems.replaceChildren();
  try {
    const workflow = await readWorkflow();
    const set = document.getElementById("overrides").value.split("\n").map((s) => s.trim()).filter(Boolean);
    const job = await api("/jobs", {method: "POST", headers: {"content-type": "application/json"},
                                    body: JSON.stringify({workflow, set})});
    status.textContent = `submitted ${job.id.slice(0, 8)}`;
    selected = job.id;
    watch(job.id);
    await refreshJobs();
    showDetail(job.id);
  } catch (e) {
    status.textContent = e.message;
    const found = (e.body && e.body.error && e.body.error.problems) || [];
    for (const p of found) problems.append(el("li", {}, p.text || p.message));
  }
}

async function init() {
  document.getElementById("submit-form").addEventListener("submit", submit);
  try {
    const {workflows} = await api("/workflows");
    const select = document.getElementById("workflow-name");
    for (const name of workflows) select.append(el("option", {value: name}, name));
    const health = await api("/health");
    document.getElementById("health").textContent = `server up ${Math.round(health.uptime_s)} s`;
  } catch (e) {
    document.getElementById("health").textContent = `server: ${e.message}`;
  }
  await refreshJobs();
  setInterval(refreshJobs, 3000);
}

document.addEventListener("DOMContentLoaded", init);
