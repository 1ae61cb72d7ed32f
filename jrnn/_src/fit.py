"""``fit``: the training loop of :mod:`jrnn.train` (sharding, logging, evaluation, resume).

The pieces it drives live in :mod:`jrnn._src.train` (config, optimizer, jitted step),
:mod:`jrnn._src.sharding`, :mod:`jrnn._src.checkpoint` and :mod:`jrnn._src.metrics`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
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
    """

    model: nnx.Module
    history: list[dict]
    metrics: dict[str, float]
    steps_done: int
    wall_time: float


def _place(tree: Any, shardings: Any) -> Any:
    # A fresh copy on the mesh: donation must never delete the caller's model arrays.
    return jax.tree.map(lambda x, s: jax.device_put(x, s, may_alias=False), tree, shardings)


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
) -> FitResult:
    """Trains ``model`` for ``cfg.steps`` optimizer steps (data parallel over ``mesh``).

    Every step: take a batch, re-initialise the carry if it holds ``"reset": True``, shard it
    over the ``"data"`` axis, run the jitted :func:`train_step`. Every ``log_every`` steps a row
    goes to ``<workdir>/metrics.jsonl`` and the progress bar; every ``eval_every`` steps (and
    at the end) ``eval_fn(model)`` runs on the current params; every ``checkpoint_every``
    steps (and at the end) the state is saved to ``<workdir>/checkpoints``. With ``resume`` and
    a checkpoint in ``workdir`` training continues from it (params, optimizer state, RNG,
    carry, step) and the data stream is moved to the same position (see ``batches``), so an
    interrupted run ends with the same params as an uninterrupted one.

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
        writes); None writes nothing.
      init_carry: ``init_carry(batch_size) -> carry`` (global batch size); None: carry None.
      resume: continue from the latest checkpoint in ``workdir`` if there is one; False
        starts over and deletes the workdir's checkpoints and ``metrics.jsonl``.
      mesh: a mesh with a ``"data"`` axis; None for all devices (:func:`make_mesh`).
      param_sharding: ``"replicated"`` or ``"fsdp"``.
      tx: an optax optimizer; None for :func:`make_optimizer(cfg) <make_optimizer>`.

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: if ``cfg.batch_size`` does not divide over the devices, or on bad arguments.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
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

    ckpt_root = None if workdir is None else f"{workdir}/checkpoints"
    start = 0
    if ckpt_root is not None and not resume:
        ckpt.remove_all(ckpt_root)  # starting over: old checkpoints would shadow the new ones
    elif ckpt_root is not None and ckpt.agreed_latest_step(ckpt_root) is not None:
        groups, _ = ckpt.restore_tree(ckpt_root, {"state": state, "carry": carry})
        state, carry = groups["state"], groups["carry"]
        start = int(state.step)
    logger = metrics_lib.JsonlLogger(
        None if workdir is None else f"{workdir}/metrics.jsonl",
        truncate_after=start if start else None,
    )
    it = _start_batches(batches, start)
    history: list[dict] = []
    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    bar = metrics_lib.ProgressBar(cfg.steps, start, enabled=cfg.progress)
    pending: list[dict] = []
    window_t, window_steps = None, 0
    step = start
    last_eval_step = None

    def sync_model():
        arrays = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array)]
        if not any(x.is_deleted() for x in arrays):  # a step that failed after donation
            nnx.update(model, state.params, state.rest)

    def log_train():
        nonlocal pending, window_t, window_steps
        rows = jax.device_get(pending)
        now = time.perf_counter()
        row: dict[str, Any] = {"kind": "train", "step": step}
        for k in rows[0]:
            vals = [float(r[k]) for r in rows]
            row[k] = sum(vals) / len(vals)
        if own_tx:
            row["lr"] = learning_rate_at(cfg, step - 1)
        if window_t is not None and window_steps:
            dt = max(now - window_t, 1e-9)
            row["examples_per_s"] = window_steps * cfg.batch_size / dt
            if "tokens" in row:
                row["tokens_per_s"] = row["tokens"] * window_steps / dt
        row["time"] = now - t_start
        logger.write(row)
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
        history.append(row)
        return out

    def save():
        if ckpt_root is not None:
            ckpt.save_tree(
                ckpt_root,
                step,
                {"state": state, "carry": carry},
                metadata={"config": dataclasses.asdict(cfg)},
                keep=cfg.keep_checkpoints,
            )

    try:
        while step < cfg.steps:
            try:
                raw = next(it)
            except StopIteration:
                break
            batch, reset = _pop_reset(raw)
            if reset and init_carry is not None:
                carry = new_carry(_global_batch_size(batch))
            batch = shd.shard_batch(batch, mesh)
            _check_rows(batch, cfg.batch_size, local_rows)
            state, carry, m = step_fn(state, batch, carry)
            pending.append(m)
            step += 1
            window_steps += 1
            if window_t is None:  # exclude the first step (compilation) from throughput
                jax.block_until_ready(m)
                window_t, window_steps = time.perf_counter(), 0
            if step % max(cfg.log_every, 1) == 0 and cfg.log_every:
                last_train = log_train()
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                last_eval = paused(run_eval)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                paused(save)
        if pending:
            last_train = log_train()
        if eval_fn is not None and last_eval_step != step:
            last_eval = run_eval()
        if (
            ckpt_root is not None
            and step > start
            and not (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        ):
            save()
    finally:
        bar.close()
        sync_model()
    if workdir is not None and cfg.plot and metrics_lib.is_writer() and logger.path:
        try:
            metrics_lib.plot_curves(logger.path, f"{workdir}/curves.png")
        except ImportError as e:
            import warnings

            warnings.warn(f"no learning curves: {e}", stacklevel=2)
    final = {k: v for k, v in last_train.items() if k not in ("kind", "step", "time")}
    final.update(last_eval)
    return FitResult(model, history, final, step, time.perf_counter() - t_start)


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
                _train_step_impl,
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
