// InternVL-X chat page: plain JavaScript, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,
  history: [],        // OpenAI messages sent so far (user turns keep their image parts)
  pending: [],        // images attached to the next question: {url, width, height, name}
  current: null,      // the image shown in the panel
  controller: null,   // AbortController of the running request
};
const ACCEPTED = ["image/png", "image/jpeg", "image/webp"];

// ------------------------------------------------------------------ settings
const FIELDS = ["api-key", "system", "max-tokens", "temperature", "top-p", "seed", "policy", "max-tiles",
  "max-visual-tokens", "lvtc", "stream"];
function loadSettings() {
  const saved = JSON.parse(localStorage.getItem("internvlx-settings") || "{}");
  for (const id of FIELDS) {
    if (!(id in saved)) continue;
    const el = $(id);
    if (el.type === "checkbox") el.checked = saved[id]; else el.value = saved[id];
  }
}
function saveSettings() {
  const out = {};
  for (const id of FIELDS) { const el = $(id); out[id] = el.type === "checkbox" ? el.checked : el.value; }
  localStorage.setItem("internvlx-settings", JSON.stringify(out));
}
function num(id) { const v = $(id).value.trim(); return v === "" ? null : Number(v); }
function tilingOptions() {
  const out = {};
  if ($("policy").value) out.policy = $("policy").value;
  if (num("max-tiles") !== null) out.max_tiles = num("max-tiles");
  if (num("max-visual-tokens") !== null) out.max_visual_tokens = num("max-visual-tokens");
  if ($("lvtc").value) out.lvtc = $("lvtc").value === "on";
  return out;
}
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// ------------------------------------------------------------------ server
async function api(path, body) {
  const res = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || `HTTP ${res.status}`);
  return data;
}
async function loadModel() {
  try {
    const data = await api("/v1/models");
    state.model = data.data[0].id;
    $("model").textContent = state.model;
    $("col-model").textContent = state.model;
  } catch (e) {
    $("model").textContent = "model: " + e.message;
  }
}
async function pollHealth() {
  try {
    const res = await fetch("/health");
    const h = await res.json();
    $("health").textContent = `${h.status} · generating ${h.active} · waiting ${h.queued}/${h.max_queue}`;
  } catch (e) {
    $("health").textContent = "server unreachable";
  }
}

// ------------------------------------------------------------------ images
function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(new Error("cannot read " + file.name));
    reader.onload = () => {
      const img = new Image();
      img.onerror = () => reject(new Error(file.name + " is not an image the browser can open"));
      img.onload = () => {
        let url = reader.result;
        if (!ACCEPTED.includes(file.type)) {  // e.g. GIF or BMP: send it as PNG
          const c = document.createElement("canvas");
          c.width = img.naturalWidth; c.height = img.naturalHeight;
          c.getContext("2d").drawImage(img, 0, 0);
          url = c.toDataURL("image/png");
        }
        resolve({ url, width: img.naturalWidth, height: img.naturalHeight, name: file.name || "pasted image", img });
      };
      img.src = reader.result;
    };
    reader.readAsDataURL(file);
  });
}
async function addFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    try {
      const image = await readImage(file);
      state.pending.push(image);
      state.current = image;
    } catch (e) {
      showError(e.message);
    }
  }
  renderAttachments();
  refreshPlan();
}
function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.pending.forEach((image, i) => {
    const chip = document.createElement("div");
    chip.className = "chip";
    const img = document.createElement("img");
    img.src = image.url; img.alt = image.name; img.title = `${image.name} (${image.width}×${image.height})`;
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×"; remove.title = "remove";
    remove.onclick = () => { state.pending.splice(i, 1); renderAttachments(); };
    chip.append(img, remove);
    box.append(chip);
  });
}

// ------------------------------------------------------------------ tiles panel
let planTimer = null;
function refreshPlan() {
  clearTimeout(planTimer);
  planTimer = setTimeout(drawPlan, 150);
}
function fmt(x) { return Number.isInteger(x) ? x.toLocaleString() : x.toLocaleString(undefined, { maximumFractionDigits: 1 }); }
async function drawPlan() {
  const image = state.current;
  if (!image) return;
  $("image-info").textContent = `${image.name}: ${image.width}×${image.height} px`;
  let plan;
  try {
    plan = await api("/v1/internvlx/plan", { width: image.width, height: image.height, ...tilingOptions() });
  } catch (e) {
    $("tile-caption").textContent = "accounting unavailable: " + e.message;
    return;
  }
  const m = plan.model, b = plan.baseline;
  drawTiles(image, m);
  $("tile-caption").textContent = `${m.policy} policy, max ${m.max_tiles} tiles${m.max_visual_tokens ? `, budget ${m.max_visual_tokens} tokens` : ""}: `
    + `resized to ${m.cols * m.tile_size}×${m.rows * m.tile_size}, cut into ${m.cols}×${m.rows} tiles of ${m.tile_size} px`
    + (m.thumbnail ? " + a thumbnail of the whole image" : "") + (m.lvtc ? "; LVTC on" : "");
  const grid = (c) => `${c.cols}×${c.rows}${c.thumbnail ? " + thumb" : ""}`;
  $("m-grid").textContent = grid(m); $("b-grid").textContent = grid(b);
  $("m-tiles").textContent = m.tiles; $("b-tiles").textContent = b.tiles;
  $("m-tpt").textContent = m.tokens_per_tile; $("b-tpt").textContent = b.tokens_per_tile;
  $("m-input").textContent = fmt(m.llm_input_tokens); $("b-input").textContent = fmt(b.llm_input_tokens);
  $("m-mean").textContent = fmt(m.mean_per_layer); $("b-mean").textContent = fmt(b.mean_per_layer);
  const saving = 1 - m.mean_per_layer / b.mean_per_layer;
  $("saving").textContent = saving > 0
    ? `${(saving * 100).toFixed(1)}% fewer visual tokens per layer than ${b.name.split(" (")[0]}`
    : `${(-saving * 100).toFixed(1)}% more visual tokens per layer than ${b.name.split(" (")[0]}`;
}
function drawTiles(image, m) {
  const canvas = $("tiles"), ctx = canvas.getContext("2d");
  const maxW = 320, maxH = 220, aspect = m.cols / m.rows;
  let w = maxW, h = Math.round(maxW / aspect);
  if (h > maxH) { h = maxH; w = Math.round(maxH * aspect); }
  canvas.width = w; canvas.height = h;
  ctx.drawImage(image.img, 0, 0, w, h);  // stretched to the grid, as the model sees it
  ctx.strokeStyle = "#2f6fde"; ctx.lineWidth = 2;
  ctx.font = "bold 12px system-ui, sans-serif";
  for (let r = 0; r < m.rows; r++) {
    for (let c = 0; c < m.cols; c++) {
      const x = c * w / m.cols, y = r * h / m.rows;
      ctx.strokeRect(x + 1, y + 1, w / m.cols - 2, h / m.rows - 2);
      const label = String(r * m.cols + c + 1);
      ctx.fillStyle = "rgba(255,255,255,.85)";
      ctx.fillRect(x + 3, y + 3, ctx.measureText(label).width + 8, 17);
      ctx.fillStyle = "#1d4fb8";
      ctx.fillText(label, x + 7, y + 16);
    }
  }
  const thumb = $("thumb");
  thumb.hidden = !m.thumbnail;
  if (m.thumbnail) thumb.getContext("2d").drawImage(image.img, 0, 0, thumb.width, thumb.height);
}

// ------------------------------------------------------------------ chat
function addMessage(role, text, images = []) {
  const hint = document.querySelector("#messages .hint");
  if (hint) hint.remove();
  const div = document.createElement("div");
  div.className = "msg " + role;
  for (const image of images) {
    const img = document.createElement("img");
    img.src = image.url; img.alt = image.name;
    img.onclick = () => { state.current = image; refreshPlan(); };
    div.append(img);
  }
  const body = document.createElement("span");
  body.textContent = text;
  div.append(body);
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return { div, body };
}
function showError(message) { addMessage("error", message); }
function setBusy(busy) {
  $("send").disabled = busy; $("stop").disabled = !busy; $("new-chat").disabled = busy;
}
function showUsage(usage, extra) {
  if (usage) {
    $("u-prompt").textContent = usage.prompt_tokens;
    $("u-visual").textContent = usage.visual_tokens;
    $("u-completion").textContent = usage.completion_tokens;
  }
  if (extra) {
    $("u-tiles").textContent = extra.images.length
      ? extra.images.map((i) => `${i.cols}×${i.rows}${i.thumbnail ? "+thumb" : ""} = ${i.tiles}`).join(", ") : "no image";
    const t = extra.timing || {};
    $("u-ttft").textContent = t.first_token_s == null ? "–" : `${(t.first_token_s * 1000).toFixed(0)} ms`;
    $("u-total").textContent = t.total_s == null ? "–" : `${(t.total_s * 1000).toFixed(0)} ms`;
  }
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question && !state.pending.length) return;
  if (!state.model) await loadModel();
  saveSettings();
  const images = state.pending.splice(0);
  renderAttachments();
  const content = [...images.map((i) => ({ type: "image_url", image_url: { url: i.url } })),
    { type: "text", text: question }];
  const userMessage = { role: "user", content };
  const messages = [...state.history, userMessage];
  const system = $("system").value.trim();
  if (system) messages.unshift({ role: "system", content: system });
  const stream = $("stream").checked;
  const body = { model: state.model, messages, stream, ...tilingOptions() };
  if (stream) body.stream_options = { include_usage: true };
  if (num("max-tokens") !== null) body.max_tokens = num("max-tokens");
  if (num("temperature") !== null) body.temperature = num("temperature");
  if (num("top-p") !== null) body.top_p = num("top-p");
  if (num("seed") !== null) body.seed = num("seed");

  addMessage("user", question, images);
  $("question").value = "";
  const answer = addMessage("assistant", "");
  answer.div.classList.add("pending");
  setBusy(true);
  state.controller = new AbortController();
  let text = "", finish = null;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!res.ok) {
      const data = await res.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || `HTTP ${res.status}`);
    }
    if (stream) {
      for await (const chunk of sseEvents(res)) {
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) {
            text += choice.delta.content;
            answer.body.textContent = text;
            $("messages").scrollTop = $("messages").scrollHeight;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        if (chunk.usage) showUsage(chunk.usage, chunk.internvlx);
      }
    } else {
      const data = await res.json();
      text = data.choices[0].message.content;
      finish = data.choices[0].finish_reason;
      answer.body.textContent = text;
      showUsage(data.usage, data.internvlx);
    }
    state.history.push(userMessage, { role: "assistant", content: text });
    if (finish === "length") answer.div.insertAdjacentHTML("beforeend", '<span class="meta">(cut at max_tokens)</span>');
  } catch (e) {
    if (e.name === "AbortError") {
      answer.div.insertAdjacentHTML("beforeend", '<span class="meta">(stopped)</span>');
      if (text) state.history.push(userMessage, { role: "assistant", content: text });
    } else {
      answer.div.remove();
      showError(e.message);
      state.pending.unshift(...images);  // let the user retry with the same images
      renderAttachments();
    }
  } finally {
    answer.div.classList.remove("pending");
    state.controller = null;
    setBusy(false);
    pollHealth();
  }
}

function newChat() {
  state.history = [];
  $("messages").replaceChildren();
  const p = document.createElement("p");
  p.className = "hint";
  p.textContent = "New conversation. Attach an image and ask a question.";
  $("messages").append(p);
}

// ------------------------------------------------------------------ wiring
function init() {
  loadSettings();
  $("toggle-settings").onclick = () => {
    const box = $("settings");
    box.hidden = !box.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!box.hidden));
  };
  for (const id of FIELDS) $(id).addEventListener("change", () => { saveSettings(); if (id !== "api-key") refreshPlan(); });
  $("api-key").addEventListener("change", loadModel);
  $("composer").addEventListener("submit", send);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("file").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });
  $("stop").onclick = () => state.controller && state.controller.abort();
  $("new-chat").onclick = newChat;
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) { e.preventDefault(); addFiles(files); }
  });
  const composer = $("composer");
  composer.addEventListener("dragover", (e) => { e.preventDefault(); composer.classList.add("drag"); });
  composer.addEventListener("dragleave", () => composer.classList.remove("drag"));
  composer.addEventListener("drop", (e) => {
    e.preventDefault(); composer.classList.remove("drag");
    addFiles([...e.dataTransfer.files]);
  });
  loadModel();
  pollHealth();
  setInterval(pollHealth, 3000);
}
init();
