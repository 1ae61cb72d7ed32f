"""GPU check of the Pallas kernels: correctness and speed vs ``"xla"`` and cuDNN's LSTM.

Run on a CUDA machine (written for one H200; nothing here is tuned to it)::

    python jrnn/bench/gpu_check.py gpu_check.json     # or: python -m jrnn.bench.gpu_check ...
    python jrnn/bench/gpu_check.py out.json --quick   # tiny sizes: a smoke test, any platform

It needs jax 0.10.x with the CUDA plugin (e.g. ``pip install "jax[cuda12]==0.10.2"``) and
flax/optax/numpy as jrnn does. The default ``--budget`` (420 s) fits a 10-minute session.

What it measures, in priority order (a time budget skips the rest; every measurement sits in
its own try/except, and the JSON is rewritten after each one, so a failure or a kill loses
nothing measured before it):

1. LSTM float32 at batch 32 and 4 (hidden 512, T 256, input 128 float features): outputs,
   final carry and gradients (params, inputs) of ``backend="pallas"`` and of
   ``jax.experimental.rnn.lstm`` (cuDNN) against ``backend="xla"``; with lengths too;
2. the median time of the forward pass and of forward + backward (``value_and_grad``) for the
   three, and the first-call (compile) time;
3. GRU float32 and LSTM bfloat16 (pallas vs xla; cuDNN is float32/LSTM only);
4. a small sweep of the Triton kernel's tiling (batch block, hidden block, warps).

Prints a table and writes ``{"meta": ..., "rows": [...]}`` to the JSON path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn._src import unroll as unroll_lib
from jrnn._src.backends import pallas


def _pack_cudnn(params, hidden: int) -> jax.Array:
    """jrnn LSTM params -> cuDNN's flat weights (W_ih [4h, i], W_hh [4h, h], b_ih, b_hh)."""
    zeros = jnp.zeros((4 * hidden,), jnp.float32)
    return jnp.concatenate(
        [params.w_ih.T.ravel(), params.w_hh.T.ravel(), params.b.astype(jnp.float32), zeros]
    )


def _model(kind: str, cell, hidden: int, tiling: dict | None):
    """``f(params, xs, lengths) -> (carry, ys)`` for a backend kind, batch-major."""
    if kind == "cudnn":
        from jax.experimental import rnn as jrnn_cudnn

        def f(params, xs, lengths):
            b, _, i = xs.shape
            h0 = jnp.zeros((1, b, hidden), jnp.float32)
            ys, h, c = jrnn_cudnn.lstm(
                xs, h0, h0, _pack_cudnn(params, hidden), lengths, i, hidden, 1, 0.0, False
            )
            return (h[0], c[0]), ys

        return f
    if kind == "pallas_tiled":

        def g(params, xs, lengths):
            steps = xs.shape[1]
            xs_tm = jnp.moveaxis(xs, 1, 0)
            c, ys, _ = pallas.run(
                cell,
                params,
                cell.input_projection(params, xs_tm),
                cell.initial_carry(xs.shape[0]),
                mask=unroll_lib.make_mask(lengths, steps),
                resets=None,
                reverse=False,
                unroll=1,
                return_carries=False,
                kernel="gpu",
                interpret=jax.default_backend() == "cpu",
                gpu_kw=tiling,
            )
            return c, jnp.moveaxis(ys, 0, 1)

        return g

    def h(params, xs, lengths):
        return jrnn.unroll(cell, params, xs, lengths=lengths, backend=kind)

    return h


def _loss(f):
    def loss(params, xs, lengths):
        carry, ys = f(params, xs, lengths)
        w = jnp.cos(jnp.arange(ys.shape[-1], dtype=jnp.float32)).reshape(1, 1, -1)
        return jnp.sum(ys.astype(jnp.float32) * w) + sum(
            jnp.sum(a.astype(jnp.float32)) for a in jax.tree.leaves(carry)
        )

    return loss


def _time(fn, args, repeats: int) -> dict:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {
        "first_call_s": round(first, 3),
        "median_ms": round(1e3 * statistics.median(times), 3),
        "min_ms": round(1e3 * min(times), 3),
    }


def _max_diff(a, b) -> tuple[float, float]:
    """Max absolute difference over the leaves, and the largest per-leaf relative one."""
    absolute, relative = 0.0, 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        d = float(np.max(np.abs(x - y)))
        absolute = max(absolute, d)
        relative = max(relative, d / max(float(np.max(np.abs(y))), 1e-30))
    return absolute, relative


class Runner:
    """Collects rows, prints them and rewrites the JSON after each one."""

    def __init__(self, path: str, budget_s: float, meta: dict):
        self.path, self.deadline = path, time.time() + budget_s
        self.out = {"meta": meta, "rows": []}
        self._save()

    def _save(self):
        with open(self.path, "w") as fh:
            json.dump(self.out, fh, indent=1)

    def measure(self, what: dict, fn):
        row = dict(what)
        if time.time() > self.deadline:
            row["status"] = "skipped (time budget)"
        else:
            try:
                row.update(fn())
                row["status"] = "ok"
            except Exception as e:  # noqa: BLE001 - one failure must not lose the rest
                row["status"] = "error"
                row["error"] = f"{type(e).__name__}: {str(e)[:600]}"
                row["traceback"] = traceback.format_exc(limit=6)[-2000:]
        self.out["rows"].append(row)
        self._save()
        shown = {k: v for k, v in row.items() if k != "traceback"}
        print(json.dumps(shown), flush=True)
        return row


def _case(run: Runner, *, cell_name, dtype, batch, hidden, steps, inputs, repeats, kinds):
    make = {"lstm": jrnn.lstm, "gru": jrnn.gru}[cell_name]
    cell = make(hidden, dtype=dtype, param_dtype=dtype)
    params = cell.init(jax.random.key(0), inputs)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(batch, steps, inputs)), jnp.float32)
    full = jnp.full((batch,), steps, jnp.int32)
    ragged = jnp.asarray(rng.integers(1, steps + 1, batch), jnp.int32)
    base = dict(cell=cell_name, dtype=jnp.dtype(dtype).name, batch=batch, hidden=hidden, T=steps)
    ref = {}

    def reference(lengths):
        key = int(lengths is ragged)
        if key not in ref:
            f = _model("xla", cell, hidden, None)
            ref[key] = (
                jax.jit(f)(params, xs, lengths),
                jax.jit(jax.grad(_loss(f), argnums=(0, 1)))(params, xs, lengths),
            )
        return ref[key]

    for kind in kinds:
        f = _model(kind, cell, hidden, None)

        def check(f=f):
            out = {}
            for name, lengths in (("full", full), ("lengths", ragged)):
                want_y, want_g = reference(lengths)
                got_y = jax.jit(f)(params, xs, lengths)
                got_g = jax.jit(jax.grad(_loss(f), argnums=(0, 1)))(params, xs, lengths)
                for what, got, want in (("out", got_y, want_y), ("grad", got_g, want_g)):
                    d, r = _max_diff(got, want)
                    out[f"max_err_{what}_{name}"] = d
                    out[f"rel_err_{what}_{name}"] = r
            return out

        # Timings first, so that first_call_s includes the compile.
        run.measure(
            dict(base, backend=kind, mode="forward"),
            lambda f=f: _time(jax.jit(f), (params, xs, full), repeats),
        )
        run.measure(
            dict(base, backend=kind, mode="forward+backward"),
            lambda f=f: _time(
                jax.jit(jax.value_and_grad(_loss(f), argnums=(0, 1))), (params, xs, full), repeats
            ),
        )
        run.measure(dict(base, backend=kind, check="vs xla"), check)


def _table(rows):
    head = f"{'cell':5} {'dtype':8} {'B':>3} {'backend':13} {'what':18} {'result':>40}"
    lines = [head, "-" * len(head)]
    for r in rows:
        what = r.get("mode") or r.get("check") or r.get("tiling", "")
        if r["status"] != "ok":
            res = r["status"] + (": " + r.get("error", "")[:60] if "error" in r else "")
        elif "median_ms" in r:
            res = f"{r['median_ms']:.2f} ms (first call {r['first_call_s']:.1f} s)"
        else:
            errs = [v for k, v in r.items() if k.startswith("max_err")]
            rels = [v for k, v in r.items() if k.startswith("rel_err")]
            res = f"max |diff| {max(errs):.2e} (rel {max(rels):.2e})"
        lines.append(
            f"{r.get('cell', ''):5} {r.get('dtype', ''):8} {r.get('batch', ''):>3} "
            f"{r.get('backend', ''):13} {str(what):18} {res:>40}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    """Runs the check; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json_path")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, any platform)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--budget", type=float, default=420.0, help="seconds before skipping the rest")
    args = p.parse_args(argv)
    hidden, steps, inputs, batches = 512, 256, 128, (32, 4)
    if args.quick:
        hidden, steps, inputs, batches, args.repeats = 32, 8, 8, (16, 4), 2
    dev = jax.devices()[0]
    meta = dict(
        device=str(dev),
        device_kind=getattr(dev, "device_kind", ""),
        platform=jax.default_backend(),
        jax=jax.__version__,
        hidden=hidden,
        T=steps,
        input=inputs,
        command=" ".join(sys.argv),
    )
    print(json.dumps(meta), flush=True)
    run = Runner(args.json_path, args.budget, meta)
    common = dict(hidden=hidden, steps=steps, inputs=inputs, repeats=args.repeats)
    for batch in batches:
        _case(
            run,
            cell_name="lstm",
            dtype=jnp.float32,
            batch=batch,
            **common,
            kinds=("pallas", "xla", "cudnn"),
        )
    for batch in batches:
        _case(
            run, cell_name="gru", dtype=jnp.float32, batch=batch, **common, kinds=("pallas", "xla")
        )
    _case(
        run,
        cell_name="lstm",
        dtype=jnp.bfloat16,
        batch=batches[0],
        **common,
        kinds=("pallas", "xla"),
    )
    # Tiling sweep of the Triton kernel (forward only), LSTM float32 at the first batch.
    cell = jrnn.lstm(hidden)
    params = cell.init(jax.random.key(0), inputs)
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(batches[0], steps, inputs)), jnp.float32)
    full = jnp.full((batches[0],), steps, jnp.int32)
    for bb, bh, warps in ((16, 64, 4), (16, 128, 8), (32, 128, 8), (16, 32, 4)):
        tiling = dict(block_batch=bb, block_hidden=bh, num_warps=warps)
        f = _model("pallas_tiled", cell, hidden, tiling)
        run.measure(
            dict(cell="lstm", dtype="float32", batch=batches[0], backend="pallas", tiling=tiling),
            lambda f=f: _time(jax.jit(f), (params, xs, full), args.repeats),
        )
    print()
    print(_table(run.out["rows"]))
    print(f"\nwrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
