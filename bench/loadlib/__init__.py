"""The parts of ``bench/bench_load.py``, the end-to-end load benchmark (bench/README.md).

Each part that carries traffic runs in its own process, so that its CPU is measured apart:

- :mod:`loadlib.echo_fake`: a lean OpenAI Realtime stand-in that echoes caller audio back;
- :mod:`loadlib.floor`: the floor, a minimal relay doing only the unavoidable per-frame work;
- :mod:`loadlib.loadgen`: N simulated callers streaming 20 ms frames in real time;
- :mod:`loadlib.setup_data`: the Django data the server under test needs (run once);
- :mod:`loadlib.procs`: starting, watching and stopping those processes (/proc figures);
- :mod:`loadlib.analysis`: latency matched by sample position, losses, the tables.

Every process stamps events with ``time.monotonic()``: CLOCK_MONOTONIC on Linux, one clock
for all processes on the machine, so times taken in different processes compare directly.
"""
