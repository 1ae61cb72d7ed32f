"""Where a compiled step spends its time: XLA:CPU thunks summed from a ``jax.profiler`` trace.

``python -m jrnn.bench.thunks --backend xla`` compiles one workload of the benchmark (default:
the seed-size LSTM train step), warms it up, records ``--reps`` calls with
``jax.profiler.trace(create_perfetto_trace=True)`` and prints, per thunk name (an XLA fusion, a
dot, a copy...), the milliseconds per call of the step and how many times it ran per step — e.g.
256 calls for work inside the time loop. Read the proportions: the profiler itself slows the run.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
from collections.abc import Iterable

import jax

from jrnn.bench import sizes, timing, workloads

# Events that wrap the whole step rather than one piece of it.
_WRAPPERS = ("ThunkExecutor", "block_until_ready", "profiler.py", "contextlib.py", "Await")


def thunk_totals(events: Iterable[dict], reps: int) -> list[tuple[str, float, int]]:
    """``(name, ms per step, calls per step)`` of complete trace events, slowest first.

    Only complete events (``"ph": "X"`` with a ``dur`` in microseconds) count; events that wrap
    the whole step (the executor, Python frames) are left out.
    """
    total: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or any(w in name for w in _WRAPPERS):
            continue
        total[name] += float(e["dur"])
        calls[name] += 1
    return [(n, t / reps / 1e3, calls[n] // reps) for n, t in total.most_common()]


def profile(w: sizes.Workload, reps: int = 3, warmup: int = 2) -> list[tuple[str, float, int]]:
    """Compiles, warms up and traces ``reps`` calls of workload ``w``; see :func:`thunk_totals`."""
    fn, args = workloads.build(w)
    compiled, _ = timing.compile_fn(fn, args)
    for _ in range(warmup):
        timing.call_time(compiled, args)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(reps):
                jax.block_until_ready(compiled(*args))
        found = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not found:
            raise RuntimeError(f"jax.profiler wrote no perfetto trace under {d}")
        with gzip.open(sorted(found)[-1]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return thunk_totals(events, reps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="seed", help="a size name or 'h=..,t=..,b=..[,l=..]'")
    p.add_argument("--cell", default="lstm", choices=sizes.CELLS)
    p.add_argument("--backend", default="xla")
    p.add_argument("--mode", default="train", choices=sizes.MODES)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--top", type=int, default=25, help="rows printed")
    args = p.parse_args(argv)
    w = sizes.Workload(
        "jrnn", args.cell, args.cell, args.backend, 1, args.mode, sizes.parse_size(args.size)
    )
    rows = profile(w, args.reps)
    print(f"{w.label} {w.mode} at {w.size.name}: thunk time per step (profiled, {args.reps} reps)")
    print(f"{'ms/step':>9}  {'calls':>6}  thunk")
    for name, ms, n in rows[: args.top]:
        print(f"{ms:9.1f}  {n:6d}  {name}")
    print(f"{sum(ms for _, ms, _ in rows):9.1f}  {'':6}  (sum of all thunks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
