// frafer's page: send photos (or webcam frames) to POST /v1/predict, draw what comes back. No framework, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const results = [];  // one predictions.jsonl line per image, for the downloads
let classes = [];

function headers() {
  const token = $("token").value.trim() || localStorage.getItem("frafer-token") || "";
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (response.status === 401) {
    $("token-box").hidden = false;
    $("model-info").textContent = "this server needs an access token: enter it below";
    return;
  }
  const card = await response.json();
  classes = card.classes;
  const test = card.card && card.card.metrics && card.card.metrics.test;
  const accuracy = test ? ` · FER+ Test top-1 ${test.top1.toFixed(1)} %` : "";
  $("model-info").textContent = `model ${card.model}: ${classes.length} expressions (${classes.join(", ")})` +
    `, ${card.input_size} px faces${accuracy}`;
}

function colourOf(label) {
  const i = classes.indexOf(label);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function drawFaces(ctx, faces, scale) {
  const unit = Math.max(2, Math.round(Math.min(ctx.canvas.width, ctx.canvas.height) * 0.02));
  ctx.lineWidth = Math.max(2, unit / 2);
  ctx.font = `${2 * unit}px system-ui, sans-serif`;
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    const colour = colourOf(face.label);
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${face.label} ${face.confidence.toFixed(2)}`;
    const width = ctx.measureText(text).width + unit;
    const top = y1 - 2.6 * unit >= 0 ? y1 - 2.6 * unit : y2;
    ctx.fillStyle = colour;
    ctx.fillRect(x1, top, width, 2.6 * unit);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x1 + unit / 2, top + 2 * unit);
  }
}

function bars(face) {
  const box = document.createElement("div");
  box.className = "bars";
  const entries = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const row = document.createElement("div");
    row.className = "bar" + (label === face.label ? " top" : "");
    row.innerHTML = `<span></span><span class="track"><span class="fill"></span></span><span></span>`;
    row.children[0].textContent = label;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.children[2].textContent = `${(100 * p).toFixed(1)}%`;
    box.appendChild(row);
  }
  return box;
}

function showImage(file, bitmap, line) {
  const card = document.createElement("article");
  card.className = "image";
  const title = document.createElement("h2");
  title.textContent = `${file.name}: ${line.faces.length} face(s)`;
  card.appendChild(title);
  const canvas = document.createElement("canvas");
  const scale = Math.min(1, 900 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  drawFaces(ctx, line.faces, scale);
  card.appendChild(canvas);
  const grid = document.createElement("div");
  grid.className = "faces";
  for (const face of line.faces) {
    const item = document.createElement("div");
    item.className = "face";
    const label = document.createElement("div");
    label.className = "face-label";
    label.innerHTML = `face ${face.face}: <span class="name"></span> <span class="conf"></span>`;
    label.querySelector(".name").textContent = face.label;
    label.querySelector(".conf").textContent = `(${(100 * face.confidence).toFixed(1)} %)`;
    item.appendChild(label);
    item.appendChild(bars(face));
    if (face.panel) {
      const img = document.createElement("img");
      img.className = "panel";
      img.alt = `where the model looked for face ${face.face}`;
      img.src = face.panel;
      item.appendChild(img);
    }
    grid.appendChild(item);
  }
  if (!line.faces.length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "no face found (try another face finder)";
    card.appendChild(none);
  }
  card.appendChild(grid);
  $("results").prepend(card);
}

function showError(file, message) {
  const card = document.createElement("article");
  card.className = "image";
  card.innerHTML = `<h2></h2><p class="error"></p>`;
  card.querySelector("h2").textContent = file.name;
  card.querySelector(".error").textContent = message;
  $("results").prepend(card);
}

async function predict(blob, options) {
  const form = new FormData();
  form.append("image", blob, blob.name || "frame.jpg");
  const query = new URLSearchParams(options).toString();
  const response = await fetch(`/v1/predict?${query}`, { method: "POST", body: form, headers: headers() });
  const body = await response.json();
  if (response.status === 401) $("token-box").hidden = false;
  if (!response.ok) throw new Error(`${body.status || response.status}: ${body.message || "failed"}`);
  return body;
}

async function handleFiles(files) {
  const list = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  let done = 0;
  for (const file of list) {
    $("status").textContent = `labelling ${done + 1} of ${list.length}…`;
    try {
      const line = await predict(file, { heatmaps: $("opt-heatmaps").checked, detector: $("opt-detector").value });
      line.file = file.name;
      results.push(line);
      showImage(file, await createImageBitmap(file), line);
    } catch (err) {
      showError(file, err.message);
    }
    done += 1;
  }
  $("status").textContent = `${done} photo(s) labelled`;
  $("download-json").disabled = $("download-csv").disabled = results.length === 0;
}

function download(name, text, type) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  link.click();
  URL.revokeObjectURL(link.href);
}

function asCsv() {
  const head = ["file", "face", "x1", "y1", "x2", "y2", "label", "confidence", ...classes.map((c) => `p_${c}`)];
  const rows = [head.join(",")];
  for (const line of results) {
    for (const f of line.faces) {
      const cells = [JSON.stringify(line.file), f.face, ...f.box, f.label, f.confidence,
        ...classes.map((c) => (c in f.probabilities ? f.probabilities[c] : ""))];
      rows.push(cells.join(","));
    }
  }
  return rows.join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------------- webcam
let stream = null;
let live = false;

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("status").textContent = "this browser gives no webcam here (it needs https or localhost)";
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640 }, audio: false });
  } catch (err) {
    $("status").textContent = `no webcam: ${err.message}`;
    return;
  }
  $("video").srcObject = stream;
  $("live").hidden = false;
  live = true;
  loop();
}

async function loop() {
  const video = $("video");
  const overlay = $("overlay");
  const grab = document.createElement("canvas");
  while (live) {
    if (video.videoWidth) {
      grab.width = overlay.width = video.videoWidth;
      grab.height = overlay.height = video.videoHeight;
      overlay.style.width = `${video.clientWidth}px`;
      grab.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((ok) => grab.toBlob(ok, "image/jpeg", 0.85));
      try {
        const line = await predict(blob, { detector: $("opt-detector").value === "none" ? "mtcnn" :
          $("opt-detector").value });
        const ctx = overlay.getContext("2d");
        ctx.clearRect(0, 0, overlay.width, overlay.height);
        drawFaces(ctx, line.faces, 1);
      } catch (err) {
        $("status").textContent = err.message;
      }
    }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}

function stopWebcam() {
  live = false;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  $("live").hidden = true;
}

// ---------------------------------------------------------------------------------------------------- wiring
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handleFiles(e.dataTransfer.files); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("files").click(); });
$("files").addEventListener("change", (e) => handleFiles(e.target.files));
$("webcam").addEventListener("click", startWebcam);
$("stop-webcam").addEventListener("click", stopWebcam);
$("token").addEventListener("change", () => { localStorage.setItem("frafer-token", $("token").value.trim()); loadModel(); });
$("download-json").addEventListener("click", () =>
  download("predictions.jsonl", results.map((r) => JSON.stringify(r)).join("\n") + "\n", "application/x-ndjson"));
$("download-csv").addEventListener("click", () => download("faces.csv", asCsv(), "text/csv"));
loadModel();
