// roomvoice microphone capture: an AudioWorkletProcessor that turns the mic signal into
// 20 ms frames of PCM16 little-endian mono at the AudioContext's own rate.
//
// The render thread hands us blocks of 128 samples; 20 ms is not a multiple of 128
// (960 samples at 48 kHz, 882 at 44.1 kHz), so samples are collected in a Float32 buffer
// and a frame is posted each time it fills. Each message is
// {pcm: ArrayBuffer (transferred, not copied), rms: number (0..1, of this frame)}.
//
// The node is created with channelCount 1 / channelCountMode "explicit", so the Web Audio
// graph has already down-mixed any stereo input to mono before it reaches process().

class Pcm16CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const requested = options && options.processorOptions && options.processorOptions.frameSamples;
    // `sampleRate` is a global of AudioWorkletGlobalScope (the context's rate).
    this.frameSamples = requested > 0 ? requested | 0 : Math.round(sampleRate * 0.02);
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
