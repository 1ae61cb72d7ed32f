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
import math
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
      initial_carry: ``initial_carry(batch_shape) -> carry``, float32 zeros (float64 for
        ``dtype=float64`` cells).
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
        check_step_args(cell, params, carry, x)
        return recurrence(params, carry, input_projection(params, x))

    cell = Cell(
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
    return cell


# Defaults of every memoised factory, by cell name: describe_cell() lists only what differs.
_FACTORY_DEFAULTS: dict[str, dict[str, Any]] = {}


def normalise_argument(name: str, value: Any, default: Any) -> Any:
    """Validates one factory argument and returns its canonical form, or raises naming it.

    Sizes are positive ints, dtypes ``jnp.dtype``s, flags whose default is a bool must be bools,
    numbers whose default is a float become floats; anything else is returned unchanged (the
    factory checks it). Canonical forms make ``gru(8)``, ``gru(8, dtype="float32")`` and
    ``gru(8, dtype=jnp.float32)`` one cache entry, and keep ``elman(7.0)`` from reaching the
    cached ``elman(7)``.
    """
    if name in ("dtype", "param_dtype"):
        return check_dtype(value, name)
    if name == "hidden_size":
        return check_positive_int(value, name)
    if name in ("output_size", "proj_size"):
        return None if value is None else check_positive_int(value, name)
    if isinstance(default, bool):
        return check_bool(value, name)
    if isinstance(default, float):
        return check_float(value, name)
    return value


def cached_factory(factory: Callable[..., Cell]) -> Callable[..., Cell]:
    """Memoises a cell factory on its (validated, normalised) arguments.

    A cell is a NamedTuple of closures, so two calls with the same hyperparameters would
    otherwise build unequal cells, and everything keyed on the cell (``jax.jit`` static
    arguments, Flax NNX graph definitions, compiled train steps) would compile again.
    Every argument is checked and normalised (:func:`normalise_argument`) *before* the cache
    is consulted, and the cache key holds each value's type, so a bad argument raises in any
    process state and defaults spelled out give the very same cell. Unhashable arguments skip
    the cache.
    """
    signature = inspect.signature(factory)
    defaults = {
        n: p.default
        for n, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    _FACTORY_DEFAULTS[factory.__name__] = defaults

    @functools.lru_cache(maxsize=256)
    def cached(key):
        return factory(**{name: value for name, _, value in key})

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return factory(*args, **kwargs)  # let the factory raise its own error
        bound.apply_defaults()
        arguments = {
            name: normalise_argument(name, value, defaults.get(name))
            for name, value in bound.arguments.items()
        }
        key = tuple((name, type(value), value) for name, value in arguments.items())
        try:
            hash(key)
        except TypeError:
            return factory(**arguments)
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
    if value is None:
        raise TypeError(f"{name} must be a floating dtype (e.g. jnp.float32), got None")
    try:
        dt = jnp.dtype(value)
    except TypeError as e:
        raise TypeError(f"{name} must be a floating dtype, got {value!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype, got {dt}")
    return dt


def check_bool(value: Any, name: str) -> bool:
    """Returns ``value`` as a bool, or raises a TypeError naming ``name``."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_float(value: Any, name: str) -> float:
    """Returns ``value`` (a finite real number) as a float, or raises naming ``name``."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{name} must be a float, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def batch_tuple(batch_shape: BatchShape) -> tuple[int, ...]:
    """Normalises ``batch_shape`` (an int or a sequence of ints, each >= 0) to a tuple."""
    expected = "batch_shape must be an int or a tuple of ints, each >= 0"
    if isinstance(batch_shape, int | np.integer) and not isinstance(batch_shape, bool):
        shape = (int(batch_shape),)
    else:
        try:
            dims = tuple(batch_shape)
        except TypeError as e:
            raise TypeError(f"{expected}, got {batch_shape!r}") from e
        if any(isinstance(d, bool) or not isinstance(d, int | np.integer) for d in dims):
            raise TypeError(f"{expected}, got {batch_shape!r}")
        shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise ValueError(f"{expected}, got {batch_shape!r}")
    return shape


def as_key(key: Any, name: str = "key") -> Array:
    """A typed PRNG key from ``jax.random.key(...)`` or a legacy ``jax.random.PRNGKey(...)``.

    A legacy key (``uint32[2]`` raw key data) is wrapped with ``jax.random.wrap_key_data``, so
    both forms of the same seed give the same random numbers downstream.

    Raises:
      TypeError: naming ``name`` for anything that is not one key.
    """
    legacy_shape = jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape
    dtype = getattr(key, "dtype", None)
    shape = tuple(getattr(key, "shape", ()))
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"{name} must be one key (shape ()), got a key array of shape {shape}")
        return key
    if dtype is not None and dtype == jnp.uint32 and shape == legacy_shape:
        return jax.random.wrap_key_data(jnp.asarray(key))
    what = f"shape {shape} and dtype {dtype}" if dtype is not None else type(key).__name__
    raise TypeError(
        f"{name} must be a jax.random.key(seed) or a legacy jax.random.PRNGKey(seed) "
        f"(uint32{list(legacy_shape)}), got {what}"
    )


def acc_dtype(dtype: Any) -> jnp.dtype:
    """Accumulation and carry dtype for a compute dtype: float32, or float64 for float64."""
    # Not jnp.promote_types: it raises for bfloat16 under strict dtype promotion.
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


def zeros_carry(batch_shape: BatchShape, size: int, dtype: Any = jnp.float32) -> Array:
    """A zero state of shape ``[*batch_shape, size]`` in the carry dtype of ``dtype``."""
    return jnp.zeros((*batch_tuple(batch_shape), size), acc_dtype(dtype))


# ----------------------------------------------------------------------------- params checks


def describe_tree(x: Any) -> str:
    """A short text picture of a params pytree: ``GRUParams(w_ih [4, 24], w_hh [8, 24], ...)``."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        dims = "[" + ", ".join(str(d) for d in x.shape) + "]"
        return dims if jnp.dtype(x.dtype) == jnp.float32 else f"{dims} {jnp.dtype(x.dtype).name}"
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        parts = []
        for field, value in zip(x._fields, x, strict=True):
            if value is None:
                continue
            sep = " " if hasattr(value, "shape") else "="
            parts.append(f"{field}{sep}{describe_tree(value)}")
        return f"{type(x).__name__}({', '.join(parts)})"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {describe_tree(v)}" for k, v in x.items()) + "}"
    if isinstance(x, list | tuple):
        inner = ", ".join(describe_tree(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner})"
    if x is None:
        return "None"
    return type(x).__name__


def describe_cell(cell: Cell) -> str:
    """The call that builds ``cell``, defaults left out: ``lstm(8, peepholes=True)``."""
    defaults = _FACTORY_DEFAULTS.get(cell.name, {})
    args = [str(cell.hidden_size)]
    if "output_size" in defaults and cell.output_size != cell.hidden_size:
        args.append(f"output_size={cell.output_size}")
    for key, value in cell.options:
        default = defaults.get(key, object())
        if key in ("dtype", "param_dtype"):
            default = jnp.dtype(default).name
        if value != default:
            args.append(f"{key}={value!r}")
    return f"{cell.name}({', '.join(args)})"


@functools.lru_cache(maxsize=512)
def expected_params(cell: Cell, input_size: int) -> Any:
    """``cell.init(key, input_size)`` as shapes and dtypes only (``jax.eval_shape``)."""
    return jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))


def params_input_size(params: Any) -> int | None:
    """Rows of ``params.w_ih`` (the input size the params were made for), or None."""
    shape = getattr(getattr(params, "w_ih", None), "shape", None)
    return int(shape[-2]) if shape is not None and len(shape) >= 2 else None


def mismatch(got: Any, expected: Any) -> bool:
    """Whether two pytrees differ in structure or in any leaf shape."""
    if jax.tree.structure(got) != jax.tree.structure(expected):
        return True
    return any(
        tuple(np.shape(g)) != tuple(e.shape)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True)
    )


def check_params(cell: Cell, params: Any, name: str = "params") -> None:
    """Raises unless ``params`` are what ``cell.init`` makes (structure, shapes, float dtypes).

    The message names ``name``, shows what the params are and what the cell expects, e.g.
    ``params: got GRUParams(w_ih [4, 24], ...) but the cell lstm(8) expects
    LSTMParams(w_ih [4, 32], w_hh [8, 32], b [32])``. Runs at trace time (shapes only).
    """
    size = params_input_size(params)
    expected = expected_params(cell, size if size is not None else 1)
    if size is None or mismatch(params, expected):
        want = describe_tree(expected)
        if size is None:
            want = want.replace("w_ih [1,", "w_ih [input_size,", 1)
        raise ValueError(
            f"{name}: got {describe_tree(params)} but the cell {describe_cell(cell)} expects "
            f"{want} (what its init(key, input_size) makes)"
        )
    for leaf in jax.tree.leaves(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{name} leaves must be float arrays, got {describe_tree(params)} with dtype "
                f"{jnp.result_type(leaf)}"
            )


@functools.lru_cache(maxsize=512)
def _carry_template(cell: Cell) -> Any:
    return jax.eval_shape(lambda: cell.initial_carry(()))


def check_step_args(cell: Cell, params: Any, carry: Any, x: Any) -> None:
    """Checks ``cell.step``'s params and carry (structure and feature sizes) at trace time."""
    check_params(cell, params)
    template = _carry_template(cell)
    if x is None:
        raise TypeError("x must be float features [..., input_size] or integer tokens, got None")
    bad = jax.tree.structure(carry) != jax.tree.structure(template) or any(
        np.ndim(c) < 1 or np.shape(c)[-1] != t.shape[-1]
        for c, t in zip(jax.tree.leaves(carry), jax.tree.leaves(template), strict=True)
    )
    if bad:
        leaves = [f"[b..., {t.shape[-1]}]" for t in jax.tree.leaves(template)]
        want = leaves[0] if len(leaves) == 1 else "(" + ", ".join(leaves) + ")"
        raise ValueError(
            f"carry: got {describe_tree(carry)} but the cell {describe_cell(cell)} carries "
            f"{want} (see cell.initial_carry(batch_shape))"
        )


# ----------------------------------------------------------------------------- math helpers


def row(v: Array, like: Array) -> Array:
    """``v`` ``[n]`` as ``[1, ..., 1, n]`` in ``like``'s rank and dtype (explicit broadcast)."""
    return v.astype(like.dtype).reshape((1,) * (like.ndim - 1) + (-1,))


def matmul(x: Array, w: Array, dtype: Any) -> Array:
    """``x @ w`` with operands in ``dtype`` and float32 (float64) accumulation and result.

    ``x [..., i]`` is multiplied as one ``[n, i]`` matrix: the gradient of ``w`` is then a dot
    with one contracting dimension (``x^T dy``), which XLA runs without first transposing
    ``dy`` (with ``x`` kept ``[t, b, i]``, it contracts two dimensions and copies ``dy``).
    """
    lead = x.shape[:-1]
    if len(lead) > 1:
        x = x.reshape(math.prod(lead), x.shape[-1])
    out = jnp.matmul(x.astype(dtype), w.astype(dtype), preferred_element_type=acc_dtype(dtype))
    return out.reshape(*lead, w.shape[-1]) if len(lead) > 1 else out


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
        table, idx = nan_row_table(table, x)
        return table.at[idx].get(mode="promise_in_bounds")
    out = matmul(x, w, dtype)
    if b is not None:
        out = out + row(b, out)
    return out


def nan_row_table(table: Array, tokens: Array) -> tuple[Array, Array]:
    """``table [vocab, g]`` with a NaN row appended, and ``tokens`` as row indices into it.

    Out-of-range tokens index the NaN row: the range check runs on the small int tensor, and
    a gather of the rows needs no select over the big ``[..., g]`` result.
    """
    vocab = table.shape[0]
    table = jnp.concatenate([table, jnp.full((1, table.shape[1]), jnp.nan, table.dtype)])
    return table, jnp.where((tokens >= 0) & (tokens < vocab), tokens, vocab)


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
