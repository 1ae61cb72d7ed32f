"""Training building blocks: the config, the optimizer, the train state, the jitted steps.

The model is a Flax NNX module. It is split once with ``nnx.split`` into a static
``graphdef``, its ``nnx.Param`` state and the rest (e.g. RNG counters); a :class:`TrainState`
holds them with the optimizer state, and :func:`train_step` is a pure function of it under
``jax.jit`` (the loop, ``fit``, is in :mod:`jrnn._src.fit`). The user's loss has the signature::

    loss_fn(model, batch, key, carry) -> (loss, (metrics, carry))

``key`` is a PRNG key for dropout (None in evaluation), ``carry`` a pytree threaded from one
step to the next (truncated BPTT) or None. The loss and metrics are computed in float32 whatever
the model's compute dtype; params and optimizer state keep their dtype (float32).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jrnn._src import sharding as shd

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]
OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`fit` and :func:`make_optimizer`.

    Attributes:
      steps: total optimizer steps.
      batch_size: global batch size (all devices and hosts together).
      learning_rate: peak learning rate.
      warmup_steps: linear warmup from ``learning_rate / warmup_steps`` to the peak.
      weight_decay: decoupled weight decay (adamw), applied to arrays with ndim >= 2 only.
      clip_norm: global gradient-norm clipping threshold; None or 0 disables it.
      eval_every: evaluate every this many steps (and at the end); 0 only at the end.
      log_every: write a training row to ``metrics.jsonl`` every this many steps.
      checkpoint_every: save a checkpoint every this many steps (and at the end); 0 only at
        the end. Needs a ``workdir``.
      seed: seed of the dropout keys (step ``s`` uses ``fold_in(key(seed), s)``).
      optimizer: ``"adamw"`` (default), ``"adam"`` or ``"sgd"`` (momentum ``b1``).
      schedule: ``"cosine"`` (warmup, then cosine decay to ``final_lr_ratio * learning_rate``
        at ``steps``) or ``"constant"`` (warmup, then constant).
      final_lr_ratio: end of the cosine decay as a fraction of the peak.
      b1: Adam's first-moment decay (SGD momentum).
      b2: Adam's second-moment decay.
      eps: Adam's epsilon.
      keep_checkpoints: how many newest checkpoints to keep.
      best_metric: also keep the checkpoint with the best value of this evaluation metric
        (e.g. ``"loss"`` for ``eval_loss``); None keeps the newest only.
      best_mode: ``"min"`` or ``"max"``: which value of ``best_metric`` is best.
      max_bad_steps: stop with a ``FloatingPointError`` after this many consecutive steps with a
        non-finite loss, gradient or update (each such step is skipped: params and optimizer
        state unchanged).
      async_checkpoints: write checkpoints in the background (orbax async saves).
      progress: show progress on process 0: rich's live bar in a terminal or Jupyter, a plain
        line per ``log_every`` steps otherwise.
      tensorboard: also write TensorBoard event files next to ``metrics.jsonl`` (needs
        ``tensorboardX``: ``pip install 'jrnn[tensorboard]'``).
      plot: write ``curves.png`` into the workdir at the end (needs matplotlib; skipped with a
        warning if it is missing).
      donate: donate the train state's buffers to the step (halves its memory).
      fsdp_min_size: with ``param_sharding="fsdp"``, arrays smaller than this stay replicated.
    """

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_norm: float | None = 1.0
    eval_every: int = 200
    log_every: int = 20
    checkpoint_every: int = 500
    seed: int = 0
    optimizer: str = "adamw"
    schedule: str = "cosine"
    final_lr_ratio: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    keep_checkpoints: int = 3
    best_metric: str | None = None
    best_mode: str = "min"
    max_bad_steps: int = 20
    async_checkpoints: bool = True
    progress: bool = True
    tensorboard: bool = False
    plot: bool = True
    donate: bool = True
    fsdp_min_size: int = 2**14

    def __post_init__(self):
        _check_train_config(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _bad(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"TrainConfig.{name} must be {expected}, got {value!r}")


def _check_train_config(c: TrainConfig) -> None:
    def is_int(v):
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    def is_real(v):
        return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)

    for name in ("steps", "batch_size", "keep_checkpoints", "max_bad_steps", "fsdp_min_size"):
        v = getattr(c, name)
        if not is_int(v) or v < 1:
            raise _bad(name, v, "an int >= 1")
    for name in ("warmup_steps", "eval_every", "log_every", "checkpoint_every", "seed"):
        v = getattr(c, name)
        if not is_int(v) or v < 0:
            raise _bad(name, v, "an int >= 0")
    checks = {
        "learning_rate": (lambda v: v > 0 and math.isfinite(v), "a finite float > 0"),
        "weight_decay": (lambda v: 0 <= v < math.inf, "a finite float >= 0"),
        "final_lr_ratio": (lambda v: 0 <= v <= 1, "a float in [0, 1]"),
        "b1": (lambda v: 0 <= v < 1, "a float in [0, 1)"),
        "b2": (lambda v: 0 <= v < 1, "a float in [0, 1)"),
        "eps": (lambda v: 0 <= v < math.inf, "a finite float >= 0"),
    }
    for name, (ok, expected) in checks.items():
        v = getattr(c, name)
        if not is_real(v) or not ok(float(v)):
            raise _bad(name, v, expected)
    if c.clip_norm is not None and (
        not is_real(c.clip_norm) or not 0 <= float(c.clip_norm) < math.inf
    ):
        raise _bad("clip_norm", c.clip_norm, "None or a finite float >= 0")
    for name in ("progress", "plot", "donate", "async_checkpoints", "tensorboard"):
        if not isinstance(getattr(c, name), bool):
            raise _bad(name, getattr(c, name), "a bool")
    if c.optimizer not in OPTIMIZERS:
        raise _bad("optimizer", c.optimizer, f"one of {OPTIMIZERS}")
    if c.schedule not in ("cosine", "constant"):
        raise _bad("schedule", c.schedule, "'cosine' or 'constant'")
    if c.best_mode not in ("min", "max"):
        raise _bad("best_mode", c.best_mode, "'min' or 'max'")
    if c.best_metric is not None and (not isinstance(c.best_metric, str) or not c.best_metric):
        raise _bad("best_metric", c.best_metric, "None or a metric name such as 'loss'")


def make_schedule(cfg: TrainConfig) -> optax.Schedule:
    """The learning rate as a function of the step count ``s`` (0-based).

    ``lr(s) = peak * (s + 1) / w`` for ``s < w`` (w = warmup_steps), then for ``"cosine"``
    ``end + (peak - end) * (1 + cos(pi * (s - w) / (steps - w))) / 2`` with
    ``end = final_lr_ratio * peak`` (constant ``end`` after ``steps``), for ``"constant"`` the peak.

    Example:
      >>> from jrnn import train
      >>> lr = train.make_schedule(train.TrainConfig(steps=10, learning_rate=1.0, warmup_steps=2))
      >>> [round(float(lr(s)), 3) for s in (0, 1, 2, 6, 10)]
      [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    peak, w, total = float(cfg.learning_rate), int(cfg.warmup_steps), int(cfg.steps)
    end = peak * float(cfg.final_lr_ratio)
    cosine = cfg.schedule == "cosine"

    def schedule(count):
        s = jnp.asarray(count).astype(jnp.float32)
        warm = peak * (s + 1.0) / max(w, 1)
        if cosine:
            frac = jnp.clip((s - w) / max(total - w, 1), 0.0, 1.0)
            after = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        else:
            after = jnp.full_like(s, peak)
        return jnp.where(s < w, warm, after)

    return schedule


def learning_rate_at(cfg: TrainConfig, step: int) -> float:
    """:func:`make_schedule`'s value at ``step`` in plain Python (no device work)."""
    peak, w, total = float(cfg.learning_rate), int(cfg.warmup_steps), int(cfg.steps)
    end = peak * float(cfg.final_lr_ratio)
    if step < w:
        return peak * (step + 1.0) / max(w, 1)
    if cfg.schedule == "constant":
        return peak
    frac = min(max((step - w) / max(total - w, 1), 0.0), 1.0)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _decay_mask(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


_OPTIMIZER_FIELDS = (
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "clip_norm",
    "optimizer",
    "schedule",
    "final_lr_ratio",
    "b1",
    "b2",
    "eps",
)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Optax optimizer for ``cfg``: global-norm clipping, then adamw/adam/sgd on the schedule.

    Configs that agree on the optimizer's fields give the same (immutable) optimizer object,
    so ``fit`` reuses its compiled step across calls that differ only in, e.g., logging.

    Example:
      >>> import jax.numpy as jnp
      >>> from jrnn import train
      >>> tx = train.make_optimizer(train.TrainConfig(steps=100))
      >>> state = tx.init({"w": jnp.zeros((2, 2))})
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    fields = {f: getattr(cfg, f) for f in _OPTIMIZER_FIELDS}
    steps = cfg.steps if cfg.schedule == "cosine" else 1  # a constant schedule ignores steps
    return _make_optimizer(steps, tuple(sorted(fields.items())))


@functools.lru_cache(maxsize=32)
def _make_optimizer(steps: int, fields: tuple) -> optax.GradientTransformation:
    cfg = TrainConfig(steps=steps, **dict(fields))
    lr = make_schedule(cfg)
    if cfg.optimizer == "adamw":
        opt = optax.adamw(
            lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask
        )
    elif cfg.optimizer == "adam":
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    else:
        opt = optax.sgd(lr, momentum=cfg.b1 or None)
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(float(cfg.clip_norm)), opt)
    return opt


class TrainState(NamedTuple):
    """Everything a train step updates (a pytree; checkpointed as a whole with the carry).

    Attributes:
      step: int32 scalar, completed optimizer steps.
      params: the model's ``nnx.Param`` state.
      rest: the model's other state (RNG counters, statistics), threaded through the step.
      opt_state: the optax state.
      rng: uint32 key data of the base PRNG key (dropout key of step s: ``fold_in(rng, s)``).
    """

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    rng: jax.Array


def init_state(
    model: nnx.Module, tx: optax.GradientTransformation, *, seed: int = 0
) -> tuple[nnx.GraphDef, TrainState]:
    """Splits ``model`` and builds the initial :class:`TrainState`.

    Example:
      >>> from flax import nnx
      >>> from jrnn import train
      >>> graphdef, state = train.init_state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
      ...                                    train.make_optimizer(train.TrainConfig()))
      >>> int(state.step)
      0
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rng = jax.random.key_data(jax.random.key(seed))
    with jax.numpy_dtype_promotion("standard"):
        opt_state = tx.init(params)
    state = TrainState(jnp.zeros((), jnp.int32), params, rest, opt_state, rng)
    return graphdef, state


def _as_f32(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.inexact) else x


def _check_loss_output(out: Any) -> tuple[jax.Array, dict, Any]:
    try:
        loss, (metrics, carry) = out
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"loss_fn must return (loss, (metrics: dict, carry)), got {type(out).__name__}"
        ) from e
    if not isinstance(metrics, dict):
        raise TypeError(f"loss_fn's metrics must be a dict, got {type(metrics).__name__}")
    if jnp.shape(loss) != ():
        raise ValueError(f"loss_fn must return a scalar loss, got shape {jnp.shape(loss)}")
    return loss, metrics, carry


def _train_step_impl(
    graphdef, state, batch, carry, *, loss_fn, tx, shardings=None, carry_sharding=None
):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def objective(params):
        model = nnx.merge(graphdef, params, state.rest)
        loss, metrics, new_carry = _check_loss_output(loss_fn(model, batch, key, carry))
        new_rest = nnx.split(model, nnx.Param, ...)[2]
        return _as_f32(loss), (metrics, new_carry, new_rest)

    (loss, (metrics, new_carry, new_rest)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params
    )
    # optax mixes Python floats and int32 counts: it needs standard promotion (tests use strict).
    with jax.numpy_dtype_promotion("standard"):
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    new_state = TrainState(state.step + 1, params, new_rest, opt_state, state.rng)
    if shardings is not None:
        new_state = jax.lax.with_sharding_constraint(new_state, shardings)
    if carry_sharding is not None:
        new_carry = jax.lax.with_sharding_constraint(new_carry, carry_sharding)
    out = {k: _as_f32(v) for k, v in metrics.items()}
    out.update(loss=loss, grad_norm=_as_f32(grad_norm))
    return new_state, jax.lax.stop_gradient(new_carry), out


def _eval_step_impl(graphdef, params, rest, batch, carry, *, loss_fn):
    model = nnx.merge(graphdef, params, rest)
    loss, metrics, new_carry = _check_loss_output(loss_fn(model, batch, None, carry))
    out = {k: _as_f32(v) for k, v in metrics.items()}
    out["loss"] = _as_f32(loss)
    return out, new_carry


@functools.partial(jax.jit, static_argnames=("loss_fn", "tx"))
def train_step(
    graphdef: nnx.GraphDef,
    state: TrainState,
    batch: Any,
    carry: Any = None,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, Any, dict[str, jax.Array]]:
    """One jitted optimizer step, a pure function of the train state.

    Computes ``loss_fn(model, batch, key, carry)`` with ``model = nnx.merge(graphdef,
    state.params, state.rest)`` and ``key = fold_in(wrap_key_data(state.rng), state.step)``,
    its gradient w.r.t. the params in float32, and applies ``tx``. Inputs keep the sharding
    they come with (a sharded batch gives a data-parallel step).

    Args:
      graphdef: from :func:`init_state` (or ``nnx.split``).
      state: the :class:`TrainState`.
      batch: a pytree of arrays, leading dim b.
      carry: the carry from the previous step, or None.
      loss_fn: ``loss_fn(model, batch, key, carry) -> (loss, (metrics, carry))``.
      tx: the optax optimizer ``state.opt_state`` belongs to.

    Returns:
      ``(new_state, new_carry, metrics)``: metrics hold the loss_fn's metrics plus ``loss`` and
      ``grad_norm`` (before clipping), float32; the new carry has its gradient stopped.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn import train
      >>> tx = train.make_optimizer(train.TrainConfig(warmup_steps=0))
      >>> graphdef, state = train.init_state(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), tx)
      >>> def loss_fn(model, batch, key, carry):
      ...     return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), ({}, carry)
      >>> batch = {"x": jnp.ones((4, 2)), "y": jnp.zeros((4, 1))}
      >>> state, _, m = train.train_step(graphdef, state, batch, loss_fn=loss_fn, tx=tx)
      >>> int(state.step)
      1
    """
    return _train_step_impl(graphdef, state, batch, carry, loss_fn=loss_fn, tx=tx)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def eval_step(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    batch: Any,
    carry: Any = None,
    *,
    loss_fn: LossFn,
) -> tuple[dict[str, jax.Array], Any]:
    """Jitted evaluation: ``loss_fn(model, batch, None, carry)`` on the given state.

    Args:
      graphdef: from :func:`init_state` or ``nnx.split(model, nnx.Param, ...)``.
      params: the ``nnx.Param`` state.
      rest: the model's other state.
      batch: a pytree of arrays.
      carry: the carry, or None.
      loss_fn: as for :func:`train_step`; it gets ``key=None``.

    Returns:
      ``(metrics, carry)``, metrics float32 including ``loss``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jrnn import train
      >>> graphdef, params, rest = nnx.split(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), nnx.Param, ...)
      >>> def loss_fn(model, batch, key, carry):
      ...     return jnp.mean(model(batch["x"]) ** 2), ({}, carry)
      >>> m, _ = train.eval_step(graphdef, params, rest, {"x": jnp.zeros((4, 2))}, loss_fn=loss_fn)
      >>> float(m["loss"])
      0.0
    """
    return _eval_step_impl(graphdef, params, rest, batch, carry, loss_fn=loss_fn)


def evaluate(
    model: nnx.Module,
    loss_fn: LossFn,
    batches: Iterable[dict],
    *,
    mesh: jax.sharding.Mesh | None = None,
    init_carry: Callable[[int], Any] | None = None,
) -> dict[str, float]:
    """Mean of ``loss_fn``'s metrics (and ``loss``) over ``batches``, with ``key=None``.

    If the metrics hold ``"count"`` (the number of entries the batch's means are over, e.g.
    valid tokens), the other metrics are averaged with those weights; otherwise each batch
    counts the same. ``count`` and ``tokens`` are summed. The carry
    starts from ``init_carry(batch_size)`` and follows ``"reset"`` flags as in :func:`fit`.
    Use it inside an ``eval_fn``::

        eval_fn = lambda m: train.evaluate(m, loss_fn, make_eval_batches())
    """
    mesh = shd.check_mesh(mesh)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # A fresh or restored model lives on one device: replicate it over the mesh (arrays already
    # sharded over this mesh, e.g. FSDP params after fit, keep their sharding).
    on_mesh = lambda x: (
        x
        if getattr(x, "sharding", None) is not None
        and set(  # noqa: E731
            x.sharding.device_set
        )
        == set(mesh.devices.flat)
        else jax.device_put(x, shd.replicated(mesh))
    )
    params, rest = jax.tree.map(on_mesh, (params, rest))
    place_carry = shd.carry_placer(init_carry, mesh)
    totals: dict[str, float] = {}
    total_w, carry = 0.0, None
    for i, raw in enumerate(batches):
        batch, reset = _pop_reset(raw)
        b = _global_batch_size(batch)
        if init_carry is not None and (i == 0 or reset):
            carry = place_carry(b)
        m, carry = eval_step(
            graphdef, params, rest, shd.shard_batch(batch, mesh), carry, loss_fn=loss_fn
        )
        m = jax.device_get(m)
        w = float(m.get("count", 1.0))
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + (float(v) if k in _SUMMED else w * float(v))
        total_w += w
    if total_w == 0:
        raise ValueError("evaluate got no batches (or zero total count)")
    return {k: v if k in _SUMMED else v / total_w for k, v in totals.items()}


_SUMMED = ("count", "tokens")


def _pop_reset(batch: Any) -> tuple[Any, bool]:
    if isinstance(batch, dict) and "reset" in batch:
        batch = dict(batch)
        return batch, bool(np.asarray(batch.pop("reset")))
    return batch, False


def _global_batch_size(batch: Any) -> int:
    for x in jax.tree.leaves(batch):
        if np.ndim(x) > 0:
            if isinstance(x, jax.Array) and not x.is_fully_addressable:
                return int(x.shape[0])
            return int(np.shape(x)[0]) * jax.process_count()
    raise ValueError("batch holds no array with a batch dimension")
