"""``python -m jrnn.bench``: jrnn cells x backends x unroll x modes against flax and torch."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time

import jax

import jrnn
from jrnn._src import backends as backends_lib
from jrnn._src import unroll as unroll_lib
from jrnn.bench import report, timing, torch_peer, workloads
from jrnn.bench.sizes import Size, Workload, parse_size

FLAX_PEERS = {"lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",)}
TORCH_PEERS = {"lstm": "LSTM", "gru": "GRU"}


def _backends(requested: list[str]) -> list[str]:
    out = []
    for name in requested:
        if name in ("auto", "reference"):
            out.append(name)
        elif backends_lib.available(name) and _kernel_builds(name):
            out.append(name)
    return out


def _kernel_builds(name: str) -> bool:
    """False (with the kernel's warning) when ``"cpu"`` would fall back to ``"xla"``."""
    if name != "cpu":
        return True
    from jrnn._src.backends import cpu_kernel

    if not cpu_kernel.load():
        print("skipping backend 'cpu': its kernel did not build", file=sys.stderr)
        return False
    return True


def plan(args, size: Size, cells: list[str], backends: list[str], unrolls: list[int]) -> list:
    """The workloads of one size: jrnn rows first, then the peers of the families measured."""
    out = []
    for mode in args.modes:
        for cell_name in cells:
            cell = workloads.make_cell(cell_name, 8)
            for backend in backends:
                if backend != "auto":
                    reason = backends_lib.get(backend).supports(
                        cell, tokens=True, lengths=False, resets=False, reverse=False,
                        return_carries=False,
                    )  # fmt: skip
                    if reason is not None:
                        continue
                for u in unrolls:
                    out.append(Workload("jrnn", cell_name, cell_name, backend, u, mode, size))
        if args.bf16:
            for cell_name in [c for c in cells if c == "lstm"]:
                for backend in backends:
                    out.append(
                        Workload("jrnn", cell_name, cell_name, backend, 1, mode, size, "bfloat16")
                    )
        for family in [c for c in cells if c in FLAX_PEERS]:
            if args.flax:
                for peer in FLAX_PEERS[family]:
                    if size.layers > 1 and peer == "LSTMCell":
                        continue
                    out.append(Workload("flax", peer, family, "", 1, mode, size))
            if args.torch:
                out.append(Workload("torch", TORCH_PEERS[family], family, "", 1, mode, size))
    return out


def measure(wls: list, reps: int, warmup: int, threads: int, verbose: bool = True, build=None):
    """Compiles and times a group of workloads interleaved; returns (rows, load monitor).

    ``build(w) -> (fn, args)`` makes a JAX workload (default :func:`workloads.build`).
    """
    build = build or workloads.build
    jax_wls = [w for w in wls if w.impl != "torch"]
    torch_wls = [w for w in wls if w.impl == "torch"]
    entries, compile_s = [], []
    for w in jax_wls:
        fn, args = build(w)
        compiled, secs = timing.compile_fn(fn, args)
        for _ in range(warmup):
            timing.call_time(compiled, args)
        entries.append(lambda c=compiled, a=args: jax.block_until_ready(c(*a)))
        compile_s.append(secs)
        if verbose:
            print(f"  compiled {w.size.name} {w.mode} {w.label}: {secs:.2f}s", file=sys.stderr)
    peer = torch_peer.TorchPeer(torch_wls, threads, warmup) if torch_wls else None
    try:
        with timing.LoadMonitor([peer.pid] if peer else []) as mon:
            times, torch_times = timing.interleaved(entries, reps, peer.rep if peer else None)
    finally:
        if peer:
            peer.close()
    rows = []
    all_times = list(zip(jax_wls, times, compile_s, strict=True))
    all_times += [(w, t, None) for w, t in zip(torch_wls, torch_times, strict=True)]
    for w, ts, cs in all_times:
        med = timing.median(ts)
        rows.append(
            {
                "impl": w.impl,
                "label": w.label,
                "cell": w.cell,
                "family": w.family,
                "backend": w.backend,
                "unroll": w.unroll,
                "dtype": w.dtype,
                "mode": w.mode,
                "size": w.size.name,
                "size_fields": dict(w.size.__dict__),
                "compile_s": cs,
                "median_s": med,
                "times_s": ts,
                "flops": w.flops(),
                "tokens_per_s": w.size.tokens / med,
                "gflops": w.flops() / med / 1e9,
            }
        )
    return rows, mon


def finish_rows(rows: list[dict], peak: float) -> None:
    """Adds % of peak and the ratio to the best peer of the same family, size and mode."""
    for r in rows:
        r["peak_pct"] = 100.0 * r["gflops"] / peak
        peers = [
            p
            for p in rows
            if p["impl"] != "jrnn"
            and p["family"] == r["family"]
            and p["size"] == r["size"]
            and p["mode"] == r["mode"]
        ]
        r["ratio_to_best_peer"] = (
            r["median_s"] / min(p["median_s"] for p in peers) if peers else None
        )


def compile_sweep(quick: bool) -> dict:
    """Compile time of the LSTM train step (backend "auto") vs T and vs num_layers."""
    base = Size("compile", vocab=128, hidden=128, steps=256, batch=8, layers=1)
    steps = (64, 512) if quick else (64, 256, 1024, 4096)
    layers = (1, 4) if quick else (1, 2, 4, 8)
    out = {"label": "jrnn:lstm/auto train step, h128 b8", "steps": {}, "layers": {}}
    for t in steps:
        fn, args = workloads.build(
            Workload("jrnn", "lstm", "lstm", "auto", 1, "train", base.with_(steps=t))
        )
        out["steps"][str(t)] = timing.compile_fn(fn, args)[1]
    for n in layers:
        fn, args = workloads.build(
            Workload("jrnn", "lstm", "lstm", "auto", 1, "train", base.with_(layers=n))
        )
        out["layers"][str(n)] = timing.compile_fn(fn, args)[1]
    if "1" not in out["layers"] or "8" not in out["layers"]:
        out["layers_note"] = "quick run: 8 layers not measured"
    return out


def plot_sweep(args, backends: list[str], threads: int) -> dict:
    """LSTM train step time vs batch and vs hidden (T fixed), jrnn backends and peers."""
    quick = args.quick
    t = 32 if quick else 64
    batches = (8, 32) if quick else (8, 16, 32, 64)
    hiddens = (64, 256) if quick else (64, 128, 256, 512)
    out = {"batch_fixed": f"h256, T{t}", "hidden_fixed": f"b16, T{t}", "batch": {}, "hidden": {}}
    for axis, values in (("batch", batches), ("hidden", hiddens)):
        wls = []
        for v in values:
            size = Size(f"{axis}{v}", 128, 256 if axis == "batch" else v, t,
                        v if axis == "batch" else 16)  # fmt: skip
            wls += [Workload("jrnn", "lstm", "lstm", b, 1, "train", size) for b in backends]
            if args.flax:
                wls.append(Workload("flax", "OptimizedLSTMCell", "lstm", "", 1, "train", size))
            if args.torch:
                wls.append(Workload("torch", "LSTM", "lstm", "", 1, "train", size))
        rows, _ = measure(wls, max(3, args.reps // 2), 1, threads, verbose=False)
        for r in rows:
            v = r["size"][len(axis) :]
            out[axis].setdefault(r["label"], {})[v] = r["median_s"]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m jrnn.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, finishes in about a minute")
    p.add_argument("--sizes", nargs="+", help="seed, seed3, small or h=..,t=..,b=..[,l=..,v=..]")
    p.add_argument("--cells", nargs="+", help="jrnn cells (default: all available)")
    p.add_argument("--backends", nargs="+", help="jrnn backends (default: auto xla fused ...)")
    p.add_argument("--unroll", nargs="+", type=int, help="scan unroll factors (default 1)")
    p.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    p.add_argument("--reps", type=int, help="interleaved repetitions (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-torch", dest="torch", action="store_false")
    p.add_argument("--no-flax", dest="flax", action="store_false")
    p.add_argument("--bf16", action="store_true", help="add bf16-matmul rows for the lstm")
    p.add_argument("--no-compile-sweep", dest="compile_sweep", action="store_false")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    p.add_argument("--peak-n", type=int, default=2048, help="matmul size of the peak measurement")
    p.add_argument("--json", help="write all results as JSON to this path")
    p.add_argument("--markdown", help="write the markdown report to this path (+ a PNG beside)")
    return p.parse_args(argv)


def run(args) -> dict:
    """Runs the benchmark described by parsed ``args``; returns the result dict."""
    quick = args.quick
    sizes = [
        parse_size(s) for s in (args.sizes or (["small"] if quick else ["seed", "seed3", "small"]))
    ]
    cells = args.cells or (
        ["lstm", "gru"] if quick else ["lstm", "gru", "elman", "seed_rnn", "min_gru"]
    )
    if "min_gru" in cells and not workloads.min_gru_available():
        cells = [c for c in cells if c != "min_gru"]
    backends = _backends(
        args.backends or (["xla", "fused"] if quick else ["xla", "fused", "associative", "cpu"])
    )
    unrolls = args.unroll or [1]
    reps = args.reps or (5 if quick else 9)
    if args.torch and not torch_peer.available():
        args.torch = False
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    peak = timing.matmul_peak(args.peak_n)
    print(f"float32 matmul peak: {peak:.0f} GFLOP/s", file=sys.stderr)
    rows, notes = [], []
    t_start = time.perf_counter()
    for size in sizes:
        size_cells = cells if size.layers == 1 else [c for c in cells if c == "lstm"]
        group = plan(args, size, size_cells, backends, unrolls)
        group_rows, mon = measure(group, reps, args.warmup, threads)
        rows += group_rows
        notes.append(f"{size.name}: {mon.note()}")
    # The peak is measured before and after the rounds; the larger is used (a busy machine
    # lowers one of them).
    peak = max(peak, timing.matmul_peak(args.peak_n))
    finish_rows(rows, peak)
    result = {
        "command": "python -m jrnn.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "env": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            "jax": jax.__version__,
            "jrnn": jrnn.__version__,
            "flax": _version("flax"),
            "torch": _version("torch"),
            "cpus": os.cpu_count(),
            "threads": threads,
            "peak_gflops": peak,
            "auto_cpu": backends_lib.AUTO_ORDER.get("cpu"),
            "auto_lstm": unroll_lib.resolve_backend(
                "auto",
                workloads.make_cell("lstm", 8),
                tokens=True,
                lengths=False,
                resets=False,
                reverse=False,
                return_carries=False,
            ).name,
        },  # fmt: skip
        "rows": rows,
        "load_note": "; ".join(notes),
    }
    if args.compile_sweep:
        result["compile_sweep"] = compile_sweep(quick)
    if args.bf16:
        result["bf16"] = workloads.bf16_accuracy("lstm", sizes[0])
    if args.plot and (args.markdown or not quick):  # --quick plots only for a markdown report
        result["plot_sweep"] = plot_sweep(
            args, [b for b in backends if b in ("xla", "fused")], threads
        )
    result["targets"] = report.targets(rows, result.get("compile_sweep"))
    result["total_s"] = time.perf_counter() - t_start
    return result


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> dict:
    """Entry point of ``python -m jrnn.bench``."""
    args = parse_args(argv)
    result = run(args)
    print(report.text_table(report.HEADER, report.rows_table(result["rows"])))
    print()
    print(report.text_table(report.TARGET_HEADER, report.target_rows(result["targets"])))
    if result.get("compile_sweep"):
        print("\ncompile seconds:", json.dumps({k: v for k, v in result["compile_sweep"].items()}))
    print(f"\nload: {result['load_note']}")
    print(f"total {result['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.markdown:
        png = None
        if result.get("plot_sweep"):
            base = os.path.splitext(args.markdown)[0]
            png_path = os.path.join(os.path.dirname(args.markdown), "img",
                                    "bench_" + os.path.basename(base) + ".png")  # fmt: skip
            os.makedirs(os.path.dirname(png_path), exist_ok=True)
            report.plot(result["plot_sweep"], png_path)
            png = os.path.relpath(png_path, os.path.dirname(args.markdown) or ".")
        report.write_markdown(args.markdown, report.markdown(result, png))
    return result
