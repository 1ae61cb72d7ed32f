"""Learning-curve figures from ``metrics.jsonl`` (matplotlib, imported only when drawing).

:func:`curves_figure` draws one run: the loss (with bits/char on a second y axis when the run
logs it, instead of a duplicate panel), every other evaluation metric, the learning rate and the
gradient norm, against steps (and tokens on a second x axis). The run's final full evaluation,
read from ``summary.json`` next to ``metrics.jsonl`` when there is one, is marked with a star;
a sorter's summary adds a panel of accuracy by sequence length. :func:`runs_figure` overlays
several runs. :func:`plot_curves` and :func:`plot_runs` write those figures to PNG files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_BOOKKEEPING = ("count", "tokens", "examples_per_s", "tokens_per_s", "time")
# summary.json keys of a final full evaluation -> the metric they measure.
_FINAL_KEYS = {
    "heldout_nats_per_char": "loss",
    "heldout_accuracy": "accuracy",
    "test_loss": "loss",
    "test_accuracy": "accuracy",
}
_LN2 = math.log(2.0)


def _new_figure(caller: str, **kwargs: Any) -> Any:
    # A bare Figure (no pyplot): no global state, no backend switch, nothing to close; a
    # notebook shows it with IPython.display.display(fig).
    try:
        import matplotlib  # noqa: F401  (first: a submodule import can hit a cached submodule)
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            f"{caller} needs matplotlib: pip install 'jrnn[experiments]' (or pip install "
            "matplotlib)"
        ) from e
    return Figure(layout="constrained", **kwargs)


def _read_jsonl(path: str) -> list[dict]:
    # Imported here: metrics.py imports this module (for fit's curves.png).
    from jrnn._src.metrics import read_jsonl

    return read_jsonl(path)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _jsonl(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path


def _run_name(jsonl_path: str) -> str:
    return os.path.basename(os.path.dirname(os.path.abspath(jsonl_path))) or jsonl_path


def _read_summary(jsonl_path: str) -> dict | None:
    path = os.path.join(os.path.dirname(os.path.abspath(jsonl_path)), "summary.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if _number(r.get(key)) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _tokens_per_step(train: Sequence[dict]) -> float | None:
    vals = sorted(r["tokens"] for r in train if _number(r.get("tokens")) and r["tokens"] > 0)
    return vals[len(vals) // 2] if vals else None


def _default_keys(train: Sequence[dict], evals: Sequence[dict]) -> list[str]:
    names = {k[len("eval_") :] for r in evals for k in r if k.startswith("eval_")}
    skip = {"loss", "bits_per_char", *_BOOKKEEPING}
    return ["loss", *sorted(names - skip), "lr", "grad_norm"]


def curves_figure(
    jsonl_path: str | os.PathLike,
    *,
    keys: Iterable[str] | None = None,
    title: str | None = None,
    run_name: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> Any:
    """A matplotlib figure of one run's learning curves.

    One panel per metric, titled with the metric's name, training curve and evaluation points on
    the same axes, x in steps (and tokens on the top axis when the run logs ``tokens``). The
    loss panel carries bits/char on its right axis when the run logs ``bits_per_char``. The final
    full evaluation (``summary.json``'s ``heldout_nats_per_char``, ``heldout_accuracy``,
    ``test_loss`` or ``test_accuracy``; without a summary, the last evaluation) is a star. A
    summary with ``by_length`` (the sorter) adds a panel of accuracy against sequence length.

    Args:
      jsonl_path: a ``metrics.jsonl`` written by :func:`jrnn.train.fit`, or its folder.
      keys: the metrics to draw (``"accuracy"`` draws ``accuracy`` and ``eval_accuracy``);
        None for the default panels.
      title: the figure's title (the run name is appended).
      run_name: the run's name (None: the folder holding ``metrics.jsonl``).
      summary: the run's summary (None: ``summary.json`` next to the file, if any).

    Returns:
      A ``matplotlib.figure.Figure`` (not registered with pyplot: show it in a notebook with
      ``IPython.display.display(fig)``).

    Raises:
      ImportError: if matplotlib is not installed.
      ValueError: if the file holds none of the metrics.

    Example:
      >>> from jrnn import train
      >>> fig = train.curves_figure("runs/lm/metrics.jsonl")  # doctest: +SKIP
    """
    path = _jsonl(jsonl_path)
    rows = _read_jsonl(path)
    train = [r for r in rows if r.get("kind", "train") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    summary = _read_summary(path) if summary is None else summary
    keys = _default_keys(train, evals) if keys is None else list(keys)
    keys = [k.removeprefix("eval_") for k in keys]
    keys = [k for k in keys if _series(train, k)[0] or _series(evals, f"eval_{k}")[0]]
    by_length = (summary or {}).get("by_length") or {}
    if not keys:
        raise ValueError(f"{path!r} holds no metric to plot")
    n = len(keys) + (1 if by_length else 0)
    fig = _new_figure("plot_curves", figsize=(7.5, 2.4 * n + 0.4))
    grid = fig.add_gridspec(n, 1)
    axes = []
    for i, key in enumerate(keys):
        ax = fig.add_subplot(grid[i, 0], sharex=axes[0] if axes else None)
        axes.append(ax)
        xs, ys = _series(train, key)
        if xs:
            ax.plot(xs, ys, "-", color="C0", label="train")
        xs, ys = _series(evals, f"eval_{key}")
        if xs:
            ax.plot(xs, ys, "o-", color="C1", markersize=3, label="eval")
        _mark_final(ax, key, summary, evals)
        ax.set_title(key, fontsize=10, loc="left")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if key == "loss" and any(_number(r.get("bits_per_char")) for r in train + evals):
            right = ax.secondary_yaxis("right", functions=(_nats_to_bits, _bits_to_nats))
            right.set_ylabel("bits/char")
            ax.set_ylabel("loss (nats/char)")
        if i < len(keys) - 1:
            ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("step")
    per_step = _tokens_per_step(train)
    if per_step:
        top = axes[0].secondary_xaxis(
            "top", functions=(lambda s, k=per_step: s * k, lambda t, k=per_step: t / k)
        )
        top.set_xlabel(f"tokens ({per_step:,.0f} per step)", fontsize=8)
    if by_length:
        _by_length_panel(fig.add_subplot(grid[-1, 0]), by_length)
    name = run_name if run_name is not None else _run_name(path)
    fig.suptitle(f"{title}: {name}" if title else name)
    return fig


def _nats_to_bits(x: Any) -> Any:
    return x / _LN2


def _bits_to_nats(x: Any) -> Any:
    return x * _LN2


def _mark_final(ax: Any, key: str, summary: Mapping[str, Any] | None, evals: list) -> None:
    value, step, label = None, None, "final eval"
    for name, metric in _FINAL_KEYS.items():
        if metric == key and summary and _number(summary.get(name)):
            value, step, label = summary[name], summary.get("steps"), "final full eval"
            break
    if value is None:
        xs, ys = _series(evals, f"eval_{key}")
        if not xs:
            return
        step, value = xs[-1], ys[-1]
    if step is None:
        step = max((r["step"] for r in evals), default=0)
    ax.plot([step], [value], "*", color="C3", markersize=12, label=f"{label} {value:.4g}")
    ax.annotate(
        f"{value:.4g}", (step, value), textcoords="offset points", xytext=(-8, 8), ha="right"
    )


def _by_length_panel(ax: Any, by_length: Mapping[Any, Mapping[str, float]]) -> None:
    lengths = sorted(by_length, key=int)
    metrics = sorted({k for row in by_length.values() for k in row if _number(row.get(k))})
    for i, m in enumerate(metrics):
        xs = [int(t) for t in lengths if _number(by_length[t].get(m))]
        ys = [by_length[t][m] for t in lengths if _number(by_length[t].get(m))]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=m)
    ax.set_title("accuracy by sequence length (final)", fontsize=10, loc="left")
    ax.set_xticks([int(t) for t in lengths])
    ax.set_xlabel("sequence length")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(
    jsonl_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    keys: Iterable[str] | None = None,
    title: str | None = None,
    run_name: str | None = None,
) -> str:
    """Draws :func:`curves_figure` of a ``metrics.jsonl`` into a PNG.

    Args:
      jsonl_path: a file written by :func:`jrnn.train.fit` (or its folder).
      png_path: the PNG to write (directories are created).
      keys: the metrics to draw; None for the default panels.
      title: figure title (the run name is appended).
      run_name: the run's name (None: the folder holding ``metrics.jsonl``).

    Returns:
      ``png_path`` as a string.

    Raises:
      ImportError: if matplotlib is not installed (``pip install 'jrnn[experiments]'``).
      ValueError: if the file holds none of the metrics.

    Example:
      >>> from jrnn import train
      >>> train.plot_curves("runs/lm/metrics.jsonl", "runs/lm/curves.png")  # doctest: +SKIP
    """
    fig = curves_figure(jsonl_path, keys=keys, title=title, run_name=run_name)
    return _save(fig, png_path)


def runs_figure(
    paths: Sequence[str | os.PathLike],
    *,
    keys: Iterable[str] = ("loss",),
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """A figure overlaying several runs' ``metrics.jsonl``: one panel per metric, one colour
    per run (training: line; evaluation: dashed line with points).

    Args:
      paths: ``metrics.jsonl`` files or the folders holding them.
      keys: the metrics to compare (``"loss"`` draws ``loss`` and ``eval_loss``).
      labels: one legend label per run (None: the folder names).
      title: figure title.

    Returns:
      A ``matplotlib.figure.Figure``.

    Raises:
      ImportError: if matplotlib is not installed.
      ValueError: on no paths, a label count that differs from the path count, or no metric.

    Example:
      >>> from jrnn import train
      >>> fig = train.runs_figure(["runs/lstm", "runs/gru"])  # doctest: +SKIP
    """
    files = [_jsonl(p) for p in paths]
    if not files:
        raise ValueError("paths must name at least one metrics.jsonl, got none")
    if labels is None:
        labels = [_run_name(f) for f in files]
    if len(labels) != len(files):
        raise ValueError(f"labels has {len(labels)} entries for {len(files)} paths")
    runs = [_read_jsonl(f) for f in files]
    keys = [k.removeprefix("eval_") for k in keys]
    if not keys:
        raise ValueError("keys must name at least one metric")
    fig = _new_figure("plot_runs", figsize=(7.5, 2.6 * len(keys) + 0.4))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    drawn = False
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for i, (rows, label) in enumerate(zip(runs, labels, strict=True)):
            train = [r for r in rows if r.get("kind", "train") == "train"]
            evals = [r for r in rows if r.get("kind") == "eval"]
            xs, ys = _series(train, key)
            if xs:
                ax.plot(xs, ys, "-", color=f"C{i}", label=f"{label} train")
                drawn = True
            xs, ys = _series(evals, f"eval_{key}")
            if xs:
                ax.plot(xs, ys, "o--", color=f"C{i}", markersize=3, label=f"{label} eval")
                drawn = True
        ax.set_title(key, fontsize=10, loc="left")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not drawn:
        raise ValueError(f"none of {files} holds any of the metrics {keys}")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title or "runs: " + ", ".join(labels))
    return fig


def plot_runs(
    paths: Sequence[str | os.PathLike],
    png_path: str | os.PathLike,
    *,
    keys: Iterable[str] = ("loss",),
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Draws :func:`runs_figure` (several runs overlaid) into a PNG.

    Args:
      paths: ``metrics.jsonl`` files or the folders holding them.
      png_path: the PNG to write (directories are created).
      keys: the metrics to compare.
      labels: one legend label per run (None: the folder names).
      title: figure title.

    Returns:
      ``png_path`` as a string.

    Example:
      >>> from jrnn import train
      >>> train.plot_runs(["runs/lstm", "runs/gru"], "compare.png")  # doctest: +SKIP
    """
    fig = runs_figure(paths, keys=keys, labels=labels, title=title)
    return _save(fig, png_path)


def _save(fig: Any, png_path: str | os.PathLike) -> str:
    png_path = os.fspath(png_path)
    os.makedirs(os.path.dirname(png_path) or ".", exist_ok=True)
    fig.savefig(png_path, dpi=100)
    return png_path
