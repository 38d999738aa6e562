// SkySearch web page: plain JS, no build step, talks to this server's JSON API only.
// Images are fetched with the API key header and shown from blob: URLs (an <img src> cannot
// send a header, and the key never goes into a URL).
"use strict";

const KEY = "skysearch.apiKey";
const HEADER = "X-API-Key";
const ANIMATION_SIZE = 256;
const $ = (sel) => document.querySelector(sel);

/** What tests and bench/page.py read: the last answer, and when its images were all shown. */
const page = (window.skysearch = { result: null, imagesLoaded: null, searches: 0, refused: null });
let archive = null;
let lastQueryUrls = [];

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

// ---- API --------------------------------------------------------------------------------
async function api(path, { json, form, blob = false } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers[HEADER] = key;
  const init = { method: json || form ? "POST" : "GET", headers };
  if (json) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {  // no answer at all: the service is down, or the network is
    const where = `the SkySearch service at ${location.origin}`;
    throw new Error(`cannot reach ${where}; is it running? (${err.message})`);
  }
  if (!res.ok) {
    let detail = res.statusText;
    try {
      detail = (await res.json()).detail || detail;
    } catch (_) {
      /* not JSON: keep the status text */
    }
    if (res.status === 401) askKey(detail);
    throw new ApiError(res.status, detail);
  }
  return blob ? res.blob() : res.json();
}

function showMessage(text) {
  const box = $("#message");
  box.textContent = text;
  box.hidden = !text;
}

function explain(err) {
  if (err instanceof ApiError) {
    const what = { 400: "Bad request", 401: "API key needed", 404: "Not found",
      413: "Too large", 422: "Invalid input", 503: "Not available" }[err.status] || "Error";
    return `${what} (${err.status}): ${err.detail}`;
  }
  return `Error: ${err.message}`;
}

// ---- API key ----------------------------------------------------------------------------
function askKey(why) {
  const dialog = $("#key-dialog");
  if (why) $("#key-why").textContent = `${why}. The key is kept in this tab only.`;
  $("#key-input").value = sessionStorage.getItem(KEY) || "";
  if (!dialog.open) dialog.showModal();
}

function onKeyDialogClose() {
  const choice = $("#key-dialog").returnValue;
  if (choice === "save" && $("#key-input").value) {
    sessionStorage.setItem(KEY, $("#key-input").value);
  } else if (choice === "forget") {
    sessionStorage.removeItem(KEY);
  } else {
    return;
  }
  $("#key-input").value = "";
  showMessage("");
  loadStatus();
  const refused = page.refused;  // the search the missing key stopped (a shared link's)
  page.refused = null;
  if (refused) run(...refused);
}

// ---- time and lists -----------------------------------------------------------------------
/** datetime-local value (read as UTC) -> RFC 3339; "" -> undefined. */
function utc(value) {
  if (!value) return undefined;
  return `${value.length === 16 ? `${value}:00` : value}Z`;
}

/** RFC 3339 -> datetime-local value (minutes). */
function local(time) {
  return time ? time.slice(0, 16) : "";
}

function shortTime(time) {
  return time ? `${time.slice(0, 10)} ${time.slice(11, 16)}Z` : "";
}

/** "6-8, 12" -> [6, 7, 8, 12], within low..high; throws on anything else. */
function numbers(text, low, high, what) {
  const out = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = part.match(/^(\d+)(?:\s*-\s*(\d+))?$/);
    const a = m && Number(m[1]);
    const b = m && Number(m[2] ?? m[1]);
    if (!m || a < low || b > high || a > b) {
      throw new Error(`${what}: "${part}" is not a number or range in ${low}..${high}`);
    }
    for (let i = a; i <= b; i++) if (!out.includes(i)) out.push(i);
  }
  return out;
}

// ---- the form -----------------------------------------------------------------------------
function kind() {
  return $("#search").elements.kind.value;
}

/** Show the fields of the chosen query kind; hidden ones are disabled (never sent). */
function showKind() {
  const k = kind();
  for (const el of document.querySelectorAll("[data-kinds]")) {
    const on = el.dataset.kinds.split(" ").includes(k);
    el.hidden = !on;
    for (const input of el.querySelectorAll("input, select")) input.disabled = !on;
  }
}

function filters(f) {
  const out = {
    k: Number(f.k.value || 12),
    one_per_day: f.one_per_day.checked,
    months: numbers(f.months.value, 1, 12, "Months"),
    hours: numbers(f.hours.value, 0, 23, "Hours"),
  };
  if (f.start.value) out.start = utc(f.start.value);
  if (f.end.value) out.end = utc(f.end.value);
  if (f.f_satellite.value) out.satellites = [f.f_satellite.value];
  if (f.f_channel.value) out.channels = [f.f_channel.value];
  if (f.bbox.value.trim()) {
    const box = f.bbox.value.split(",").map((v) => Number(v.trim()));
    if (box.length !== 4 || box.some((v) => !Number.isFinite(v))) {
      throw new Error(`Area: "${f.bbox.value}" is not four numbers west, south, east, north`);
    }
    out.bbox = box;
  }
  if (!f.events.disabled) {  // best-track filters: frames and clips of products with events
    const events = f.events.value.split(",").map((e) => e.trim()).filter(Boolean);
    if (events.length) out.events = events;
    if (f.min_class.value) out.min_class = Number(f.min_class.value);
    if (f.max_pressure.value) out.max_pressure = Number(f.max_pressure.value);
  }
  return out;
}

function rank(f, withAugment) {
  const out = { rerank: Number(f.rerank.value || 0) };
  if (withAugment) out.augment = f.augment.checked;
  return out;
}

/** Flat multipart fields of an upload search (lists repeat their field). */
function formFields(form, fields) {
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) form.append(name, String(v));
  }
  return form;
}

function chosenFiles() {
  return [...$("#files").files].sort((a, b) => a.name.localeCompare(b.name));
}

/** [path, request options] of the search the form describes. */
function request() {
  const f = $("#search").elements;
  const flt = filters(f);
  const k = kind();
  const sat = f.satellite.value || undefined;
  const chan = f.channel.value || undefined;
  const need = (value, what) => {
    if (!value) throw new Error(`give ${what}`);
    return value;
  };
  switch (k) {
    case "clip-time":
      return ["/search/clip", { json: {
        at: utc(need(f.at.value, "a time")), satellite: sat, channels: chan ? [chan] : [],
        // f.length is the number of the form's controls: the "length" input by its name
        length: f.namedItem("length").value ? Number(f.namedItem("length").value) : undefined,
        gap_minutes: f.gap_minutes.value ? Number(f.gap_minutes.value) : undefined,
        ...rank(f, true), filters: flt } }];
    case "clip-id":
      return ["/search/clip", { json: {
        clip_id: need(f.clip_id.value.trim(), "a clip id"), ...rank(f, true), filters: flt } }];
    case "frame-time":
      return ["/search/frame", { json: {
        at: utc(need(f.at.value, "a time")), satellite: sat, channel: chan,
        ...rank(f, false), filters: flt } }];
    case "frame-id":
      return ["/search/frame", { json: {
        frame_id: need(f.frame_id.value.trim(), "a frame id"), ...rank(f, false), filters: flt } }];
    case "text":
      return ["/search/text", { json: { text: need(f.text.value.trim(), "some words"),
        filters: flt } }];
    case "upload": {
      const files = chosenFiles();
      if (!files.length) throw new Error("choose or drop one or more images");
      const form = new FormData();
      const fields = { satellite: sat, channel: chan, ...flt, ...rank(f, files.length > 1) };
      if (files.length === 1) {
        form.append("frame", files[0]);
        return ["/search/frame/upload", { form: formFields(form, fields) }];
      }
      for (const file of files) form.append("frames", file);
      fields.gap_minutes = f.gap_minutes.value || undefined;
      return ["/search/clip/frames", { form: formFields(form, fields) }];
    }
    default:
      throw new Error(`unknown query kind ${k}`);
  }
}

/** The form as a URL fragment (no key, no files): a search can be bookmarked. */
function saveHash() {
  if (kind() === "upload") return;
  const params = new URLSearchParams();
  for (const el of $("#search").elements) {
    if (!el.name || el.disabled || el.type === "file") continue;
    if (el.type === "radio" && !el.checked) continue;
    if (el.type === "checkbox") {
      if (el.checked) params.set(el.name, "on");
    } else if (el.value) {
      params.set(el.name, el.value);
    }
  }
  history.replaceState(null, "", `#${params}`);
}

function loadHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("kind")) return false;
  const f = $("#search").elements;
  for (const el of f) {
    if (!el.name || el.type === "file") continue;
    if (el.type === "radio") el.checked = el.value === params.get(el.name);
    else if (el.type === "checkbox") el.checked = params.has(el.name);
    else if (params.has(el.name)) {
      if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === params.get(el.name))) {
        el.add(new Option(params.get(el.name)));
      }
      el.value = params.get(el.name);
    }
  }
  showKind();
  return true;
}

// ---- searching ----------------------------------------------------------------------------
/** Files of the query on show (uploads, or the scene image of a "more like this"). */
let queryFiles = [];

async function search(event) {
  event?.preventDefault();
  let path, init;
  try {
    [path, init] = request();
  } catch (err) {
    showMessage(`Check the form: ${err.message}`);
    return;
  }
  saveHash();
  queryFiles = kind() === "upload" ? chosenFiles() : [];
  await run(path, init);
}

/** Send one search, show its answer (or the server's error detail). */
async function run(path, init) {
  showMessage("");
  document.body.dataset.state = "searching";
  $("#go").disabled = true;
  $("#summary").textContent = "Searching…";
  try {
    const t0 = performance.now();
    const result = await api(path, init);
    page.result = result;
    page.searches += 1;
    render(result, performance.now() - t0);
    document.body.dataset.state = "done";
  } catch (err) {
    showMessage(explain(err));
    page.refused = err instanceof ApiError && err.status === 401 ? [path, init] : null;
    $("#summary").textContent = "The search failed (see the message above).";
    // the last answer is not this query's: nothing of it stays on show
    $("#hits").replaceChildren();
    $("#query").hidden = $("#timeline").hidden = true;
    document.body.dataset.state = "error";
  } finally {
    $("#go").disabled = false;
  }
}

/** Search for things like a hit: a clip or frame by its id; a scene by its image. */
async function moreLikeThis(hit) {
  const f = $("#search").elements;
  if (hit.kind === "scene" && !hit.frame_ids?.length) {
    let blob;
    try {
      blob = await api(`/scenes/${hit.id}/thumbnail.png?size=512`, { blob: true });
    } catch (err) {
      showMessage(explain(err));
      return;
    }
    const file = new File([blob], `${hit.label || "scene"}-${hit.id}.png`, { type: "image/png" });
    queryFiles = [file];
    const form = new FormData();
    form.append("image", file);
    await run("/search/image", { form: formFields(form, filters(f)) });
  } else {
    if (hit.kind === "clip") {
      f.kind.value = "clip-id";
      f.clip_id.value = hit.id;
    } else {
      f.kind.value = "frame-id";
      f.frame_id.value = hit.kind === "frame" ? hit.id : hit.frame_ids[0];
    }
    showKind();
    await search();
  }
  $("#summary").focus();
}

// ---- rendering ----------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** The image path of a hit (or query) by kind; null when the server has no picture of it. */
function imagePath(item) {
  if (item.kind === "clip") return `/clips/${item.id}/animation.webp?size=${ANIMATION_SIZE}`;
  if (item.kind === "frame") return `/frames/${item.id}/thumbnail.png`;
  if (item.kind === "scene") {
    return item.frame_ids?.length ? `/frames/${item.frame_ids[0]}/thumbnail.png`
      : `/scenes/${item.id}/thumbnail.png`;
  }
  return null;
}

/** An <img> filled from the API (with the key); its promise settles when it is shown. */
function apiImage(path, alt) {
  const img = el("img", { alt, decoding: "async" });
  const done = api(path, { blob: true }).then(
    (blob) => new Promise((resolve) => {
      img.onload = img.onerror = () => resolve();
      img.src = URL.createObjectURL(blob);
    }),
    (err) => {
      img.replaceWith(el("span", { class: "noimage", text: `no image (${err.status || "error"})` }));
    },
  );
  return [img, done];
}

function describe(item) {
  const chans = (item.channels || []).join("+");
  const spec = item.kind === "clip" ? `${item.length}×${item.gap_minutes}m` : "";
  return [item.satellite, chans, spec, item.event ? `event ${item.event}` : ""]
    .filter(Boolean).join(" ");
}

function render(result, ms) {
  for (const url of lastQueryUrls) URL.revokeObjectURL(url);
  lastQueryUrls = [];
  for (const img of document.querySelectorAll("#hits img, #query img")) {
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  }
  const loads = [renderQuery(result.query)];
  const hits = $("#hits");
  hits.replaceChildren();
  for (const hit of result.results) {
    const [card, done] = hitCard(hit);
    hits.append(card);
    loads.push(done);
  }
  const total = result.timing_ms?.total;
  $("#summary").textContent = `${result.results.length} hit(s) · ${result.query.kind} query`
    + (result.query.model_id ? ` · model ${result.query.model_id}` : "")
    + ` · ${Math.round(ms)} ms in the browser${total ? `, ${Math.round(total)} ms in the service` : ""}`;
  $("#summary").tabIndex = -1;
  renderTimeline(result);
  performance.mark(`results-${page.searches}`);
  page.imagesLoaded = Promise.all(loads).then(() => {
    performance.mark(`images-${page.searches}`);
    document.body.dataset.images = String(page.searches);
    return performance.now();
  });
}

function renderQuery(query) {
  const box = $("#query");
  box.hidden = false;
  const parts = [];
  let done = Promise.resolve();
  const item = query.clip_id ? { ...query, kind: "clip", id: query.clip_id }
    : query.frame_id ? { ...query, kind: "frame", id: query.frame_id } : null;
  if (item) {
    const [img, loaded] = apiImage(imagePath(item), `query ${item.kind}`);
    parts.push(el("div", { class: "media" }, img));
    done = loaded;
  } else if (queryFiles.length) {
    const strip = el("div", { class: "media strip" });
    for (const file of queryFiles) {
      const url = URL.createObjectURL(file);
      lastQueryUrls.push(url);
      strip.append(el("img", { src: url, alt: file.name }));
    }
    parts.push(strip);
  }
  const what = query.kind === "text" ? `“${query.text}”`
    : query.kind === "image" ? `image ${query.image}`
    : query.files?.length ? `${query.files.length} uploaded frame(s)`
    : `${query.kind} ${shortTime(query.start)}`;
  parts.push(el("div", { class: "caption" },
    el("strong", { text: `Query: ${what}` }),
    el("span", { text: describe(query) })));
  box.replaceChildren(...parts);
  return done;
}

function hitCard(hit) {
  const path = imagePath(hit);
  const alt = `${hit.kind} ${shortTime(hit.start) || hit.label || hit.id}`;
  let media;
  let done = Promise.resolve();
  if (path) {
    const [img, loaded] = apiImage(path, alt);
    media = img;
    done = loaded;
  } else {
    media = el("span", { class: "noimage", text: hit.kind });
  }
  const mediaBox = el("button", { type: "button", class: "media", title: "More like this",
    "aria-label": `More like ${alt}`, onclick: () => moreLikeThis(hit) }, media);
  const links = el("div", { class: "links" });
  if (hit.kind === "clip" || hit.kind === "frame") {
    const base = `/${hit.kind}s/${hit.id}`;
    links.append(download(base, `${hit.kind}-${hit.id}.json`, "JSON"));
    links.append(download(`${base}/thumbnail.png${hit.kind === "clip" ? "?size=512" : ""}`,
      `${hit.kind}-${hit.id}.png`, hit.kind === "clip" ? "Contact sheet" : "PNG"));
  }
  if (hit.kind === "scene" && !hit.frame_ids?.length) {
    links.append(download(`/scenes/${hit.id}/thumbnail.png?size=1024`, `scene-${hit.id}.png`,
      "Image"));
  }
  links.append(el("button", { type: "button", class: "link", text: "More like this",
    onclick: () => moreLikeThis(hit) }));
  const card = el("li", { class: "hit", id: `hit-${hit.rank}`, "data-id": hit.id,
    "data-kind": hit.kind },
    mediaBox,
    el("div", { class: "caption" },
      el("strong", { text: `#${hit.rank} · ${hit.score.toFixed(4)}` }),
      el("span", { text: shortTime(hit.start) || hit.label || "" }),
      el("span", { class: "muted", text: describe(hit) || hit.dataset || "" })),
    links);
  return [card, done];
}

/** A link to an API path that downloads it with the key (plain navigation sends none). */
function download(path, filename, text) {
  return el("a", { href: path, download: filename, text, onclick: async (event) => {
    event.preventDefault();
    try {
      const url = URL.createObjectURL(await api(path, { blob: true }));
      const a = el("a", { href: url, download: filename });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showMessage(explain(err));
    }
  } });
}

function renderTimeline(result) {
  const box = $("#timeline");
  const track = box.querySelector(".track");
  track.replaceChildren();
  const t = (s) => Date.parse(s);
  const dated = result.results.filter((h) => h.start);
  if (!archive?.start || !dated.length) {
    box.hidden = true;
    return;
  }
  const a = t(archive.start);
  const span = Math.max(t(archive.end) - a, 1);
  const at = (s) => `${(100 * Math.min(Math.max(t(s) - a, 0), span)) / span}%`;
  if (result.query.start) {
    track.append(el("span", { class: "tick query", style: { left: at(result.query.start) },
      role: "listitem", title: `query ${shortTime(result.query.start)}` }));
  }
  for (const hit of dated) {
    track.append(el("a", { class: "tick", href: `#hit-${hit.rank}`, style: { left: at(hit.start) },
      role: "listitem", title: `#${hit.rank} ${shortTime(hit.start)}`,
      "aria-label": `hit ${hit.rank} at ${shortTime(hit.start)}`,
      onclick: (e) => {
        e.preventDefault();
        document.getElementById(`hit-${hit.rank}`)?.scrollIntoView({ block: "nearest" });
        document.querySelector(`#hit-${hit.rank} .media`)?.focus();
      } }));
  }
  $("#tl-start").textContent = shortTime(archive.start);
  $("#tl-end").textContent = shortTime(archive.end);
  box.hidden = false;
}

// ---- status panel -------------------------------------------------------------------------
async function loadStatus() {
  const rows = [];
  const add = (term, value) => rows.push(el("dt", { text: term }), el("dd", { text: value }));
  try {
    const health = await api("/health");
    add("Version", health.version);
    let ready;
    try {
      ready = await api("/ready");
    } catch (err) {
      if (err.status !== 503) throw err;
      ready = { state: "not ready", detail: err.detail, searches: {}, collections: {} };
    }
    add("State", ready.detail ? `${ready.state}: ${ready.detail}` : ready.state);
    for (const [name, why] of Object.entries(ready.searches || {})) add(`${name} search`, why);
    for (const [name, n] of Object.entries(ready.collections || {})) add(`${name} collection`, `${n} points`);
    if (ready.ready) {
      archive = await api("/archive");
      add("Frames", `${archive.frames}`);
      add("Clips", `${archive.clips}`);
      add("From", shortTime(archive.start));
      add("To", shortTime(archive.end));
      for (const [sat, chans] of Object.entries(archive.satellites)) add(sat, chans.join(", "));
      for (const s of archive.clip_specs) {
        add("Clip spec", `${s.satellite} ${s.channels.join("+")} ${s.length}×${s.gap_minutes}m`
          + ` (${s.clips})`);
      }
      for (const m of archive.models) add(`${m.kind} model`, m.model_id);
      fillChoices();
      document.body.dataset.archive = "loaded";
    }
    document.body.dataset.state = document.body.dataset.state === "loading"
      ? "ready" : document.body.dataset.state;
  } catch (err) {
    add("Error", explain(err));
    showMessage(explain(err));
  }
  $("#status").replaceChildren(...rows);
}

/** Satellites, channels and the time range of the archive into the form. */
function fillChoices() {
  const sats = Object.keys(archive.satellites);
  const chans = [...new Set(Object.values(archive.satellites).flat())].sort();
  for (const [id, values] of [["#satellite", sats], ["#f_satellite", sats],
    ["#channel", chans], ["#f_channel", chans]]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(select.options[0], ...values.map((v) => new Option(v)));
    select.value = values.includes(keep) ? keep : "";
  }
  for (const id of ["#at", "#start", "#end"]) {
    $(id).min = local(archive.start);
    $(id).max = local(archive.end);
  }
  if (!$("#at").value) $("#at").value = local(archive.start);
}

// ---- uploads ------------------------------------------------------------------------------
function showPreviews() {
  const list = $("#previews");
  for (const img of list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  list.replaceChildren(...chosenFiles().map((file) => el("li", {},
    el("img", { src: URL.createObjectURL(file), alt: "" }), el("span", { text: file.name }))));
}

function setupDrop() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer?.files?.length) {
      $("#files").files = e.dataTransfer.files;
      showPreviews();
    }
  });
  $("#files").addEventListener("change", showPreviews);
}

// ---- start --------------------------------------------------------------------------------
async function start() {
  const form = $("#search");
  form.addEventListener("submit", search);
  for (const radio of form.elements.kind) radio.addEventListener("change", showKind);
  $("#key-button").addEventListener("click", () => askKey(""));
  $("#key-dialog").addEventListener("close", onKeyDialogClose);
  $("#status-refresh").addEventListener("click", loadStatus);
  setupDrop();
  showKind();
  const fromHash = loadHash();
  await loadStatus();
  if (fromHash) search();
}

start();
