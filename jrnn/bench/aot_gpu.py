"""Compile the Pallas GPU kernels for a GPU that is not there (ahead of time, deviceless).

XLA:GPU compiles for a GPU described by a target config (the ``GpuTargetConfigProto`` text
format: SM count, shared memory, registers, compute capability), without a GPU or a CUDA
driver. This runs the real pipeline: Pallas -> Triton IR -> Triton's compiler (which checks
shared memory and registers) -> PTX, and XLA's fusion and scheduling around it. It needs the
CUDA plugin of the installed jax, in its own environment (``make aot-gpu`` builds one)::

    pip install --no-deps jax-cuda12-plugin==<jax version> jax-cuda12-pjrt==<jax version>
    JAX_PLATFORMS=cpu python -m jrnn.bench.aot_gpu            # prints a markdown table

Each row compiles ``unroll(tokens, lengths=, resets=, backend="pallas")`` (forward) or its
gradient for one GPU, cell, dtype and size, and reports the kernel the rule picked, the compile
time and XLA's temporary buffer size, or the compiler's message when it fails.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import time

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp

import jrnn
from jrnn._src.backends import pallas, pallas_gpu

# Minimal target descriptions (public hardware figures). XLA fills the rest with defaults.
_TEMPLATE = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {smem_core}
  threads_per_core_limit: 2048
  core_count: {cores}
  fpus_per_core: {fpus}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: {l2}
  clock_rate_ghz: {clock}
  device_memory_size: {memory}
  shared_memory_per_block_optin: {smem_optin}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 1 }}
device_description_str: "{name}"
"""

TARGETS = {
    "a100": dict(
        name="NVIDIA A100-SXM4-40GB",
        smem_core=167936,
        smem_optin=166912,
        cores=108,
        fpus=64,
        bandwidth=1555000000000,
        l2=41943040,
        clock=1.41,
        memory=42505273344,
        major=8,
        minor=0,
    ),
    "h100": dict(
        name="NVIDIA H100 80GB HBM3",
        smem_core=233472,
        smem_optin=232448,
        cores=132,
        fpus=128,
        bandwidth=3352320000000,
        l2=52428800,
        clock=1.98,
        memory=84942979072,
        major=9,
        minor=0,
    ),
}


def target_config(name: str) -> str:
    """The ``GpuTargetConfigProto`` text of a target in :data:`TARGETS`."""
    return _TEMPLATE.format(**TARGETS[name])


def device(name: str):
    """A compile-only CUDA device for target ``name`` (needs the CUDA plugin)."""
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(
        platform="cuda", target_config=target_config(name), topology="1x1x1"
    )
    return topo.devices[0]


def compile_one(dev, cell_name, dtype, hidden, batch, steps, what, gpu_kw=None):
    """Compiles forward or gradient of a token-input unroll; returns a result dict."""
    kw = {} if dtype == "float32" else dict(dtype=dtype, param_dtype=dtype)
    cell = {"lstm": jrnn.lstm, "gru": jrnn.gru}[cell_name](hidden, **kw)
    sharding = jax.sharding.SingleDeviceSharding(dev)
    params = jax.eval_shape(functools.partial(cell.init, input_size=256), jax.random.key(0))
    params = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), params
    )
    tokens = jax.ShapeDtypeStruct((batch, steps), jnp.int32, sharding=sharding)
    lengths = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding)
    resets = jax.ShapeDtypeStruct((batch, steps), jnp.bool_, sharding=sharding)

    def loss(params, tokens, lengths, resets):  # lengths and resets: the mask/reset code paths
        if gpu_kw:
            xp = cell.input_projection(params, tokens.T)
            ys = pallas.run(
                cell,
                params,
                xp,
                cell.initial_carry(batch),
                mask=None,
                resets=None,
                reverse=False,
                unroll=1,
                return_carries=False,
                kernel="gpu",
                interpret=False,
                gpu_kw=gpu_kw,
            )[1]
        else:
            ys = jrnn.unroll(
                cell, params, tokens, lengths=lengths, resets=resets, backend="pallas"
            )[1]
        return jnp.sum(ys.astype(jnp.float32))

    fn = loss if what == "forward" else jax.grad(loss)
    row = dict(
        cell=cell_name,
        dtype=dtype,
        hidden=hidden,
        batch=batch,
        steps=steps,
        what=what,
        kernel=pallas_gpu.choose_mode(pallas.kernel_spec(cell), (gpu_kw or {}).get("mode", "auto")),
    )
    start = time.perf_counter()
    try:
        compiled = jax.jit(fn).trace(params, tokens, lengths, resets).lower().compile()
        mem = compiled.memory_analysis()
        row.update(ok=True, temp_mib=None if mem is None else mem.temp_size_in_bytes / 2**20)
    except Exception as e:  # noqa: BLE001 - the compiler's message is the result
        row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    row["seconds"] = time.perf_counter() - start
    return row


def markdown(rows) -> str:
    """The rows as a markdown table."""
    head = "| GPU | cell | dtype | hidden | batch | T | pass | kernel | compiled | s | temp MiB |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ok = "yes" if r["ok"] else f"no: {r['error']}"
        temp = "" if r.get("temp_mib") is None else f"{r['temp_mib']:.0f}"
        lines.append(
            f"| {r['gpu']} | {r['cell']} | {r['dtype']} | {r['hidden']} | {r['batch']} | "
            f"{r['steps']} | {r['what']} | {r['kernel']} | {ok} | {r['seconds']:.1f} | {temp} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", nargs="+", default=["a100", "h100"], choices=sorted(TARGETS))
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 512, 1000])
    ap.add_argument("--batch", nargs="+", type=int, default=[32])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--passes", nargs="+", default=["forward", "gradient"])
    args = ap.parse_args(argv)
    if jax.default_backend() != "cpu":
        print("note: run with JAX_PLATFORMS=cpu; compiling for described GPUs only")
    rows = []
    for gpu in args.gpus:
        dev = device(gpu)
        for cell, dtype, hidden, batch, what in itertools.product(
            args.cells, args.dtypes, args.hidden, args.batch, args.passes
        ):
            row = compile_one(dev, cell, dtype, hidden, batch, args.steps, what)
            row["gpu"] = gpu
            rows.append(row)
            print(markdown([row]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
