"""``fit``: the training loop of :mod:`jrnn.train` (sharding, logging, evaluation, resume).

The pieces it drives live in :mod:`jrnn._src.train` (config, optimizer, jitted step),
:mod:`jrnn._src.sharding`, :mod:`jrnn._src.checkpoint` and :mod:`jrnn._src.metrics`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jrnn._src import checkpoint as ckpt
from jrnn._src import metrics as metrics_lib
from jrnn._src import sharding as shd
from jrnn._src.train import (
    LossFn,
    TrainConfig,
    TrainState,
    _global_batch_size,
    _pop_reset,
    _train_step_impl,
    init_state,
    learning_rate_at,
    make_optimizer,
)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      model: the trained model (the same object that was passed in, updated in place).
      history: every row written to ``metrics.jsonl`` in this call (train and eval rows).
      metrics: the last training row merged with the final evaluation (``eval_*`` keys).
      steps_done: the step count at the end (including steps done before a resume).
      wall_time: seconds spent in this call.
      interrupted: the signal that stopped the run early (``"SIGTERM"``, ``"SIGINT"``) after
        saving a checkpoint, or None for a run that finished.
    """

    model: nnx.Module
    history: list[dict]
    metrics: dict[str, float]
    steps_done: int
    wall_time: float
    interrupted: str | None = None


class Diverged(FloatingPointError):
    """Raised by :func:`fit` after ``TrainConfig.max_bad_steps`` consecutive non-finite steps."""


def _place(tree: Any, shardings: Any) -> Any:
    # A fresh copy on the mesh: donation must never delete the caller's model arrays.
    return jax.tree.map(lambda x, s: jax.device_put(x, s, may_alias=False), tree, shardings)


# Fields of TrainConfig that change array shapes or the random stream: never changed on resume.
_FROZEN = ("batch_size", "optimizer", "seed")
# Fields that change neither the state nor the trajectory: changed freely on resume.
_FREE = (
    "eval_every",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "best_metric",
    "best_mode",
    "max_bad_steps",
    "async_checkpoints",
    "progress",
    "tensorboard",
    "plot",
    "donate",
    "fsdp_min_size",
)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def config_changes(stored: Mapping, current: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (stored, current)}`` for every field that differs."""
    a, b = _flat(stored), _flat(_jsonable(current))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def check_resume_config(
    stored: Mapping, current: Mapping, allow: bool | Iterable[str] = False, where: str = ""
) -> dict[str, tuple[Any, Any]]:
    """Compares the config stored with a checkpoint with the current one.

    ``stored``/``current`` hold ``{"train": TrainConfig fields, "run": the caller's config}``.
    Changed shape or RNG fields (``train.batch_size``, ``train.optimizer``, ``train.seed``,
    clipping on/off) are refused; changes of fields that only affect logging are accepted;
    every other change (learning rate, steps, schedule, model config...) must be allowed
    (``allow=True`` or a list of the dotted field names). Returns the accepted changes.
    """
    changes = config_changes(stored, current)
    frozen = {k: v for k, v in changes.items() if k in {f"train.{f}" for f in _FROZEN}}
    if "train.clip_norm" in changes and (not changes["train.clip_norm"][0]) != (
        not changes["train.clip_norm"][1]
    ):
        frozen["train.clip_norm"] = changes["train.clip_norm"]
    if frozen:
        raise ValueError(
            f"cannot resume from the checkpoint {where}: {_describe(frozen)} changed; these "
            "fields fix the shapes of the saved state or its random stream. Use the original "
            "values, or start a new run (another workdir, or resume=False / --no-resume)"
        )
    free = {f"train.{f}" for f in _FREE}
    rest = {k: v for k, v in changes.items() if k not in free}
    allowed = (
        set(rest)
        if allow is True
        else set()
        if allow is False or allow is None
        else {a if "." in a else f"train.{a}" for a in allow} | set(allow)
    )
    refused = {k: v for k, v in rest.items() if k not in allowed}
    if refused:
        raise ValueError(
            f"the config differs from the one saved with the checkpoint {where}: "
            f"{_describe(refused)}. Pass allow_config_change=True to fit (--allow-config-change "
            "in the experiments) to resume with these changes, or use the original values"
        )
    return changes


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    batches: Iterable[Any] | Callable[[int], Iterable[Any]],
    cfg: TrainConfig,
    *,
    eval_fn: Callable[[nnx.Module], dict[str, float]] | None = None,
    workdir: str | None = None,
    init_carry: Callable[[int], Any] | None = None,
    resume: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    param_sharding: str = "replicated",
    tx: optax.GradientTransformation | None = None,
    allow_config_change: bool | Iterable[str] = False,
    run_config: Mapping[str, Any] | None = None,
) -> FitResult:
    """Trains ``model`` for ``cfg.steps`` optimizer steps (data parallel over ``mesh``).

    Every step: take a batch, re-initialise the carry if it holds ``"reset": True``, shard it
    over the ``"data"`` axis, run the jitted step. A step whose loss, gradient norm or updated
    state is not finite is skipped inside the step (params and optimizer state unchanged,
    counted as ``skipped_steps`` in the log); after ``cfg.max_bad_steps`` consecutive ones
    the run stops with :class:`Diverged` (checked at each log row and save, no per-step host
    sync). Every ``log_every`` steps a row goes to ``<workdir>/metrics.jsonl`` and the progress
    display; every ``checkpoint_every`` steps (and at the end) the state is saved to
    ``<workdir>/checkpoints`` (orbax, in the background); every ``eval_every`` steps (and at
    the end) ``eval_fn(model)`` runs, after the save. SIGTERM/SIGINT, or an exception in
    evaluation or logging, save a checkpoint first; after a signal ``fit`` returns with
    ``interrupted`` set. With ``resume`` and a checkpoint in ``workdir`` training continues
    from it (params, optimizer state, RNG, carry, step; an unreadable newest checkpoint is
    reported and the previous one used) and the data stream is moved to the same position
    (see ``batches``), so an interrupted run ends with the same params as an uninterrupted one.

    Args:
      model: a ``flax.nnx.Module``; updated in place with the trained params.
      loss_fn: ``loss_fn(model, batch, key, carry) -> (loss, (metrics, carry))``; metrics is
        a dict of scalars; a ``"tokens"`` metric (tokens in the batch) adds ``tokens_per_s``.
      batches: an iterator of batches (dicts of numpy arrays, leading dim = this host's rows
        of the global batch ``cfg.batch_size``), or a callable ``start_step -> iterator``. On
        resume a callable is called with the restored step; a plain iterator (which must start
        at step 0) is advanced by that many batches.
      cfg: the :class:`TrainConfig`.
      eval_fn: ``eval_fn(model) -> dict of floats``, logged with an ``eval_`` prefix.
      workdir: where ``metrics.jsonl``, ``checkpoints/`` and ``curves.png`` go (process 0
        writes the logs; every host its checkpoint shards): a local folder or any
        ``etils.epath`` path (``gs://bucket/run``); None writes nothing.
      init_carry: ``init_carry(batch_size) -> carry`` (global batch size); None: carry None.
      resume: continue from the latest checkpoint in ``workdir`` if there is one; False
        starts over and deletes the workdir's checkpoints and ``metrics.jsonl``.
      mesh: a mesh with a ``"data"`` axis; None for all devices (:func:`make_mesh`).
      param_sharding: ``"replicated"`` or ``"fsdp"``.
      tx: an optax optimizer; None for :func:`make_optimizer(cfg) <make_optimizer>`.
      allow_config_change: on resume, accept changes of trajectory fields (learning rate,
        steps, schedule, ``run_config`` fields): True, or the dotted names allowed (e.g.
        ``["train.learning_rate"]``). Shape and seed fields can never change.
      run_config: the caller's own config (a JSON-able mapping, e.g. the model sizes), stored
        with each checkpoint and compared on resume like ``cfg``.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: on bad arguments, an indivisible batch size, a refused config change, or a
        checkpoint that does not match the model.
      Diverged: after ``cfg.max_bad_steps`` consecutive non-finite steps.
      RuntimeError: if ``workdir`` holds a ``metrics.jsonl`` but no readable checkpoint
        (``resume=False`` starts over).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
    mesh = shd.check_mesh(mesh)
    shd.check_batch_size(cfg.batch_size, mesh, name="TrainConfig.batch_size")
    t_start = time.perf_counter()
    own_tx = tx is None  # the lr is logged for our own optimizer only
    tx = make_optimizer(cfg) if tx is None else tx
    graphdef, state = init_state(model, tx, seed=cfg.seed)
    param_sh = shd.state_shardings(state.params, mesh, param_sharding, cfg.fsdp_min_size)
    shardings = TrainState(
        step=shd.replicated(mesh),
        params=param_sh,
        rest=shd.state_shardings(state.rest, mesh, "replicated"),
        opt_state=shd.state_shardings(state.opt_state, mesh, param_sharding, cfg.fsdp_min_size),
        rng=shd.replicated(mesh),
    )
    state = _place(state, shardings)
    local_rows = cfg.batch_size // jax.process_count()
    new_carry = shd.carry_placer(init_carry, mesh)
    carry = new_carry(cfg.batch_size)
    carry_sh = None if carry is None else jax.tree.map(lambda x: x.sharding, carry)
    step_fn = _compiled_step(graphdef, loss_fn, tx, shardings, carry_sh, cfg.donate)
    streak = jax.device_put(jnp.zeros((), jnp.int32), shd.replicated(mesh))
    current_config = {
        "train": dataclasses.asdict(cfg),
        **({"run": _jsonable(dict(run_config))} if run_config is not None else {}),
    }

    wd = None if workdir is None else ckpt.as_path(workdir)
    ckpt_root = None if wd is None else wd / "checkpoints"
    metrics_path = None if wd is None else wd / "metrics.jsonl"
    bar = metrics_lib.ProgressBar(cfg.steps, 0, enabled=cfg.progress)
    checkpointer = None
    start = 0
    if ckpt_root is not None:
        if not resume:
            ckpt.remove_all(ckpt_root)  # starting over: old checkpoints would shadow the new ones
        checkpointer = ckpt.Checkpointer(
            ckpt_root,
            keep=cfg.keep_checkpoints,
            best_metric=cfg.best_metric,
            best_mode=cfg.best_mode,
            async_save=cfg.async_checkpoints,
        )
    if checkpointer is not None and resume:
        ckpt.check_no_legacy(ckpt_root)
        ckpt._check_same_view(ckpt_root, checkpointer.steps())  # multi-host: one shared view
        if checkpointer.steps():
            state, carry, start = _resume(
                checkpointer, state, carry, current_config, allow_config_change, bar
            )
        elif metrics_path is not None and metrics_path.exists():
            rows = metrics_lib.read_jsonl(metrics_path)
            last = max((r.get("step", 0) for r in rows), default=0)
            if last > 0:
                raise RuntimeError(
                    f"{metrics_path} logs a run up to step {last}, but {ckpt_root} holds no "
                    "readable checkpoint to resume it from. Pass resume=False (--no-resume) to "
                    "start over, which deletes metrics.jsonl and the checkpoints, or use "
                    "another workdir"
                )
    if checkpointer is not None and cfg.best_metric and start and metrics_path.exists():
        for r in metrics_lib.read_jsonl(metrics_path):  # scores of the kept checkpoints
            if r.get("kind") == "eval" and r.get("step", 0) <= start:
                v = r.get(f"eval_{cfg.best_metric}")
                if isinstance(v, int | float):
                    checkpointer.record(r["step"], v)
    logger = metrics_lib.JsonlLogger(metrics_path, truncate_after=start if start else None)
    board = metrics_lib.TensorBoard(wd, cfg.tensorboard)
    it = _start_batches(batches, start)
    history: list[dict] = []
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    bar.start = start
    pending: list[dict] = []
    window_t, window_steps = None, 0
    step = start
    last_eval_step = None
    last_saved = start if start else None
    signals = _SignalCatcher()

    def sync_model():
        arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
        if not any(x.is_deleted() for x in arrays):  # a step that failed after donation
            nnx.update(model, state.params, state.rest)

    def check_streak():
        bad = int(jax.device_get(streak))
        if bad >= cfg.max_bad_steps:
            if checkpointer is not None:
                checkpointer.wait()  # a save in flight holds finite params: let it land
            kept = checkpointer.steps() if checkpointer is not None else []
            where = f"; the last checkpoint is step {kept[-1]} ({ckpt_root})" if kept else ""
            raise Diverged(
                f"training diverged: the last {bad} steps (up to step {step}) had a non-finite "
                f"loss, gradient or update and were skipped (TrainConfig.max_bad_steps="
                f"{cfg.max_bad_steps}){where}. Lower the learning rate, enable clip_norm, or "
                "check the data"
            )

    def log_train():
        nonlocal pending, window_t, window_steps
        rows = jax.device_get(pending)
        now = time.perf_counter()
        row: dict[str, Any] = {"kind": "train", "step": step}
        bad = [float(r["nonfinite"]) > 0 for r in rows]
        for k in rows[0]:
            if k == "nonfinite":
                continue
            vals = [float(r[k]) for r, b in zip(rows, bad, strict=True) if not b]
            row[k] = sum(vals) / len(vals) if vals else float("nan")
        row["skipped_steps"] = sum(bad)
        if own_tx:
            row["lr"] = learning_rate_at(cfg, step - 1)
        if window_t is not None and window_steps:
            dt = max(now - window_t, 1e-9)
            row["examples_per_s"] = window_steps * cfg.batch_size / dt
            if "tokens" in row and math.isfinite(row["tokens"]):
                row["tokens_per_s"] = row["tokens"] * window_steps / dt
        row["time"] = now - t_start
        logger.write(row)
        board.write(row)
        history.append(row)
        bar.update(step, metrics_lib.format_info(row))
        pending, window_t, window_steps = [], time.perf_counter(), 0
        return row

    def paused(fn):
        # Evaluation and checkpoints are not training time: keep them out of the throughput.
        nonlocal window_t
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        out = fn()
        if window_t is not None:
            window_t += time.perf_counter() - t0
        return out

    def run_eval():
        nonlocal last_eval_step
        sync_model()
        last_eval_step = step
        out = {f"eval_{k}": float(v) for k, v in eval_fn(model).items()}
        row = {"kind": "eval", "step": step, **out, "time": time.perf_counter() - t_start}
        logger.write(row)
        board.write(row)
        history.append(row)
        if checkpointer is not None and cfg.best_metric:
            checkpointer.record(step, out.get(f"eval_{cfg.best_metric}"))
        return out

    def save(wait=False):
        nonlocal last_saved
        if checkpointer is None or last_saved == step:
            return
        check_streak()
        checkpointer.save(
            step, {"state": state, "carry": carry}, metadata={"config": current_config}
        )
        last_saved = step
        if wait:
            checkpointer.wait()

    interrupted = None
    try:
        with signals:
            try:
                while step < cfg.steps and signals.caught is None:
                    try:
                        raw = next(it)
                    except StopIteration:
                        break
                    batch, reset = _pop_reset(raw)
                    if reset and init_carry is not None:
                        carry = new_carry(_global_batch_size(batch))
                    batch = shd.shard_batch(batch, mesh)
                    _check_rows(batch, cfg.batch_size, local_rows)
                    state, carry, m, streak = step_fn(state, batch, carry, streak)
                    pending.append(m)
                    step += 1
                    window_steps += 1
                    if window_t is None:  # exclude the first step (compilation) from throughput
                        jax.block_until_ready(m)
                        window_t, window_steps = time.perf_counter(), 0
                    if step % max(cfg.log_every, 1) == 0 and cfg.log_every:
                        last_train = log_train()
                        check_streak()
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                        paused(save)
                    if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                        last_eval = paused(run_eval)
                if pending:
                    last_train = log_train()
                check_streak()
                if signals.caught is not None:
                    interrupted = signals.caught
                    save(wait=True)
                    where = f": saved {ckpt.step_dir(ckpt_root, step)}" if checkpointer else ""
                    bar.message(
                        f"{interrupted} at step {step}{where}; run again with the same "
                        "workdir to resume"
                    )
                elif step > start or checkpointer is not None and last_saved is None:
                    save()
                if interrupted is None and eval_fn is not None and last_eval_step != step:
                    last_eval = run_eval()
            except Diverged:
                raise
            except BaseException:
                # Keep the work done so far (evaluation, logging or data failed, or Ctrl-C twice).
                if step != last_saved and not _deleted(state):
                    try:
                        save(wait=True)
                    except Exception as e:  # noqa: BLE001 - report the original error
                        warnings.warn(
                            f"could not save a checkpoint at step {step}: {e}", stacklevel=2
                        )
                raise
    finally:
        bar.close()
        board.close()
        if checkpointer is not None:
            checkpointer.close()
        sync_model()
    if wd is not None and cfg.plot and metrics_lib.is_writer() and logger.path:
        _plot(logger.path, wd)
    final = {k: v for k, v in last_train.items() if k not in ("kind", "step", "time")}
    final.update(last_eval)
    return FitResult(model, history, final, step, time.perf_counter() - t_start, interrupted)


def _deleted(tree: Any) -> bool:
    return any(x.is_deleted() for x in jax.tree.leaves(tree) if isinstance(x, jax.Array))


def _plot(jsonl: Any, wd: Any) -> None:
    try:
        if "://" in str(wd):  # draw locally, then copy to the remote workdir
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                png = metrics_lib.plot_curves(jsonl_local(jsonl, tmp), f"{tmp}/curves.png")
                (wd / "curves.png").write_bytes(open(png, "rb").read())
        else:
            metrics_lib.plot_curves(str(jsonl), str(wd / "curves.png"))
    except ImportError as e:
        warnings.warn(f"no learning curves: {e}", stacklevel=3)


def jsonl_local(path: Any, folder: str) -> str:
    local = f"{folder}/metrics.jsonl"
    with open(local, "w") as f:
        f.write(path.read_text())
    return local


def _resume(checkpointer, state, carry, current_config, allow, bar):
    steps = checkpointer.steps()
    latest = steps[-1]
    where = str(ckpt.step_dir(checkpointer.root, latest))
    try:
        stored = checkpointer.read_meta(latest).get("metadata", {}).get("config")
    except Exception:  # noqa: BLE001 - an unreadable meta: restore reports it
        stored = None
    if stored is not None and "train" in stored:
        # Shape and seed changes first: their message names the field, not an array.
        check_resume_config(stored, current_config, True, where)
    try:
        groups, meta = checkpointer.restore({"state": state, "carry": carry})
    except ckpt.MismatchError as e:
        if stored is not None:
            changes = config_changes(stored, current_config)
            if changes:
                raise ValueError(
                    f"{e}\nThe config changed since the checkpoint was saved: {_describe(changes)}"
                ) from e
        raise
    stored = meta.get("metadata", {}).get("config")
    step = int(groups["state"].step)
    where = str(ckpt.step_dir(checkpointer.root, step))
    changes = {}
    if stored is not None:
        if "train" not in stored:  # saved by an older fit: the TrainConfig alone
            stored = {
                "train": stored,
                **({"run": current_config["run"]} if "run" in current_config else {}),
            }
        changes = check_resume_config(stored, current_config, allow, where)
    msg = f"resuming from step {step} ({where})"
    if changes:
        msg += f" with config changes: {_describe(changes)}"
    bar.message(msg)
    return groups["state"], groups["carry"], step


class _SignalCatcher:
    """Within ``with``: SIGTERM/SIGINT set ``caught`` (the loop then saves and stops); a second
    one acts as usual. Only in the main thread (signals cannot be caught elsewhere)."""

    def __init__(self):
        self.caught = None
        self._old = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.caught is not None:  # second signal: the default behaviour
            old = self._old.get(signum)
            if callable(old):
                old(signum, frame)
            raise KeyboardInterrupt(name)
        self.caught = name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._old[s] = signal.signal(s, self._handle)
                except (ValueError, OSError):  # pragma: no cover
                    pass
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
        return False


_STEP_CACHE: dict[Any, Callable] = {}
_STEP_CACHE_SIZE = 8


def _compiled_step(graphdef, loss_fn, tx, shardings, carry_sharding, donate) -> Callable:
    """The jitted step of ``fit``, reused across ``fit`` calls with the same pieces."""
    key = (graphdef, loss_fn, tx, _tree_key(shardings), _tree_key(carry_sharding), donate)
    try:
        fn = _STEP_CACHE.get(key)
    except TypeError:  # something unhashable: do not cache
        key, fn = None, None
    if fn is None:
        fn = jax.jit(
            functools.partial(
                _guarded_step,
                graphdef,
                loss_fn=loss_fn,
                tx=tx,
                shardings=shardings,
                carry_sharding=carry_sharding,
            ),
            donate_argnums=(0,) if donate else (),
        )
        if key is not None:
            if len(_STEP_CACHE) >= _STEP_CACHE_SIZE:
                _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
            _STEP_CACHE[key] = fn
    return fn


def _finite(tree: Any) -> jax.Array:
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _guarded_step(graphdef, state, batch, carry, streak, **kw):
    """``_train_step_impl`` that keeps params, optimizer state and carry when the loss, the
    gradient norm or the new state is not finite; counts consecutive such steps on device."""
    new, new_carry, m = _train_step_impl(graphdef, state, batch, carry, **kw)
    ok = (
        jnp.isfinite(m["loss"])
        & jnp.isfinite(m["grad_norm"])
        & _finite(new.params)
        & _finite(new.opt_state)
    )
    keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
    new = new._replace(
        params=keep(new.params, state.params), opt_state=keep(new.opt_state, state.opt_state)
    )
    if carry is not None and new_carry is not None:
        new_carry = keep(new_carry, carry)
    m = dict(m, nonfinite=(~ok).astype(jnp.float32))
    return new, new_carry, m, jnp.where(ok, 0, streak + 1)


def _tree_key(tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(leaves)


def _start_batches(batches: Any, start: int) -> Iterator[Any]:
    if callable(batches) and not hasattr(batches, "__next__"):
        return iter(batches(start))
    it = iter(batches)
    for _ in range(start):
        next(it)
    return it


def _check_rows(batch: Any, global_rows: int, local_rows: int) -> None:
    b = _global_batch_size(batch)
    if b != global_rows:
        raise ValueError(
            f"a batch has {b} rows in all (this host: {b // jax.process_count()}), but "
            f"TrainConfig.batch_size={global_rows} (this host: {local_rows})"
        )
