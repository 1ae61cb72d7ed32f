"""Shared command-line and bookkeeping pieces of the three experiments.

Everything that trains lives in the library (``jrnn.models``, ``jrnn.data``, ``jrnn.train``) and
in each experiment's ``train_and_evaluate(config, workdir)``; this module only holds what the
three entry scripts share: the argument parser, ``--set key=value`` config overrides, the
multi-host switch, a wall-clock budget on a batch iterator, and writing ``summary.json``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax


def build_parser(
    description: str, configs: Mapping[str, Callable[[], Any]]
) -> argparse.ArgumentParser:
    """The arguments every experiment takes.

    ``--config NAME`` picks a preset, ``--workdir`` the output folder (metrics.jsonl,
    checkpoints/, curves.png, summary.json), ``--set a.b=value`` overrides config fields
    (values are Python literals, e.g. ``--set train.steps=200 --set cell='"gru"'``; a bare word
    is a string), ``--distributed`` starts JAX's multi-process runtime first, ``--no-resume``
    ignores checkpoints already in the workdir.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default="cpu", choices=sorted(configs), help="config preset")
    p.add_argument("--workdir", required=True, help="output folder")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.steps=100 (repeatable)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() (TPU pod / multi-GPU hosts); each host reads "
        "its shard of the data and only process 0 writes",
    )
    p.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")
    return p


def parse_value(text: str) -> Any:
    """A Python literal (``3``, ``1e-3``, ``True``, ``None``, ``(8, 16)``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Returns a copy of the (nested, frozen) dataclass ``config`` with ``key=value`` applied.

    Example:
      >>> from experiments.sorter.config import get_config
      >>> apply_overrides(get_config("smoke"), ["train.steps=7", "seq_len=5"]).train.steps
      7
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        config = _replace_path(config, key.strip().split("."), parse_value(value.strip()))
    return config


def _replace_path(obj: Any, path: list[str], value: Any) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"cannot set {'.'.join(path)!r}: {type(obj).__name__} is not a config")
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise ValueError(
            f"unknown config field {path[0]!r} of {type(obj).__name__}; fields: {sorted(names)}"
        )
    if len(path) > 1:
        value = _replace_path(getattr(obj, path[0]), path[1:], value)
    else:
        old = getattr(obj, path[0])
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
    return dataclasses.replace(obj, **{path[0]: value})


def setup_runtime(distributed: bool) -> None:
    """Starts the multi-process runtime (``jrnn.train.initialize_distributed``) if asked."""
    if distributed:
        from jrnn import train

        train.initialize_distributed()


def is_writer() -> bool:
    """Process 0 writes logs, plots, summaries and samples."""
    return jax.process_index() == 0


def log(*args: Any) -> None:
    """``print`` on process 0 only, flushed."""
    if is_writer():
        print(*args, flush=True)


def shard() -> tuple[int, int]:
    """``(shard_index, shard_count)`` of this host for the data iterators."""
    return jax.process_index(), jax.process_count()


def time_limited(iterator: Iterator[Any], max_seconds: float | None) -> Iterator[Any]:
    """Yields from ``iterator`` until ``max_seconds`` have passed since the first item.

    ``jrnn.train.fit`` stops cleanly (final evaluation, checkpoint) when its batches run out,
    so this turns a step budget into a wall-clock budget. In a multi-host run every host must
    stop at the same step: use it on one host only, or not at all.
    """
    if max_seconds is None:
        yield from iterator
        return
    deadline = None
    for item in iterator:
        now = time.perf_counter()
        if deadline is None:
            deadline = now + float(max_seconds)
        elif now > deadline:
            return
        yield item


def machine() -> dict[str, Any]:
    """What the run ran on (for summary.json)."""
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "processes": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "host": platform.machine(),
    }


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def write_summary(workdir: str | None, summary: Mapping[str, Any]) -> None:
    """Writes ``<workdir>/summary.json`` (process 0)."""
    if workdir is None or not is_writer():
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "summary.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(summary), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def show_curves(workdir: str, title: str | None = None) -> str | None:
    """Draws ``<workdir>/metrics.jsonl`` into ``curves.png`` and shows it in a notebook.

    Outside IPython the PNG's path is printed. Returns the path (None on processes other
    than 0).
    """
    if not is_writer():
        return None
    from jrnn import train

    png = train.plot_curves(
        os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"), title=title
    )
    try:
        from IPython.display import Image, display
    except ImportError:
        print(f"learning curves: {png}")
    else:
        display(Image(filename=png))
    return png
