"""Timing helpers: compile time, interleaved steady-state repetitions, matmul peak, machine load."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def compile_fn(fn: Callable, args: Sequence) -> tuple[Callable, float]:
    """``(compiled, seconds)``: ``jax.jit(fn)`` lowered and compiled ahead of time.

    Traced with standard dtype and rank promotion (optax's Adam needs it), whatever the caller's
    configuration (the test suite runs with strict promotion).
    """
    t0 = time.perf_counter()
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def call_time(compiled: Callable, args: Sequence) -> float:
    """Seconds of one call, results waited for."""
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t0


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Measured float32 matmul GFLOP/s of an ``n x n x n`` ``jnp.dot`` (best of ``reps``)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(jnp.dot).lower(a, a).compile()
    jax.block_until_ready(f(a, a))
    best = min(call_time(f, (a, a)) for _ in range(reps))
    return 2.0 * n**3 / best / 1e9


def _cpu_jiffies() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _proc_jiffies(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return float(parts[11]) + float(parts[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


class LoadMonitor:
    """Measures how busy *other* processes kept the CPUs during a timed window.

    ``others`` is the average number of cores used by processes other than this one (and the
    pids passed in, e.g. the torch peer) over the window, from ``/proc/stat``; also reports the
    1-minute load average at the start and end.
    """

    def __init__(self, pids: Sequence[int] = ()):
        self.pids = [os.getpid(), *pids]
        self.available = os.path.exists("/proc/stat")

    def __enter__(self) -> LoadMonitor:
        self.load_start = os.getloadavg()[0]
        self.t0 = time.perf_counter()
        if self.available:
            self.busy0, self.total0 = _cpu_jiffies()
            self.own0 = sum(_proc_jiffies(p) for p in self.pids)
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.load_end = os.getloadavg()[0]
        self.others = float("nan")
        if self.available:
            busy, total = _cpu_jiffies()
            own = sum(_proc_jiffies(p) for p in self.pids)
            ncpu = os.cpu_count() or 1
            frac_other = (busy - self.busy0 - (own - self.own0)) / max(total - self.total0, 1.0)
            self.others = max(frac_other, 0.0) * ncpu

    def summary(self) -> dict:
        return {
            "wall_s": self.wall,
            "loadavg_start": self.load_start,
            "loadavg_end": self.load_end,
            "other_processes_cores": self.others,
            "cpus": os.cpu_count(),
        }

    def note(self) -> str:
        busy = self.others == self.others and self.others > 0.2
        text = (
            f"other processes used {self.others:.2f} of {os.cpu_count()} cores during timing "
            f"(load average {self.load_start:.2f} -> {self.load_end:.2f})"
        )
        return ("BUSY MACHINE: " + text) if busy else text


def interleaved(
    entries: Sequence[Callable[[], None]],
    reps: int,
    extra: Callable[[], list[float]] | None = None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Runs ``reps`` rounds; each round times every entry once (rotating the order).

    Args:
      entries: zero-argument callables returning when their work is done.
      reps: number of rounds.
      extra: called once per round after the entries (e.g. the torch peer's round); returns
        its own list of seconds.

    Returns:
      ``(times, extra_times)``: per entry (and per extra item), the list of seconds.
    """
    times = [[] for _ in entries]
    extra_times: list[list[float]] = []
    order = list(range(len(entries)))
    for r in range(reps):
        rot = order[r % max(len(order), 1) :] + order[: r % max(len(order), 1)]
        for i in rot:
            t0 = time.perf_counter()
            entries[i]()
            times[i].append(time.perf_counter() - t0)
        if extra is not None:
            got = extra()
            if not extra_times:
                extra_times = [[] for _ in got]
            for lst, t in zip(extra_times, got, strict=True):
                lst.append(t)
    return times, extra_times


def median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs))) if len(xs) else float("nan")
