"""Checkpoints on orbax: atomic, asynchronous, no pickle, any path, restorable onto any mesh.

Layout of a checkpoint root (``<workdir>/checkpoints``, a local folder or any path
``etils.epath`` opens, e.g. ``gs://bucket/run/checkpoints``)::

    step_00000500/arrays/   every array (orbax ``StandardSave``, tensorstore/OCDBT), as nested
                            dicts of strings: {"state": {"params": {...}, "opt_state": ...},
                            "carry": ...}; PRNG keys stored as their uint32 key data
    step_00000500/meta/     JSON (orbax ``JsonSave``): format, step, time, key impls, config,
                            user metadata
    step_00001000/...

Orbax writes each checkpoint into a temporary folder and renames it (or, on object stores,
marks it complete) once every process has written its shards: a reader sees a checkpoint whole
or not at all, a crash mid-save leaves the previous checkpoints untouched. Each host writes
the shards it holds; on restore every array is placed with the sharding of the target it
replaces, so a state saved on 8 devices restores on 1 and vice versa.

Retention (:class:`Checkpointer`): the newest ``keep`` checkpoints, plus the best one by an
evaluation metric when one is named. A checkpoint that cannot be read is reported (with its
path) and the previous complete one is used.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

_STEP_DIR = re.compile(r"^step_(\d+)$")
FORMAT_VERSION = 2
_ARRAYS, _META = "arrays", "meta"


def as_path(path: str | Any) -> epath.Path:
    """``path`` as an ``etils.epath.Path`` (``gs://...`` and other URIs stay remote)."""
    if path is None or not isinstance(path, str | bytes) and not hasattr(path, "__fspath__"):
        raise TypeError(f"a path must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path) if not isinstance(path, epath.Path) else str(path)
    if isinstance(text, bytes):
        text = text.decode()
    if "://" in text:
        return path if isinstance(path, epath.Path) else epath.Path(text)
    return epath.Path(os.path.abspath(text))  # orbax needs absolute local paths


def step_dir(root: Any, step: int) -> epath.Path:
    """The directory of the checkpoint of ``step`` under ``root``."""
    return as_path(root) / f"step_{int(step):08d}"


def _is_complete(d: epath.Path) -> bool:
    return (d / _ARRAYS).is_dir() and (d / _META).is_dir()


def _is_legacy(d: epath.Path) -> bool:
    return (d / "arrays.npz").exists() or (d / "meta.json").exists()


def list_steps(root: Any) -> list[int]:
    """The steps of the complete checkpoints under ``root``, ascending (empty if none).

    Example:
      >>> from jrnn import train
      >>> train.list_steps("/no/such/folder")
      []
    """
    root = as_path(root)
    if not root.is_dir():
        return []
    steps = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and _is_complete(d):
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(root: Any) -> int | None:
    """The newest complete checkpoint's step under ``root``, or None."""
    steps = list_steps(root)
    return steps[-1] if steps else None


def legacy_steps(root: Any) -> list[int]:
    """Steps under ``root`` saved in the pre-orbax format (``arrays.npz`` + ``meta.json``)."""
    root = as_path(root)
    if not root.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for d in root.iterdir()
        if (m := _STEP_DIR.match(d.name)) and _is_legacy(d) and not _is_complete(d)
    )


def _legacy_error(root: epath.Path) -> ValueError:
    return ValueError(
        f"{root} holds checkpoints in the old jrnn format (arrays.npz + meta.json), which this "
        f"version no longer reads. Convert them once: move the folder aside (e.g. to "
        f"{root}.old), then run jrnn.train.convert_legacy_checkpoints('{root}.old', '{root}')"
    )


def check_no_legacy(root: Any) -> None:
    """Raises a ValueError saying how to convert if ``root`` holds only old-format checkpoints."""
    root = as_path(root)
    if legacy_steps(root) and not list_steps(root):
        raise _legacy_error(root)


# ----------------------------------------------------------------------------- tree <-> nested dict


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _part(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _flatten(groups: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str, Any]]:
    """``[(path parts, readable name, leaf)]`` of every leaf of every non-None group."""
    out = []
    for group, tree in groups.items():
        if tree is None:
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            parts = (group, *(_part(k) for k in path))
            out.append((parts, group + jax.tree_util.keystr(path), leaf))
    return out


def _nest(items: list[tuple[tuple[str, ...], Any]]) -> dict:
    root: dict = {}
    for parts, leaf in items:
        d = root
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = leaf
    return root


def _walk(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            out.update(_walk(v, (*prefix, str(k))))
        return out
    return {prefix: tree}


def _encode(leaf: Any) -> tuple[Any, str | None]:
    if _is_key(leaf):
        return jax.random.key_data(leaf), str(jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array):
        return leaf, None
    return np.asarray(leaf), None


# ----------------------------------------------------------------------------- the manager


class MismatchError(ValueError):
    """A checkpoint does not match the target it is restored into (names, shapes, dtypes)."""


def _all_finite(tree: Any) -> bool:
    leaves = [
        x
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    if not leaves:
        return True
    return bool(jax.device_get(_finite_jit(leaves)))


@jax.jit
def _finite_jit(leaves):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


class Checkpointer:
    """Saves and restores groups of pytrees under one root with orbax's ``CheckpointManager``.

    Saves are asynchronous (arrays are copied to host memory, then written in the background;
    :meth:`wait` blocks until the writes are committed). Every process must call :meth:`save`
    and :meth:`restore` (each host writes and reads its own shards).

    Args:
      root: the checkpoint folder (local or any ``etils.epath`` path, e.g. ``gs://...``).
      keep: how many newest checkpoints to keep (None: all).
      best_metric: also keep the checkpoint with the best value of this score (see
        :meth:`record`), or None.
      best_mode: ``"min"`` or ``"max"``: which value of ``best_metric`` is best.
      async_save: write in the background.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrnn._src.checkpoint import Checkpointer
      >>> c = Checkpointer("/tmp/jrnn_doc_ckpt", keep=2)  # doctest: +SKIP
      >>> c.save(1, {"state": {"w": jnp.ones(3)}}); c.wait()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Any,
        *,
        keep: int | None = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
    ):
        import orbax.checkpoint as ocp

        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be an int >= 1 or None, got {keep!r}")
        self.root = as_path(root)
        self.keep, self.best_metric, self.best_mode = keep, best_metric, best_mode
        self.scores: dict[int, float] = {}
        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # retention is ours: newest ``keep`` + best, only complete ones
            step_prefix="step",
            step_format_fixed_length=8,
            create=False,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._mgr = ocp.CheckpointManager(
            self.root,
            options=options,
            item_handlers={
                _ARRAYS: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
            },
        )

    # -- bookkeeping
    def steps(self) -> list[int]:
        """Complete checkpoints, ascending."""
        return list_steps(self.root)

    def record(self, step: int, value: float) -> None:
        """Records ``best_metric``'s value for the checkpoint of ``step`` (non-finite ignored)."""
        if value is not None and math.isfinite(float(value)):
            self.scores[int(step)] = float(value)

    def best_step(self) -> int | None:
        """The step with the best recorded score among the complete checkpoints, or None."""
        have = [s for s in self.steps() if s in self.scores]
        if not have:
            return None
        pick = min if self.best_mode == "min" else max
        return pick(have, key=lambda s: (self.scores[s], s))

    def _prune(self) -> None:
        # Every process calls it with the same view (orbax deletes on the primary host only,
        # behind a barrier).
        if self.keep is None:
            return
        steps = self.steps()
        keep = set(steps[-self.keep :])
        if self.best_metric is not None and (best := self.best_step()) is not None:
            keep.add(best)
        for s in steps:
            if s not in keep:
                self._mgr.delete(s)

    # -- save
    def save(
        self,
        step: int,
        groups: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
        check_finite: bool = True,
    ) -> epath.Path:
        """Starts saving ``groups`` (name -> pytree or None) as the checkpoint of ``step``.

        Raises:
          FloatingPointError: if ``check_finite`` and a floating array holds NaN or inf (nothing
            is written).
        """
        if check_finite and not _all_finite([g for g in groups.values() if g is not None]):
            raise FloatingPointError(
                f"refusing to save a checkpoint of step {step} to {self.root}: the state holds "
                "NaN or inf"
            )
        ocp = self._ocp
        items, impls = [], {}
        for parts, _, leaf in _flatten(groups):
            arr, impl = _encode(leaf)
            items.append((parts, arr))
            if impl is not None:
                impls["/".join(parts)] = impl
        meta = {
            "format": FORMAT_VERSION,
            "step": int(step),
            "time": time.time(),
            "key_impls": impls,
            "metadata": dict(metadata or {}),
        }
        self._mgr.wait_until_finished()  # one save in flight at a time; prune what it finished
        self._prune()
        if int(step) in self._mgr.all_steps():  # re-saving a step: the new one wins
            self._mgr.delete(int(step))
        self._mgr.save(
            int(step),
            args=ocp.args.Composite(
                **{_ARRAYS: ocp.args.StandardSave(_nest(items)), _META: ocp.args.JsonSave(meta)}
            ),
            force=True,
        )
        return step_dir(self.root, step)

    def wait(self) -> None:
        """Blocks until the last save is committed, then applies retention."""
        self._mgr.wait_until_finished()
        self._prune()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        try:
            self.wait()
        finally:
            self._mgr.close()

    # -- restore
    def read_meta(self, step: int) -> dict:
        """The JSON metadata of the checkpoint of ``step``."""
        with (step_dir(self.root, step) / _META / "metadata").open() as f:
            return json.load(f)

    def restore(
        self,
        targets: Mapping[str, Any],
        *,
        step: int | None = None,
        ignore: tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], dict]:
        """Reads the groups in ``targets`` (the latest readable checkpoint if ``step`` is None).

        Each target pytree gives the structure, shapes and dtypes to expect and the sharding of
        each array (a ``jax.Array``'s or ``ShapeDtypeStruct``'s ``.sharding``; other leaves go
        to the default device). A group whose target is None is skipped; stored arrays whose
        readable names start with a prefix in ``ignore`` may be left out of the targets. With
        ``step=None`` a checkpoint that cannot be read is reported in a warning (with its path)
        and the one before it is tried.

        Returns:
          ``(restored groups, meta)``.

        Raises:
          FileNotFoundError: if there is no (readable) checkpoint.
          ValueError: if the checkpoint and a target disagree on names, shapes or dtypes.
        """
        if step is not None:
            if int(step) not in self.steps():
                raise FileNotFoundError(
                    f"no checkpoint of step {step} under {self.root} ({self.steps()})"
                )
            return self._restore_one(int(step), targets, ignore)
        steps = self.steps()
        _check_same_view(self.root, steps)
        if not steps:
            check_no_legacy(self.root)
            raise FileNotFoundError(f"no checkpoint found under {self.root}")
        errors = []
        for s in reversed(steps):
            try:
                return self._restore_one(s, targets, ignore)
            except MismatchError:
                raise  # a mismatch with the targets: an older checkpoint would not help
            except Exception as e:  # noqa: BLE001 - any read failure: try the previous one
                msg = f"checkpoint {step_dir(self.root, s)} cannot be read ({type(e).__name__}: "
                msg += f"{str(e)[:300]}); "
                errors.append(msg)
                warnings.warn(msg + "trying the previous checkpoint", stacklevel=2)
        raise FileNotFoundError(f"no readable checkpoint under {self.root}: " + " ".join(errors))

    def _restore_one(self, step: int, targets: Mapping[str, Any], ignore: tuple[str, ...]):
        ocp = self._ocp
        d = step_dir(self.root, step)
        meta = self.read_meta(step)
        stored_meta = self._mgr.item_metadata(step)[_ARRAYS]
        stored_tree = getattr(stored_meta, "tree", stored_meta)
        stored = _walk(stored_tree)
        impls = meta.get("key_impls", {})
        wanted = {
            parts: (name, leaf) for parts, name, leaf in _flatten(targets) if parts[0] in targets
        }
        groups = {g for g, t in targets.items() if t is not None}
        in_groups = {p for p in stored if p[0] in groups}
        missing = [name for p, (name, _) in wanted.items() if p not in stored]
        extra = sorted(
            ".".join(p) for p in in_groups - set(wanted) if not ".".join(p).startswith(ignore)
        )
        if missing or extra:
            raise MismatchError(
                f"checkpoint {d} does not match the target: missing from the checkpoint "
                f"{missing[:5]}, not in the target {extra[:5]}"
            )
        default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = []
        for p, info in stored.items():
            shape, dtype = tuple(info.shape), jnp.dtype(info.dtype)
            sharding = default
            if p in wanted:
                name, leaf = wanted[p]
                key = "/".join(p) in impls
                exp_shape = tuple(np.shape(leaf)) if not key else tuple(leaf.shape)
                got_shape = shape[:-1] if key else shape
                tdtype = None if key else getattr(leaf, "dtype", None)
                if got_shape != exp_shape or (tdtype is not None and jnp.dtype(tdtype) != dtype):
                    raise MismatchError(
                        f"checkpoint array {name} has shape {got_shape} and dtype {dtype}; the "
                        f"target expects shape {exp_shape} and dtype {tdtype} (checkpoint {d})"
                    )
                s = getattr(leaf, "sharding", None)
                if not key and isinstance(leaf, jax.Array | jax.ShapeDtypeStruct) and s is not None:
                    sharding = s
            abstract.append((p, jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)))
        out = self._mgr.restore(
            step,
            args=ocp.args.Composite(**{_ARRAYS: ocp.args.StandardRestore(_nest(abstract))}),
        )
        flat = _walk(out[_ARRAYS])
        result: dict[str, Any] = {}
        for group, tree in targets.items():
            if tree is None:
                result[group] = None
                continue
            leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
            leaves = []
            for path, leaf in leaves_with_path:
                parts = (group, *(_part(k) for k in path))
                x = flat[parts]
                impl = impls.get("/".join(parts))
                if impl is not None:
                    x = jax.random.wrap_key_data(x, impl=impl)
                    s = getattr(leaf, "sharding", None)
                    if s is not None:
                        x = jax.device_put(x, s)
                leaves.append(x)
            result[group] = jax.tree.unflatten(treedef, leaves)
        return result, meta


def _check_same_view(root: epath.Path, steps: list[int]) -> None:
    """Every process must see the same checkpoints (one shared file system)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.asarray(steps[-1] if steps else -1, np.int64)
    seen = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1).tolist()
    if len(set(seen)) > 1:
        raise RuntimeError(
            f"the processes see different latest checkpoints under {root} (per process: "
            f"{seen}); the workdir must be one shared file system visible to every host"
        )


def remove_all(root: Any) -> None:
    """Deletes every checkpoint (and leftover temporary folder) under ``root`` (process 0)."""
    root = as_path(root)
    if jax.process_index() != 0 or not root.is_dir():
        return
    for d in root.iterdir():
        if d.name.startswith("step_"):
            d.rmtree() if d.is_dir() else d.unlink()


def read_meta(path: Any, step: int | None = None) -> dict:
    """The JSON metadata of a checkpoint (``path``: a root, with ``step`` or the latest)."""
    root, step = _resolve(path, step)
    with (step_dir(root, step) / _META / "metadata").open() as f:
        return json.load(f)


def _resolve(path: Any, step: int | None) -> tuple[epath.Path, int]:
    path = as_path(path)
    m = _STEP_DIR.match(path.name)
    if m and _is_complete(path) and step is None:
        return path.parent, int(m.group(1))
    if step is None:
        step = latest_step(path)
        if step is None:
            check_no_legacy(path)
            raise FileNotFoundError(f"no checkpoint found under {path}")
    return path, int(step)


# ----------------------------------------------------------------------------- old format


_KEYSTR_PART = re.compile(r"\.([A-Za-z_]\w*)|\['((?:[^'\\]|\\.)*)'\]|\[(-?\d+)\]")


def _parse_keystr(name: str) -> tuple[str, ...]:
    m = re.match(r"^([A-Za-z_]\w*)", name)
    if not m:
        raise ValueError(f"cannot parse the array name {name!r}")
    parts, pos = [m.group(1)], m.end()
    while pos < len(name):
        m = _KEYSTR_PART.match(name, pos)
        if not m:
            raise ValueError(f"cannot parse the array name {name!r} at {pos}")
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return tuple(parts)


def convert_legacy_checkpoints(src: Any, dst: Any) -> list[int]:
    """Converts checkpoints of the old format (``arrays.npz`` + ``meta.json``) to orbax ones.

    Reads every ``src/step_*`` folder holding ``arrays.npz`` (without pickle) and writes the
    same arrays, dtypes, keys and metadata as an orbax checkpoint of the same step under
    ``dst``. ``src`` is left untouched.

    Args:
      src: the old checkpoint root (e.g. ``<workdir>/checkpoints.old``).
      dst: the new checkpoint root (e.g. ``<workdir>/checkpoints``).

    Returns:
      The converted steps.

    Example:
      >>> from jrnn import train
      >>> train.convert_legacy_checkpoints("runs/x/checkpoints.old", "runs/x/checkpoints")
      ... # doctest: +SKIP
      [500, 1000]
    """
    src = as_path(src)
    steps = legacy_steps(src)
    if not steps:
        raise FileNotFoundError(f"no old-format checkpoint (step_*/arrays.npz) under {src}")
    c = Checkpointer(dst, keep=None, async_save=False)
    try:
        for step in steps:
            d = step_dir(src, step)
            with (d / "meta.json").open() as f:
                old = json.load(f)
            items, impls = [], {}
            with (d / "arrays.npz").open("rb") as f, np.load(f, allow_pickle=False) as data:
                for name, info in old["arrays"].items():
                    a = data[name]
                    dtype = jnp.dtype(info["dtype"])
                    if a.dtype != dtype:
                        a = a.view(dtype)
                    a = a.reshape(info["shape"])
                    parts = _parse_keystr(name)
                    items.append((parts, a))
                    if "key_impl" in info:
                        impls["/".join(parts)] = info["key_impl"]
            ocp = c._ocp
            meta = {
                "format": FORMAT_VERSION,
                "step": int(step),
                "time": old.get("time", time.time()),
                "key_impls": impls,
                "metadata": old.get("metadata", {}),
            }
            c._mgr.save(
                int(step),
                args=ocp.args.Composite(
                    **{_ARRAYS: ocp.args.StandardSave(_nest(items)), _META: ocp.args.JsonSave(meta)}
                ),
                force=True,
            )
            c._mgr.wait_until_finished()
    finally:
        c.close()
    return steps


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
    path: Any,
    model: Any,
    opt_state: Any,
    step: int,
    *,
    rng: Any = None,
    carry: Any = None,
    metadata: dict | None = None,
    keep: int | None = 3,
) -> str:
    """Saves a model's state (and the optimizer state) as ``<path>/step_<step>`` and waits.

    The layout is the one :func:`jrnn.train.fit` writes, so a checkpoint saved here resumes
    with ``fit`` and vice versa (``rng`` defaults to the key data of ``jax.random.key(0)``,
    i.e. ``TrainConfig.seed=0``). Every process must call it. ``path`` may be local or any
    ``etils.epath`` path (``gs://...``).

    Args:
      path: the checkpoint root (e.g. ``<workdir>/checkpoints``).
      model: a ``flax.nnx.Module``.
      opt_state: the optax state of the model's ``nnx.Param`` state (or None).
      step: the step number.
      rng: uint32 key data of the base PRNG key (``jax.random.key_data``), or None.
      carry: a carry pytree to save, or None.
      metadata: a JSON-serialisable dict stored with the checkpoint.
      keep: keep this many newest checkpoints under ``path`` (None: all).

    Returns:
      The checkpoint directory.

    Raises:
      FloatingPointError: if the state holds NaN or inf (nothing is written).

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
    state = _fit_layout(
        {
            "step": jnp.asarray(step, jnp.int32),
            "params": params,
            "rest": rest,
            "opt_state": opt_state,
            "rng": rng,
        }
    )
    c = Checkpointer(path, keep=keep, async_save=False)
    try:
        d = c.save(step, {"state": state, "carry": carry}, metadata=metadata)
    finally:
        c.close()
    return str(d)


def _fit_layout(d: dict) -> Any:
    # fit saves a TrainState NamedTuple; its keypaths are ".step", ".params", ...
    from jrnn._src.train import TrainState

    return TrainState(d["step"], d["params"], d["rest"], d["opt_state"], d["rng"])


def restore_checkpoint(
    path: Any,
    model: Any,
    opt_state: Any = None,
    *,
    step: int | None = None,
    carry: Any = None,
) -> Restored:
    """Restores a checkpoint into ``model`` (in place) and returns the rest of the state.

    Every array is placed like the array it replaces: a model (or ``opt_state`` template)
    replicated on 8 devices gets 8-device arrays, a single-device model single-device arrays,
    whatever the layout at save time. Without ``step``, an unreadable newest checkpoint is
    reported in a warning and the previous one is used.

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
      ValueError: if the checkpoint does not match the model or templates, or is in the old
        format (the message says how to convert it).
    """
    from flax import nnx

    root = as_path(path)
    m = _STEP_DIR.match(root.name)
    if m and step is None and _is_complete(root):
        root, step = root.parent, int(m.group(1))
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
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint found under {root}")
    c = Checkpointer(root, keep=None, async_save=False)
    try:
        out, meta = c.restore({"state": template, "carry": carry}, step=step, ignore=ignore)
    finally:
        c.close()
    state = out["state"]
    nnx.update(model, state.params, state.rest)
    return Restored(
        int(state.step), state.opt_state, state.rng, out["carry"], meta.get("metadata", {})
    )
