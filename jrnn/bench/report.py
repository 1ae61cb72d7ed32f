"""Benchmark output: the stdout table, the speed goals as ratios, markdown and the PNG plot."""

from __future__ import annotations

import math

# (description, jrnn family, size, mode, peer label, limit): the CPU goals (docs/benchmarks.md).
TARGETS = (
    ("LSTM train step vs torch.nn.LSTM", "lstm", "seed", "train", "torch:LSTM", 0.85),
    ("LSTM train step vs flax OptimizedLSTMCell", "lstm", "seed", "train",
     "flax:OptimizedLSTMCell", 0.60),
    ("LSTM forward vs torch.nn.LSTM", "lstm", "seed", "forward", "torch:LSTM", 0.90),
    ("LSTM forward vs flax OptimizedLSTMCell", "lstm", "seed", "forward",
     "flax:OptimizedLSTMCell", 1.00),
    ("GRU train step vs torch.nn.GRU", "gru", "seed", "train", "torch:GRU", 0.60),
    ("GRU train step vs flax GRUCell", "gru", "seed", "train", "flax:GRUCell", 0.80),
    ("GRU forward vs flax GRUCell", "gru", "seed", "forward", "flax:GRUCell", 1.00),
    ("3-layer LSTM train step vs torch.nn.LSTM", "lstm", "seed3", "train", "torch:LSTM", 0.85),
    ("3-layer LSTM train step vs flax OptimizedLSTMCell", "lstm", "seed3", "train",
     "flax:OptimizedLSTMCell", 1.00),
)  # fmt: skip


def _fmt_ms(s: float) -> str:
    return "-" if s is None or math.isnan(s) else f"{1e3 * s:.1f}"


def rows_table(rows: list[dict]) -> list[list[str]]:
    """Rows for the main table (one per workload)."""
    out = []
    for r in rows:
        ratio = r.get("ratio_to_best_peer")
        out.append(
            [
                r["size"],
                r["mode"],
                r["label"],
                f"{r['compile_s']:.2f}" if r.get("compile_s") is not None else "-",
                _fmt_ms(r["median_s"]),
                f"{r['tokens_per_s'] / 1e3:.1f}",
                f"{r['gflops']:.1f}",
                f"{r['peak_pct']:.1f}",
                "-" if ratio is None else f"{ratio:.2f}",
            ]
        )
    return out


HEADER = ["size", "mode", "implementation", "compile s", "median ms", "ktok/s", "GFLOP/s",
          "% peak", "vs best peer"]  # fmt: skip


def best_jrnn(rows: list[dict], family: str, size: str, mode: str) -> dict | None:
    """The fastest float32 jrnn row of a family, size and mode."""
    cands = [
        r
        for r in rows
        if r["impl"] == "jrnn"
        and r["family"] == family
        and r["size"] == size
        and r["mode"] == mode
        and r["dtype"] == "float32"
    ]
    return min(cands, key=lambda r: r["median_s"]) if cands else None


def targets(rows: list[dict], compile_sweep: dict | None) -> list[dict]:
    """The speed goals as measured ratios (``ok`` None when a side was not measured)."""
    out = []
    for desc, family, size, mode, peer, limit in TARGETS:
        mine = best_jrnn(rows, family, size, mode)
        theirs = [r for r in rows if r["label"] == peer and r["size"] == size and r["mode"] == mode]
        ratio = None
        if mine and theirs:
            ratio = mine["median_s"] / theirs[0]["median_s"]
        out.append(
            {
                "target": desc,
                "limit": limit,
                "ratio": ratio,
                "jrnn": mine["label"] if mine else None,
                "ok": None if ratio is None else ratio <= limit,
            }
        )
    if compile_sweep:
        layers = compile_sweep.get("layers", {})
        if "1" in layers and "8" in layers:
            ratio = layers["8"] / layers["1"]
            out.append(
                {
                    "target": "compile time 8 layers / 1 layer",
                    "limit": 1.5,
                    "ratio": ratio,
                    "jrnn": compile_sweep.get("label"),
                    "ok": ratio <= 1.5,
                }
            )
        steps = compile_sweep.get("steps", {})
        if len(steps) >= 2:
            vals = list(steps.values())
            ratio = max(vals) / min(vals)
            out.append(
                {
                    "target": f"compile time flat in T (max/min over T={','.join(steps)})",
                    "limit": 1.5,
                    "ratio": ratio,
                    "jrnn": compile_sweep.get("label"),
                    "ok": ratio <= 1.5,
                }
            )
    return out


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def target_rows(tgts: list[dict]) -> list[list[str]]:
    out = []
    for t in tgts:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        ok = {None: "not measured", True: "met", False: "missed"}[t["ok"]]
        out.append([t["target"], f"<= {t['limit']:.2f}", ratio, ok, t["jrnn"] or "-"])
    return out


TARGET_HEADER = ["target", "limit", "measured", "status", "jrnn row"]


def plot(sweep: dict, path: str) -> None:
    """Step time vs batch and vs hidden, one line per implementation, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, axis_name in zip(axes, ("batch", "hidden"), strict=True):
        series = sweep.get(axis_name, {})
        for label, points in sorted(series.items()):
            xs = sorted(int(k) for k in points)
            ax.plot(xs, [1e3 * points[str(x)] for x in xs], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(axis_name)
        ax.set_ylabel("train step, ms (median)")
        ax.set_title(f"LSTM train step vs {axis_name} ({sweep.get(axis_name + '_fixed', '')})")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict, png: str | None) -> str:
    """The markdown report (the measured part of docs/benchmarks.md)."""
    env = result["env"]
    parts = [
        f"Command: `{result['command']}`  ",
        f"Date (UTC): {env['date']}; jax {env['jax']}, flax {env.get('flax')}, "
        f"torch {env.get('torch') or 'not installed'}; {env['cpus']} CPUs; "
        f"float32 matmul peak measured in this run: {env['peak_gflops']:.0f} GFLOP/s.  ",
        f"Load: {result['load_note']}",
        "",
        "### Speed goals",
        "",
        md_table(TARGET_HEADER, target_rows(result["targets"])),
        "",
        "### All workloads",
        "",
        md_table(HEADER, rows_table(result["rows"])),
    ]
    if result.get("compile_sweep"):
        cs = result["compile_sweep"]
        parts += ["", f"### Compile time ({cs['label']}, seconds)", ""]
        for key in ("steps", "layers"):
            if cs.get(key):
                items = list(cs[key].items())
                parts.append(
                    md_table(
                        [key] + [k for k, _ in items], [["s"] + [f"{v:.2f}" for _, v in items]]
                    )
                )
                parts.append("")
    if result.get("bf16"):
        b = result["bf16"]
        parts += [
            "",
            "### bf16 matmuls: accuracy cost (same params and batch as float32)",
            "",
            f"loss float32 {b['loss_float32']:.6f}, bf16 {b['loss_bfloat16']:.6f} "
            f"(relative difference {b['loss_rel_diff']:.2e}); gradient relative error "
            f"{b['grad_rel_err']:.2e}.",
        ]
    if png:
        parts += ["", f"![step time vs batch and hidden]({png})"]
    return "\n".join(parts) + "\n"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_markdown(path: str, text: str) -> None:
    """Writes ``text`` to ``path``; if the file has the lines ``<!-- bench:begin -->`` and
    ``<!-- bench:end -->``, only the part between them is replaced (hand-written notes stay)."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    start = old.find(f"\n{BEGIN}\n")  # markers on lines of their own
    stop = old.find(f"\n{END}", start + 1) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        text = f"{old[: start + len(BEGIN) + 2]}{text}{old[stop + 1 :]}"
    with open(path, "w") as f:
        f.write(text)
