// roomvoice microphone capture: an AudioWorkletProcessor that turns the mic signal into
// 20 ms frames of PCM16 little-endian mono at `processorOptions.targetRate` (the rate the
// page negotiates with the server; the context's own rate when it is not lower).
//
// Downsampling (48 or 44.1 kHz → 24 kHz, say) sends a half or less of the bytes upstream.
// It low-passes first (a Blackman-windowed sinc FIR, cut-off at 90% of the new Nyquist, so
// nothing above it folds back as aliasing), then reads the filtered signal at fractional
// positions (linear interpolation between two filtered samples), which handles any ratio.
//
// The render thread hands us blocks of 128 samples; 20 ms is not a multiple of 128
// (960 samples at 48 kHz, 882 at 44.1 kHz), so samples are collected in a Float32 buffer
// and a frame is posted each time it fills. Each message is
// {pcm: ArrayBuffer (transferred, not copied), rms: number (0..1, of this frame)}.
//
// The node is created with channelCount 1 / channelCountMode "explicit", so the Web Audio
// graph has already down-mixed any stereo input to mono before it reaches process().

class Downsampler {
  constructor(inRate, outRate, taps = 63) {
    this.step = inRate / outRate;
    const cutoff = (0.5 * 0.9 * outRate) / inRate; // cycles per input sample
    const middle = (taps - 1) / 2;
    this.kernel = new Float32Array(taps);
    let sum = 0;
    for (let i = 0; i < taps; i++) {
      const x = i - middle;
      const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
      const phase = (2 * Math.PI * i) / (taps - 1);
      const window = 0.42 - 0.5 * Math.cos(phase) + 0.08 * Math.cos(2 * phase);
      this.kernel[i] = sinc * window;
      sum += this.kernel[i];
    }
    for (let i = 0; i < taps; i++) this.kernel[i] /= sum; // unity gain at DC
    this.taps = taps;
    this.history = new Float32Array(taps + 1024);
    this.length = taps - 1; // starts with silence, so the first outputs have a full window
    this.position = 0; // where the next output sits, in history samples
  }

  filtered(index) {
    let acc = 0;
    const kernel = this.kernel;
    const history = this.history;
    for (let k = 0; k < this.taps; k++) acc += kernel[k] * history[index + k];
    return acc;
  }

  // Resample one block; calls emit(sample) for each output sample.
  process(samples, emit) {
    if (this.length + samples.length > this.history.length) {
      const bigger = new Float32Array((this.length + samples.length) * 2);
      bigger.set(this.history.subarray(0, this.length));
      this.history = bigger;
    }
    this.history.set(samples, this.length);
    this.length += samples.length;
    while (Math.floor(this.position) + this.taps < this.length) {
      const index = Math.floor(this.position);
      const fraction = this.position - index;
      const a = this.filtered(index);
      emit(fraction === 0 ? a : a + (this.filtered(index + 1) - a) * fraction);
      this.position += this.step;
    }
    const consumed = Math.floor(this.position);
    this.history.copyWithin(0, consumed, this.length);
    this.length -= consumed;
    this.position -= consumed;
  }
}

class Pcm16CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = options && options.processorOptions && options.processorOptions.targetRate;
    // `sampleRate` is a global of AudioWorkletGlobalScope (the context's rate).
    this.rate = target > 0 && target < sampleRate ? target : sampleRate;
    this.downsampler = this.rate < sampleRate ? new Downsampler(sampleRate, this.rate) : null;
    this.frameSamples = Math.round(this.rate * 0.02);
    this.buffer = new Float32Array(this.frameSamples);
    this.filled = 0;
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === 'stop') this.stopped = true;
    };
  }

  process(inputs, outputs) {
    if (this.stopped) return false; // lets the node be collected
    // The node's one output only keeps it pulled by the graph; it must stay silent (no
    // local echo of the mic), so clear it explicitly rather than rely on zeroed buffers.
    for (const channel of (outputs[0] || [])) channel.fill(0);
    const input = inputs[0];
    // No input connected (or the track ended): nothing to do, but stay alive.
    if (!input || input.length === 0 || !input[0]) return true;
    if (this.downsampler) {
      this.downsampler.process(input[0], (sample) => this.push(sample));
      return true;
    }
    const samples = input[0];
    let offset = 0;
    while (offset < samples.length) {
      const take = Math.min(samples.length - offset, this.frameSamples - this.filled);
      this.buffer.set(samples.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === this.frameSamples) {
        this.flush();
      }
    }
    return true;
  }

  push(sample) {
    this.buffer[this.filled++] = sample;
    if (this.filled === this.frameSamples) this.flush();
  }

  flush() {
    const n = this.frameSamples;
    const pcm = new ArrayBuffer(n * 2);
    const view = new DataView(pcm);
    let sumSquares = 0;
    for (let i = 0; i < n; i++) {
      let s = this.buffer[i];
      sumSquares += s * s;
      // Clamp, then scale asymmetrically so -1.0 maps to -32768 and +1.0 to 32767.
      if (s > 1) s = 1;
      else if (s < -1) s = -1;
      view.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    this.filled = 0;
    this.port.postMessage({ pcm, rms: Math.sqrt(sumSquares / n) }, [pcm]);
  }
}

registerProcessor('roomvoice-pcm16-capture', Pcm16CaptureProcessor);
