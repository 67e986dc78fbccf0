// The page: connects to /stream, hands clips to the Player, draws the spectrogram under the playhead.
// window.minriff exposes the state for tests (schedule on the AudioContext timeline, clips, errors).
import { Player } from "./player.js";
import { parseWav, wavBlob } from "./wav.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PX_PER_S = 100; // one spectrogram column = 10 ms
const MAX_SESSION_S = 1800; // the WAV download keeps the last 30 minutes
const state = { ws: null, player: null, clips: 0, errors: [], pcm: [], pcmSeconds: 0, images: new Map(),
                prebuffer: Number(params.get("prebuffer") || 1), started: false, paused: false };
window.minriff = state;

function showError(msg) { state.errors.push(msg); $("error").hidden = false; $("error").textContent = msg; }
function send(msg) { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); }
function settings() {
  const s = { denoising: Number($("denoising").value) };
  if ($("seed-image").value) s.seed_image_id = $("seed-image").value;
  return s;
}

function connect(prompt) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/stream`);
  state.ws = ws;
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data), prompt);
  ws.onclose = (ev) => { if (ev.code !== 1000) $("status").textContent = `disconnected (${ev.code})`; };
}

function onMessage(msg, prompt) {
  if (msg.type === "hello") {
    fillSeedImages(msg.seed_images);
    $("previews-label").hidden = !msg.previews;
    state.player = new Player(msg.sample_rate);
    state.player.volume = Number($("volume").value);
    const start = { type: "start", prompt, ...settings(), previews: $("previews").checked,
                    ahead: Number(params.get("ahead") || 2) };
    for (const k of ["seed", "steps", "guidance"]) if (params.has(k)) start[k] = Number(params.get(k));
    send(start);
    $("status").textContent = "generating the first clip…";
  } else if (msg.type === "clip") {
    onClip(msg);
    onMessage({ type: "queue", target: msg.target, queued: msg.queued }, prompt);
  } else if (msg.type === "queue") {
    renderQueue([...(msg.target ? [`now morphing to: ${msg.target}`] : []), ...msg.queued]);
  } else if (msg.type === "preview") {
    $("preview").src = msg.image; $("preview").hidden = false;
  } else if (msg.type === "error") {
    showError(`server: ${msg.error}`);
  }
}

async function onClip(msg) {
  const { sampleRate, channels } = parseWav(msg.audio);
  const img = new Image();
  img.src = msg.image;
  state.clips += 1;
  keepForDownload(channels, sampleRate);
  state.player.push({ index: msg.index, channels, image: img, startSample: msg.start_sample });
  const r = msg.request;
  $("now").textContent = `clip ${msg.index}: ${msg.state === "TRANSITION" ? `${r.start.prompt} → ${r.end.prompt}`
    : r.start.prompt} (α ${r.alpha.toFixed(2)}, seeds ${r.start.seed}/${r.end.seed}, ${msg.generate_s} s to make)`;
  if (!state.started && !state.paused && state.clips >= state.prebuffer) {
    state.started = true;
    await state.player.start();
    $("status").textContent = "playing";
  }
}

function keepForDownload(channels, sampleRate) {
  state.pcm.push(channels);
  state.pcmSeconds += channels[0].length / sampleRate;
  while (state.pcmSeconds > MAX_SESSION_S && state.pcm.length > 1)
    state.pcmSeconds -= state.pcm.shift()[0].length / sampleRate;
  $("download").disabled = false;
}

function fillSeedImages(ids) {
  const sel = $("seed-image");
  const want = params.get("seedImageId") || "og_beat";
  sel.replaceChildren(...ids.map((id) => new Option(id, id, false, id === want)));
  if (!ids.length) sel.append(new Option("(none on the server)", ""));
}

function renderQueue(prompts) { $("queue").replaceChildren(...prompts.map((p) => Object.assign(document.createElement("li"), { textContent: p }))); }

// ---- drawing: the spectrograms laid on the timeline, scrolling under a fixed playhead --------------
function draw() {
  const canvas = $("spectrogram"), g = canvas.getContext("2d");
  g.fillStyle = "#000"; g.fillRect(0, 0, canvas.width, canvas.height);
  const p = state.player;
  const headX = Math.round(canvas.width * 0.25);
  if (p && p.t0 !== null) {
    const now = p.ctx.currentTime;
    for (const e of p.schedule) {
      const x = headX + (e.start - now) * PX_PER_S;
      const w = e.duration * PX_PER_S;
      if (x + w < 0 || x > canvas.width || !e.image.complete) continue;
      g.globalAlpha = e.repeat ? 0.45 : 1;
      g.drawImage(e.image, x, 0, w, canvas.height);
    }
    g.globalAlpha = 1;
    const b = p.buffered();
    $("buffer-fill").style.width = `${Math.min(100, (b.seconds / 15.36) * 100)}%`;
    $("buffer-text").textContent = `buffer ${b.seconds.toFixed(1)} s`;
    $("behind").hidden = !b.behind && !(b.seconds < 0.5 && state.started);
  }
  g.fillStyle = "rgba(255,60,60,0.9)"; g.fillRect(headX - 1, 0, 2, canvas.height);
  requestAnimationFrame(draw);
}

// ---- controls ------------------------------------------------------------------------------------
$("prompt-form").onsubmit = async (ev) => {
  ev.preventDefault();
  if (!state.ws) { connect($("prompt").value); $("play").textContent = "Pause"; return; }
  if (!state.player) return;
  state.paused = !state.paused;
  if (state.paused) { await state.player.pause(); send({ type: "pause" }); $("play").textContent = "Play"; }
  else { await (state.started ? state.player.resume() : state.player.start()); state.started = true;
         send({ type: "resume" }); $("play").textContent = "Pause"; }
  $("status").textContent = state.paused ? "paused" : "playing";
};
$("next-form").onsubmit = (ev) => {
  ev.preventDefault();
  const prompt = $("next").value.trim();
  if (!prompt || !state.ws) return;
  send({ type: "up_next", prompt });
  $("next").value = "";
};
$("seed-image").onchange = $("denoising").onchange = () => send({ type: "settings", ...settings() });
$("volume").oninput = () => { if (state.player) state.player.volume = Number($("volume").value); };
$("previews").onchange = () => send({ type: "settings", previews: $("previews").checked });
$("download").onclick = () => {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(wavBlob(state.pcm, state.player ? state.player.sampleRate : 44100));
  a.download = "minriff-session.wav";
  a.click();
};
setInterval(() => { // the server paces generation by this playhead
  if (state.player && state.started) send({ type: "position", seconds: state.player.streamPosition() });
}, 1000);

if (params.get("prompt")) $("prompt").value = params.get("prompt");
if (params.get("denoising")) $("denoising").value = params.get("denoising");
requestAnimationFrame(draw);
if (params.get("autoplay") === "1") $("play").click();
