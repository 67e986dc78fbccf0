// Sample-accurate playback of the stream's clips with the Web Audio API.
//
// Clips are pieces of one continuous waveform (the server continues the phase across joins), so
// each is started exactly where the previous one ends: start times are kept as an integer sample
// count from t0 and converted once, never accumulated in floating point. A timer keeps LOOKAHEAD
// seconds scheduled. When no new clip has arrived in time the last one is repeated (as the original
// app did: the music stays on the beat) with 10 ms fades at that seam, and "falling behind" shows;
// the next real clip follows the repeat seamlessly (a repeat ends with the same samples). Pause
// suspends the AudioContext, which freezes the whole schedule in place.

const LOOKAHEAD = 1.5; // s scheduled ahead of the playhead
const FADE = 0.01; // s, only where a repeat makes a seam

export class Player {
  constructor(sampleRate) {
    this.ctx = new AudioContext({ sampleRate });
    this.sampleRate = this.ctx.sampleRate;
    this.out = this.ctx.createGain();
    this.out.connect(this.ctx.destination);
    this.waiting = []; // received clips not yet scheduled
    this.schedule = []; // {index, start, duration, samples, startSample, repeat, image, gain}
    this.t0 = null; // context time of sample 0
    this.nextSample = 0; // where the next clip starts, in samples from t0
    this.last = null; // the last real clip scheduled (for repeats)
    this.timer = null;
  }

  get playing() { return this.t0 !== null && this.ctx.state === "running"; }

  push(clip) { // clip: {index, channels: [Int16Array], image, startSample}
    const n = clip.channels[0].length;
    const buf = this.ctx.createBuffer(clip.channels.length, n, this.sampleRate);
    clip.channels.forEach((pcm, c) => {
      const data = buf.getChannelData(c);
      for (let i = 0; i < n; i++) data[i] = pcm[i] / 32768;
    });
    this.waiting.push({ ...clip, buffer: buf });
    if (this.t0 !== null) this.pump();
  }

  async start() {
    await this.ctx.resume();
    if (this.t0 === null) {
      this.t0 = this.ctx.currentTime + 0.1;
      this.timer = setInterval(() => this.pump(), 100);
      this.pump();
    }
  }

  pause() { return this.ctx.suspend(); }
  resume() { return this.ctx.resume(); }
  set volume(v) { this.out.gain.value = v; }

  pump() {
    const now = this.ctx.currentTime;
    while (this.t0 + this.nextSample / this.sampleRate < now + LOOKAHEAD) {
      if (this.waiting.length) this.play(this.waiting.shift(), false);
      else if (this.last) this.play(this.last, true);
      else break;
    }
  }

  play(clip, repeat) {
    const start = this.t0 + this.nextSample / this.sampleRate;
    const src = this.ctx.createBufferSource();
    const gain = this.ctx.createGain();
    src.buffer = clip.buffer;
    src.connect(gain).connect(this.out);
    const prev = this.schedule[this.schedule.length - 1];
    if (repeat && prev) { // fade the seam: out at the end of what plays now, in at the repeat
      prev.gain.gain.setValueAtTime(1, start - FADE);
      prev.gain.gain.linearRampToValueAtTime(0, start);
      gain.gain.setValueAtTime(0, start);
      gain.gain.linearRampToValueAtTime(1, start + FADE);
    }
    src.start(start);
    const samples = clip.buffer.length;
    this.schedule.push({ index: clip.index, start, duration: samples / this.sampleRate, samples,
                         startSample: clip.startSample, repeat, image: clip.image, gain });
    if (this.schedule.length > 64) this.schedule.splice(0, this.schedule.length - 64);
    this.nextSample += samples;
    if (!repeat) this.last = clip;
  }

  // The entry playing now, and how far into it.
  current() {
    const now = this.ctx.currentTime;
    for (let i = this.schedule.length - 1; i >= 0; i--) {
      const e = this.schedule[i];
      if (e.start <= now) return { entry: e, offset: Math.min(now - e.start, e.duration) };
    }
    return null;
  }

  // Seconds of the stream's own audio played (repeats do not advance it): reported to the server.
  streamPosition() {
    const c = this.current();
    if (!c) return 0;
    const { entry, offset } = c;
    return (entry.startSample + (entry.repeat ? entry.samples : offset * this.sampleRate)) / this.sampleRate;
  }

  // Seconds of new audio ready beyond the playhead (scheduled + waiting), and whether a repeat plays.
  buffered() {
    const now = this.ctx.currentTime;
    let s = 0, behind = false;
    for (const e of this.schedule) {
      if (e.start + e.duration <= now) continue;
      if (e.repeat) { if (e.start <= now) behind = true; continue; }
      s += e.start + e.duration - Math.max(now, e.start);
    }
    for (const c of this.waiting) s += c.buffer.duration;
    return { seconds: s, behind };
  }
}
