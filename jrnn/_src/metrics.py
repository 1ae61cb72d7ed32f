"""Training metrics: a JSONL log and a terminal progress bar (learning curves: plots.py).

``metrics.jsonl`` holds one JSON object per line. Training rows (every ``log_every`` steps)::

    {"kind": "train", "step": 200, "loss": 1.83, "lr": 0.002, "grad_norm": 0.41,
     "examples_per_s": 512.0, "tokens_per_s": 65536.0, "time": 12.3, ...loss_fn metrics}

Evaluation rows (every ``eval_every`` steps and at the end)::

    {"kind": "eval", "step": 200, "eval_loss": 1.91, "eval_accuracy": 0.62, "time": 12.9}

``step`` counts completed optimizer steps; ``time`` is seconds since the run (re)started;
train metrics are means over the steps since the previous row.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import jax
import numpy as np

from jrnn._src.plots import plot_curves  # noqa: F401  (drawn in plots.py; fit calls it here)


def is_writer() -> bool:
    """True on the process that writes logs, plots and checkpoints (process 0)."""
    return jax.process_index() == 0


def _clean(value: Any) -> Any:
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    if math.isfinite(value):
        return value
    return str(value)  # "nan" / "inf": JSON has no literal for them


class JsonlLogger:
    """Appends rows to a JSONL file (process 0 only; a no-op elsewhere or without a path)."""

    def __init__(self, path: str | os.PathLike | None, *, truncate_after: int | None = None):
        self.path = os.fspath(path) if path is not None and is_writer() else None
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if truncate_after is not None and os.path.exists(self.path):
            # Resuming: drop rows logged after the checkpoint we resume from.
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= truncate_after]
            with open(self.path, "w") as f:
                for row in kept:
                    f.write(json.dumps(row) + "\n")
        elif truncate_after is None and os.path.exists(self.path):
            os.remove(self.path)

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSONL file (blank or truncated trailing lines are skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class ProgressBar:
    """A rich progress bar showing step, loss and throughput; silent when disabled."""

    def __init__(self, total: int, start: int = 0, *, enabled: bool = True):
        self.enabled = bool(enabled and is_writer() and sys.stdout.isatty())
        self._progress = None
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def update(self, step: int, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def format_info(row: dict) -> str:
    """The progress bar's text for a training row."""
    parts = [f"loss {row['loss']:.4f}"] if "loss" in row else []
    if "tokens_per_s" in row:
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    elif "examples_per_s" in row:
        parts.append(f"{row['examples_per_s']:,.1f} ex/s")
    return "  ".join(parts)
