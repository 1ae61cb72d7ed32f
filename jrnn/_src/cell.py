"""The cell contract and the helpers every cell family shares.

A cell is a NamedTuple of pure functions over a parameter pytree, in the spirit of
``optax.GradientTransformation``::

    params = cell.init(key, input_size)
    carry = cell.initial_carry(batch_shape)
    carry, y = cell.step(params, carry, x)

Backends need the step split into its time-parallel and sequential parts:

    step(p, carry, x) == recurrence(p, carry, input_projection(p, x))
    recurrence(p, carry, xp) == gates(p, carry, xp, hidden_projection(p, carry))

``input_projection`` is one matmul (or one row gather for integer tokens) that can run for
all time steps at once; ``hidden_projection`` is the ``h @ W_hh`` matmul; ``gates`` is the
pointwise math. Every cell's params carry a field ``w_ih`` of shape ``[input_size, G]``.

Shapes use the letters b (batch, any number of leading dims), t (time), i (input), h (hidden),
g (gate width: 4h for the LSTM, 3h for the GRU).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = Any
Carry = Any
BatchShape = int | Sequence[int]


class Cell(NamedTuple):
    """A recurrent cell: a bundle of pure functions over a parameter pytree.

    Attributes:
      init: ``init(key, input_size) -> params``.
      step: ``step(params, carry, x) -> (carry, y)`` for ``x`` of shape ``[..., i]`` (float)
        or ``[...]`` (integer tokens in ``[0, i)``).
      initial_carry: ``initial_carry(batch_shape) -> carry``, float32 zeros.
      input_projection: ``input_projection(params, xs) -> xp``, time-parallel.
      hidden_projection: ``hidden_projection(params, carry) -> hp``, the recurrent matmul.
      gates: ``gates(params, carry, xp, hp) -> (carry, y)``, the pointwise update.
      recurrence: ``recurrence(params, carry, xp) -> (carry, y)``.
      name: the cell family (``"lstm"``, ``"gru"``, ...); kernel backends dispatch on it.
      hidden_size: size of the hidden state.
      output_size: size of ``y``.
      options: a tuple of ``(name, value)`` pairs describing the cell's options, hashable.
      linear: for cells linear in their carry, ``linear(params, xp) -> (log_a, b)``; ``None`` for
        nonlinear cells. ``xp`` is ``input_projection(params, x)`` ``[..., g]`` (one step or all
        steps at once, any leading dims); ``log_a`` and ``b`` are float32 ``[..., h]`` computed
        from ``xp`` alone, such that ``recurrence(params, h, xp) == (h_new, h_new)`` with
        ``h_new = exp(log_a) * h + b`` elementwise: the carry is one array ``h`` and the output
        is the new carry. ``log_a <= 0`` is the log of the decay, kept in log space so that
        saturated gates stay exact (``-inf`` forgets ``h`` entirely). ``backend="associative"``
        runs such cells as a parallel scan over time.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.lstm(8)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> carry = cell.initial_carry(2)
      >>> carry, y = cell.step(params, carry, jnp.ones((2, 3)))
      >>> y.shape
      (2, 8)
    """

    init: Callable[..., Params]
    step: Callable[..., tuple[Carry, Array]]
    initial_carry: Callable[..., Carry]
    input_projection: Callable[..., Array]
    hidden_projection: Callable[..., Any]
    gates: Callable[..., tuple[Carry, Array]]
    recurrence: Callable[..., tuple[Carry, Array]]
    name: str
    hidden_size: int
    output_size: int
    options: tuple = ()
    linear: Callable[..., tuple[Array, Array]] | None = None

    def option(self, key: str, default: Any = None) -> Any:
        """Returns the value of the cell option ``key``."""
        return dict(self.options).get(key, default)


def make_cell(
    *,
    name: str,
    init: Callable[..., Params],
    initial_carry: Callable[..., Carry],
    input_projection: Callable[..., Array],
    hidden_projection: Callable[..., Any],
    gates: Callable[..., tuple[Carry, Array]],
    hidden_size: int,
    output_size: int,
    options: dict | None = None,
    linear: Callable[..., tuple[Array, Array]] | None = None,
) -> Cell:
    """Builds a :class:`Cell` from its parts, deriving ``step`` and ``recurrence``."""

    def recurrence(params, carry, xp):
        return gates(params, carry, xp, hidden_projection(params, carry))

    def step(params, carry, x):
        return recurrence(params, carry, input_projection(params, x))

    return Cell(
        init=init,
        step=step,
        initial_carry=initial_carry,
        input_projection=input_projection,
        hidden_projection=hidden_projection,
        gates=gates,
        recurrence=recurrence,
        name=name,
        hidden_size=hidden_size,
        output_size=output_size,
        options=tuple(sorted((options or {}).items())),
        linear=linear,
    )


def cached_factory(factory: Callable[..., Cell]) -> Callable[..., Cell]:
    """Memoises a cell factory on its (hashable) arguments.

    A cell is a NamedTuple of closures, so two calls with the same hyperparameters would
    otherwise build unequal cells, and everything keyed on the cell (``jax.jit`` static
    arguments, Flax NNX graph definitions, compiled train steps) would compile again.
    Unhashable arguments skip the cache.
    """
    signature = inspect.signature(factory)

    @functools.lru_cache(maxsize=256)
    def cached(key):
        return factory(**dict(key))

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return factory(*args, **kwargs)  # let the factory raise its own error
        bound.apply_defaults()
        key = tuple(bound.arguments.items())
        try:
            hash(key)
        except TypeError:
            return factory(*args, **kwargs)
        return cached(key)

    return wrapper


# ----------------------------------------------------------------------------- argument checks


def check_positive_int(value: Any, name: str) -> int:
    """Returns ``value`` as an int, or raises a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_dtype(value: Any, name: str) -> jnp.dtype:
    """Returns ``value`` as a floating numpy dtype, or raises naming ``name``."""
    try:
        dt = jnp.dtype(value)
    except TypeError as e:
        raise TypeError(f"{name} must be a floating dtype, got {value!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dt}")
    return dt


def batch_tuple(batch_shape: BatchShape) -> tuple[int, ...]:
    """Normalises ``batch_shape`` (an int or a sequence of ints) to a tuple."""
    if isinstance(batch_shape, int | np.integer) and not isinstance(batch_shape, bool):
        return (int(batch_shape),)
    try:
        shape = tuple(int(d) for d in batch_shape)
    except TypeError as e:
        raise TypeError(
            f"batch_shape must be an int or a tuple of ints, got {batch_shape!r}"
        ) from e
    if any(d < 0 for d in shape):
        raise ValueError(f"batch_shape must be non-negative, got {batch_shape!r}")
    return shape


def acc_dtype(dtype: Any) -> jnp.dtype:
    """Accumulation and carry dtype for a compute dtype: float32, or float64 for float64."""
    # Not jnp.promote_types: it raises for bfloat16 under strict dtype promotion.
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


def zeros_carry(batch_shape: BatchShape, size: int, dtype: Any = jnp.float32) -> Array:
    """A zero state of shape ``[*batch_shape, size]`` in the carry dtype of ``dtype``."""
    return jnp.zeros((*batch_tuple(batch_shape), size), acc_dtype(dtype))


# ----------------------------------------------------------------------------- math helpers


def row(v: Array, like: Array) -> Array:
    """``v`` ``[n]`` as ``[1, ..., 1, n]`` in ``like``'s rank and dtype (explicit broadcast)."""
    return v.astype(like.dtype).reshape((1,) * (like.ndim - 1) + (-1,))


def matmul(x: Array, w: Array, dtype: Any) -> Array:
    """``x @ w`` with operands in ``dtype`` and float32 (float64) accumulation and result."""
    return jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=acc_dtype(dtype))


def is_tokens(x: Array) -> bool:
    """Whether ``x`` holds integer tokens rather than float features."""
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer)


def project(w: Array, b: Array | None, x: Array, dtype: Any) -> Array:
    """The input projection ``x @ w + b`` for features, or a row gather for tokens.

    Integer tokens mean one-hot vectors of depth ``w.shape[0]``: ``one_hot(x) @ w`` is computed
    as ``take(w + b, x)`` (the bias folded into the table, one pass, no one-hot matmul). A token
    outside ``[0, w.shape[0])`` gives NaN rather than a silent zero vector.

    Args:
      w: ``[i, g]`` input weights.
      b: ``[g]`` bias or None.
      x: ``[..., i]`` floats or ``[...]`` integer tokens.
      dtype: compute dtype of the matmul operands.

    Returns:
      ``[..., g]`` float32.
    """
    if is_tokens(x):
        table = w.astype(acc_dtype(dtype))
        if b is not None:
            table = table + row(b, table)
        # Out-of-range tokens index an extra NaN row: the range check runs on the small int
        # tensor, and the gather itself needs no select over the big [..., g] result.
        vocab = table.shape[0]
        table = jnp.concatenate([table, jnp.full((1, table.shape[1]), jnp.nan, table.dtype)])
        idx = jnp.where((x >= 0) & (x < vocab), x, vocab)
        return table.at[idx].get(mode="promise_in_bounds")
    out = matmul(x, w, dtype)
    if b is not None:
        out = out + row(b, out)
    return out


def lecun_normal(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """LeCun normal init (variance 1 / fan_in), fan_in = shape[0]."""
    return jax.nn.initializers.lecun_normal()(key, shape, jnp.float32).astype(dtype)


def orthogonal_blocks(key: Array, rows: int, cols: int, blocks: int, dtype: Any) -> Array:
    """``[rows, blocks * cols]``: ``blocks`` independent orthogonal ``[rows, cols]`` matrices."""
    keys = jax.random.split(key, blocks)
    init = jax.nn.initializers.orthogonal()
    blocks_ = [init(k, (rows, cols), jnp.float32) for k in keys]
    return jnp.concatenate(blocks_, axis=-1).astype(dtype)


def uniform(key: Array, shape: tuple[int, ...], bound: float, dtype: Any) -> Array:
    """Uniform(-bound, bound) init."""
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound).astype(dtype)
