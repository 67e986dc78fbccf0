// 16-bit PCM WAV in and out, so clips keep their exact sample counts (no decoder in between).

function dataUrlBytes(url) {
  const b64 = url.slice(url.indexOf(",") + 1).replace(/\s/g, "");
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// A WAV data URL -> {sampleRate, channels: [Int16Array, ...]}: walks the RIFF chunks to "data".
export function parseWav(url) {
  const bytes = dataUrlBytes(url);
  const view = new DataView(bytes.buffer);
  let pos = 12, channels = 1, sampleRate = 44100;
  while (pos + 8 <= bytes.length) {
    const id = String.fromCharCode(...bytes.subarray(pos, pos + 4));
    const size = view.getUint32(pos + 4, true);
    if (id === "fmt ") {
      channels = view.getUint16(pos + 10, true);
      sampleRate = view.getUint32(pos + 12, true);
    } else if (id === "data") {
      const frames = Math.floor(Math.min(size, bytes.length - pos - 8) / (2 * channels));
      const out = Array.from({ length: channels }, () => new Int16Array(frames));
      for (let i = 0; i < frames; i++)
        for (let c = 0; c < channels; c++) out[c][i] = view.getInt16(pos + 8 + 2 * (i * channels + c), true);
      return { sampleRate, channels: out };
    }
    pos += 8 + size + (size & 1);
  }
  throw new Error("no data chunk in WAV");
}

// Int16 channel pieces (one array of channels per clip) -> a WAV Blob.
export function wavBlob(pieces, sampleRate) {
  const channels = pieces.length ? pieces[0].length : 1;
  const frames = pieces.reduce((n, p) => n + p[0].length, 0);
  const buf = new ArrayBuffer(44 + frames * channels * 2);
  const v = new DataView(buf);
  const text = (o, s) => [...s].forEach((ch, i) => v.setUint8(o + i, ch.charCodeAt(0)));
  text(0, "RIFF"); v.setUint32(4, 36 + frames * channels * 2, true); text(8, "WAVE");
  text(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, channels, true);
  v.setUint32(24, sampleRate, true); v.setUint32(28, sampleRate * channels * 2, true);
  v.setUint16(32, channels * 2, true); v.setUint16(34, 16, true);
  text(36, "data"); v.setUint32(40, frames * channels * 2, true);
  let o = 44;
  for (const p of pieces)
    for (let i = 0; i < p[0].length; i++)
      for (let c = 0; c < channels; c++, o += 2) v.setInt16(o, p[c][i], true);
  return new Blob([buf], { type: "audio/wav" });
}
