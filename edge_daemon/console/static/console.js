// edge-daemon console: one ES module, no dependencies, no build step. It talks to this daemon's own API only
// (the page's Content-Security-Policy forbids anything else) and builds every element with textContent, so
// nothing a model or a server sends is ever parsed as HTML.

const KEY_STORE = "edge-daemon.access-key";
const THEME_STORE = "edge-daemon.theme";
const AUTH_REQUIRED = document.documentElement.dataset.auth === "required";
const POLL_MS = 2000;
const WINDOW_S = 300;
// Routes the console itself polls: left out of the request-rate and latency charts.
const HOUSEKEEPING = new Set(["/", "/console/static/{name}", "/metrics", "/info", "/readiness", "/healthz",
  "/model/catalog", "/model/registry", "/openapi.json", "/docs", "/docs/static/{name}", "/streams",
  "/streams/{stream_id}", "/streams/{stream_id}/latest", "/streams/{stream_id}/latest.jpg"]);
const PALETTE = ["#E53935", "#1E88E5", "#43A047", "#FDD835", "#8E24AA", "#00ACC1", "#FB8C00", "#6D4C41",
  "#D81B60", "#3949AB", "#7CB342", "#00897B"];

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes (`text` sets textContent, `on*` functions become listeners) and children. */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") element.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) {
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return element;
}

function svg(tag, attrs = {}) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  return element;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [Math.floor(s / 60) % 60, "m"],
    [s % 60, "s"]];
  const first = parts.findIndex(([value]) => value > 0);
  return first < 0 ? "0s" : parts.slice(first, first + 2).map(([value, unit]) => `${value}${unit}`).join(" ");
}

function notice(message) {
  const element = $("#notice");
  element.textContent = message || "";
  element.hidden = !message;
}

// ----- the API, with the access key ---------------------------------------------------------------------------

class Unauthorized extends Error {}

function accessKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

/** Call the daemon; the key travels as an Authorization header only. Returns {data, response}. */
async function api(path, { method = "GET", json, raw = false } = {}) {
  const headers = new Headers();
  const key = accessKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let body;
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
  if (response.status === 401) {
    lock(key ? "That key was refused. Enter a valid access key." : "");
    throw new Unauthorized("access key needed");
  }
  if (raw) {
    if (!response.ok) throw new Error(`${path}: ${response.status} ${response.statusText}`);
    return { data: null, response };
  }
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const message = data && typeof data === "object" && data.message ? data.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return { data, response };
}

function reportError(error, where = "#notice") {
  if (error instanceof Unauthorized) return;
  if (where === "#notice") notice(error.message);
  else $(where).textContent = error.message;
}

// ----- access key gate ------------------------------------------------------------------------------------------

let unlocked = false;

function lock(message) {
  sessionStorage.removeItem(KEY_STORE);
  unlocked = false;
  stopAll();
  for (const page of document.querySelectorAll(".page")) page.hidden = true;
  $("#login").hidden = false;
  $("#forget-key").hidden = true;
  $("#login-error").textContent = message || "";
  $("#login-key").value = "";
  $("#login-key").focus();
}

async function unlock(event) {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("#login-error").textContent = "";
  try {
    await api("/info");
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("#login-error").textContent = error.message;
    return;
  }
  $("#login-key").value = "";
  start();
}

function start() {
  unlocked = true;
  $("#login").hidden = true;
  $("#forget-key").hidden = !AUTH_REQUIRED;
  sampler.start();
  route();
}

// ----- metrics sampling (request rate, latency percentiles) -----------------------------------------------------

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const label of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[label[1]] = label[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** Totals over the API routes (housekeeping left out): request count and the latency histogram. */
function summarise(samples) {
  let requests = 0;
  const buckets = new Map();
  for (const sample of samples) {
    if (HOUSEKEEPING.has(sample.labels.route)) continue;
    if (sample.name === "edge_daemon_requests_total") requests += sample.value;
    if (sample.name === "edge_daemon_request_duration_seconds_bucket") {
      const le = sample.labels.le === "+Inf" ? Infinity : Number(sample.labels.le);
      buckets.set(le, (buckets.get(le) || 0) + sample.value);
    }
  }
  return { requests, buckets };
}

/** Prometheus's histogram_quantile over the counts added between two scrapes (null when none). */
function quantile(q, before, after) {
  const bounds = [...after.buckets.keys()].sort((a, b) => a - b);
  const counts = bounds.map((le) => after.buckets.get(le) - (before.buckets.get(le) || 0));
  const total = counts[counts.length - 1];
  if (!total || total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (let i = 0; i < bounds.length; i += 1) {
    if (counts[i] >= rank) {
      if (bounds[i] === Infinity) return lowerBound;
      const inBucket = counts[i] - lowerCount;
      return lowerBound + (bounds[i] - lowerBound) * (inBucket > 0 ? (rank - lowerCount) / inBucket : 1);
    }
    lowerBound = bounds[i];
    lowerCount = counts[i];
  }
  return lowerBound;
}

const sampler = {
  timer: null,
  last: null,
  points: [], // {t, rate, p50, p95, p99}
  start() {
    if (this.timer) return;
    this.tick();
    this.timer = setInterval(() => this.tick(), POLL_MS);
  },
  stop() { clearInterval(this.timer); this.timer = null; },
  async tick() {
    let text;
    try {
      const { response } = await api("/metrics", { raw: true });
      text = await response.text();
    } catch (error) { reportError(error); return; }
    const now = Date.now() / 1000;
    const current = { t: now, ...summarise(parseMetrics(text)) };
    if (this.last) {
      const dt = current.t - this.last.t;
      const ms = (q) => { const value = quantile(q, this.last, current); return value === null ? null : value * 1000; };
      this.points.push({ t: now, rate: Math.max(0, (current.requests - this.last.requests) / dt),
        p50: ms(0.5), p95: ms(0.95), p99: ms(0.99) });
      this.points = this.points.filter((point) => point.t >= now - WINDOW_S);
    }
    this.last = current;
    if (currentPage === "overview") Overview.drawCharts();
  },
};

function drawChart(element, series, now, unit) {
  element.replaceChildren();
  const width = 600;
  const height = 160;
  const top = 12;
  const values = series.flatMap((s) => s.points.map((p) => p.value)).filter((v) => v !== null);
  const max = Math.max(unit === "ms" ? 1 : 0.1, ...values) * 1.1;
  for (const fraction of [0, 0.5, 1]) {
    const y = height - (height - top) * fraction;
    element.append(svg("line", { x1: 0, x2: width, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: 4, y: Math.max(11, y - 3), class: "axis" });
    label.textContent = `${(max * fraction).toFixed(max * fraction >= 10 ? 0 : 1)} ${unit}`;
    element.append(label);
  }
  const x = (t) => width - ((now - t) / WINDOW_S) * width;
  const y = (v) => height - (v / max) * (height - top);
  for (const { name, points } of series) {
    let path = "";
    let pen = "M";
    for (const point of points) {
      if (point.value === null) { pen = "M"; continue; }
      path += `${pen}${x(point.t).toFixed(1)},${y(point.value).toFixed(1)} ${pen === "M" ? "l0.1,0 " : ""}`;
      pen = "L";
    }
    if (path) element.append(svg("path", { d: path, class: `series ${name}` }));
  }
  element.dataset.points = String(series[0].points.length);
}

// ----- pages ----------------------------------------------------------------------------------------------------

const Overview = {
  timer: null,
  info: null,
  fetchedAt: 0,
  async enter() {
    await this.load();
    this.timer = setInterval(() => this.load(), 10000);
    this.drawCharts();
  },
  leave() { clearInterval(this.timer); this.timer = null; },
  async load() {
    try {
      const [info, readiness, catalog] = await Promise.all([
        api("/info"), api("/readiness").catch((error) => ({ data: null, error })), api("/model/catalog")]);
      this.info = info.data;
      this.fetchedAt = Date.now();
      this.render(info.data, readiness.data, catalog.data.models);
    } catch (error) { reportError(error); }
  },
  render(info, readiness, models) {
    const platform = info.platform || {};
    const cpu = platform.cpu || {};
    $("#ov-version").textContent = `${info.name} ${info.version}`;
    $("#ov-uptime").textContent = formatDuration(info.uptime_seconds);
    $("#ov-platform").textContent = [platform.device_kind, platform.board_model || cpu.model, platform.arch,
      platform.gpu ? `GPU ${platform.gpu.name || ""}`.trim() : null].filter(Boolean).join(" · ");
    const backend = info.backend || {};
    $("#ov-backend").textContent = `${backend.backend || "?"} (${backend.precision || "?"})`;
    $("#ov-reason").textContent = backend.reason || "";
    $("#ov-ready").textContent = readiness ? readiness.status : "unknown";
    $("#ov-loaded").textContent = `${(info.models_loaded || []).length} of ${models.length}`;
    const rows = models.map((model) => h("tr", {},
      h("td", { text: model.model_id }),
      h("td", {}, h("span", { class: `state ${model.state}`, text: model.state })),
      h("td", { text: model.source }),
      h("td", { text: model.last_error || "" })));
    $("#ov-models tbody").replaceChildren(...rows);
  },
  drawCharts() {
    const now = Date.now() / 1000;
    const points = sampler.points;
    drawChart($("#chart-rate"), [{ name: "rate", points: points.map((p) => ({ t: p.t, value: p.rate })) }], now, "/s");
    drawChart($("#chart-latency"), ["p50", "p95", "p99"].map((name) => (
      { name, points: points.map((p) => ({ t: p.t, value: p[name] })) })), now, "ms");
    const last = points[points.length - 1];
    $("#rate-now").textContent = last ? `now ${last.rate.toFixed(2)} requests/s` : "collecting…";
    const latest = [...points].reverse().find((p) => p.p50 !== null);
    const legend = ["p50", "p95", "p99"].map((name) => h("span", { class: `key ${name}`,
      text: `${name} ${latest ? latest[name].toFixed(1) : "–"} ms` }));
    $("#latency-now").replaceChildren(...legend.flatMap((element) => [element, " "]));
    if (this.info) {
      $("#ov-uptime").textContent = formatDuration(this.info.uptime_seconds + (Date.now() - this.fetchedAt) / 1000);
    }
  },
};

let catalogCache = [];

async function loadCatalog() {
  const [{ data: catalog }, registry] = await Promise.all([
    api("/model/catalog"), api("/model/registry").catch(() => ({ data: { models: [] } }))]);
  const families = new Map((registry.data.models || []).map((model) => [model.model_id, model.family]));
  catalogCache = catalog.models.map((model) => ({ ...model, family: model.family || families.get(model.model_id) }));
  return catalogCache;
}

const Models = {
  timer: null,
  busy: false,
  async enter() {
    await this.load();
    this.timer = setInterval(() => { if (!this.busy) this.load(); }, 3000);
  },
  leave() { clearInterval(this.timer); this.timer = null; },
  async load() {
    try { this.render(await loadCatalog()); } catch (error) { reportError(error); }
  },
  engineCell(model) {
    const engine = model.engine;
    if (!engine) return h("td", { class: "muted", "data-label": "Engine", text: "not loaded" });
    const how = engine.cache_hit ? "from cache" : `built in ${(engine.build_seconds || 0).toFixed(1)} s`;
    return h("td", { "data-label": "Engine" }, `${engine.backend} ${engine.backend_version || ""} · ${engine.precision}`,
      h("br"), h("span", { class: "muted small", text: `${how}${engine.cache_key ? ` · key ${engine.cache_key.slice(0, 12)}` : ""}` }),
      engine.fallback_reason ? h("div", { class: "small", text: engine.fallback_reason }) : null);
  },
  render(models) {
    const rows = models.map((model) => {
      const loaded = model.state === "ready";
      const transitional = ["loading", "downloading", "building"].includes(model.state);
      const label = model.model_id;
      return h("tr", { dataset: { model: model.model_id } },
        h("th", { scope: "row" }, model.model_id,
          model.classes ? h("div", { class: "muted small", text: `${model.classes.length} classes · ${formatBytes(model.size_bytes)}` }) : null),
        h("td", { "data-label": "Task / family" }, model.task || "?", model.family ? h("div", { class: "muted small", text: model.family }) : null,
          model.model_type ? h("div", { class: "muted small", text: model.model_type }) : null),
        h("td", { "data-label": "Source", text: model.source }),
        h("td", { "data-label": "State" }, h("span", { class: `state ${model.state}`, text: model.state, "data-state": model.state })),
        this.engineCell(model),
        h("td", { "data-label": "Engine cache" }, (model.engine_cache || []).length === 0 ? h("span", { class: "muted", text: "none" }) :
          model.engine_cache.map((entry) => h("div", { class: "small",
            text: `${entry.backend} ${entry.precision} · ${formatBytes(entry.size_bytes)} · ${entry.key.slice(0, 12)}${entry.valid ? "" : " (invalid)"}` }))),
        model.last_error ? h("td", { class: "small", "data-label": "Last error", text: model.last_error }) : h("td"),
        h("td", { "data-label": "Actions" }, h("div", { class: "actions" },
          h("button", { type: "button", disabled: loaded || transitional, "aria-label": `Load ${label}`, text: "Load",
            onclick: () => this.act("Loading", label, "/model/add") }),
          h("button", { type: "button", disabled: !loaded, "aria-label": `Unload ${label}`, text: "Unload",
            onclick: () => this.act("Unloading", label, "/model/remove") }),
          h("button", { type: "button", disabled: transitional, "aria-label": `Rebuild the engine of ${label}`,
            text: "Rebuild", onclick: () => this.act("Rebuilding", label, "/model/rebuild") }))));
    });
    $("#models-table tbody").replaceChildren(...rows);
  },
  async act(verb, modelId, path, extra = {}) {
    this.busy = true;
    notice(`${verb} ${modelId}…`);
    for (const button of document.querySelectorAll("#models-table button")) button.disabled = true;
    try {
      await api(path, { method: "POST", json: { model_id: modelId, ...extra } });
      notice(`${verb} ${modelId}: done`);
    } catch (error) {
      reportError(error);
    } finally {
      this.busy = false;
      await this.load();
    }
  },
  async pull(event) {
    event.preventDefault();
    const modelId = $("#pull-id").value.trim();
    const registryKey = $("#pull-key").value.trim();
    await this.act("Pulling", modelId, "/model/add", registryKey ? { api_key: registryKey } : {});
  },
};

// ----- Try it: run a model on a picture and draw what it found ---------------------------------------------

function colourFor(model, name, classId) {
  return (model && model.colors && model.colors[name]) || PALETTE[(classId ?? 0) % PALETTE.length];
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("could not read the file"));
    reader.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot show this image"));
    image.src = url;
  });
}

function parseServerTiming(header) {
  const stages = [];
  for (const part of (header || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const duration = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && duration) stages.push([name, Number(duration.slice(4))]);
  }
  return stages;
}

const TryIt = {
  file: null,
  image: null,
  tab: "curl",
  lastParams: null,
  async enter() {
    try {
      const models = catalogCache.length ? catalogCache : await loadCatalog();
      const select = $("#try-model");
      const chosen = select.value;
      select.replaceChildren(...models.filter((model) => model.task).map((model) => h("option",
        { value: model.model_id, text: `${model.model_id} (${model.task})` })));
      if (chosen && models.some((model) => model.model_id === chosen)) select.value = chosen;
      this.renderSnippet();
    } catch (error) { reportError(error); }
  },
  leave() {},
  model() { return catalogCache.find((model) => model.model_id === $("#try-model").value); },
  async setFile(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) { $("#try-error").textContent = `${file.name} is not an image`; return; }
    this.file = file;
    $("#try-url").value = "";
    $("#drop-help").textContent = `${file.name} (${formatBytes(file.size)})`;
    $("#try-error").textContent = "";
    this.dataUrl = await readAsDataUrl(file);
    this.image = await loadImage(this.dataUrl);
    this.draw(null);
  },
  params() {
    const classes = $("#try-classes").value.split(",").map((name) => name.trim()).filter(Boolean);
    return { confidence: Number($("#try-confidence").value), iou_threshold: Number($("#try-iou").value),
      ...(classes.length ? { class_filter: classes } : {}) };
  },
  async run(event) {
    event.preventDefault();
    const model = this.model();
    const url = $("#try-url").value.trim();
    $("#try-error").textContent = "";
    if (!model) { $("#try-error").textContent = "Pick a model first."; return; }
    if (!this.dataUrl && !url) { $("#try-error").textContent = "Drop an image or give its URL first."; return; }
    const image = url ? { type: "url", value: url } : { type: "base64", value: this.dataUrl.split(",", 2)[1] };
    const params = this.params();
    this.lastParams = params;
    const button = $("#try-run");
    button.disabled = true;
    button.textContent = "Running…";
    const started = performance.now();
    try {
      const { data, response } = await api(`/${model.model_id}`, { method: "POST", json: { image, ...params } });
      const roundTrip = performance.now() - started;
      if (url) this.image = null; // the daemon fetched the picture; the page never loads other origins
      $("#try-json").textContent = JSON.stringify(data, null, 2);
      this.draw(data);
      this.renderTimings(response.headers.get("Server-Timing"), data.time, roundTrip);
    } catch (error) {
      reportError(error, "#try-error");
    } finally {
      button.disabled = false;
      button.textContent = "Run";
      this.renderSnippet();
    }
  },
  renderTimings(header, serverSeconds, roundTrip) {
    const entries = [...parseServerTiming(header), ["server total", (serverSeconds || 0) * 1000],
      ["round trip", roundTrip]];
    $("#try-timings").replaceChildren(...entries.map(([name, ms]) => h("div", { dataset: { stage: name } },
      h("dt", { text: name }), h("dd", { text: `${ms.toFixed(1)} ms` }))));
  },
  draw(result) {
    const canvas = $("#try-canvas");
    const context = canvas.getContext("2d");
    const width = this.image ? this.image.naturalWidth : (result && result.image ? result.image.width : 640);
    const height = this.image ? this.image.naturalHeight : (result && result.image ? result.image.height : 360);
    canvas.width = width;
    canvas.height = height;
    context.fillStyle = "#808080";
    context.fillRect(0, 0, width, height);
    if (this.image) context.drawImage(this.image, 0, 0);
    const counts = { boxes: 0, masks: 0, keypoints: 0 };
    const chips = [];
    if (result) {
      const model = this.model();
      const scale = Math.max(width, height) / 640;
      const line = Math.max(2, Math.round(2 * scale));
      context.font = `600 ${Math.round(14 * scale)}px system-ui, sans-serif`;
      if (Array.isArray(result.predictions) && result.predictions.length && "x" in result.predictions[0]) {
        const perClass = new Map();
        for (const p of result.predictions) {
          const colour = colourFor(model, p.class, p.class_id);
          perClass.set(p.class, { colour, count: (perClass.get(p.class)?.count || 0) + 1 });
          if (Array.isArray(p.points) && p.points.length > 2) {
            context.beginPath();
            p.points.forEach((point, i) => (i ? context.lineTo(point.x, point.y) : context.moveTo(point.x, point.y)));
            context.closePath();
            context.globalAlpha = 0.4;
            context.fillStyle = colour;
            context.fill();
            context.globalAlpha = 1;
            counts.masks += 1;
          }
          context.lineWidth = line;
          context.strokeStyle = colour;
          context.strokeRect(p.x - p.width / 2, p.y - p.height / 2, p.width, p.height);
          counts.boxes += 1;
          for (const keypoint of p.keypoints || []) {
            if ((keypoint.confidence ?? 1) <= 0) continue;
            context.beginPath();
            context.arc(keypoint.x, keypoint.y, line * 2, 0, 2 * Math.PI);
            context.fillStyle = colour;
            context.fill();
            counts.keypoints += 1;
          }
          const label = `${p.class} ${(p.confidence * 100).toFixed(0)}%`;
          const textWidth = context.measureText(label).width + 8;
          const textHeight = Math.round(18 * scale);
          const left = Math.max(0, p.x - p.width / 2);
          const top = Math.max(0, p.y - p.height / 2 - textHeight);
          context.fillStyle = colour;
          context.fillRect(left, top, textWidth, textHeight);
          context.fillStyle = "#000";
          context.fillText(label, left + 4, top + textHeight - 5 * scale);
        }
        for (const [name, { colour, count }] of perClass) chips.push([name, colour, `${name} ×${count}`]);
      } else if (result.top !== undefined || result.predicted_classes) {
        const ranked = Array.isArray(result.predictions) ? result.predictions
          : Object.entries(result.predictions || {}).map(([name, value]) => ({ class: name, ...value }))
            .sort((a, b) => b.confidence - a.confidence);
        const shown = result.predicted_classes || (result.top ? [result.top] : []);
        const text = shown.length ? shown.join(", ") : "no class above the threshold";
        context.fillStyle = "rgba(0,0,0,0.65)";
        context.fillRect(0, 0, width, Math.round(36 * scale));
        context.fillStyle = "#fff";
        context.fillText(`${text}${result.confidence !== undefined ? ` ${(result.confidence * 100).toFixed(0)}%` : ""}`,
          10 * scale, 24 * scale);
        for (const p of ranked.slice(0, 5)) {
          chips.push([p.class, colourFor(model, p.class, p.class_id), `${p.class} ${(p.confidence * 100).toFixed(1)}%`]);
        }
        canvas.dataset.top = shown.join(",");
      }
    }
    Object.assign(canvas.dataset, { boxes: counts.boxes, masks: counts.masks, keypoints: counts.keypoints,
      drawn: result ? "yes" : "no" });
    if (!result) delete canvas.dataset.top;
    $("#try-summary").replaceChildren(...chips.map(([name, colour, text]) => {
      const swatch = h("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = colour; // CSSOM, allowed by the page's style-src 'self'
      return h("li", { dataset: { class: name } }, swatch, text);
    }));
  },
  renderSnippet() {
    const model = $("#try-model").value || "shapes/1";
    const origin = location.origin;
    const params = this.lastParams || this.params();
    const keyed = AUTH_REQUIRED;
    const snippets = {
      curl: [`curl -s -X POST '${origin}/${model}?confidence=${params.confidence}&overlap=${params.iou_threshold}` +
        `${params.class_filter ? `&classes=${encodeURIComponent(params.class_filter.join(","))}` : ""}' \\`,
      `     -H 'Content-Type: image/jpeg' --data-binary @image.jpg${keyed ? " \\" : ""}`,
      ...(keyed ? ['     -H "Authorization: Bearer $EDGE_DAEMON_KEY"'] : [])].join("\n"),
      requests: [
        "import base64" + (keyed ? ", os" : ""), "import requests", "",
        'with open("image.jpg", "rb") as f:',
        '    image = {"type": "base64", "value": base64.b64encode(f.read()).decode()}',
        `body = {"image": image, "confidence": ${params.confidence}, "iou_threshold": ${params.iou_threshold}` +
          `${params.class_filter ? `, "class_filter": ${JSON.stringify(params.class_filter)}` : ""}}`,
        ...(keyed ? ['headers = {"Authorization": f"Bearer {os.environ[\'EDGE_DAEMON_KEY\']}"}'] : []),
        `result = requests.post("${origin}/${model}", json=body${keyed ? ", headers=headers" : ""}, timeout=30).json()`,
        'for p in result.get("predictions", []):',
        "    print(p)"].join("\n"),
      sdk: [
        "# pip install inference-sdk" + (keyed ? "\nimport os" : ""),
        "from inference_sdk import InferenceConfiguration, InferenceHTTPClient", "",
        `client = InferenceHTTPClient(api_url="${origin}", api_key=${keyed ? 'os.environ["EDGE_DAEMON_KEY"]' : "None"})`,
        `client.configure(InferenceConfiguration(confidence_threshold=${params.confidence}, ` +
          `iou_threshold=${params.iou_threshold}${params.class_filter ? `, class_filter=${JSON.stringify(params.class_filter)}` : ""}))`,
        `result = client.infer("image.jpg", model_id="${model}")`,
        "print(result)"].join("\n"),
    };
    $("#snippet").textContent = snippets[this.tab];
  },
  selectTab(button) {
    for (const tab of document.querySelectorAll("#snippet-tabs [role=tab]")) {
      const selected = tab === button;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    $("#snippet").setAttribute("aria-labelledby", button.id);
    this.tab = button.dataset.snippet;
    this.renderSnippet();
  },
  async copy() {
    const text = $("#snippet").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // http:// on a LAN is not a secure context: fall back to selecting the text for the user
      const range = document.createRange();
      range.selectNodeContents($("#snippet"));
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    notice("Snippet copied");
  },
};

// ----- Cameras (shown when the daemon has a /streams API) -----------------------------------------------------

const EVENTS_KEPT = 5;

const Cameras = {
  timer: null,
  hasStreams: null,
  framePath: null,
  frames: new Map(), // stream id -> object URL of its newest drawn frame
  results: new Map(), // stream id -> what its newest result found
  seen: new Map(), // stream id -> {t, inferred, state, fps, events: [...]}, kept by the page between polls
  busy: false,
  async enter() {
    if (this.hasStreams === null) {
      try {
        const { data } = await api("/openapi.json");
        const paths = Object.keys(data.paths || {});
        this.hasStreams = paths.includes("/streams");
        this.framePath = paths.find((path) => /^\/streams\/\{[^}]+\}\/latest\.jpg$/.test(path)) || null;
        this.canManage = (data.paths["/streams"] || {}).post !== undefined;
        this.hasLatest = paths.some((path) => /^\/streams\/\{[^}]+\}\/latest$/.test(path));
      } catch (error) { reportError(error); return; }
    }
    $("#cameras-none").hidden = this.hasStreams;
    $("#camera-form").hidden = !(this.hasStreams && this.canManage);
    if (!this.hasStreams) return;
    await this.load();
    this.timer = setInterval(() => { if (!this.busy) this.load(); }, POLL_MS);
  },
  leave() { clearInterval(this.timer); this.timer = null; },
  async load() {
    try {
      const { data } = await api("/streams");
      this.render(data.streams || []);
    } catch (error) { reportError(error); }
  },
  async frame(stream, image) {
    if (!this.framePath) return;
    const path = this.framePath.replace(/\{[^}]+\}/, encodeURIComponent(stream.id));
    try {
      const { response } = await api(path, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      const old = this.frames.get(stream.id);
      if (old) URL.revokeObjectURL(old);
      this.frames.set(stream.id, url);
      image.src = url;
    } catch { /* no frame yet */ }
  },
  /** What the newest result found, e.g. "circle ×3, square ×1" (the JSON twin of latest.jpg). */
  async detections(stream, target) {
    if (!this.hasLatest) return;
    try {
      const { data } = await api(`/streams/${encodeURIComponent(stream.id)}/latest`);
      const counts = new Map();
      for (const p of Array.isArray(data.predictions) ? data.predictions : []) counts.set(p.class, (counts.get(p.class) || 0) + 1);
      const text = counts.size ? [...counts].map(([name, count]) => `${name} ×${count}`).join(", ") : "nothing";
      this.results.set(stream.id, text);
      target.textContent = text;
    } catch { /* no result yet */ }
  },
  /** The page's own record: inferred-frame rate between polls and the stream's recent state changes. */
  observe(stream) {
    const now = Date.now() / 1000;
    const frames = stream.frames || {};
    const before = this.seen.get(stream.id);
    const record = before || { t: now, inferred: frames.inferred, state: null, fps: null, error: null, events: [] };
    if (before && now > before.t && frames.inferred !== undefined) {
      record.fps = Math.max(0, (frames.inferred - before.inferred) / (now - before.t));
    }
    record.t = now;
    record.inferred = frames.inferred;
    const time = new Date().toLocaleTimeString();
    if (record.state !== stream.state) {
      record.events.unshift(`${time} ${stream.state}`);
      record.state = stream.state;
    }
    if (stream.last_error && record.error !== stream.last_error) record.events.unshift(`${time} error: ${stream.last_error}`);
    record.error = stream.last_error;
    record.events = record.events.slice(0, EVENTS_KEPT);
    this.seen.set(stream.id, record);
    return record;
  },
  async act(stream, verb, path, method = "POST") {
    this.busy = true;
    notice(`${verb} ${stream.id}…`);
    try {
      await api(path, { method });
      notice("");
      if (method === "DELETE") {
        const url = this.frames.get(stream.id);
        if (url) URL.revokeObjectURL(url);
        this.frames.delete(stream.id);
        this.results.delete(stream.id);
        this.seen.delete(stream.id);
      }
    } catch (error) { reportError(error); }
    this.busy = false;
    await this.load();
  },
  async add(event) {
    event.preventDefault();
    const body = { id: $("#cam-id").value.trim(), source: $("#cam-source").value.trim(),
      model_id: $("#cam-model").value.trim(), max_fps: Number($("#cam-fps").value) };
    $("#cam-error").textContent = "";
    const button = $("#cam-add");
    button.disabled = true;
    this.busy = true;
    try {
      await api("/streams", { method: "POST", json: body });
      $("#cam-id").value = "";
      $("#cam-source").value = "";
    } catch (error) {
      reportError(error, "#cam-error");
    } finally {
      button.disabled = false;
      this.busy = false;
    }
    await this.load();
  },
  render(streams) {
    const cards = streams.map((stream) => {
      const frames = stream.frames || {};
      const record = this.observe(stream);
      const id = encodeURIComponent(stream.id);
      const image = h("img", { alt: `Latest frame of ${stream.id}` });
      if (this.frames.has(stream.id)) image.src = this.frames.get(stream.id);
      // Only once the model has run on a frame: before that latest.jpg is a 404 (noise in the browser's console).
      const hasResult = (frames.inferred || 0) > 0;
      if (hasResult) this.frame(stream, image);
      const config = stream.config || {};
      const fps = stream.fps ?? frames.fps ?? (record.fps === null ? undefined : record.fps.toFixed(1));
      const facts = [["model", stream.model_id], ["fps", fps], ["max fps", config.max_fps],
        ["frames read", frames.read], ["inferred", frames.inferred], ["dropped", frames.dropped],
        ["reconnects", stream.reconnects], ["last error", stream.last_error]]
        .filter(([, value]) => value !== undefined && value !== null && value !== "");
      const paused = stream.state === "paused";
      const found = h("dd", { class: "found", text: this.results.get(stream.id) || "–" });
      if (hasResult && !paused) this.detections(stream, found);
      const actions = this.canManage ? h("div", { class: "actions" },
        h("button", { type: "button", "aria-label": `${paused ? "Resume" : "Pause"} ${stream.id}`,
          text: paused ? "Resume" : "Pause",
          onclick: () => this.act(stream, paused ? "Resuming" : "Pausing", `/streams/${id}/${paused ? "resume" : "pause"}`) }),
        h("button", { type: "button", "aria-label": `Remove ${stream.id}`, text: "Remove",
          onclick: () => this.act(stream, "Removing", `/streams/${id}`, "DELETE") })) : null;
      return h("article", { class: "panel camera", dataset: { stream: stream.id } },
        h("h2", {}, `${stream.id} `, h("span", { class: `state ${stream.state}`, dataset: { state: stream.state },
          text: stream.state })),
        image, stream.source ? h("p", { class: "muted small", text: stream.source }) : null,
        h("dl", {}, facts.flatMap(([name, value]) => [h("dt", { text: name }), h("dd", { text: String(value) })]),
          this.hasLatest ? [h("dt", { text: "last result" }), found] : []),
        actions,
        record.events.length ? h("ul", { class: "events", "aria-label": `Recent events of ${stream.id}` },
          record.events.map((text) => h("li", { text }))) : null);
    });
    const ids = new Set(streams.map((stream) => stream.id));
    for (const id of [...this.seen.keys()]) if (!ids.has(id)) this.seen.delete(id);
    $("#cameras-list").replaceChildren(...(cards.length ? cards : [h("p", { class: "muted", text: "No camera streams configured." })]));
  },
};

// ----- routing, theme, start ------------------------------------------------------------------------------------

const PAGES = { overview: Overview, models: Models, try: TryIt, cameras: Cameras };
let currentPage = null;

function stopAll() {
  if (currentPage) PAGES[currentPage].leave();
  currentPage = null;
  sampler.stop();
}

function route() {
  if (!unlocked) return;
  const requested = (location.hash.match(/^#\/(\w+)/) || [])[1];
  const name = PAGES[requested] ? requested : "overview";
  if (currentPage) PAGES[currentPage].leave();
  currentPage = name;
  notice("");
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${$(`#page-${name} h1`).textContent} · edge-daemon`;
  PAGES[name].enter();
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const toggle = $("#theme-toggle");
  toggle.textContent = theme === "dark" ? "Light theme" : "Dark theme";
  toggle.setAttribute("aria-pressed", String(theme === "dark"));
}

function setUpTheme() {
  const media = matchMedia("(prefers-color-scheme: dark)");
  const chosen = () => localStorage.getItem(THEME_STORE) || (media.matches ? "dark" : "light");
  applyTheme(chosen());
  media.addEventListener("change", () => applyTheme(chosen()));
  $("#theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem(THEME_STORE, next);
    applyTheme(next);
  });
}

function setUpTry() {
  $("#try-form").addEventListener("submit", (event) => TryIt.run(event));
  $("#try-file").addEventListener("change", (event) => TryIt.setFile(event.target.files[0]));
  $("#try-model").addEventListener("change", () => TryIt.renderSnippet());
  $("#try-url").addEventListener("input", () => { if ($("#try-url").value) { TryIt.dataUrl = null; TryIt.file = null; } });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    TryIt.setFile(event.dataTransfer.files[0]);
  });
  const tabs = [...document.querySelectorAll("#snippet-tabs [role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => TryIt.selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
      next.focus();
      TryIt.selectTab(next);
    });
  }
  $("#copy-snippet").addEventListener("click", () => TryIt.copy());
}

setUpTheme();
setUpTry();
$("#login-form").addEventListener("submit", unlock);
$("#pull-form").addEventListener("submit", (event) => Models.pull(event));
$("#camera-form").addEventListener("submit", (event) => Cameras.add(event));
$("#forget-key").addEventListener("click", () => lock("Key forgotten."));
window.addEventListener("hashchange", route);
if (AUTH_REQUIRED && !accessKey()) lock("");
else start();
