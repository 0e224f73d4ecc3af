// The web editor's page: draws a session's state (from the server's editor core) on a canvas and sends it the
// pointer gestures and mode keys of the original editors; queues generations and shows their progress and video.
"use strict";

const $ = (id) => document.getElementById(id);
const MODE_BUTTONS = {
  animate: [["c", "Select (c)"], ["m", "Move (m)"]],
  compose: [["c", "Select (c)"], ["v", "Paste (v)"], ["m", "Move (m)"], ["n", "Next object (n)"]],
};
const ui = { kind: "animate", sessions: {}, states: {}, images: {}, status: null, job: null, pressed: false };

// Requests ----------------------------------------------------------------------------------------------------------
async function api(method, path, body, raw) {
  const options = { method, headers: {} };
  if (raw !== undefined) { options.body = raw; options.headers["Content-Type"] = "application/octet-stream"; }
  else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) {
    if (response.status === 404 && path.startsWith("/api/sessions/")) {
      // the server restarted or loaded another model: start this tab's editors again
      showError(`${data.error} — starting a new editing session`);
      ui.sessions = {}; ui.states = {}; ui.images = {};
      refreshStatus().then(() => switchTo(ui.kind)).catch(() => {});
    } else showError(data.error || `request failed (${response.status})`);
    throw new Error(data.error);
  }
  return data;
}

function showError(text) { $("error-text").textContent = text; $("error").hidden = false; }
function clearError() { $("error").hidden = true; }

function sessionPath() { return `/api/sessions/${ui.sessions[ui.kind]}`; }

async function ensureSession() {
  if (ui.sessions[ui.kind]) return;
  if (!ui.status || !ui.status.loaded) {
    showError((ui.status && ui.status.error) || "no model loaded: enter a config and a checkpoint in the Model panel");
    throw new Error("no model");
  }
  const state = await api("POST", "/api/sessions", { kind: ui.kind });
  ui.sessions[ui.kind] = state.session;
  await show(state);
}

// The model ---------------------------------------------------------------------------------------------------------
async function refreshStatus() {
  const status = await api("GET", "/api/status");
  ui.status = status;
  const line = status.loaded
    ? `${status.ckpt} (${status.config}) · grid ${status.grid.join("×")} · ${status.size} px · ${status.device}, ${status.precision}` +
      (status.num_videos !== null ? ` · ${status.num_videos} dataset clips` : " · no dataset: upload images")
    : "no model loaded";
  $("model-line").textContent = line;
  $("model-config").value = status.config || "";
  $("model-ckpt").value = status.ckpt || "";
  $("model-data").value = status.data || "";
  $("clip-controls").hidden = status.num_videos === null;
  if (status.num_videos !== null) $("clip-index").max = status.num_videos - 1;
  if (status.error) showError(status.error);
  if (!status.loaded) $("model-panel").open = true;
  return status;
}

$("model-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("model-line").textContent = "loading the model…";
  try {
    await api("POST", "/api/model", { config: $("model-config").value, ckpt: $("model-ckpt").value, data: $("model-data").value });
    clearError();
    ui.sessions = {}; ui.states = {};
  } catch (error) { /* shown */ }
  await refreshStatus();
  await switchTo(ui.kind);
});

// Drawing -----------------------------------------------------------------------------------------------------------
function loadImage(state) {
  const key = `${state.session}:${state.image_version}`;
  if (ui.images[state.kind] && ui.images[state.kind].key === key) return Promise.resolve(ui.images[state.kind].image);
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => { ui.images[state.kind] = { key, image }; resolve(image); };
    image.onerror = reject;
    image.src = `/api/sessions/${state.session}/image.png?v=${state.image_version}`;
  });
}

function cellRect(state, cell, scale) {
  const [rows, cols] = state.grid, ch = state.size / rows, cw = state.size / cols;
  return [cell[1] * cw * scale, cell[0] * ch * scale, cw * scale, ch * scale];
}

function drawCells(context, state, cells, colour, fill, scale, width) {
  context.strokeStyle = colour; context.fillStyle = colour; context.lineWidth = width;
  for (const cell of cells) {
    const [x, y, w, h] = cellRect(state, cell, scale);
    if (fill) { context.globalAlpha = 0.35; context.fillRect(x, y, w, h); context.globalAlpha = 1; }
    context.strokeRect(x + width / 2, y + width / 2, w - width, h - width);
  }
}

function drawPicture(canvas, state, image, marks, grid) {
  const context = canvas.getContext("2d");
  const scale = canvas.width / state.size;
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (image) context.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (grid) {
    context.strokeStyle = "rgba(255,255,255,0.25)"; context.lineWidth = 1;
    const [rows, cols] = state.grid;
    for (let r = 1; r < rows; r++) { const y = r * canvas.height / rows; context.beginPath(); context.moveTo(0, y); context.lineTo(canvas.width, y); context.stroke(); }
    for (let c = 1; c < cols; c++) { const x = c * canvas.width / cols; context.beginPath(); context.moveTo(x, 0); context.lineTo(x, canvas.height); context.stroke(); }
  }
  for (const mark of marks) {
    drawCells(context, state, mark.cells, mark.colour, mark.fill, scale, Math.max(2, canvas.width / 200));
    if (mark.label && mark.cells.length) {
      const [x, y] = cellRect(state, mark.cells[0], scale);
      context.fillStyle = mark.colour; context.font = `bold ${Math.max(10, canvas.width / 30)}px sans-serif`;
      context.fillText(mark.label, x + 2, y + Math.max(10, canvas.width / 30));
    }
  }
}

async function show(state) {
  ui.states[state.kind] = state;
  if (state.kind !== ui.kind) return;  // an answer for the other tab, which draws it when shown
  const canvas = $("canvas");
  $("placeholder").hidden = state.has_image;
  $("placeholder").textContent = state.placeholder ? "Upload an image or open a dataset clip" : "";
  const image = state.has_image ? await loadImage(state) : null;
  if (ui.states[state.kind] !== state || state.kind !== ui.kind) return;  // a newer state, or another tab, meanwhile
  drawPicture(canvas, state, image, state.marks, true);
  const message = $("message");
  message.textContent = `${state.title} · mode: ${state.mode_name}` + (state.message ? ` · ${state.message}` : "");
  message.className = state.message.startsWith("warning") || state.message.startsWith("error") ? "warning" : "";
  for (const button of $("modes").querySelectorAll("button[data-key]"))
    button.classList.toggle("active", button.dataset.key.toUpperCase() === state.mode);
  drawTimeline(state, image);
  $("download-controls").href = `/api/sessions/${state.session}/controls.json`;
  $("download-controls").hidden = false;
}

function drawTimeline(state, image) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  if (!state.timeline.length) { timeline.textContent = "none yet: select cells, then move them"; return; }
  for (const frame of state.timeline) {
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 96;
    drawPicture(canvas, state, image, [{ cells: frame.cells, colour: frame.colour, fill: true }], false);
    const caption = document.createElement("span");
    caption.textContent = `video frame ${frame.frame}`;
    thumb.append(canvas, caption);
    timeline.append(thumb);
  }
}

// Gestures ----------------------------------------------------------------------------------------------------------
// Pointer requests go one at a time, in order; of the moves waiting, only the latest is sent.
let chain = Promise.resolve();
let pendingMove = null;

function imagePoint(event) {
  const canvas = $("canvas"), state = ui.states[ui.kind];
  const box = canvas.getBoundingClientRect();  // includes the border; the image fills the content box
  const left = box.left + canvas.clientLeft, top = box.top + canvas.clientTop;
  return { x: (event.clientX - left) * state.size / canvas.clientWidth, y: (event.clientY - top) * state.size / canvas.clientHeight };
}

function sendPointer(action, point) {
  chain = chain.then(async () => {
    try { await show(await api("POST", `${sessionPath()}/pointer`, { action, ...point })); } catch (error) { /* shown */ }
  });
  return chain;
}

$("canvas").addEventListener("pointerdown", (event) => {
  const state = ui.states[ui.kind];
  if (!state || !state.has_image) return;
  event.preventDefault();
  $("canvas").setPointerCapture(event.pointerId);
  ui.pressed = true;
  sendPointer("press", imagePoint(event));
});
$("canvas").addEventListener("pointermove", (event) => {
  if (!ui.pressed) return;
  const first = pendingMove === null;
  pendingMove = imagePoint(event);
  if (first) chain = chain.then(async () => {
    const point = pendingMove; pendingMove = null;
    try { await show(await api("POST", `${sessionPath()}/pointer`, { action: "move", ...point })); } catch (error) { /* shown */ }
  });
});
function release() {
  if (!ui.pressed) return;
  ui.pressed = false;
  sendPointer("release", {});
}
$("canvas").addEventListener("pointerup", release);
$("canvas").addEventListener("pointercancel", release);

async function takeBack() {
  try { await show(await api("POST", `${sessionPath()}/undo`)); } catch (error) { /* shown */ }
}

async function pressKey(key) {
  try { await ensureSession(); await show(await api("POST", `${sessionPath()}/key`, { key })); } catch (error) { /* shown */ }
}

document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = ["TEXTAREA", "SELECT"].includes(target.tagName) ||
    (target.tagName === "INPUT" && !["file", "button", "checkbox", "radio", "submit", "range", "color"].includes(target.type));
  if (typing) return;
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.key === "Enter") {
    if (["BUTTON", "A", "SUMMARY"].includes(event.target.tagName)) return;  // Enter activates the focused control
    event.preventDefault(); generate(); return;
  }
  const key = event.key.toLowerCase();
  if (key === "u" && ui.sessions[ui.kind]) { event.preventDefault(); takeBack(); return; }
  if (MODE_BUTTONS[ui.kind].some(([k]) => k === key)) { event.preventDefault(); pressKey(key); }
});

function buildModes() {
  const modes = $("modes");
  modes.replaceChildren();
  for (const [key, label] of MODE_BUTTONS[ui.kind]) {
    const button = document.createElement("button");
    button.textContent = label; button.dataset.key = key; button.id = `key-${key}`;
    button.addEventListener("click", () => pressKey(key));
    modes.append(button);
  }
  const undo = document.createElement("button");
  undo.textContent = "Undo (u)"; undo.id = "undo";
  undo.addEventListener("click", takeBack);
  modes.append(undo);
  const clear = document.createElement("button");
  clear.textContent = "Clear controls"; clear.id = "clear";
  clear.addEventListener("click", async () => {
    try { await show(await api("POST", `${sessionPath()}/clear`)); } catch (error) { /* shown */ }
  });
  modes.append(clear);
}

// Sources -----------------------------------------------------------------------------------------------------------
$("image-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    await ensureSession();
    await show(await api("POST", `${sessionPath()}/image?name=${encodeURIComponent(file.name)}`, undefined, file));
    clearError();
  } catch (error) { /* shown */ }
  event.target.value = "";
});

$("load-clip").addEventListener("click", async () => {
  try {
    await ensureSession();
    await show(await api("POST", `${sessionPath()}/clip`, { index: Number($("clip-index").value), frame: 0 }));
    clearError();
  } catch (error) { /* shown */ }
});

$("controls-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    await ensureSession();
    const path = `${sessionPath()}/controls?name=${encodeURIComponent(file.name)}&num_frames=${$("num-frames").value}`;
    await show(await api("POST", path, undefined, file));
    clearError();
  } catch (error) { /* shown */ }
  event.target.value = "";
});

// Generation --------------------------------------------------------------------------------------------------------
async function generate() {
  if ($("generate").disabled) return;  // this page's generation is still queued or running
  $("generate").disabled = true;
  let job;
  try {
    await ensureSession();
    job = await api("POST", `${sessionPath()}/generate`, {
      num_frames: $("num-frames").value, steps: $("steps").value, gamma: $("gamma").value, seed: $("seed").value });
  } catch (error) { $("generate").disabled = false; return; }
  clearError();
  ui.job = job.job;
  $("command").textContent = job.command;
  $("cancel").disabled = false;
  $("downloads").replaceChildren();
  $("strip").hidden = true;
  poll(job.job);
}

async function poll(id) {
  let info;
  try { info = await api("GET", `/api/jobs/${id}`); } catch (error) { $("generate").disabled = false; return; }
  if (ui.job !== id) return;
  const progress = $("progress"), status = $("job-status");
  if (info.status === "queued") { status.textContent = `waiting: position ${info.position} in the queue`; progress.removeAttribute("value"); }
  else if (info.status === "running") { status.textContent = `generating: ${info.done} / ${info.total} model evaluations`; progress.value = info.done / info.total; }
  if (!["queued", "running"].includes(info.status)) { finish(id, info); return; }
  setTimeout(() => poll(id), 300);
}

function finish(id, info) {
  $("cancel").disabled = true;
  $("generate").disabled = false;
  const status = $("job-status"), progress = $("progress");
  progress.value = info.status === "done" ? 1 : 0;
  if (info.status === "failed") { status.textContent = "generation failed"; showError(info.error); return; }
  if (info.status === "cancelled") { status.textContent = "generation cancelled"; return; }
  status.textContent = `done: ${info.num_frames} frames in ${info.seconds} s`;
  const base = `/api/jobs/${id}/files`;
  const showGif = () => { $("video").hidden = true; $("gif").hidden = false; $("gif").src = `${base}/video.gif`; };
  if (info.files.mp4) {
    $("gif").hidden = true; $("video").hidden = false;
    $("video").onerror = showGif;  // a browser without H.264 shows the gif
    $("video").src = `${base}/video.mp4`; $("video").play().catch(() => {});
  } else showGif();
  $("strip").src = `${base}/strip.png`; $("strip").hidden = false;
  const links = [];
  for (const name of [info.files.mp4 && "video.mp4", "video.gif", "strip.png", "controls.json"].filter(Boolean)) {
    const link = document.createElement("a");
    link.href = `${base}/${name}?download`; link.textContent = `⬇ ${name}`; link.download = name; link.id = `download-${name.replace(".", "-")}`;
    links.push(link, document.createTextNode(" "));
  }
  $("downloads").replaceChildren(...links);
}

$("generate").addEventListener("click", generate);
$("cancel").addEventListener("click", async () => {
  if (ui.job) { try { await api("POST", `/api/jobs/${ui.job}/cancel`); } catch (error) { /* shown */ } }
});
$("error-close").addEventListener("click", clearError);

// Tabs --------------------------------------------------------------------------------------------------------------
async function switchTo(kind) {
  ui.kind = kind;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.kind === kind);
  buildModes();
  $("download-controls").hidden = true;
  const state = ui.states[kind];
  if (state) { await show(state); return; }
  const context = $("canvas").getContext("2d");
  context.clearRect(0, 0, 512, 512);
  $("timeline").replaceChildren();
  $("message").textContent = kind === "compose"
    ? "Add images one by one; select objects (c), paste them on the canvas (v), move them over time (m)"
    : "Load an image; select a part (c, paint cells), then drag it to where it goes in each next frame (m)";
  $("placeholder").hidden = false;
  try { await ensureSession(); } catch (error) { /* no model yet */ }
}

for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => switchTo(tab.dataset.kind));

(async () => {
  try { await refreshStatus(); } catch (error) { return; }
  await switchTo("animate");
  document.body.dataset.ready = "1";
})();
