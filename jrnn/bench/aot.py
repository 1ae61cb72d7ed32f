"""Ahead-of-time compiles of the Pallas TPU kernels for TPUs that are not attached (libtpu).

``python -m jrnn.bench.aot`` traces ``unroll(..., backend="pallas")`` (forward, or the gradient
of a sum of the outputs w.r.t. params and inputs) for TPU device descriptions from
``jax.experimental.topologies.get_topology_desc`` and runs the real Mosaic and XLA:TPU
compilers on it, one configuration at a time. Needs ``jax[tpu]`` of the installed jax version
(``make aot`` installs it in ``.venv-tpu``); run with ``JAX_PLATFORMS=cpu`` (set here).

For each configuration the table gives: compiled or not (with the compiler's message), the
compile time, the compiled program's temp and code bytes (``memory_analysis()``) and the
kernel's own VMEM request from the VMEM model (``jrnn/_src/backends/tpu_vmem.py``), or the
model's reason for declining (then nothing is compiled: ``"auto"`` picks ``"xla"`` there).

Example (the docs table: 18 configurations, 16 compiles, ~5 min of CPU; an hour of wall time
on a 2-core machine shared at load ~17)::

    python -m jrnn.bench.aot --out runs/aot
    python -m jrnn.bench.aot --gens v5e --cells lstm --hidden 512 --batch 32 --steps 256
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path

TOPOLOGIES = {
    # name -> (topology_name, chip_config_name): one device per chip (megacore on v4/v5p).
    "v4": ("v4:1x1x1", "megacore"),
    "v5e": ("v5e:1x1", "default"),
    "v5p": ("v5p:1x1x1", "default"),
    "v6e": ("v6e:1x1", "default"),
}
FEATURES = ("plain", "tokens", "lengths", "reverse", "resets")


def device(gen: str):
    """A TPU device description of ``gen`` (no TPU needed)."""
    from jax.experimental.topologies import get_topology_desc

    name, config = TOPOLOGIES[gen]
    return get_topology_desc(
        platform="tpu",
        topology_name=name,
        chip_config_name=config,
        chips_per_host_bounds=(1, 1, 1),
        num_slices=1,
    ).devices[0]


def _first_line(text: str, limit: int = 300) -> str:
    """The compiler's message: the first line naming the error (and VMEM sizes), trimmed."""
    text = str(text)
    scoped = re.search(
        r"Scoped allocation with size \S+ and limit \S+ exceeded[^\n]*? by \S+", text
    )
    if "VmemOom" in text and scoped:
        return f"CompileTimeScopedVmemOom: {scoped.group(0)}"[:limit]
    for line in text.splitlines():
        if re.search(r"(Oom|OOM|error|Error|exceed|vmem|VMEM)", line):
            return line.strip()[:limit]
    return str(text).strip().splitlines()[0][:limit] if str(text).strip() else ""


def compile_one(gen, cell_name, dtype, hidden, batch, steps, mode, feature, input_size=128):
    """Compiles one configuration; returns its table row (a dict)."""
    import jax
    import jax.numpy as jnp

    import jrnn
    from jrnn._src.backends import pallas, tpu_vmem

    cell = getattr(jrnn, cell_name)(hidden, dtype=jnp.dtype(dtype))
    row = dict(
        gen=gen,
        cell=cell_name,
        dtype=dtype,
        hidden=hidden,
        batch=batch,
        steps=steps,
        mode=mode,
        feature=feature,
    )
    with tpu_vmem.target(gen):
        found = tpu_vmem.plan(
            pallas.pallas_tpu.dims(pallas.kernel_spec(cell)),
            steps,
            batch,
            gen,
            backward=mode == "grad",
        )
    if isinstance(found, str):
        row.update(status="declined", message=found, model_mib=None)
        return row
    model = found.backward_bytes if mode == "grad" else found.forward_bytes
    row.update(model_mib=round(model / 2**20, 2), bb=found.bb, tc=found.tc)
    dev = device(gen)
    sharding = jax.sharding.SingleDeviceSharding(dev)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
    params = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), params
    )
    tokens = feature == "tokens"
    xshape = (batch, steps) if tokens else (batch, steps, input_size)
    xs = jax.ShapeDtypeStruct(xshape, jnp.int32 if tokens else jnp.float32, sharding=sharding)
    extra = {}
    if feature == "lengths":
        extra["lengths"] = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding)
    if feature == "resets":
        extra["resets"] = jax.ShapeDtypeStruct((batch, steps), jnp.bool_, sharding=sharding)

    def forward(params, xs, extra):
        _, ys = jrnn.unroll(
            cell, params, xs, backend="pallas", reverse=feature == "reverse", **extra
        )
        return ys

    def grad(params, xs, extra):
        loss = lambda p, x: jnp.sum(forward(p, x, extra).astype(jnp.float32))  # noqa: E731
        if tokens:
            return jax.grad(loss)(params, xs)
        return jax.grad(loss, argnums=(0, 1))(params, xs)

    fn = grad if mode == "grad" else forward
    start = time.perf_counter()
    try:
        with tpu_vmem.target(gen):
            lowered = jax.jit(fn).trace(params, xs, extra).lower()
        compiled = lowered.compile()
    except Exception as e:  # the compiler's verdict is the result
        row.update(
            status="failed",
            seconds=round(time.perf_counter() - start, 1),
            message=f"{type(e).__name__}: {_first_line(e)}",
        )
        return row
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    row.update(
        status="compiled",
        seconds=round(seconds, 1),
        temp_mib=round(mem.temp_size_in_bytes / 2**20, 2),
        code_kib=round(mem.generated_code_size_in_bytes / 2**10, 1),
        kernels=lowered.as_text().count("tpu_custom_call"),
    )
    return row


def default_grid():
    """The docs table: 18 configurations bracketing the VMEM limits (~5 min of CPU)."""
    grid = []
    for gen in ("v5e", "v6e"):
        for cell, dtype, hidden, batch, modes in (
            ("lstm", "float32", 512, 32, ("forward", "grad")),  # the seed size
            ("gru", "bfloat16", 512, 32, ("grad",)),
            ("lstm", "float32", 1024, 128, ("grad",)),  # the targets
            ("lstm", "bfloat16", 2048, 128, ("grad",)),
            ("gru", "bfloat16", 2048, 128, ("grad",)),
            ("lstm", "float32", 2048, 128, ("grad",)),  # W_hh 64 MiB: near the budget
        ):
            for mode in modes:
                grid.append((gen, cell, dtype, hidden, batch, 256, mode, "plain"))
    for gen in ("v4", "v5p"):  # two TensorCores per chip: two batch blocks
        grid.append((gen, "lstm", "float32", 512, 32, 256, "grad", "plain"))
    grid.append(("v5e", "gru", "float32", 1000, 7, 100, "grad", "tokens"))
    grid.append(("v5e", "lstm", "float32", 130, 33, 17, "grad", "resets"))
    return grid


def main(argv=None):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Compiles need no TPU lock: let several processes (CI tiers, a second run) load libtpu.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gens", nargs="+", choices=sorted(TOPOLOGIES))
    ap.add_argument("--cells", nargs="+", choices=("lstm", "gru", "elman", "seed_rnn"))
    ap.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"))
    ap.add_argument("--hidden", nargs="+", type=int)
    ap.add_argument("--batch", nargs="+", type=int)
    ap.add_argument("--steps", nargs="+", type=int)
    ap.add_argument("--modes", nargs="+", choices=("forward", "grad"))
    ap.add_argument("--features", nargs="+", choices=FEATURES)
    ap.add_argument("--out", default="runs/aot", help="writes OUT.json and OUT.md")
    ap.add_argument("--list", action="store_true", help="print the grid and exit")
    args = ap.parse_args(argv)
    picked = [
        args.gens,
        args.cells,
        args.dtypes,
        args.hidden,
        args.batch,
        args.steps,
        args.modes,
        args.features,
    ]
    if any(p is not None for p in picked):
        # A product of the flags given; the defaults fill the rest (the seed configuration).
        fill = [["v5e"], ["lstm"], ["float32"], [512], [32], [256], ["forward", "grad"], ["plain"]]
        grid = list(itertools.product(*[p or f for p, f in zip(picked, fill, strict=True)]))
    else:
        grid = default_grid()
    if args.list:
        for g in grid:
            print(*g)
        return 0
    rows = []
    for i, config in enumerate(grid):
        row = compile_one(*config)
        rows.append(row)
        print(f"[{i + 1}/{len(grid)}] {_md_row(row)}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import jax

    meta = dict(
        jax=jax.__version__,
        argv=sys.argv[1:],
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    out.with_suffix(".md").write_text(table(rows))
    print(table(rows))
    return 0


HEADER = (
    "| chip | cell | dtype | hidden | batch | T | mode | inputs | result | compile s | "
    "temp MiB | code KiB | model VMEM MiB (bb x tc) | message |"
)


def _md_row(r):
    blocks = f"{r['model_mib']} ({r.get('bb')} x {r.get('tc')})" if r.get("model_mib") else "-"
    return (
        f"| {r['gen']} | {r['cell']} | {r['dtype']} | {r['hidden']} | {r['batch']} | {r['steps']} "
        f"| {r['mode']} | {r['feature']} | {r['status']} | {r.get('seconds', '-')} "
        f"| {r.get('temp_mib', '-')} | {r.get('code_kib', '-')} | {blocks} "
        f"| {r.get('message', '')} |"
    )


def table(rows) -> str:
    """The markdown table of ``rows``."""
    sep = "|" + "---|" * HEADER.count(" | ") + "---|"
    return "\n".join([HEADER, sep, *(_md_row(r) for r in rows)]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
