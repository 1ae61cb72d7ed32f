"""Training metrics: a JSONL log and a terminal progress bar (learning curves: plots.py).

``metrics.jsonl`` holds one JSON object per line. Training rows (every ``log_every`` steps)::

    {"kind": "train", "step": 200, "loss": 1.83, "lr": 0.002, "grad_norm": 0.41,
     "examples_per_s": 512.0, "tokens_per_s": 65536.0, "time": 12.3, ...loss_fn metrics}

Evaluation rows (every ``eval_every`` steps and at the end)::

    {"kind": "eval", "step": 200, "eval_loss": 1.91, "eval_accuracy": 0.62, "time": 12.9}

``step`` counts completed optimizer steps; ``time`` is seconds since the run (re)started;
train metrics are means over the steps since the previous row (``skipped_steps`` counts the
steps whose loss or gradient was not finite; the loss mean is over the others). Numbers that are
not finite are written as ``null`` (the file is strict JSON).
"""

from __future__ import annotations

import json
import math
import sys
import time
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
    return value if math.isfinite(value) else None  # strict JSON has no NaN/inf: null


def dumps(row: dict) -> str:
    """One strict JSON line (non-finite numbers written as ``null``)."""
    return json.dumps({k: _clean(v) for k, v in row.items()}, allow_nan=False)


def _local(path: Any) -> bool:
    return "://" not in str(path)


def write_atomic(path: Any, text: str) -> None:
    """Writes ``text`` to ``path`` (an ``etils.epath.Path``) whole or not at all."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.replace(path)


class JsonlLogger:
    """Writes rows to a JSONL file (process 0 only; a no-op elsewhere or without a path).

    Local files are appended to; remote ones (``gs://...``, which cannot be appended to) are
    rewritten whole, atomically, at every row. Resuming rewrites the file atomically without
    the rows logged after the checkpoint.
    """

    def __init__(self, path: Any, *, truncate_after: int | None = None):
        from etils import epath

        self.path = epath.Path(path) if path is not None and is_writer() else None
        self._rows: list[str] = []
        if self.path is None:
            return
        self._append = _local(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            # Resuming: drop rows logged after the checkpoint we resume from.
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= truncate_after]
            self._rows = [dumps(r) for r in kept]
            write_atomic(self.path, "".join(line + "\n" for line in self._rows))
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        line = dumps(row)
        self._rows.append(line)
        if self._append:
            with self.path.open("a") as f:
                f.write(line + "\n")
        else:
            write_atomic(self.path, "".join(r + "\n" for r in self._rows))


def read_jsonl(path: Any) -> list[dict]:
    """The rows of a JSONL file (blank or truncated trailing lines are skipped)."""
    from etils import epath

    rows = []
    with epath.Path(path).open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _in_jupyter() -> bool:
    try:
        from rich.console import Console

        return bool(Console().is_jupyter)
    except Exception:  # noqa: BLE001
        return False


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressBar:
    """Training progress on process 0: rich's live bar in a terminal or Jupyter, plain lines
    otherwise (one per logged row: step, loss, learning rate, throughput, ETA).

    ``mode`` is ``"rich"``, ``"plain"`` or ``"off"`` (``enabled=False`` or another process).
    """

    def __init__(self, total: int, start: int = 0, *, enabled: bool = True, stream: Any = None):
        self.total, self.start = int(total), int(start)
        self.stream = stream
        self._t0 = None
        self._progress = None
        if not (enabled and is_writer()):
            self.mode = "off"
        elif sys.stdout.isatty() or _in_jupyter():
            self.mode = "rich"
        else:
            self.mode = "plain"
        self.enabled = self.mode != "off"
        if self.mode != "rich":
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

    def message(self, text: str) -> None:
        """A line above the bar, or printed (on process 0, even with progress off)."""
        if self.mode == "rich":
            self._progress.console.print(text)
        elif is_writer():
            print(text, file=self.stream or sys.stdout, flush=True)

    def update(self, step: int, info: str = "") -> None:
        if self.mode == "rich":
            self._progress.update(self._task, completed=step, info=info)
        elif self.mode == "plain":
            now = time.perf_counter()
            if self._t0 is None:
                self._t0 = (now, step)
                eta = ""
            else:
                t0, s0 = self._t0
                rate = (step - s0) / max(now - t0, 1e-9)
                eta = f"  ETA {_duration((self.total - step) / rate)}" if rate > 0 else ""
            width = len(str(self.total))
            line = f"step {step:>{width}}/{self.total}  {info}{eta}"
            print(line, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def format_info(row: dict) -> str:
    """The progress text for a training row: loss, learning rate, throughput, skipped steps."""
    loss = row.get("loss")
    parts = [f"loss {loss:.4f}" if isinstance(loss, float) else "loss nan"] if "loss" in row else []
    if isinstance(row.get("lr"), float):
        parts.append(f"lr {row['lr']:.2e}")
    if "tokens_per_s" in row:
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    elif "examples_per_s" in row:
        parts.append(f"{row['examples_per_s']:,.1f} ex/s")
    if row.get("skipped_steps"):
        parts.append(f"{row['skipped_steps']:.0f} non-finite steps skipped")
    return "  ".join(parts)


class TensorBoard:
    """Scalars of every row as TensorBoard events next to ``metrics.jsonl`` (tensorboardX).

    A no-op when not asked for, on processes other than 0, or (with a warning) when
    ``tensorboardX`` is not installed (``pip install 'jrnn[tensorboard]'``).
    """

    def __init__(self, logdir: Any, enabled: bool):
        self._writer = None
        if not (enabled and logdir is not None and is_writer()):
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            import warnings

            warnings.warn(
                "TrainConfig.tensorboard=True needs tensorboardX: pip install "
                "'jrnn[tensorboard]'; no event files written",
                stacklevel=3,
            )
            return
        self._writer = SummaryWriter(logdir=str(logdir))

    def write(self, row: dict) -> None:
        if self._writer is None:
            return
        kind, step = row.get("kind", "train"), int(row["step"])
        for k, v in row.items():
            if k in ("kind", "step") or isinstance(v, bool) or _clean(v) is None:
                continue
            if isinstance(v, int | float):
                tag = k if kind == "eval" else f"train/{k}"
                self._writer.add_scalar(tag.replace("eval_", "eval/", 1), float(v), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
