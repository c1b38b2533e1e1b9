// The Proxima console: plain JavaScript, no build step, no third-party code. It calls the same
// API as every other client, with the token its user types in (kept in this browser's
// localStorage), so the page itself needs no access control.
"use strict";

const $ = (sel) => document.querySelector(sel);
let imageFile = null;

function token() { return localStorage.getItem("proxima-token") || ""; }

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, { method, headers, body });
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  return { status: r.status, data };
}

function errorText(res) {
  if (res.status === 401) return "401: a valid token is needed (enter it at the top)";
  if (res.status === 403) return "403: this token may not do this (an admin token is needed)";
  return res.status + ": " + ((res.data && res.data.error) || "request failed");
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function setVerdict(text, kind) {
  const v = $("#verdict");
  v.textContent = text;
  v.className = "verdict " + (kind || "");
}

// ---- analysis ---------------------------------------------------------------------------------

function pickImage(file) {
  if (!file) return;
  imageFile = file;
  $("#drop p").textContent = "Image: " + file.name + " (" + Math.round(file.size / 1024) + " KiB)";
  analyse();
}

async function analyse() {
  if (!imageFile) { setVerdict("Choose an image first.", "none"); return; }
  setVerdict("Analysing…", "none");
  const url = $("#url-input").value.trim();
  let answer = null, source = "";
  if (url) {
    const form = new FormData();
    form.append("image", imageFile);
    form.append("url", url);
    const res = await api("POST", "/v1/check", form);
    if (res.status === 200) { answer = res.data; source = "check"; }
    else if (res.status !== 404) { setVerdict(errorText(res), "bad"); return; }
    else { $("#gallery-status").textContent = "This server has no /v1/check; the URL was not checked."; }
  }
  if (!answer) {
    const form = new FormData();
    form.append("image", imageFile);
    const whole = $("#whole-image").checked ? "?whole_image=true" : "";
    const res = await api("POST", "/v1/find" + whole, form);
    if (res.status === 200) { answer = res.data; source = "find"; }
    else if (res.status === 501) {
      // No localiser: identify the whole image as one region.
      const f2 = new FormData();
      f2.append("image", imageFile);
      const id = await api("POST", "/v1/identify", f2);
      if (id.status !== 200) { setVerdict(errorText(id), "bad"); return; }
      answer = identifyAsFind(id.data);
      source = "identify";
    } else { setVerdict(errorText(res), "bad"); return; }
  }
  await draw(answer);
  showVerdict(answer, source);
}

function identifyAsFind(a) {
  const known = a.decision === "known";
  const best = (a.candidates && a.candidates[0]) || null;
  return {
    brand: known ? a.brand : null,
    similarity: known ? a.similarity : a.best_similarity,
    threshold: a.threshold,
    regions: [{ box: null, brand: known ? a.brand : null, best_brand: best ? best.brand : "", similarity: known ? a.similarity : a.best_similarity, confidence: known ? a.similarity : a.best_similarity }],
  };
}

function showVerdict(a, source) {
  const sim = (x) => (x == null ? "–" : Number(x).toFixed(3));
  if (a.verdict) {
    const kinds = { impersonation: "bad", consistent: "ok", no_brand: "none", unknown_domain: "none" };
    let text = a.verdict.replace("_", " ") + (a.brand ? ": " + a.brand + " (similarity " + sim(a.similarity) + ")" : "");
    if (a.domain) text += " on " + a.domain;
    if (a.brand_domains && a.brand_domains.length) text += " — the brand's domains: " + a.brand_domains.join(", ");
    setVerdict(text, kinds[a.verdict] || "none");
  } else if (a.brand) {
    setVerdict("Known brand: " + a.brand + " (similarity " + sim(a.similarity) + ", confidence " + sim(a.confidence) + ", threshold " + sim(a.threshold) + ")", "ok");
  } else if (a.regions && a.regions.length) {
    // The threshold applies to a region's confidence (similarity and localiser score), not its similarity alone.
    const top = a.regions[0];
    setVerdict("No known brand: the most confident region is closest to " + top.best_brand + " (similarity " + sim(top.similarity) + ", confidence " + sim(top.confidence) + " < threshold " + sim(a.threshold) + ")", "none");
  } else {
    setVerdict("No logo-like region found.", "none");
  }
  const tbody = $("#regions tbody");
  tbody.textContent = "";
  (a.regions || []).forEach((r, i) => {
    const tr = document.createElement("tr");
    cell(tr, String(i + 1));
    cell(tr, r.brand || "unknown");
    cell(tr, r.best_brand || "");
    cell(tr, sim(r.similarity), "num");
    cell(tr, sim(r.confidence), "num");
    cell(tr, r.box ? r.box.map((v) => Math.round(v)).join(", ") : "whole image");
    tbody.appendChild(tr);
  });
  $("#regions").dataset.source = source;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = reject;
    img.src = URL.createObjectURL(file);
  });
}

async function draw(a) {
  const img = await loadImage(imageFile);
  const canvas = $("#result-canvas");
  const maxW = Math.min(720, canvas.parentElement.clientWidth || 720);
  const k = Math.min(1, maxW / img.naturalWidth) * Math.max(1, Math.min(4, 240 / img.naturalHeight));
  canvas.width = Math.round(img.naturalWidth * k);
  canvas.height = Math.round(img.naturalHeight * k);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = k < 1;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.font = "bold 13px system-ui, sans-serif";
  ctx.textBaseline = "top";
  // Least confident first, so that the best region is drawn on top.
  [...(a.regions || [])].reverse().forEach((r) => {
    const [x0, y0, x1, y1] = r.box ? r.box.map((v) => v * k) : [1, 1, canvas.width - 1, canvas.height - 1];
    const colour = r.brand ? "#0a7d32" : "#7b8494";
    ctx.lineWidth = r.brand ? 3 : 1.5;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const label = (r.brand || "unknown (" + (r.best_brand || "?") + ")") + " " + Number(r.similarity).toFixed(3);
    const w = ctx.measureText(label).width + 8;
    const ly = y0 >= 18 ? y0 - 18 : y0;
    ctx.fillStyle = colour;
    ctx.fillRect(x0, ly, w, 18);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x0 + 4, ly + 2);
  });
}

// ---- gallery ----------------------------------------------------------------------------------

async function refreshGallery() {
  const res = await api("GET", "/v1/gallery");
  const tbody = $("#brands tbody");
  tbody.textContent = "";
  if (res.status !== 200) { $("#gallery-summary").textContent = errorText(res); return; }
  const g = res.data;
  $("#gallery-summary").textContent = g.brands.length + " brands, " + g.rows + " rows" + (g.threshold != null ? ", threshold " + g.threshold.toFixed(4) : "");
  g.brands.forEach((b) => {
    const tr = document.createElement("tr");
    tr.dataset.brand = b.brand;
    cell(tr, b.brand);
    cell(tr, String(b.rows), "num");
    cell(tr, (b.domains || []).join(", "));
    const td = cell(tr, "");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "danger small";
    btn.textContent = "Remove";
    btn.dataset.remove = b.brand;
    btn.addEventListener("click", () => removeBrand(btn, b.brand));
    td.appendChild(btn);
    tbody.appendChild(tr);
  });
}

// A first click arms the button, a second one removes (no modal dialog).
async function removeBrand(btn, brand) {
  if (!btn.classList.contains("armed")) {
    btn.classList.add("armed");
    btn.textContent = "Really remove?";
    setTimeout(() => { btn.classList.remove("armed"); btn.textContent = "Remove"; }, 5000);
    return;
  }
  const res = await api("DELETE", "/v1/gallery/" + encodeURIComponent(brand));
  $("#gallery-status").textContent = res.status === 200 ? "Removed " + brand + " (" + res.data.removed + " rows)." : errorText(res);
  $("#gallery-status").className = res.status === 200 ? "muted" : "error";
  refreshGallery();
}

async function enrol(ev) {
  ev.preventDefault();
  const brand = $("#enrol-brand").value;
  const files = $("#enrol-files").files;
  if (!brand || !files.length) { $("#gallery-status").textContent = "Give a brand name and at least one logo image."; return; }
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  $("#gallery-status").textContent = "Enrolling…";
  const res = await api("POST", "/v1/gallery/" + encodeURIComponent(brand), form);
  const ok = res.status === 201;
  $("#gallery-status").textContent = ok ? "Enrolled " + res.data.brand + ": " + res.data.added + " image(s), " + res.data.rows + " rows." : errorText(res);
  $("#gallery-status").className = ok ? "muted" : "error";
  if (ok) { $("#enrol-brand").value = ""; $("#enrol-files").value = ""; }
  refreshGallery();
}

async function loadAudit() {
  const res = await api("GET", "/v1/audit");
  const tbody = $("#audit tbody");
  tbody.textContent = "";
  if (res.status !== 200) { $("#gallery-status").textContent = errorText(res); return; }
  res.data.entries.slice(-50).reverse().forEach((e) => {
    const tr = document.createElement("tr");
    [String(e.id), e.time.replace("T", " ").slice(0, 19), e.token, e.action, e.brand, String(e.rows), String(e.version)].forEach((t) => cell(tr, t));
    tbody.appendChild(tr);
  });
}

// ---- wiring -----------------------------------------------------------------------------------

function init() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem("proxima-token", $("#token").value.trim());
    $("#token-status").textContent = token() ? "token set" : "no token";
    refreshGallery();
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); pickImage(ev.dataTransfer.files[0]); });
  drop.addEventListener("click", () => $("#image-input").click());
  $("#image-input").addEventListener("change", (ev) => pickImage(ev.target.files[0]));
  $("#analyse").addEventListener("click", analyse);
  $("#enrol-form").addEventListener("submit", enrol);
  $("#refresh").addEventListener("click", refreshGallery);
  $("#audit-load").addEventListener("click", loadAudit);
  refreshGallery();
}

document.addEventListener("DOMContentLoaded", init);
