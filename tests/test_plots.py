"""Learning-curve figures: the panels, titles and line data match the metrics written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from jrnn import train  # noqa: E402
from jrnn._src import metrics as metrics_lib  # noqa: E402

TOKENS = 512  # per step


def write_run(folder, *, scale=1.0, summary=None, sorter=False):
    """A metrics.jsonl like fit writes: train rows every 10 steps, eval rows every 20."""
    folder.mkdir(parents=True)
    rows = []
    for step in range(10, 61, 10):
        loss = scale * 4.0 / math.sqrt(step)
        row = {"kind": "train", "step": step, "loss": loss, "accuracy": 0.01 * step}
        row.update({"lr": 1e-3 * (1 - step / 70), "grad_norm": 1.0 / step, "tokens": TOKENS})
        row.update({"count": 64.0, "tokens_per_s": 1e4, "time": float(step)})
        if not sorter:
            row["bits_per_char"] = loss / math.log(2)
        rows.append(row)
        if step % 20 == 0:
            ev = {"kind": "eval", "step": step, "eval_loss": loss + 0.1}
            ev.update({"eval_accuracy": 0.009 * step, "eval_count": 100.0, "time": float(step)})
            if not sorter:
                ev["eval_bits_per_char"] = (loss + 0.1) / math.log(2)
            rows.append(ev)
    with open(folder / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return rows


def line_data(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return list(line.get_xdata()), list(line.get_ydata())


def test_curves_figure_panels_lines_and_final_mark(tmp_path):
    rows = write_run(tmp_path / "lm_run", summary={"steps": 60, "heldout_nats_per_char": 0.75})
    fig = train.curves_figure(tmp_path / "lm_run", title="char LM")
    assert fig._suptitle.get_text() == "char LM: lm_run"
    axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
    titles = [ax.get_title(loc="left") for ax in axes]
    # bits/char is the loss on a second axis, not a panel of its own; bookkeeping is left out.
    assert titles == ["loss", "accuracy", "lr", "grad_norm"]
    loss_ax = axes[0]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    xs, ys = line_data(loss_ax, "train")
    assert xs == [r["step"] for r in train_rows]
    np.testing.assert_allclose(ys, [r["loss"] for r in train_rows])
    xs, ys = line_data(loss_ax, "eval")
    assert xs == [20, 40, 60]
    np.testing.assert_allclose(ys, [r["eval_loss"] for r in eval_rows])
    # The final full evaluation of summary.json is the star.
    assert line_data(loss_ax, "final full eval 0.75") == ([60], [0.75])
    # Without a summary value the last evaluation is marked.
    assert line_data(axes[1], "final eval 0.54") == ([60], [pytest.approx(0.54)])
    np.testing.assert_allclose(line_data(axes[2], "train")[1], [r["lr"] for r in train_rows])
    # Secondary axes: tokens on top of the first panel, bits/char right of the loss.
    fig.draw_without_rendering()  # secondary axes take their limits at draw time
    children = list(loss_ax.child_axes)
    labels = sorted(c.get_xlabel() or c.get_ylabel() for c in children)
    assert labels == ["bits/char", f"tokens ({TOKENS} per step)"]
    (top,) = [c for c in children if c.get_xlabel()]
    lo, hi = loss_ax.get_xlim()
    np.testing.assert_allclose(top.get_xlim(), (lo * TOKENS, hi * TOKENS))
    (right,) = [c for c in children if c.get_ylabel()]
    lo, hi = loss_ax.get_ylim()
    np.testing.assert_allclose(right.get_ylim(), (lo / math.log(2), hi / math.log(2)))


def test_sorter_accuracy_by_length_panel(tmp_path):
    by_length = {
        "16": {"greedy_exact_match": 1.0, "beam4_exact_match": 1.0},
        "32": {"greedy_exact_match": 0.9, "beam4_exact_match": 0.95},
        "8": {"greedy_exact_match": 1.0, "beam4_exact_match": 1.0},
    }
    write_run(tmp_path / "sorter", sorter=True, summary={"steps": 60, "by_length": by_length})
    fig = train.curves_figure(tmp_path / "sorter" / "metrics.jsonl", run_name="t32")
    assert fig._suptitle.get_text() == "t32"
    panel = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("accuracy by")]
    (ax,) = panel
    assert ax.get_xlabel() == "sequence length"
    assert line_data(ax, "greedy_exact_match") == ([8, 16, 32], [1.0, 1.0, 0.9])
    assert line_data(ax, "beam4_exact_match") == ([8, 16, 32], [1.0, 1.0, 0.95])


def test_plot_runs_overlays_each_run(tmp_path):
    a = write_run(tmp_path / "lstm", scale=1.0)
    b = write_run(tmp_path / "gru", scale=2.0)
    fig = train.runs_figure([tmp_path / "lstm", tmp_path / "gru" / "metrics.jsonl"])
    (ax,) = fig.axes
    assert ax.get_title(loc="left") == "loss" and fig._suptitle.get_text() == "runs: lstm, gru"
    for name, rows in (("lstm", a), ("gru", b)):
        xs, ys = line_data(ax, f"{name} train")
        assert xs == [r["step"] for r in rows if r["kind"] == "train"]
        np.testing.assert_allclose(ys, [r["loss"] for r in rows if r["kind"] == "train"])
        _, ys = line_data(ax, f"{name} eval")
        np.testing.assert_allclose(ys, [r["eval_loss"] for r in rows if r["kind"] == "eval"])
    png = train.plot_runs(
        [tmp_path / "lstm", tmp_path / "gru"],
        tmp_path / "out" / "compare.png",
        keys=["loss", "eval_accuracy"],
        labels=["LSTM", "GRU"],
    )
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels has 1 entries for 2 paths"):
        train.runs_figure([tmp_path / "lstm", tmp_path / "gru"], labels=["x"])
    with pytest.raises(ValueError, match="holds any of the metrics"):
        train.runs_figure([tmp_path / "lstm"], keys=["perplexity"])


def test_plot_curves_writes_png_and_fit_uses_it(tmp_path):
    write_run(tmp_path / "run")
    png = train.plot_curves(tmp_path / "run" / "metrics.jsonl", tmp_path / "run" / "c.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert metrics_lib.plot_curves is train.plot_curves
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metric to plot"):
        train.plot_curves(tmp_path / "empty", tmp_path / "empty" / "c.png")
