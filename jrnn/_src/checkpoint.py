"""Checkpoints: atomic, no pickle, restorable onto any device layout.

Layout of a checkpoint root (``<workdir>/checkpoints``)::

    step_00000500/arrays.npz   every array, keyed "<group><path>" (e.g. "params['cell']['w_hh']")
    step_00000500/meta.json    step, save time, per-array shape/dtype, user metadata
    step_00001000/...

A checkpoint is written into a hidden temporary directory (``.tmp-step_...``), flushed to disk,
then renamed to ``step_<step>``: a reader sees either the whole checkpoint or none of it, and a
crash mid-save leaves the previous checkpoints untouched (the temporary directory is removed by
the next save). Arrays are gathered to host memory (``process_allgather`` for arrays spread over
several processes) and written by process 0 only; on restore every array is placed with the
sharding of the target it replaces, so a state saved on 8 devices restores on 1 and vice versa.
Files are plain ``.npz`` read with ``allow_pickle=False``; bfloat16 and PRNG keys are stored as
unsigned-integer views and restored from the dtype recorded in ``meta.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_STEP_DIR = re.compile(r"^step_(\d+)$")
_ARRAYS = "arrays.npz"
_META = "meta.json"
FORMAT_VERSION = 1


def step_dir(root: str | os.PathLike, step: int) -> str:
    """The directory of the checkpoint of ``step`` under ``root``."""
    return os.path.join(os.fspath(root), f"step_{int(step):08d}")


def list_steps(root: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints under ``root``, ascending (empty if none)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    steps = []
    for name in os.listdir(root):
        m = _STEP_DIR.match(name)
        if m and os.path.isfile(os.path.join(root, name, _META)):
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(root: str | os.PathLike) -> int | None:
    """The newest complete checkpoint's step under ``root``, or None."""
    steps = list_steps(root)
    return steps[-1] if steps else None


def agreed_latest_step(root: str) -> int | None:
    """The latest checkpoint step, the same on every process (else a clear error on all)."""
    step = latest_step(root)
    if jax.process_count() == 1:
        return step
    from jax.experimental import multihost_utils

    mine = np.asarray(-1 if step is None else step, np.int64)
    seen = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1).tolist()
    if len(set(seen)) > 1:
        raise RuntimeError(
            f"the processes see different latest checkpoints under {root!r} (per process: "
            f"{seen}); the workdir must be one shared file system visible to every host"
        )
    return step


def remove_all(root: str | os.PathLike) -> None:
    """Deletes every checkpoint (and leftover temporary directory) under ``root`` (process 0)."""
    root = os.fspath(root)
    if jax.process_index() != 0 or not os.path.isdir(root):
        return
    _remove_temporaries(root)
    for step in list_steps(root):
        shutil.rmtree(step_dir(root, step), ignore_errors=True)


def resolve(path: str | os.PathLike, step: int | None = None) -> str:
    """Finds a checkpoint directory: ``path`` itself if it is one, else ``step`` or the latest."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, _META)) and step is None:
        return path
    if step is None:
        step = latest_step(path)
        if step is None:
            raise FileNotFoundError(f"no checkpoint found under {path!r}")
    d = step_dir(path, step)
    if not os.path.isfile(os.path.join(d, _META)):
        raise FileNotFoundError(f"no checkpoint of step {step} under {path!r} ({list_steps(path)})")
    return d


# ----------------------------------------------------------------------------- to and from numpy


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array):
        if not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)
    return np.asarray(x)


def _flatten(groups: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for group, tree in groups.items():
        if tree is None:
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out.append((group + jax.tree_util.keystr(path), leaf))
    return out


def _encode(x: Any) -> tuple[np.ndarray, dict]:
    info: dict[str, Any] = {}
    if _is_key(x):
        info["key_impl"] = str(jax.random.key_impl(x))
        x = jax.random.key_data(x)
    a = _to_host(x)
    info["dtype"] = str(a.dtype)
    info["shape"] = list(a.shape)
    if a.dtype.kind == "V":  # bfloat16, float8, ...: store the bits
        a = a.view(np.dtype(f"u{a.dtype.itemsize}"))
    return a, info


def save_tree(
    root: str | os.PathLike,
    step: int,
    groups: dict[str, Any],
    *,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> str:
    """Writes the pytrees in ``groups`` as the checkpoint of ``step``; returns its directory.

    Every process must call this (gathering sharded arrays is collective); only process 0
    writes. ``keep`` newest checkpoints are kept (None keeps all).
    """
    root = os.fspath(root)
    encoded, infos = {}, {}
    for name, leaf in _flatten(groups):
        encoded[name], infos[name] = _encode(leaf)
    final = step_dir(root, step)
    if jax.process_index() != 0:
        return final
    os.makedirs(root, exist_ok=True)
    _remove_temporaries(root)
    tmp = os.path.join(root, f".tmp-step_{int(step):08d}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, _ARRAYS), "wb") as f:
            _write_arrays(f, encoded)
            f.flush()
            os.fsync(f.fileno())
        meta = {
            "format": FORMAT_VERSION,
            "step": int(step),
            "time": time.time(),
            "arrays": infos,
            "metadata": metadata or {},
        }
        with open(os.path.join(tmp, _META), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):  # re-saving a step: move the old one aside first
            old = os.path.join(root, f".tmp-old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old_step in list_steps(root)[: -int(keep)] if keep > 0 else []:
            shutil.rmtree(step_dir(root, old_step), ignore_errors=True)
    return final


def _write_arrays(f, encoded: dict[str, np.ndarray]) -> None:
    np.savez(f, **encoded)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _remove_temporaries(root: str) -> None:
    for name in os.listdir(root):
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def read_meta(path: str | os.PathLike, step: int | None = None) -> dict:
    """The ``meta.json`` of a checkpoint (see :func:`resolve` for ``path`` and ``step``)."""
    with open(os.path.join(resolve(path, step), _META)) as f:
        return json.load(f)


def restore_tree(
    path: str | os.PathLike,
    targets: dict[str, Any],
    *,
    step: int | None = None,
    ignore: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict]:
    """Reads the groups named in ``targets`` from a checkpoint.

    Each target pytree gives the structure, shapes and dtypes to expect and the sharding to
    place each array with (a ``jax.Array``'s or ``ShapeDtypeStruct``'s ``.sharding``; numpy
    leaves and leaves without a sharding go to the default device). Groups whose target is
    None are skipped; stored arrays whose names start with a prefix in ``ignore`` may be
    left unread.

    Returns:
      ``(restored groups, meta)``.

    Raises:
      ValueError: if the checkpoint and a target disagree on names, shapes or dtypes.
    """
    d = resolve(path, step)
    with open(os.path.join(d, _META)) as f:
        meta = json.load(f)
    infos = meta["arrays"]
    out = {}
    with np.load(os.path.join(d, _ARRAYS), allow_pickle=False) as data:
        for group, tree in targets.items():
            if tree is None:
                out[group] = None
                continue
            flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
            names = [group + jax.tree_util.keystr(p) for p, _ in flat]
            stored = {k for k in infos if k == group or k.startswith(group + "[")}
            missing = [n for n in names if n not in infos]
            extra = sorted(n for n in stored - set(names) if not n.startswith(ignore))
            if missing or extra:
                raise ValueError(
                    f"checkpoint {d!r} does not match the target {group!r}: missing from the "
                    f"checkpoint {missing[:5]}, not in the target {extra[:5]}"
                )
            leaves = [
                _decode(data[n], infos[n], leaf, n)
                for n, (_, leaf) in zip(names, flat, strict=True)
            ]
            out[group] = jax.tree.unflatten(treedef, leaves)
    return out, meta


def _decode(a: np.ndarray, info: dict, target: Any, name: str) -> Any:
    dtype = jnp.dtype(info["dtype"])
    if a.dtype != dtype:
        a = a.view(dtype)
    a = a.reshape(info["shape"])
    if "key_impl" in info:
        expected_shape = tuple(getattr(target, "shape", ()))
        shape, tdtype = a.shape[: len(a.shape) - 1], None
    else:
        expected_shape, shape = tuple(np.shape(target)), a.shape
        tdtype = getattr(target, "dtype", None)
    if shape != expected_shape or (tdtype is not None and jnp.dtype(tdtype) != dtype):
        raise ValueError(
            f"checkpoint array {name} has shape {shape} and dtype {dtype}; the target expects "
            f"shape {expected_shape} and dtype {tdtype}"
        )
    sharding = getattr(target, "sharding", None)
    if sharding is None or not isinstance(target, jax.Array | jax.ShapeDtypeStruct):
        x = jnp.asarray(a)
    elif _is_key(target):
        x = jnp.asarray(a)  # placed below after wrapping
    else:
        x = jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
    if "key_impl" in info:
        x = jax.random.wrap_key_data(x, impl=info["key_impl"])
        if sharding is not None:
            x = jax.device_put(x, sharding)
    return x


# ----------------------------------------------------------------------------- model-level API


class Restored(NamedTuple):
    """What :func:`restore_checkpoint` returns (the model itself is updated in place).

    Attributes:
      step: the checkpoint's step.
      opt_state: the optimizer state (None if no template was given).
      rng: the uint32 key data of the base PRNG key, or None if the checkpoint has none.
      carry: the restored carry (None if no template was given).
      metadata: the user metadata saved with the checkpoint.
    """

    step: int
    opt_state: Any
    rng: Any
    carry: Any
    metadata: dict


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    opt_state: Any,
    step: int,
    *,
    rng: Any = None,
    carry: Any = None,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> str:
    """Saves a model's state (and the optimizer state) as ``<path>/step_<step>``, atomically.

    The layout is the one :func:`jrnn.train.fit` writes, so a checkpoint saved here resumes
    with ``fit`` and vice versa (``rng`` defaults to the key data of ``jax.random.key(0)``,
    i.e. ``TrainConfig.seed=0``). Every process must call it; process 0 writes.

    Args:
      path: the checkpoint root (e.g. ``<workdir>/checkpoints``).
      model: a ``flax.nnx.Module``.
      opt_state: the optax state of the model's ``nnx.Param`` state (or None).
      step: the step number.
      rng: uint32 key data of the base PRNG key (``jax.random.key_data``), or None.
      carry: a carry pytree to save, or None.
      metadata: a JSON-serialisable dict stored in ``meta.json``.
      keep: keep this many newest checkpoints under ``path`` (None: all).

    Returns:
      The checkpoint directory.

    Example:
      >>> from flax import nnx
      >>> from jrnn import train
      >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
      >>> d = train.save_checkpoint("/tmp/ckpt_doc", model, None, 0)  # doctest: +SKIP
    """
    from flax import nnx

    _, params, rest = nnx.split(model, nnx.Param, ...)
    if rng is None:
        rng = jax.random.key_data(jax.random.key(0))
    state = {
        "step": jnp.asarray(step, jnp.int32),
        "params": params,
        "rest": rest,
        "opt_state": opt_state,
        "rng": rng,
    }
    return save_tree(
        path, step, {"state": _fit_layout(state), "carry": carry}, metadata=metadata, keep=keep
    )


def _fit_layout(d: dict) -> Any:
    # fit saves a TrainState NamedTuple; its keypaths are ".step", ".params", ...
    from jrnn._src.train import TrainState

    return TrainState(d["step"], d["params"], d["rest"], d["opt_state"], d["rng"])


def restore_checkpoint(
    path: str | os.PathLike,
    model: Any,
    opt_state: Any = None,
    *,
    step: int | None = None,
    carry: Any = None,
) -> Restored:
    """Restores a checkpoint into ``model`` (in place) and returns the rest of the state.

    Every array is placed like the array it replaces: a model (or ``opt_state`` template)
    replicated on 8 devices gets 8-device arrays, a single-device model single-device arrays,
    whatever the layout at save time.

    Args:
      path: a checkpoint root (the latest or ``step`` is used) or one checkpoint directory.
      model: a ``flax.nnx.Module`` of the same structure as the saved one.
      opt_state: a template optimizer state (e.g. ``tx.init(params)``), or None to skip it.
      step: which checkpoint under ``path``; None for the latest.
      carry: a template carry, or None to skip it.

    Returns:
      A :class:`Restored`.

    Raises:
      FileNotFoundError: if there is no checkpoint.
      ValueError: if the checkpoint does not match the model or templates.
    """
    from flax import nnx

    _, params, rest = nnx.split(model, nnx.Param, ...)
    template = _fit_layout(
        {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "rest": rest,
            "opt_state": opt_state,
            "rng": jax.random.key_data(jax.random.key(0)),
        }
    )
    ignore = ("state.opt_state",) if opt_state is None else ()
    out, meta = restore_tree(path, {"state": template, "carry": carry}, step=step, ignore=ignore)
    state = out["state"]
    nnx.update(model, state.params, state.rest)
    return Restored(
        int(state.step), state.opt_state, state.rng, out["carry"], meta.get("metadata", {})
    )
