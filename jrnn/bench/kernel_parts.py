"""Where the time of the CPU kernel's LSTM gradient goes: its parts timed side by side.

``python -m jrnn.bench.kernel_parts`` times, interleaved in one process (median of ``--reps``
rounds), at one size (default ``seed``: hidden 512, T 256, batch 32):

- ``forward``: the kernel's forward loop alone (what inference runs);
- ``forward with saved gates``: the forward that a gradient runs (it also writes the activated
  gates and the carries entering every step);
- ``backward loop``: the reverse loop (one dependent ``[b, 4h] x [4h, h]`` product per step and
  the gate derivatives), which gives ``dz``;
- ``dW_hh matmul``: the weight gradient as one ``[h, t b] x [t b, 4h]`` matmul;
- ``whole gradient``: ``jax.grad`` of a loss of the outputs w.r.t. ``W_hh`` through
  ``backend="cpu"`` (the three parts plus what XLA runs around them).

Each of the first four is one recurrent-GEMM's worth of FLOPs (``2 t b h 4h``); the table gives
their rate against a float32 matmul peak timed in the same run, and the page faults per call
(minor faults of the process, ``getrusage``, around each timed call: first touches of freshly
allocated memory). As a check, the ``dW_hh``
assembled from the parts must equal the whole gradient (``max_abs_diff`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.bench import sizes, timing


def build(size: sizes.Size) -> dict:
    """``{name: (jitted fn, args)}`` of the parts, plus ``"check"``: the assembled ``dW_hh``."""
    import jrnn
    from jrnn._src.backends import cpu

    H, B, T = size.hidden, size.batch, size.steps
    G = 4 * H
    cell = jrnn.lstm(H)
    keys = jax.random.split(jax.random.key(0), 4)
    params = cell.init(keys[0], 1)
    w = jax.random.normal(keys[1], (H, G), jnp.float32) * H**-0.5
    xp = 0.1 * jax.random.normal(keys[2], (T, B, G), jnp.float32)
    dys = jax.random.normal(keys[3], (T, B, H), jnp.float32)
    h0 = c0 = jnp.zeros((B, H), jnp.float32)
    m8, r8 = jnp.ones((T, B), jnp.uint8), jnp.zeros((T, B), jnp.uint8)
    bh, none = jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.int32)

    def fwd(save):
        return jax.jit(
            lambda w, xp: cpu._fwd_call(0, 0, False, save, False, w, bh, xp, none, h0, c0, m8, r8)
        )

    f32 = jnp.float32
    shapes = [
        jax.ShapeDtypeStruct((T, B, G), f32),  # dxp = dz
        jax.ShapeDtypeStruct((0,), f32),
        jax.ShapeDtypeStruct((B, H), f32),
        jax.ShapeDtypeStruct((B, H), f32),
        jax.ShapeDtypeStruct((0,), f32),
    ]
    call = jax.ffi.ffi_call("jrnn_rnn_bwd", shapes, vmap_method="broadcast_all")
    zb = jnp.zeros((B, H), f32)

    @jax.jit
    def backward(w, sv, hin, cin, dys):
        attrs = dict(cell=np.int32(0), extra=np.int64(0), reverse=False)
        return call(w, sv, hin, cin, m8, r8, none, dys, bh, bh, zb, zb, **attrs)[0]

    @jax.jit
    def dw(hin, dz):
        return jnp.einsum("nh,ng->hg", hin.reshape(-1, H), dz.reshape(-1, G))

    def loss(w, xp):
        p = params._replace(w_hh=w)
        kw = dict(mask=None, resets=None, reverse=False, unroll=1, return_carries=False)
        _, ys, _ = cpu.run(cell, p, xp, (h0, c0), **kw)
        return jnp.sum(ys * dys)

    grad = jax.jit(jax.grad(loss))
    f0, f1 = fwd(False), fwd(True)
    _, _, _, _, _, hin, cin, sv = f1(w, xp)
    dz = backward(w, sv, hin, cin, dys)
    return {
        "forward": (f0, (w, xp)),
        "forward with saved gates": (f1, (w, xp)),
        "backward loop": (backward, (w, sv, hin, cin, dys)),
        "dW_hh matmul": (dw, (hin, dz)),
        "whole gradient": (grad, (w, xp)),
        "check": (dw(hin, dz), grad(w, xp)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="seed", help="a size name or 'h=..,t=..,b=..'")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from jrnn._src.backends import cpu_kernel

    if not cpu_kernel.load():
        print(f"the cpu kernel is unavailable: {cpu_kernel.status()}", file=sys.stderr)
        return 1
    size = sizes.parse_size(args.size)
    parts = build(size)
    assembled, whole = parts.pop("check")
    diff = float(jnp.max(jnp.abs(assembled - whole)))
    scale = float(jnp.max(jnp.abs(whole)))
    peak = timing.matmul_peak()
    for fn, a in parts.values():
        jax.block_until_ready(fn(*a))
    times: dict[str, list[float]] = {k: [] for k in parts}
    faults: dict[str, list[int]] = {k: [] for k in parts}
    for _ in range(args.reps):
        for name, (fn, a) in parts.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            times[name].append(time.perf_counter() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    flops = 2.0 * size.steps * size.batch * size.hidden * 4 * size.hidden
    rows = []
    for name, ts in times.items():
        med = float(np.median(ts))
        gemms = 3 if name == "whole gradient" else 1
        rate = gemms * flops / med / 1e9
        rows.append({"part": name, "median_ms": 1e3 * med, "gflops": rate,
                     "peak_pct": 100 * rate / peak,
                     "faults_per_call": float(np.median(faults[name]))})  # fmt: skip
    print(f"| part ({size.name}) | median ms | GFLOP/s | % of peak {peak:.0f} GFLOP/s | faults |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['part']} | {r['median_ms']:.1f} | {r['gflops']:.0f} | {r['peak_pct']:.0f} "
            f"| {r['faults_per_call']:.0f} |"
        )
    print(f"check: assembled dW_hh vs whole gradient, max abs diff {diff:.3g} (scale {scale:.3g})")
    if args.json:
        out = {"size": size.name, "peak_gflops": peak, "rows": rows, "max_abs_diff": diff,
               "scale": scale}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
