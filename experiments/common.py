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
import math
import os
import platform
import subprocess
import sys
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
    ignores checkpoints already in the workdir, ``--allow-config-change`` resumes with a changed
    learning rate, step count or schedule (changed shapes or seeds are always refused).
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
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even though trajectory fields (learning rate, steps, schedule, ...) differ "
        "from the checkpoint's config; shape and seed fields can never change",
    )
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


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: str | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (this file), with ``+dirty`` when the
    tree has changes; None outside a checkout or without git."""
    where = path or os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """What the run ran on and with (for summary.json): devices, versions, commit, command."""
    import jrnn

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
        "processes": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "versions": {
            "jrnn": getattr(jrnn, "__version__", None) or _version("jrnn"),
            "jax": jax.__version__,
            "jaxlib": _version("jaxlib"),
            "flax": _version("flax"),
            "optax": _version("optax"),
            "orbax-checkpoint": _version("orbax-checkpoint"),
        },
        "git_commit": git_commit(),
        "command": [sys.executable, *sys.argv],
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
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON: NaN and inf become null
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def write_summary(workdir: str | None, summary: Mapping[str, Any]) -> None:
    """Writes ``<workdir>/summary.json`` (process 0), atomically, as strict JSON (non-finite
    numbers as null); ``workdir`` may be local or ``gs://...``."""
    if workdir is None or not is_writer():
        return
    write_text(workdir, "summary.json", json.dumps(to_jsonable(summary), indent=2, allow_nan=False))


def write_text(workdir: str, name: str, text: str) -> None:
    """Writes ``<workdir>/<name>`` whole or not at all (local or any ``etils.epath`` path)."""
    from etils import epath

    folder = epath.Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    tmp.replace(folder / name)


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


# ----------------------------------------------------------------------------- validation


def _type_ok(value: Any, annotation: str) -> bool:
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if part == "bool" and isinstance(value, bool):
            return True
        if part == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if part == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if part == "str" and isinstance(value, str):
            return True
        if part.startswith("tuple[") and isinstance(value, tuple):
            inner = part[len("tuple[") : -1].split(",")[0].strip()
            if all(_type_ok(v, inner) for v in value):
                return True
        if part == "TrainConfig" and type(value).__name__ == "TrainConfig":
            return True
    return False


def check_config(
    config: Any,
    *,
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    fraction: Sequence[str] = (),
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Checks an experiment config's field types (from its annotations) and ranges.

    Args:
      config: a dataclass instance (e.g. ``experiments.char_lm.config.Config``).
      positive: fields that must be > 0 (or None where the type allows None).
      non_negative: fields that must be >= 0 (or None).
      fraction: fields in [0, 1).
      choices: field -> allowed values.

    Raises:
      ValueError: naming the field, its value and what was expected.

    Example:
      >>> from experiments.char_lm.config import get_config
      >>> get_config("smoke").replace(hidden_size=0)
      Traceback (most recent call last):
      ...
      ValueError: Config.hidden_size must be > 0, got 0
    """
    cls = type(config).__name__
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if not _type_ok(v, ann):
            raise ValueError(f"{cls}.{f.name} must be of type {ann}, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{cls}.{f.name} must be finite, got {v!r}")
    for names, ok, expected in (
        (positive, lambda v: v > 0, "> 0"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (fraction, lambda v: 0 <= v < 1, "in [0, 1)"),
    ):
        for name in names:
            v = getattr(config, name)
            if v is not None and not ok(v):
                raise ValueError(f"{cls}.{name} must be {expected}, got {v!r}")
    for name, allowed in (choices or {}).items():
        v = getattr(config, name)
        if v not in allowed:
            raise ValueError(f"{cls}.{name} must be one of {list(allowed)}, got {v!r}")


def check_eval_batches(**sizes: int) -> None:
    """Checks evaluation batch sizes against the device count before training starts.

    Raises:
      ValueError: naming the field when a size does not divide over ``jax.device_count()``.
    """
    n = jax.device_count()
    for name, size in sizes.items():
        if size % n:
            raise ValueError(
                f"{name}={size} is not divisible by the {n} devices: evaluation batches are "
                f"split over every device; use a multiple of {n} (--set {name}=...)"
            )


def run_config(config: Any, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The experiment config without its ``train`` part, as JSON values (stored with each
    checkpoint and compared on resume); ``name``, ``max_seconds`` and ``ignore`` (fields that
    change neither the state nor the training trajectory) are left out."""
    d = to_jsonable(config)
    for k in ("train", "name", "max_seconds", *ignore):
        d.pop(k, None)
    return d


def interrupted(task: str, result: Any, workdir: str | None) -> dict[str, Any]:
    """The summary of a run stopped by a signal (after its checkpoint was saved)."""
    log(
        f"{task}: stopped by {result.interrupted} at step {result.steps_done}; rerun the same "
        f"command to resume from {workdir}/checkpoints"
    )
    return {"task": task, "interrupted": result.interrupted, "steps": result.steps_done}
