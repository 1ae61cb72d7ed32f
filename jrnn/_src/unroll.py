"""``jrnn.unroll``: run a cell over a sequence.

This module owns everything between the user's arrays and a backend's time loop: argument
checks (raised while tracing, before anything compiles), the layout change to time-major (once),
the input projection of all steps (once, outside the loop), the mask built from ``lengths``,
and the choice of backend.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._src import backends as backends_lib
from jrnn._src import cell as cell_lib
from jrnn._src import tree
from jrnn._src.backends import reference
from jrnn._src.cell import Array, Cell


def _describe(x: Any) -> str:
    try:
        return f"shape {tuple(x.shape)} and dtype {x.dtype}"
    except AttributeError:
        return f"{type(x).__name__}"


def _platform() -> str:
    """The default platform ("cpu", "gpu" or "tpu"): what "auto" runs when lowered for none
    of the platforms it decides for."""
    return jax.default_backend()


def check_cell(cell: Any) -> Cell:
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell must be a jrnn.Cell (e.g. jrnn.lstm(128)), got {type(cell).__name__}"
        )
    return cell


def check_backend(backend: Any) -> str:
    if backend not in backends_lib.BACKEND_NAMES:
        raise ValueError(f"backend must be one of {backends_lib.BACKEND_NAMES}, got {backend!r}")
    return backend


def input_size(params: Any) -> int:
    """The input size a cell's params expect (rows of ``w_ih``)."""
    w = getattr(params, "w_ih", None)
    if w is None or getattr(w, "ndim", 0) < 2:
        raise TypeError(
            "params must be the parameter NamedTuple made by cell.init (with a field w_ih of "
            f"shape [input_size, G]), got {type(params).__name__}"
        )
    return int(w.shape[-2])


def check_inputs(params: Any, xs: Any, time_major: bool) -> tuple[Array, bool, tuple, int]:
    """Validates ``xs``; returns (xs, is_tokens, batch_shape, num_steps)."""
    expected_form = "float features [batch, time, input_size] or integer tokens [batch, time]"
    if xs is None:
        raise TypeError(f"xs must be {expected_form}, got None")
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        try:
            xs = np.asarray(xs)
        except (TypeError, ValueError) as e:
            raise TypeError(f"xs must be {expected_form}, got {type(xs).__name__}") from e
    if xs.dtype == jnp.bool_ or not (
        jnp.issubdtype(xs.dtype, jnp.integer) or jnp.issubdtype(xs.dtype, jnp.floating)
    ):
        raise TypeError(f"xs must be {expected_form}, got {_describe(xs)}")
    expected = input_size(params)
    tokens = jnp.issubdtype(xs.dtype, jnp.integer)
    if tokens:
        if xs.ndim < 1:
            raise ValueError(f"xs (tokens) must have shape [batch..., time], got {_describe(xs)}")
        shape = xs.shape
    else:
        if xs.ndim < 2:
            raise ValueError(
                f"xs must have shape [batch..., time, input_size], got {_describe(xs)}"
            )
        if xs.shape[-1] != expected:
            hint = " (if xs holds token ids, pass them with an integer dtype)"
            raise ValueError(
                f"xs has input_size {xs.shape[-1]} but params expect {expected}: xs must be "
                f"[batch..., time, {expected}], got {_describe(xs)}{hint}"
            )
        shape = xs.shape[:-1]
    if time_major:
        num_steps, batch = shape[0], tuple(shape[1:])
    else:
        num_steps, batch = shape[-1], tuple(shape[:-1])
    return xs, tokens, batch, int(num_steps)


def _concrete(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_lengths(lengths: Any, batch: tuple, num_steps: int) -> Array | None:
    """Validates ``lengths`` (int ``[batch...]`` in ``[0, time]``)."""
    if lengths is None:
        return None
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer) or lengths.dtype == jnp.bool_:
        raise TypeError(
            f"lengths must be an integer array of shape {batch}, got {_describe(lengths)}"
        )
    if tuple(lengths.shape) != batch:
        raise ValueError(
            f"lengths must have the batch shape {batch} of xs, got {_describe(lengths)}"
        )
    values = _concrete(lengths)
    if values is not None and values.size and (values.min() < 0 or values.max() > num_steps):
        raise ValueError(
            f"lengths must lie in [0, {num_steps}] (the time dimension of xs), got values in "
            f"[{values.min()}, {values.max()}]"
        )
    return jnp.asarray(lengths)


def check_resets(resets: Any, batch: tuple, num_steps: int, time_major: bool) -> Array | None:
    """Validates ``resets`` (bool, the layout of token inputs)."""
    if resets is None:
        return None
    if not hasattr(resets, "dtype"):
        resets = np.asarray(resets)
    expected = (num_steps, *batch) if time_major else (*batch, num_steps)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets must be a bool array of shape {expected}, got {_describe(resets)}")
    if tuple(resets.shape) != expected:
        raise ValueError(f"resets must have shape {expected}, got {_describe(resets)}")
    resets = jnp.asarray(resets)
    return resets if time_major else jnp.moveaxis(resets, -1, 0)


def check_like(value: Any, expected: Any, name: str, what: str) -> Any:
    """Validates a user pytree against ``expected`` (structure, shapes, float dtype).

    Returns ``value`` cast to the expected dtypes; ``what`` describes ``expected`` in messages.
    """
    exp_def, got_def = jax.tree.structure(expected), jax.tree.structure(value)
    if exp_def != got_def:
        raise ValueError(f"{name} must have the structure of {what} ({exp_def}), got {got_def}")
    shapes = lambda t: [tuple(x.shape) for x in jax.tree.leaves(t)]  # noqa: E731
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(value), strict=True):
        if tuple(g.shape) != tuple(e.shape):
            raise ValueError(
                f"{name} leaves must have shapes {shapes(expected)} ({what}), got {shapes(value)}"
            )
        if not jnp.issubdtype(g.dtype, jnp.floating):
            raise TypeError(f"{name} leaves must be float arrays, got dtype {g.dtype}")
    return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), value, expected)


def check_carry(cell: Cell, carry: Any, batch: tuple, name: str = "carry") -> Any:
    """Validates a user carry against ``cell.initial_carry(batch)``; None gives zeros."""
    expected = cell.initial_carry(batch)
    if carry is None:
        return expected
    return check_like(carry, expected, name, f"cell.initial_carry({batch})")


def clean_padding(xs_tm: Any, mask: Array | None) -> Any:
    """Time-major inputs with every padded step replaced by zeros (token id 0).

    Padding may hold anything (NaN features, a PAD id of -1 or ``vocab``). The carry freeze
    ``where(mask, new, old)`` passes a zero cotangent to the padded steps, but autodiff still
    multiplies it by the local derivatives there, and ``0 * NaN`` is NaN: one NaN in padding
    would poison every parameter gradient. Zeroing the padded inputs once, here where the mask
    is known and before any backend sees them, keeps every backend finite and equal to
    ``"reference"``; the ``where`` passes no gradient to the padded inputs, as the contract says.
    Out-of-range token ids at *valid* steps still give NaN (see ``cell.project``).
    """
    if mask is None:
        return xs_tm

    def clean(a):
        if tuple(a.shape[: mask.ndim]) != tuple(mask.shape):
            return a
        return tree.zeros_where_not(mask, a)

    return jax.tree.map(clean, xs_tm)


def make_mask(lengths: Array | None, num_steps: int) -> Array | None:
    """``mask[t, b] = t < lengths[b]``, time-major; None without lengths."""
    if lengths is None:
        return None
    steps = jnp.arange(num_steps, dtype=lengths.dtype).reshape((num_steps,) + (1,) * lengths.ndim)
    return steps < lengths[None]


def reverse_resets(resets: Array | None) -> Array | None:
    """Resets for a reverse pass: a segment starting at t+1 means the carry restarts at t."""
    if resets is None:
        return None
    return jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)


def resolve_backend(backend: str, cell: Cell, **features) -> backends_lib.Backend:
    """The backend to run. "auto" decides per target platform (the platform being lowered
    for, through ``jax.lax.platform_dependent``): see ``backends.auto``."""
    if backend == "auto":
        return backends_lib.auto(cell, _platform(), **features)
    b = backends_lib.get(backend)
    reason = b.supports(cell, **features)
    if reason is not None:
        raise NotImplementedError(f"backend={backend!r} does not support this call: {reason}")
    return b


def check_remat(remat: Any) -> int | str | None:
    """Validates a time-checkpointing policy: None/"none", an int k, or "sqrt"."""
    if remat is None or remat == "none" or remat is False:
        return None
    if remat == "sqrt":
        return "sqrt"
    if isinstance(remat, int | np.integer) and not isinstance(remat, bool) and remat > 0:
        return int(remat)
    raise ValueError(f"remat must be None, 'none', 'sqrt' or a positive int k, got {remat!r}")


def chunk_size(remat: int | str | None, num_steps: int) -> int | None:
    """The number of steps per checkpointed chunk for a policy, or None (no chunking)."""
    if remat is None:
        return None
    k = math.isqrt(max(num_steps - 1, 0)) + 1 if remat == "sqrt" else remat
    return None if k >= num_steps else k


def _run_chunked(run_chunk, xs_tm, carry0, mask, resets, reverse, k, return_carries):
    """Runs ``run_chunk`` over time chunks of ``k`` steps under ``jax.checkpoint``.

    The forward keeps one carry per chunk; the backward recomputes one chunk at a time, so
    activation memory is O(t / k + k) steps instead of O(t). Steps padding t to a multiple of k
    are masked (frozen carry, zero output) and sliced off.
    """
    steps = jax.tree.leaves(xs_tm)[0].shape[0]
    n = -(-steps // k)
    pad = n * k - steps
    batch = jax.tree.leaves(carry0)[0].shape[:-1]
    if pad:
        if mask is None:
            mask = jnp.ones((steps, *batch), bool)
        pad_to = (
            lambda a: jnp.concatenate(  # noqa: E731
                [a, jnp.zeros((pad, *a.shape[1:]), a.dtype)], axis=0
            )
        )
        xs_tm, mask = jax.tree.map(pad_to, xs_tm), pad_to(mask)
        resets = None if resets is None else pad_to(resets)
    split = lambda a: None if a is None else a.reshape(n, k, *a.shape[1:])  # noqa: E731

    @jax.checkpoint
    def body(carry, chunk):
        x_c, m_c, r_c = chunk
        carry, ys, carries = run_chunk(x_c, carry, m_c, r_c)
        return carry, (ys, carries)

    carry, (ys, carries) = jax.lax.scan(
        body, carry0, (jax.tree.map(split, xs_tm), split(mask), split(resets)), reverse=reverse
    )
    merge = lambda a: a.reshape(n * k, *a.shape[2:])[:steps]  # noqa: E731
    ys = merge(ys)
    carries = jax.tree.map(merge, carries) if return_carries else None
    return carry, ys, carries


def run_time_major(
    cell: Cell,
    params: Any,
    xs_tm: Array,
    carry0: Any,
    *,
    mask: Array | None,
    resets: Array | None,
    reverse: bool,
    unroll: int,
    backend: str,
    return_carries: bool = False,
    remat: int | str | None = None,
):
    """Core of ``unroll`` on validated, time-major raw inputs ``xs_tm`` ``[t, b..., i]``.

    Layers call this directly (also under ``vmap`` over directions and ``scan`` over layers).
    Padded steps' inputs are zeroed first (:func:`clean_padding`) and resets there dropped,
    whatever the backend.
    Returns ``(carry, ys [t, b..., o], carries or None)``.
    """
    if mask is not None and resets is not None:
        resets = resets & mask  # a reset in padding must not move the frozen carry
    return _run_time_major(
        cell,
        params,
        clean_padding(xs_tm, mask),
        carry0,
        mask=mask,
        resets=resets,
        reverse=reverse,
        unroll=unroll,
        backend=backend,
        return_carries=return_carries,
        remat=remat,
    )


def _run_time_major(
    cell, params, xs_tm, carry0, *, mask, resets, reverse, unroll, backend, return_carries, remat
):
    if reverse:
        resets = reverse_resets(resets)
    k = chunk_size(remat, jax.tree.leaves(xs_tm)[0].shape[0])
    if k is not None:
        if resets is not None:
            raise NotImplementedError("remat (time checkpointing) with resets is not supported")

        def run_chunk(x_c, c0, m_c, r_c):
            del r_c
            return _run_time_major(
                cell,
                params,
                x_c,
                c0,
                mask=m_c,
                resets=None,
                reverse=reverse,
                unroll=unroll,
                backend=backend,
                return_carries=return_carries,
                remat=None,
            )

        return _run_chunked(run_chunk, xs_tm, carry0, mask, None, reverse, k, return_carries)
    if backend == "reference":
        return reference.run_raw(
            cell,
            params,
            xs_tm,
            carry0,
            mask=mask,
            resets=resets,
            reverse=reverse,
            return_carries=return_carries,
        )
    features = dict(
        tokens=cell_lib.is_tokens(jax.tree.leaves(xs_tm)[0]),
        lengths=mask is not None,
        resets=resets is not None,
        reverse=reverse,
        return_carries=return_carries,
    )
    impl = resolve_backend(backend, cell, **features)
    return backends_lib.run_inputs(
        impl,
        cell,
        params,
        xs_tm,
        carry0,
        tokens=features["tokens"],
        mask=mask,
        resets=resets,
        reverse=reverse,
        unroll=unroll,
        return_carries=return_carries,
    )


def unroll(
    cell: Cell,
    params: Any,
    xs: Any,
    carry: Any = None,
    *,
    lengths: Any = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    backend: str = "auto",
    resets: Any = None,
    return_carries: bool = False,
    remat: Any = None,
):
    """Runs ``cell`` over the time axis of ``xs``.

    Args:
      cell: a :class:`jrnn.Cell`.
      params: the cell's params (from ``cell.init``); params of another cell, size or option
        set raise a ValueError naming what they are and what the cell expects.
      xs: float ``[b..., t, i]`` or integer tokens ``[b..., t]`` (one-hot of depth i, computed
        as a row gather of the input weights). With ``time_major=True``: ``[t, b..., i]`` or
        ``[t, b...]``.
      carry: initial carry, the structure of ``cell.initial_carry(b)``; default zeros.
      lengths: int ``[b...]`` in ``[0, t]``. At ``t >= lengths[b]`` outputs are exactly zero,
        the carry is frozen (the final carry is the carry after the last valid step) and no
        gradient flows from padding. Padding may hold anything (NaN, a PAD id of -1 or i):
        it is replaced by zeros before any backend sees it, so gradients stay finite and equal
        on every backend. Under ``jit`` with traced lengths, values outside ``[0, t]`` act as
        clipped.
      reverse: process each sequence's valid prefix from its last valid element to its first;
        ``ys`` come back in the original time order.
      time_major: whether the time axis comes first in ``xs``, ``resets`` and ``ys``.
      unroll: scan unroll factor (backends that loop).
      backend: ``"auto" | "reference" | "xla" | "fused" | "pallas" | "associative" | "cpu"``.
      resets: bool, the layout of token inputs (``[b..., t]``); ``True`` at step t restarts the
        carry from the initial ``carry`` before processing t (packed sequences).
      return_carries: also return every step's carry (frozen at padding), laid out like ``ys``.
      remat: time checkpointing for long sequences: None (keep every step's residuals for the
        backward pass), an int k (keep the carry every k steps and recompute each chunk of k in
        the backward pass) or ``"sqrt"`` (k = ceil(sqrt(t))). Not combinable with ``resets``.

    Returns:
      ``(carry, ys)`` with ``ys`` ``[b..., t, o]`` (``[t, b..., o]`` if time-major), or
      ``(carry, ys, carries)`` with ``return_carries=True``.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.gru(8)
      >>> params = cell.init(jax.random.key(0), 128)
      >>> tokens = jnp.zeros((2, 5), jnp.int32)
      >>> carry, ys = jrnn.unroll(cell, params, tokens, lengths=jnp.array([5, 3]))
      >>> ys.shape, float(abs(ys[1, 3:]).max())
      ((2, 5, 8), 0.0)
    """
    cell = check_cell(cell)
    backend = check_backend(backend)
    unroll_n = cell_lib.check_positive_int(unroll, "unroll")
    remat = check_remat(remat)
    cell_lib.check_params(cell, params)
    xs, tokens, batch, num_steps = check_inputs(params, xs, time_major)
    lengths = check_lengths(lengths, batch, num_steps)
    resets = check_resets(resets, batch, num_steps, time_major)
    carry0 = check_carry(cell, carry, batch)
    if not time_major:
        xs = jnp.moveaxis(xs, -1 if tokens else -2, 0)
    carry_out, ys, carries = run_time_major(
        cell,
        params,
        xs,
        carry0,
        mask=make_mask(lengths, num_steps),
        resets=resets,
        reverse=bool(reverse),
        unroll=unroll_n,
        backend=backend,
        return_carries=bool(return_carries),
        remat=remat,
    )
    if not time_major:
        ys = jnp.moveaxis(ys, 0, -2)
        if carries is not None:
            carries = jax.tree.map(lambda a: jnp.moveaxis(a, 0, len(batch)), carries)
    if return_carries:
        return carry_out, ys, carries
    return carry_out, ys
