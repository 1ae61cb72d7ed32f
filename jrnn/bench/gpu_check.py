"""GPU check: the Pallas kernels against cuDNN, "xla" and "fused", like with like.

One command for a person with a CUDA GPU (A100, L4, H100, H200: compute capability >= 8.0)::

    python -m jrnn.bench.gpu_check gpu_check.json                 # TF32 matmuls everywhere
    python -m jrnn.bench.gpu_check gpu_check.json --precision highest   # IEEE float32
    python -m jrnn.bench.gpu_check out.json --quick --no-timing   # tiny, any platform (CPU:
                                                                  # interpreter, correctness)

It needs jax 0.10.x with the CUDA plugin (``pip install "jax[cuda12]==0.10.2"``) and jrnn's
dependencies. Every backend runs under one ``jax.default_matmul_precision`` (``tensorfloat32``
or ``float32``), which the XLA backends and the Pallas kernels (``precision=None`` follows it)
obey; cuDNN's LSTM (``jax.experimental.rnn``, float32 LSTM only) picks its own math mode, which
the meta line records as not controlled.

Per case (cell, dtype, batch, hidden; T 256, float inputs of size 128, lengths all T):

1. correctness: outputs, final carry and gradients (params, inputs) of every backend against
   ``backend="reference"`` run at ``precision="highest"`` (max abs and relative difference);
2. timing: median ms of the forward and of forward + backward (``value_and_grad``), and the
   first call (compile) time;

for ``pallas`` (the automatic kernel choice), ``pallas:step`` and ``pallas:persistent`` (both
kernels forced), ``fused``, ``xla`` and ``cudnn``. Prints a markdown table (the speed table of
docs/pallas.md) and writes ``{"meta": ..., "rows": [...]}`` to the JSON path after every row,
so a failure or a kill loses nothing measured before it. A time budget skips the rest.
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
from jrnn._src.backends import pallas, pallas_gpu

KINDS = ("pallas", "pallas:step", "pallas:persistent", "fused", "xla", "cudnn")
_CONFIG = {"tf32": "tensorfloat32", "highest": "float32"}


def _pack_cudnn(params, hidden: int) -> jax.Array:
    """jrnn LSTM params -> cuDNN's flat weights (W_ih [4h, i], W_hh [4h, h], b_ih, b_hh)."""
    zeros = jnp.zeros((4 * hidden,), jnp.float32)
    return jnp.concatenate(
        [params.w_ih.T.ravel(), params.w_hh.T.ravel(), params.b.astype(jnp.float32), zeros]
    )


def model(kind: str, cell, precision: str | None = None):
    """``f(params, xs, lengths) -> (carry, ys)`` for a backend kind, batch-major float inputs."""
    if kind == "cudnn":
        from jax.experimental import rnn as cudnn_rnn

        hidden = cell.hidden_size

        def f(params, xs, lengths):
            b, _, i = xs.shape
            h0 = jnp.zeros((1, b, hidden), jnp.float32)
            ys, h, c = cudnn_rnn.lstm(
                xs, h0, h0, _pack_cudnn(params, hidden), lengths, i, hidden, 1, 0.0, False
            )
            return (h[0], c[0]), ys

        return f
    if kind.startswith("pallas"):
        mode = kind.partition(":")[2] or "auto"
        gpu_kw = dict(mode=mode, precision=precision)
        on_cpu = jax.default_backend() == "cpu"

        def g(params, xs, lengths):
            steps = xs.shape[1]
            c, ys, _ = pallas.run(
                cell,
                params,
                cell.input_projection(params, jnp.moveaxis(xs, 1, 0)),
                cell.initial_carry(xs.shape[0]),
                mask=jnp.arange(steps)[:, None] < lengths[None, :],
                resets=None,
                reverse=False,
                unroll=1,
                return_carries=False,
                kernel="gpu",
                interpret=on_cpu,  # the interpreter on CPU: correctness only
                gpu_kw=gpu_kw,
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
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_ms": 1e3 * statistics.median(times)}


def max_diff(a, b) -> tuple[float, float]:
    """Max absolute difference over the leaves, and the largest per-leaf relative one."""
    absolute, relative = 0.0, 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        d = float(np.max(np.abs(x - y))) if x.size else 0.0
        absolute = max(absolute, d)
        relative = max(relative, d / max(float(np.max(np.abs(y), initial=0.0)), 1e-30))
    return absolute, relative


class Runner:
    """Collects rows, prints them and rewrites the JSON after each one."""

    def __init__(self, path: str, budget_s: float, meta: dict):
        self.path, self.deadline = path, time.time() + budget_s
        self.out = {"meta": meta, "rows": []}
        self._save()

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.out, fh, indent=1)
        os.replace(tmp, self.path)  # never a half-written file

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
        print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
        return row


def _unavailable(kind, cell, dtype) -> str | None:
    if kind == "cudnn" and (cell != "lstm" or dtype != "float32"):
        return "cuDNN via jax.experimental.rnn: float32 LSTM only"
    if kind == "cudnn" and jax.default_backend() != "gpu":
        return "cuDNN needs a CUDA GPU"
    if kind.startswith("pallas") and jax.default_backend() == "gpu":
        return pallas_gpu.local_gpu_reason()
    return None


def run_case(run, *, cell_name, dtype, batch, hidden, steps, inputs, repeats, kinds, precision):
    """Correctness (vs reference at highest precision) and timing rows for one case."""
    kw = {} if dtype == "float32" else dict(dtype=dtype, param_dtype=dtype)
    cell = {"lstm": jrnn.lstm, "gru": jrnn.gru}[cell_name](hidden, **kw)
    params = cell.init(jax.random.key(0), inputs)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(batch, steps, inputs)), jnp.float32)
    lengths = jnp.full((batch,), steps, jnp.int32)
    args = (params, xs, lengths)
    base = dict(cell=cell_name, dtype=dtype, batch=batch, hidden=hidden, T=steps)
    with jax.default_matmul_precision("float32"):
        ref_f = model("reference", cell)
        want = jax.jit(ref_f)(*args), jax.jit(jax.grad(_loss(ref_f), argnums=(0, 1)))(*args)
    for kind in kinds:
        row = dict(base, backend=kind)
        reason = _unavailable(kind, cell_name, dtype)
        if reason is not None:
            run.measure(row, lambda reason=reason: {"skipped": reason})
            continue
        f = model(kind, cell)

        def check(f=f):
            with jax.default_matmul_precision(_CONFIG[precision]):
                got = jax.jit(f)(*args), jax.jit(jax.grad(_loss(f), argnums=(0, 1)))(*args)
            (ea, ra), (ga, gr) = max_diff(got[0], want[0]), max_diff(got[1], want[1])
            return dict(err_out=ea, rel_out=ra, err_grad=ga, rel_grad=gr)

        def timing(f=f):
            with jax.default_matmul_precision(_CONFIG[precision]):
                fwd = _time(jax.jit(f), args, repeats)
                both = _time(jax.jit(jax.value_and_grad(_loss(f), argnums=(0, 1))), args, repeats)
            return dict(
                forward_ms=fwd["median_ms"],
                train_ms=both["median_ms"],
                compile_s=fwd["first_call_s"] + both["first_call_s"],
            )

        run.measure(dict(row, what="check"), check)
        if repeats:
            run.measure(dict(row, what="time"), timing)


def markdown(rows) -> str:
    """One line per (case, backend): errors vs reference and median times."""
    merged: dict = {}
    for r in rows:
        key = tuple(r.get(k) for k in ("cell", "dtype", "batch", "hidden", "T", "backend"))
        merged.setdefault(key, {}).update(r)
    lines = [
        "| cell | dtype | batch | hidden | T | backend | max err out / grad (rel) | "
        "forward ms | fwd+bwd ms | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in merged.items():
        if "skipped" in r:
            err, times = f"skipped: {r['skipped']}", ["", "", ""]
        elif "err_out" in r:
            rel = f"({r['rel_out']:.0e} / {r['rel_grad']:.0e})"
            err = f"{r['err_out']:.1e} / {r['err_grad']:.1e} {rel}"
        else:
            err = r.get("error", r.get("status", ""))[:80]
        if "forward_ms" in r:
            times = [f"{r['forward_ms']:.2f}", f"{r['train_ms']:.2f}", f"{r['compile_s']:.1f}"]
        elif "skipped" not in r:
            times = ["–", "–", "–"]
        lines.append("| " + " | ".join([*map(str, key), err, *times]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Runs the check; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json_path")
    p.add_argument("--precision", choices=sorted(_CONFIG), default="tf32")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, any platform)")
    p.add_argument("--no-timing", action="store_true", help="correctness rows only")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--budget", type=float, default=480.0, help="seconds before skipping the rest")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    args = p.parse_args(argv)
    cases = [
        (cell, dtype, batch, hidden)
        for hidden in (512, 128, 1024)
        for batch in (32, 128)
        for cell, dtype in (("lstm", "float32"), ("gru", "float32"), ("lstm", "bfloat16"))
    ]
    steps, inputs = 256, 128
    if args.quick:
        cases = [("lstm", "float32", 3, 20), ("gru", "float32", 3, 20)]
        steps, inputs, args.repeats = 6, 5, 2
    cases = [c for c in cases if c[0] in args.cells]
    repeats = 0 if args.no_timing else args.repeats
    dev = jax.devices()[0]
    meta = dict(
        device_kind=getattr(dev, "device_kind", str(dev)),
        platform=jax.default_backend(),
        jax=jax.__version__,
        precision=args.precision,
        cudnn_precision="not controlled (jax.experimental.rnn's own math mode)",
        command=" ".join(["python -m jrnn.bench.gpu_check", *(argv or sys.argv[1:])]),
    )
    print(json.dumps(meta), flush=True)
    run = Runner(args.json_path, args.budget, meta)
    for cell, dtype, batch, hidden in cases:
        run_case(
            run,
            cell_name=cell,
            dtype=dtype,
            batch=batch,
            hidden=hidden,
            steps=steps,
            inputs=inputs,
            repeats=repeats,
            kinds=args.kinds,
            precision=args.precision,
        )
    print()
    print(f"{meta['device_kind']}, jax {meta['jax']}, precision {args.precision}")
    print(markdown(run.out["rows"]))
    print(f"\nwrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
