"""How fast can the recurrent matmul chain alone run here: the floor under every RNN step.

``python -m jrnn.bench.floor`` times, interleaved in one run (torch in its own process):

- ``chain:xla`` — the ``t`` dependent ``[b, h] x [h, 4h]`` dots of an LSTM forward, compiled by
  XLA in a ``lax.scan`` with nothing but a ``tanh`` between them (no gates, no input projection,
  no stored outputs); in ``train`` mode followed by the backward's ``t`` dependent
  ``[b, 4h] x [4h, h]`` dots and the weight gradient as one ``[h, t b] x [t b, 4h]`` dot. Any
  JAX LSTM step on this backend does at least this.
- ``chain:torch`` — the same with ``torch.mm`` (oneDNN/MKL).
- ``chain:cpu`` — the same chain in jrnn's C++ kernel (``backend="cpu"``), whose gates are fused
  into its GEMM and cannot be left out: one kernel call of the LSTM on zero projected inputs (no
  gather, no head); in ``train`` mode the gradient w.r.t. ``W_hh`` (forward with saved gates,
  the reverse chain of ``[b, 4h] x [4h, h]`` products, the weight gradient as one matmul). Also
  the kernel's full LSTM steps (``jrnn:lstm/cpu``), when the kernel builds.
- the full ``jrnn.lstm`` steps and ``torch.nn.LSTM`` (as in ``python -m jrnn.bench``), and
  torch's 3-layer train step.

It then reports what bounds the speed targets: if the XLA chain alone takes longer than a target
allows (e.g. 0.85 x torch.nn.LSTM's train step), no change to jrnn's cell, scan or backward can
meet that target with XLA's CPU dot; what is left is the matmul library, not the RNN code. For the
3-layer target the floor is three chains (jrnn runs a stack layer after layer); ``chain:xla x3
batched`` advances the three layers' chains together, one batched dot per step, which is the
floor of a wavefront schedule over layers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from jrnn.bench import cli, report, sizes, timing, torch_peer
from jrnn.bench import workloads as workloads_lib
from jrnn.bench.sizes import Workload

# (target, mode, limit as a fraction of torch.nn.LSTM's time, layers: the chain counts once per
# layer, as jrnn runs a stack layer after layer)
TARGETS = (
    ("LSTM train step <= 0.85 x torch.nn.LSTM", "train", 0.85, 1),
    ("LSTM forward <= 0.90 x torch.nn.LSTM", "forward", 0.90, 1),
    ("3-layer LSTM train step <= 0.85 x torch.nn.LSTM", "train", 0.85, 3),
)


def chain_flops(size: sizes.Size, mode: str) -> float:
    """FLOPs of the (LSTM) chain workload: ``t`` ``[b,h]x[h,g]`` dots per layer, ``g`` the
    recurrent width that ``workloads.chain_workload`` uses; train: 3 times that (the backward
    chain and the weight gradient)."""
    g = sizes.gate_width("lstm", size.hidden)[1]
    one = 2.0 * size.batch * size.steps * size.hidden * g * size.layers
    return one * (3.0 if mode == "train" else 1.0)


def cpu_kernel_available() -> bool:
    """Whether ``backend="cpu"``'s kernel builds here (it warns once when it does not)."""
    from jrnn._src.backends import cpu_kernel

    return cpu_kernel.load()


def cpu_chain_workload(w: Workload):
    """``(fn, args)`` of the chain in the cpu kernel: its LSTM loop on zero projected inputs.

    The kernel's recurrent GEMM cannot run without its gates (they are fused into it), so its
    floor is one kernel call of the LSTM with nothing around it: no token gather, no head; in
    ``train`` mode the gradient w.r.t. ``W_hh`` (the forward with its saved gates, the reverse
    chain and the weight gradient as one matmul).
    """
    import jrnn
    from jrnn._src.backends import cpu

    size = w.size
    h = size.hidden
    cell = jrnn.lstm(h)
    keys = jax.random.split(jax.random.key(0), 3)
    params = cell.init(keys[0], 1)
    weight = jax.random.normal(keys[1], (h, 4 * h), jnp.float32) * h**-0.5
    h0 = jax.random.normal(keys[2], (size.batch, h), jnp.float32)
    xp = jnp.zeros((size.steps, size.batch, 4 * h), jnp.float32)

    def forward(weight, h0, xp):
        p = params._replace(w_hh=weight)
        carry, _, _ = cpu.run(
            cell, p, xp, (h0, jnp.zeros_like(h0)), mask=None, resets=None, reverse=False,
            unroll=1, return_carries=False,
        )  # fmt: skip
        return carry[0]

    if w.mode == "forward":
        return forward, (weight, h0, xp)
    return jax.grad(lambda weight, h0, xp: jnp.sum(forward(weight, h0, xp))), (weight, h0, xp)


def build(w: Workload):
    """``workloads.build``, plus the cpu kernel's chain (``impl="chain"``, ``backend="cpu"``)."""
    if w.impl == "chain" and w.backend == "cpu":
        return cpu_chain_workload(w)
    return workloads_lib.build(w)


def workloads(size: sizes.Size, with_torch: bool, with_cpu: bool = False) -> list[Workload]:
    """The rows of one floor run at ``size`` (1 layer), timed together."""
    out = []
    for mode in sizes.MODES:
        out.append(Workload("chain", "dot-chain", "lstm", "xla", 1, mode, size))
        out.append(Workload("jrnn", "lstm", "lstm", "xla", 1, mode, size))
        out.append(Workload("jrnn", "lstm", "lstm", "fused", 1, mode, size))
        if with_cpu:
            out.append(Workload("chain", "dot-chain", "lstm", "cpu", 1, mode, size))
            out.append(Workload("jrnn", "lstm", "lstm", "cpu", 1, mode, size))
        if with_torch:
            out.append(Workload("torch", "CHAIN", "lstm", "", 1, mode, size))
            out.append(Workload("torch", "LSTM", "lstm", "", 1, mode, size))
    three = size.with_(layers=3)
    out.append(Workload("chain", "dot-chain", "lstm", "xla", 1, "train", three))
    if with_torch:
        out.append(Workload("torch", "LSTM", "lstm", "", 1, "train", three))
    return out


def _name(row: dict) -> str:
    layers = row.get("size_fields", {}).get("layers", 1)
    tail = f" x{layers} layers" if layers > 1 else ""
    if row["impl"] == "chain":
        if row.get("backend") == "cpu":
            return "chain:cpu"
        return "chain:xla" + (f" x{layers} batched" if layers > 1 else "")
    if row["impl"] == "torch" and row["cell"] == "CHAIN":
        return "chain:torch"
    return row["label"] + tail


def analyse(rows: list[dict], size: sizes.Size, peak: float) -> dict:
    """Medians by (name, mode), the chain's rates, and each target against the XLA chain."""
    med = {(_name(r), r["mode"]): r["median_s"] for r in rows}
    out = {"medians_ms": {f"{n} {m}": 1e3 * s for (n, m), s in med.items()}, "chains": {}}
    for name in ("chain:xla", "chain:cpu", "chain:torch"):
        for mode in sizes.MODES:
            if (name, mode) in med:
                rate = chain_flops(size, mode) / med[name, mode] / 1e9
                out["chains"][f"{name} {mode}"] = {
                    "gflops": rate,
                    "peak_pct": 100.0 * rate / peak,
                }
    verdicts = []
    for target, mode, limit, layers in TARGETS:
        peer = "torch:LSTM" + (f" x{layers} layers" if layers > 1 else "")
        if (peer, mode) not in med:
            continue
        budget = limit * med[peer, mode]
        chain = layers * med["chain:xla", mode]
        verdict = {
            "target": target,
            "budget_ms": 1e3 * budget,
            "xla_chain_ms": 1e3 * chain,
            "chain_over_budget": chain / budget,
            "reachable_with_xla_dot": chain < budget,
        }
        if (f"chain:xla x{layers} batched", mode) in med:  # the wavefront's floor
            batched = med[f"chain:xla x{layers} batched", mode]
            verdict |= {
                "xla_batched_chain_ms": 1e3 * batched,
                "batched_over_budget": batched / budget,
            }
        if layers == 1:
            best = min(
                med[f"jrnn:lstm/{b}/u1", mode]
                for b in ("xla", "fused", "cpu")
                if (f"jrnn:lstm/{b}/u1", mode) in med
            )
            verdict |= {"jrnn_ms": 1e3 * best, "jrnn_outside_chain_ms": 1e3 * (best - chain)}
        verdicts.append(verdict)
    out["targets"] = verdicts
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="seed", help="a size name or 'h=..,t=..,b=..' (1 layer)")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-torch", dest="torch", action="store_false")
    p.add_argument("--no-cpu-kernel", dest="cpu_kernel", action="store_false",
                   help="leave out backend='cpu' (its chain and LSTM rows)")  # fmt: skip
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    size = sizes.parse_size(args.size)
    if size.layers != 1:
        raise ValueError(f"--size must have 1 layer (the chain is one layer's), got {args.size!r}")
    threads = os.cpu_count() or 1
    t0 = time.perf_counter()
    peak = timing.matmul_peak()
    with_torch = args.torch and torch_peer.available()
    with_cpu = args.cpu_kernel and cpu_kernel_available()
    rows, mon = cli.measure(
        workloads(size, with_torch, with_cpu), args.reps, args.warmup, threads, build=build
    )
    peak = max(peak, timing.matmul_peak())
    for r in rows:
        if r["impl"] == "chain" or r["cell"] == "CHAIN":
            r["flops"] = chain_flops(size, r["mode"])
            r["gflops"] = r["flops"] / r["median_s"] / 1e9
    cli.finish_rows(rows, peak)
    result = analyse(rows, size, peak) | {
        "size": size.name,
        "peak_gflops": peak,
        "load_note": mon.note(),
        "total_s": time.perf_counter() - t0,
    }
    table = [
        [
            _name(r),
            r["mode"],
            f"{1e3 * r['median_s']:.1f}",
            f"{r['gflops']:.1f}",
            f"{r['peak_pct']:.1f}",
        ]
        for r in rows
    ]
    print(report.text_table(["implementation", "mode", "median ms", "GFLOP/s", "% peak"], table))
    print(f"\nfloat32 matmul peak {peak:.0f} GFLOP/s; load: {result['load_note']}")
    for v in result["targets"]:
        line = (
            f"{v['target']}: budget {v['budget_ms']:.1f} ms; the XLA chain alone takes "
            f"{v['xla_chain_ms']:.1f} ms ({v['chain_over_budget']:.2f} x the budget)"
        )
        if "xla_batched_chain_ms" in v:
            line += (
                f"; batched over layers {v['xla_batched_chain_ms']:.1f} ms "
                f"({v['batched_over_budget']:.2f} x)"
            )
        if "jrnn_ms" in v:
            line += f"; jrnn {v['jrnn_ms']:.1f} ms, {v['jrnn_outside_chain_ms']:.1f} outside it"
        print(line)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result | {"rows": rows}, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
